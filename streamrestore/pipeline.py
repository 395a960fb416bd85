"""decode -> restore -> encode, one thread per stage joined by bounded queues (DESIGN.md section 3).

The queues hold a few batches at most, so memory stays flat and a slow stage pushes back. The
restore stage stacks up to `batch` frames of one size per backend call (batch 1: latency mode);
a stream that keeps a temporal state (a video model, the fusion stage: streamrestore.temporal) is
restored one frame at a time, each after the one before, and the report counts the state's resets.
SIGINT/SIGTERM stop the reading; frames already in flight are still restored and written, and the
sink is finished so what it holds is a valid file. A second signal stops the stages at once (the
sink is still finished). An error in any stage stops all of them and removes the partial output.
"""
from __future__ import annotations

import collections
import itertools
import queue
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from streamrestore.backends.base import Done
from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, FrameSink, FrameSource
from streamrestore.report import LIVE_RECORDS, LatencyReport
from streamrestore.temporal import StreamHistory, mark_reconnect, restore_with_history, stream_state

_END = object()  # end of stream marker passed down the queues
_POLL = 0.1  # seconds a blocked stage waits before checking for a stop


@dataclass
class RunResult:
    frames: int  # frames in the finished output
    interrupted: bool
    report: LatencyReport


class _State:
    """What the stages share: the stop flags and the first error."""

    def __init__(self) -> None:
        self.stop_reading = threading.Event()  # first signal: read no more, finish the rest
        self.abort = threading.Event()  # error or second signal: every stage stops now
        self.error: BaseException | None = None
        self.signals = 0

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.abort.set()

    def put(self, q: queue.Queue, item) -> bool:
        while not self.abort.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                pass
        return False

    def get(self, q: queue.Queue, block: bool = True):
        while not self.abort.is_set():
            try:
                return q.get(timeout=_POLL) if block else q.get_nowait()
            except queue.Empty:
                if not block:
                    return None
        return _END


def run_pipeline(source: FrameSource, backend, sink: FrameSink, *, batch: int = 1,
                 progress=None, report: LatencyReport | None = None, fusion: bool = False) -> RunResult:
    """Restore every frame of `source` with `backend` into `sink`; `progress.update(1)` per frame.
    fusion: run the motion-compensated recursive fusion stage after the model (streamrestore.fusion)."""
    report = report or LatencyReport()
    if source.info.is_live and report.max_records is None:
        report.max_records = LIVE_RECORDS  # a feed that runs for months: memory stays flat
    state = _State()
    decoded: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    restored: queue.Queue = queue.Queue(maxsize=2 * batch + 2)
    history = stream_state(backend, fusion)
    stages = [(_decode_stage, (source, decoded, batch)),
              (_restore_stage, (backend, decoded, restored, batch, source.info.is_live, history)),
              (_encode_stage, (sink, restored, report, progress))]
    threads = [threading.Thread(target=_guarded, args=(state, fn, *args), name=fn.__name__, daemon=True)
               for fn, args in stages]
    started = time.perf_counter()
    with _signals_stop(state):
        for thread in threads:
            thread.start()
        while threads[1].is_alive() or threads[2].is_alive():
            threads[2].join(_POLL)
        threads[0].join(2.0)  # a live source blocked in a read is left behind (daemon thread)
    report.wall_seconds = time.perf_counter() - started
    report.skipped, report.dropped = source.skipped, source.dropped
    report.resets = dict(history.resets) if history is not None else None
    report.interrupted = state.signals > 0
    source.close()
    return RunResult(_finish(sink, state, report), report.interrupted, report)


def _finish(sink: FrameSink, state: _State, report: LatencyReport) -> int:
    """Finish the sink (or remove it on error or when nothing was written); frames it holds."""
    if state.error is not None or not report.records:
        sink.abort()
        if state.error is not None:
            raise state.error
        if report.interrupted:
            raise UserError("interrupted before any frame was written; no output was kept")
        raise UserError("the input holds no video frames that could be decoded; no output was written")
    return sink.close(complete=not report.interrupted)


def _guarded(state: _State, stage, *args) -> None:
    try:
        stage(state, *args)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
        state.fail(exc)


def _decode_stage(state: _State, source: FrameSource, out: queue.Queue, batch: int) -> None:
    frames = iter(source)
    seen = getattr(source, "reconnects", 0)
    while not state.stop_reading.is_set() and not state.abort.is_set():
        start = time.perf_counter()
        frame = next(frames, _END)
        if frame is _END:
            break
        frame.timings.setdefault("decode", (time.perf_counter() - start) * 1e3)
        seen = mark_reconnect(frame, source, seen)  # a temporal model starts afresh after a reconnect
        frame.captured_at = frame.captured_at or time.monotonic()
        if getattr(source, "policy", None) == "latest":
            _put_latest(out, frame, source, batch)  # a live feed: never queue stale frames behind restore
        elif not state.put(out, frame):
            return
    state.put(out, _END)


def _put_latest(out: queue.Queue, frame: DecodedFrame, source: FrameSource, keep: int) -> None:
    """Put `frame`, first dropping (and counting) the oldest queued frames beyond `keep`."""
    while out.qsize() >= keep:
        try:
            out.get_nowait()
            source.dropped += 1
        except queue.Empty:
            break
    out.put_nowait(frame)


def _restore_stage(state: _State, backend, inp: queue.Queue, out: queue.Queue, batch: int, live: bool,
                   history: StreamHistory | None) -> None:
    """Batches go to the backend. Only a backend that runs asynchronously (CUDA double buffering:
    `asynchronous` true) keeps two in flight, so the upload of batch k+1 and the download of batch
    k-1 overlap the restore of batch k; a backend that finishes inside the call hands its frames on
    at once (holding them for the next batch would add a whole restore time to their latency)."""
    overlap = getattr(backend, "asynchronous", False) and history is None
    in_flight: collections.deque = collections.deque()
    ended = False
    while not ended:
        if inp.empty():  # nothing to overlap with: hand out what is in flight before waiting
            while in_flight:
                if not _emit(state, out, *in_flight.popleft()):
                    return
        frames, ended = _take_batch(state, inp, batch, block=not live)
        for group in _backend_calls(frames, history is not None):
            in_flight.append((group, _submit(backend, group, history)))
            if len(in_flight) > int(overlap) and not _emit(state, out, *in_flight.popleft()):
                return
    while in_flight:
        if not _emit(state, out, *in_flight.popleft()):
            return
    state.put(out, _END)


def _backend_calls(frames: list[DecodedFrame], temporal: bool) -> list[list[DecodedFrame]]:
    """Runs of same-size frames, one backend call each; single frames when the stream keeps a state
    (each frame is restored, and fused, after the one before it)."""
    if temporal:
        return [[frame] for frame in frames]
    return [list(group) for _, group in itertools.groupby(frames, key=lambda f: f.image.shape)]


def _submit(backend, group: list[DecodedFrame], history: StreamHistory | None):
    if history is not None:
        images = restore_with_history(backend, group, [history])
        return Done(images, dict(backend.last_timings))
    images = np.stack([f.image for f in group])
    submit = getattr(backend, "submit", None)
    return submit(images) if submit else Done(backend(images), dict(backend.last_timings))


def _emit(state: _State, out: queue.Queue, group: list[DecodedFrame], pending) -> bool:
    """Wait for a submitted batch and pass its frames on with their stage timings."""
    images = pending.result()
    timings = {**pending.timings, "batch": len(group)}
    for frame, image in zip(group, images):
        frame.timings.update(timings)
        if not state.put(out, (image, frame)):
            return False
    return True


def _take_batch(state: _State, inp: queue.Queue, size: int, block: bool) -> tuple[list[DecodedFrame], bool]:
    """Up to `size` frames: waits for the first; for live sources takes only what is ready."""
    frames: list[DecodedFrame] = []
    while len(frames) < size:
        item = state.get(inp, block=block or not frames)
        if item is None:
            break
        if item is _END:
            return frames, True
        frames.append(item)
    return frames, False


def _encode_stage(state: _State, sink: FrameSink, inp: queue.Queue, report: LatencyReport, progress) -> None:
    while (item := state.get(inp)) is not _END:
        image, frame = item
        start = time.perf_counter()
        sink.write(image, frame)
        frame.timings["encode"] = (time.perf_counter() - start) * 1e3
        frame.timings["end_to_end"] = (time.monotonic() - frame.captured_at) * 1e3
        report.add(frame)
        if progress is not None:
            progress.update(1)


class _signals_stop:
    """While active, SIGINT/SIGTERM set the stop flags instead of raising (main thread only)."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        self.state.signals += 1
        (self.state.stop_reading if self.state.signals == 1 else self.state.abort).set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
