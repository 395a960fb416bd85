"""The runtime: feeds decoded, restored on one engine and encoded, stages joined by bounded queues
(DESIGN.md section 3). One feed (`run_pipeline`: a file, an image folder, a camera) is the case N = 1
of several (`run_streams`, `streamrestore run --streams`).

Each feed has a reader thread (decode: its source into its own small queue) and a writer thread
(encode: its restored frames into its own output and report); one engine thread takes the ready
frames of all feeds round robin, up to `batch`, waiting at most `batch_wait_ms` to fill a batch
(None: until it is full, the lossless policy of files), and restores each same-size group in one
backend call (batch 1: latency mode). The queues hold a few batches at most, so memory stays flat
and a slow stage pushes back.

- Only a backend that runs asynchronously (`asynchronous`: CUDA double buffering) keeps two batches
  in flight; one that finishes inside the call hands its frames on at once.
- A feed with the latest-frame policy never queues stale frames behind the engine: beyond its share
  of a batch the oldest are dropped, and counted.
- A feed that keeps a temporal state (a video model, the fusion stage: streamrestore.runtime.temporal) has at
  most one frame in a batch, each restored after the one before; its report counts the resets. Its fusion
  stage runs in its writer, frames in order, so the engine goes on with the next model call meanwhile and
  the feeds' fusion stages run side by side.
- A backend that converts colour on its device (`takes_i420`: the torch backend on CUDA) gets the frames
  of a feed without temporal state as their decoded I420 planes (io.base.DecodedFrame.ycbcr), and the sink
  encodes the planes it gives back: no colour conversion on the host.
- SIGINT/SIGTERM (or `stop`) end the reading; frames in flight are still restored and written and
  each output is finished as a valid file. A second signal stops every stage at once (the outputs
  are still finished).
- Errors: a failing engine stops every stage, removes every output and is raised. A failing feed
  (cannot connect, reconnects exhausted, bad output) does the same where the run is one feed
  (`isolate=False`); with `isolate` it is closed and named in its report's facts["error"] while the
  others carry on: what it wrote before its input failed is kept, an output that failed itself is
  removed. A feed that wrote no frame is an error too, and its output is removed.

Every report gets its feed's skipped, dropped and reconnect counts, temporal resets, wall time,
`interrupted` and facts["error"].

An `observer` (RunObserver; streamrestore.runtime.metrics for `--metrics-port`) is told of each frame decoded,
each backend call and each frame written, from the places that feed the reports.
"""
from __future__ import annotations

import collections
import functools
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from streamrestore.backends.base import Done
from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, FrameSink, FrameSource, StreamInfo
from streamrestore.runtime.report import LIVE_RECORDS, LatencyReport
from streamrestore.runtime.temporal import (StreamHistory, fuse_restored, mark_reconnect, restore_with_history,
                                            stream_state)

log = logging.getLogger(__name__)
_END = object()  # end of a feed, passed down its queues
_POLL = 0.1  # seconds a blocked stage waits before checking for a stop
_READER_GRACE = 2.0  # seconds readers get to end; one blocked in a live read is left behind (daemon thread)


@dataclass
class RunResult:
    """What `run_pipeline` returns."""

    frames: int  # frames in the finished output
    interrupted: bool
    report: LatencyReport


@dataclass(eq=False)  # compared and hashed by identity: the engine keys its batches by feed
class Feed:
    """One feed of a run, shared by its reader, the engine and its writer. Its source is `source`, or
    `open_source()` called by the reader; its output is `sink`, or `open_sink(source.info)` called by the
    writer at the first frame (a camera's size is known then); `progress.update(1)` per frame written."""

    name: str
    report: LatencyReport
    open_source: Callable[[], FrameSource] | None = None
    open_sink: Callable[[StreamInfo], FrameSink] | None = None
    source: FrameSource | None = None
    sink: FrameSink | None = None
    progress: object = None
    frames: int = 0  # frames in the finished output
    error: BaseException | None = None  # why this feed failed (isolated runs), or wrote nothing
    output_failed: bool = False  # the output itself failed: it is removed, not finished
    history: StreamHistory | None = field(default=None, init=False)  # temporal state, None without one
    decoded: queue.Queue = field(default_factory=queue.Queue, init=False)  # reader -> engine
    restored: queue.Queue = field(default_factory=queue.Queue, init=False)  # engine -> writer
    stopped: threading.Event = field(default_factory=threading.Event, init=False)  # read no more
    i420: bool = field(default=False, init=False)  # ask the source for I420 planes (the backend converts colour)


class RunObserver:
    """What a run tells an observer (the metrics of streamrestore.runtime.metrics), from the places that feed the
    reports. Each method is called on a stage's thread and must return quickly; this base ignores everything."""

    def started(self, feeds: list[Feed]) -> None:
        """Before any stage starts; the feeds' sources, queues and reports are live from here on."""

    def decoded(self, feed: Feed, frame: DecodedFrame) -> None:
        """A frame of `feed` was decoded (before the latest policy may drop it)."""

    def restored(self, frames: int, timings: dict) -> None:
        """One backend call restored `frames` frames; `timings` holds its milliseconds (upload, restore, download)."""

    def written(self, feed: Feed, frame: DecodedFrame) -> None:
        """A frame of `feed` was encoded and added to its report (`frame.timings`: the stage milliseconds)."""


class _Run:
    """What the stages share: the stop flags, the run's first error, the observer, and a count of the frames
    handed to the engine (which it waits on instead of polling)."""

    def __init__(self, isolate: bool, stop: threading.Event | None, observer: RunObserver | None = None) -> None:
        self.isolate = isolate
        self.observer = observer or RunObserver()
        self.stop_reading = stop or threading.Event()  # first signal: read no more, finish the rest
        self.abort = threading.Event()  # error or second signal: every stage stops now
        self.error: BaseException | None = None
        self.signals = 0
        self._handed = 0
        self._ready = threading.Condition()

    @property
    def interrupted(self) -> bool:
        return self.stop_reading.is_set()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.abort.set()
        self.hand()  # wake the engine

    def feed_failed(self, feed: Feed, exc: Exception, output: bool = False) -> None:
        """A feed's source or output failed: the whole run fails, or (isolate) that feed stops alone. Closing
        the source from the writer's thread is safe (a file source waits for the packet being decoded, a live
        one only signals its own threads) and wakes a reader waiting for a live frame."""
        if not self.isolate:
            self.fail(exc)
            return
        feed.error = feed.error or exc
        feed.output_failed |= output
        log.error("%s: %s", feed.name, _describe(exc))
        feed.stopped.set()
        if output and feed.source is not None:
            feed.source.close()

    def put(self, q: queue.Queue, item) -> bool:
        """Put `item`, waiting for room; False when the run aborts first."""
        while not self.abort.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                pass
        return False

    def get(self, q: queue.Queue):
        """The next item, waiting for one; _END when the run aborts first."""
        while not self.abort.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                pass
        return _END

    def hand(self) -> None:
        """A reader handed the engine a frame (or a feed's end)."""
        with self._ready:
            self._handed += 1
            self._ready.notify_all()

    def handed(self) -> int:
        return self._handed

    def wait_handed(self, seen: int, timeout: float) -> None:
        """Wait until a frame is handed over after the count `seen` was taken, or `timeout` s."""
        with self._ready:
            self._ready.wait_for(lambda: self._handed != seen, timeout)


def _describe(exc: BaseException) -> str:
    """The one line a report and the command line give for a feed's error."""
    return str(exc) if isinstance(exc, UserError) else f"{exc.__class__.__name__}: {exc}"


def run_pipeline(source: FrameSource, backend, sink: FrameSink, *, batch: int = 1, progress=None,
                 report: LatencyReport | None = None, fusion: bool = False,
                 observer: RunObserver | None = None) -> RunResult:
    """Restore every frame of `source` with `backend` into `sink`: one feed, whose error stops the run and
    is raised after the sink removed its partial output; `progress.update(1)` per frame. A file is batched
    losslessly (a batch waits until it is full); a live feed takes only what is ready.
    fusion: run the motion-compensated recursive fusion stage after the model (streamrestore.runtime.fusion).
    observer: told of the run's frames and backend calls (RunObserver)."""
    feed = Feed(source.info.name or "input", report or LatencyReport(), source=source, sink=sink, progress=progress)
    run_feeds([feed], backend, batch=batch, batch_wait_ms=0.0 if source.info.is_live else None, isolate=False,
              fusion=fusion, observer=observer)
    return RunResult(feed.frames, feed.report.interrupted, feed.report)


def run_streams(specs: list, backend, *, open_source: Callable[[object], FrameSource],
                open_sink: Callable[[object, StreamInfo], FrameSink], batch: int = 8,
                batch_wait_ms: float | None = 30.0, facts: dict | None = None, stop: threading.Event | None = None,
                fusion: bool = False, observer: RunObserver | None = None) -> list[LatencyReport]:
    """Restore several feeds (streamrestore.runtime.streams.StreamSpec: name, input, output) with one `backend`,
    `open_source(spec)` and `open_sink(spec, info)` opening each one's ends. Returns one report per spec,
    its facts `facts` plus the feed's stream, input and output, and its error (None when it ran cleanly).
    Each feed keeps its own temporal state (a temporal model's previous frame, the fusion stage's)."""
    feeds = [Feed(spec.name, LatencyReport(facts={**(facts or {}), "stream": spec.name, "input": spec.input,
                                                  "output": spec.output}),
                  open_source=functools.partial(open_source, spec), open_sink=functools.partial(open_sink, spec))
             for spec in specs]
    run_feeds(feeds, backend, batch=batch, batch_wait_ms=batch_wait_ms, stop=stop, fusion=fusion, observer=observer)
    return [feed.report for feed in feeds]


def run_feeds(feeds: list[Feed], backend, *, batch: int = 1, batch_wait_ms: float | None = None,
              isolate: bool = True, stop: threading.Event | None = None, fusion: bool = False,
              observer: RunObserver | None = None) -> None:
    """Run `feeds` on one `backend` until every feed has ended, then finish each one's output, report and
    `frames` (the module docstring says what is kept). Raises the run's error, or with `isolate` false
    the first feed's, once every output is finished or removed."""
    if not feeds:
        return
    run = _Run(isolate, stop, observer)
    share = -(-batch // len(feeds))  # a feed's part of a batch: what a latest-policy feed keeps queued
    for feed in feeds:
        feed.history = stream_state(backend, fusion)
        feed.i420 = feed.history is None and getattr(backend, "takes_i420", False)
        feed.decoded, feed.restored = queue.Queue(maxsize=2 * share + 2), queue.Queue(maxsize=2 * batch + 2)
    wait = None if batch_wait_ms is None else batch_wait_ms / 1e3
    run.observer.started(feeds)
    readers = [_thread(run, _read, feed, share) for feed in feeds]
    others = [_thread(run, _engine, feeds, backend, batch, wait), *(_thread(run, _write, feed) for feed in feeds)]
    started = time.perf_counter()
    with _signals_stop(run):
        for thread in readers + others:
            thread.start()
        for thread in others:
            while thread.is_alive():
                thread.join(_POLL)
        grace = time.monotonic() + _READER_GRACE
        for thread in readers:
            thread.join(max(0.0, grace - time.monotonic()))
    wall_seconds = time.perf_counter() - started
    for feed in feeds:
        _finish(run, feed, wall_seconds)
    if run.error is not None:
        raise run.error
    failed = [feed.error for feed in feeds if feed.error is not None]
    if failed and not isolate:
        raise failed[0]


def _thread(run: _Run, stage, *args) -> threading.Thread:
    name = f"{stage.__name__.strip('_')} {getattr(args[0], 'name', '')}".strip()
    return threading.Thread(target=_guarded, args=(run, stage, *args), name=name, daemon=True)


def _guarded(run: _Run, stage, *args) -> None:
    try:
        stage(run, *args)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
        run.fail(exc)


def _read(run: _Run, feed: Feed, share: int) -> None:
    """Decode stage: the feed's frames into feed.decoded, then _END; timings["decode"] is the wait for each."""
    try:
        if feed.source is None:
            feed.source = feed.open_source()
        source = feed.source
        if feed.i420 and hasattr(source, "i420"):
            source.i420 = True
        if source.info.is_live and feed.report.max_records is None:
            feed.report.max_records = LIVE_RECORDS  # a feed that runs for months: memory stays flat
        frames, seen = iter(source), getattr(source, "reconnects", 0)
        latest = getattr(source, "policy", None) == "latest"
        while not (run.stop_reading.is_set() or run.abort.is_set() or feed.stopped.is_set()):
            start = time.perf_counter()
            frame = next(frames, _END)
            if frame is _END:
                break
            frame.timings.setdefault("decode", (time.perf_counter() - start) * 1e3)
            seen = mark_reconnect(frame, source, seen)  # a temporal model starts afresh after a reconnect
            frame.captured_at = frame.captured_at or time.monotonic()
            run.observer.decoded(feed, frame)
            if latest:
                _put_latest(feed.decoded, frame, source, share)  # a live feed: never queue stale frames
            elif not run.put(feed.decoded, frame):
                return
            run.hand()
    except Exception as exc:  # noqa: BLE001 - the run decides: stop all, or this feed alone
        run.feed_failed(feed, exc)
    finally:
        run.put(feed.decoded, _END)
        run.hand()


def _put_latest(out: queue.Queue, frame: DecodedFrame, source: FrameSource, keep: int) -> None:
    """Put `frame`, first dropping (and counting) the oldest queued frames beyond `keep`; a dropped frame's
    discontinuity (a reconnect) passes to `frame`, so the temporal state still resets."""
    while out.qsize() >= keep:
        try:
            stale = out.get_nowait()
            source.dropped += 1
            frame.discontinuity = frame.discontinuity or stale.discontinuity
        except queue.Empty:
            break
    out.put_nowait(frame)


def _engine(run: _Run, feeds: list[Feed], backend, batch: int, wait: float | None) -> None:
    """Restore stage: batches of ready frames across feeds until every feed has ended. Only a backend that
    runs asynchronously (CUDA double buffering: `asynchronous` true) keeps two batches in flight, so the
    upload of batch k+1 and the download of batch k-1 overlap the restore of batch k; a backend that
    finishes inside the call hands its frames on at once (holding them for the next batch would add a
    whole restore time to their latency)."""
    temporal = feeds[0].history is not None
    overlap = int(getattr(backend, "asynchronous", False) and not temporal)
    reading, in_flight = list(feeds), collections.deque()
    while reading and not run.abort.is_set():
        if all(feed.decoded.empty() for feed in reading):  # nothing to overlap with: hand out what is done
            if not _emit_all(run, in_flight):
                return
        for group in _by_shape(_take(run, reading, batch, wait, one_per_feed=temporal)):
            in_flight.append((group, _submit(backend, group, temporal)))
            if len(in_flight) > overlap and not _emit(run, *in_flight.popleft()):
                return
        if reading:
            reading.append(reading.pop(0))  # the next batch starts at the next feed
    if _emit_all(run, in_flight):
        for feed in feeds:
            run.put(feed.restored, _END)


def _take(run: _Run, reading: list[Feed], batch: int, wait: float | None,
          one_per_feed: bool) -> list[tuple[Feed, DecodedFrame]]:
    """Up to `batch` frames, round robin over the feeds still reading (a feed's _END removes it): waits for
    a first frame, then `wait` s more for the batch to fill (None: until it is full or the feeds end).
    one_per_feed: at most one frame of each feed (a temporal state needs frame k restored before k+1)."""
    taken: list[tuple[Feed, DecodedFrame]] = []
    deadline = None
    while reading and not run.abort.is_set():
        seen, got = run.handed(), False
        for feed in list(reading):
            if len(taken) >= batch or (one_per_feed and any(f is feed for f, _ in taken)):
                continue
            try:
                item = feed.decoded.get_nowait()
            except queue.Empty:
                continue
            if item is _END:
                reading.remove(feed)
            else:
                taken.append((feed, item))
                got = True
        if not reading or len(taken) >= (min(batch, len(reading)) if one_per_feed else batch):
            break
        if taken and deadline is None:
            deadline = time.monotonic() + (float("inf") if wait is None else wait)
        remaining = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
        if remaining <= 0:
            break
        if not got:
            run.wait_handed(seen, remaining)
    return taken


def _by_shape(taken: list[tuple[Feed, DecodedFrame]]) -> list[list[tuple[Feed, DecodedFrame]]]:
    """One backend call per frame size (and form: R'G'B', or I420 planes in one coding), in order. A feed whose
    frame size changes within the batch has its later frames in a later call, so every feed's frames stay in
    order."""
    groups: dict[tuple, list] = {}
    last: dict[Feed, tuple[int, tuple]] = {}  # feed -> (size changes so far, last size and form)
    for feed, frame in taken:
        form = (frame.image.shape, frame.ycbcr)
        changes, before = last.get(feed, (0, form))
        changes += before != form
        last[feed] = (changes, form)
        groups.setdefault((changes, form), []).append((feed, frame))
    return [groups[key] for key in sorted(groups, key=lambda key: key[0])]  # stable: first seen first


def _submit(backend, group: list[tuple[Feed, DecodedFrame]], temporal: bool):
    """Start restoring one same-size group: a Pending (asynchronous backends) or Done."""
    frames = [frame for _, frame in group]
    if temporal:  # each frame after its own feed's previous one
        images = restore_with_history(backend, frames, [feed.history for feed, _ in group], fuse=False)
        return Done(images, dict(backend.last_timings))
    images = np.stack([frame.image for frame in frames])
    if frames[0].ycbcr is not None:  # I420 planes: only a backend that takes them was asked for them
        return backend.submit(images, ycbcr=frames[0].ycbcr)
    submit = getattr(backend, "submit", None)
    return submit(images) if submit else Done(backend(images), dict(backend.last_timings))


def _emit(run: _Run, group: list[tuple[Feed, DecodedFrame]], pending) -> bool:
    """Wait for a submitted group and pass its frames to their feeds' writers with the stage timings."""
    images = pending.result()
    run.observer.restored(len(group), pending.timings)
    timings = {"batch": len(group), **pending.timings}  # a remote engine (runtime.cluster) says its own batch
    for (feed, frame), image in zip(group, images):
        frame.timings.update(timings)
        if not run.put(feed.restored, (image, frame)):
            return False
    return True


def _emit_all(run: _Run, in_flight: collections.deque) -> bool:
    while in_flight:
        if not _emit(run, *in_flight.popleft()):
            return False
    return True


def _write(run: _Run, feed: Feed) -> None:
    """Encode stage: the feed's restored frames into its output and its report."""
    try:
        while (item := run.get(feed.restored)) is not _END:
            image, frame = item
            if feed.sink is None:
                feed.sink = feed.open_sink(feed.source.info)
            _encode(run, feed, image, frame)
    except Exception as exc:  # noqa: BLE001 - the run decides: stop all, or this feed alone
        run.feed_failed(feed, exc, output=True)
        while run.get(feed.restored) is not _END:  # keep draining so the engine never blocks on this feed
            pass


def _encode(run: _Run, feed: Feed, image: np.ndarray, frame: DecodedFrame) -> None:
    """Fuse (a feed with a fusion stage), write one restored frame and record it: encode and end-to-end
    milliseconds, progress."""
    if feed.history is not None:
        image = fuse_restored(feed.history, image, frame)
    start = time.perf_counter()
    feed.sink.write(image, frame)
    frame.timings["encode"] = (time.perf_counter() - start) * 1e3
    frame.timings["end_to_end"] = (time.monotonic() - frame.captured_at) * 1e3
    feed.report.add(frame)
    run.observer.written(feed, frame)
    if feed.progress is not None:
        feed.progress.update(1)


def _finish(run: _Run, feed: Feed, wall_seconds: float) -> None:
    """Close the feed's source and output and complete its report."""
    report, source = feed.report, feed.source
    report.facts["reconnects"] = getattr(source, "reconnects", 0)
    if source is not None:
        report.skipped, report.dropped = source.skipped, source.dropped
        source.close()
    report.wall_seconds, report.interrupted = wall_seconds, run.interrupted
    report.resets = dict(feed.history.resets) if feed.history is not None else None
    _close_output(run, feed)
    report.facts["error"] = None if feed.error is None else _describe(feed.error)


def _close_output(run: _Run, feed: Feed) -> None:
    """Finish the output (cut short after an interruption or a failed input), or remove it when the run
    failed, the output itself failed or nothing was written (a broken file must not look complete)."""
    written = feed.report.frames
    try:
        if feed.sink is not None and run.error is None and not feed.output_failed and written:
            feed.frames = feed.sink.close(complete=feed.error is None and not run.interrupted)
        elif feed.sink is not None:
            feed.sink.abort()
    except Exception as exc:  # noqa: BLE001 - the feed's error (raised where the run is one feed)
        feed.error = feed.error or exc
    if not written and feed.error is None and run.error is None:
        feed.error = UserError("interrupted before any frame was written; no output was kept" if run.interrupted
                               else "the input holds no video frames that could be decoded; no output was written")


class _signals_stop:
    """While active, SIGINT/SIGTERM set the stop flags instead of raising (main thread only)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        self.run.signals += 1
        (self.run.stop_reading if self.run.signals == 1 else self.run.abort).set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
