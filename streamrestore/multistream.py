"""Several feeds on one engine (`streamrestore run --streams streams.yaml`).

One reader thread per feed fills that feed's small queue (its live policy already dropped what is
stale); the engine loop takes the ready frames of all feeds, up to `batch`, waiting at most
`batch_wait_ms` to fill a batch, and restores each same-size group in one backend call; one
writer thread per feed encodes into that feed's own output and report. A feed that fails (cannot
connect, reconnects exhausted, bad output) is closed and reported; the others carry on.

streams.yaml:

    streams:
      - name: front                       # optional, defaults to stream1, stream2, ...
        input: rtsp://cam1:8554/live
        output: front.mp4                 # file or rtsp:// URL
        live_policy: latest               # optional: latest | all
        reconnect: forever                # optional: N | forever
        segment_time: 60                  # optional: file output in segments
        report: front.json                # optional: this feed's latency report
"""
from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import yaml

from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, FrameSink, FrameSource, StreamInfo
from streamrestore.io import is_live
from streamrestore.report import LIVE_RECORDS, LatencyReport
from streamrestore.temporal import StreamHistory, mark_reconnect, restore_with_history, stream_state

log = logging.getLogger("streamrestore.multistream")
_END = object()
_KEYS = {"name", "input", "output", "live_policy", "reconnect", "segment_time", "report"}


@dataclass
class StreamSpec:
    name: str
    input: str
    output: str
    live_policy: str | None = None
    reconnect: str | None = None
    segment_time: float | None = None
    report: str | None = None


def load_streams(path: str) -> list[StreamSpec]:
    """Parse streams.yaml (see the module docstring); UserError names the bad entry."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check the --streams path") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file (byte {exc.start} is not UTF-8); --streams takes a YAML file "
                        "like streams.yaml in the README") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = data.get("streams") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: needs a non-empty 'streams:' list of {{input, output}} entries")
    specs = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not {"input", "output"} <= entry.keys() or entry.keys() - _KEYS:
            raise UserError(f"{path}: stream {number} needs 'input' and 'output' and only the keys "
                            f"{', '.join(sorted(_KEYS))}")
        specs.append(_checked(path, StreamSpec(**{"name": f"stream{number}", **{k: entry[k] for k in entry}})))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: stream names must be unique (got {', '.join(names)})")
    return specs


def _checked(path: str, spec: StreamSpec) -> StreamSpec:
    """The entry's values checked as the command-line options are (--reconnect, --live-policy, --segment-time)."""
    from streamrestore.io.rtsp import LIVE_POLICIES
    from streamrestore.options import attempts_or_forever, positive_float

    where = f"{path}: stream {spec.name}"
    for key in ("name", "input", "output", "report"):
        value = getattr(spec, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(spec, key, value := str(value))
        if not isinstance(value, str) and not (key == "report" and value is None):  # '' is the write guard's
            raise UserError(f"{where}: {key} {value!r}: give a file name or URL")
    if spec.live_policy is not None and spec.live_policy not in LIVE_POLICIES:
        raise UserError(f"{where}: live_policy {spec.live_policy!r}: use one of {', '.join(LIVE_POLICIES)}")
    for key, check in (("reconnect", attempts_or_forever), ("segment_time", positive_float)):
        value = getattr(spec, key)
        try:
            setattr(spec, key, None if value is None else check(key)(str(value)))
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{where}: {exc}") from None
    return spec


@dataclass
class _Feed:
    """One stream's state, shared by its reader, the engine and its writer."""

    spec: StreamSpec
    report: LatencyReport
    frames: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=4))
    restored: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=16))
    source: FrameSource | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)  # no more frames from the reader
    stopped: threading.Event = field(default_factory=threading.Event)  # the writer failed: read no more
    history: StreamHistory | None = None  # the temporal state of this feed (temporal model or fusion), else None


def run_streams(specs: list[StreamSpec], backend, *, open_source: Callable[[StreamSpec], FrameSource],
                open_sink: Callable[[StreamSpec, StreamInfo], FrameSink], batch: int = 8,
                batch_wait_ms: float = 30.0, facts: dict | None = None,
                stop: threading.Event | None = None, fusion: bool = False) -> list[LatencyReport]:
    """Restore every feed with one `backend`; returns one report per feed (facts hold its error).
    Each feed keeps its own temporal state (a temporal model's previous frame, the fusion stage's)."""
    stop = stop or threading.Event()
    feeds = [_Feed(spec, LatencyReport(facts={**(facts or {}), "stream": spec.name, "input": spec.input,
                                              "output": spec.output},
                                       max_records=LIVE_RECORDS if is_live(str(spec.input)) else None),
                   history=stream_state(backend, fusion))
             for spec in specs]
    threads = []
    for feed in feeds:
        for target, args in ((_read, (feed, open_source, stop)), (_write, (feed, open_sink, stop))):
            threads.append(threading.Thread(target=target, args=args, daemon=True,
                                            name=f"{target.__name__} {feed.spec.name}"))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        _engine(feeds, backend, batch, batch_wait_ms / 1e3, stop)
    except KeyboardInterrupt:
        stop.set()
    for feed in feeds:
        _put(feed.restored, _END, stop, force=True)
    for thread in threads:
        thread.join(timeout=10.0)
    for feed in feeds:
        _finish_report(feed, time.perf_counter() - started)
    return [feed.report for feed in feeds]


def _read(feed: _Feed, open_source, stop: threading.Event) -> None:
    try:
        feed.source = open_source(feed.spec)
        seen = getattr(feed.source, "reconnects", 0)
        for frame in feed.source:
            frame.captured_at = frame.captured_at or time.monotonic()
            seen = mark_reconnect(frame, feed.source, seen)  # a temporal model starts afresh
            if feed.stopped.is_set() or not _put(feed.frames, frame, stop):
                break
    except Exception as exc:  # noqa: BLE001 - one feed failing must not stop the others
        feed.error = str(exc) if isinstance(exc, UserError) else f"{exc.__class__.__name__}: {exc}"
        log.error("%s: %s", feed.spec.name, feed.error)
    finally:
        feed.done.set()


def _engine(feeds: list[_Feed], backend, batch: int, wait: float, stop: threading.Event) -> None:
    """Batch ready frames across feeds until every feed has ended."""
    while not stop.is_set():
        live = [f for f in feeds if not (f.done.is_set() and f.frames.empty())]
        if not live:
            return
        temporal = feeds[0].history is not None
        taken = _take(live, batch, wait, one_per_feed=temporal)
        shapes: dict[tuple, list[tuple[_Feed, DecodedFrame]]] = {}
        for feed, frame in taken:
            shapes.setdefault(frame.image.shape, []).append((feed, frame))
        for group in shapes.values():
            if temporal:  # each frame after its own feed's previous one
                images = restore_with_history(backend, [f for _, f in group], [feed.history for feed, _ in group])
            else:
                images = backend(np.stack([frame.image for _, frame in group]))
            timings = {**backend.last_timings, "batch": len(group)}
            for (feed, frame), image in zip(group, images):
                frame.timings.update(timings)
                _put(feed.restored, (image, frame), stop)


def _take(feeds: list[_Feed], batch: int, wait: float, one_per_feed: bool = False) -> list[tuple[_Feed, DecodedFrame]]:
    """Up to `batch` frames, round robin over the feeds; waits for a first one, then `wait` s more.
    one_per_feed: at most one frame of each feed (a temporal model needs frame k restored before k+1)."""
    taken: list[tuple[_Feed, DecodedFrame]] = []
    deadline = None
    while len(taken) < min(batch, len(feeds) if one_per_feed else batch):
        got = False
        for feed in feeds:
            if len(taken) < batch and not (one_per_feed and any(f is feed for f, _ in taken)):
                try:
                    taken.append((feed, feed.frames.get_nowait()))
                    got = True
                except queue.Empty:
                    pass
        if taken and deadline is None:
            deadline = time.monotonic() + wait
        if deadline is not None and time.monotonic() >= deadline:
            break
        if not got:
            if not taken and all(f.done.is_set() and f.frames.empty() for f in feeds):
                break
            time.sleep(0.002)
    return taken


def _write(feed: _Feed, open_sink, stop: threading.Event) -> None:
    sink: FrameSink | None = None
    failed = False  # this feed's output itself failed
    try:
        while (item := feed.restored.get()) is not _END:
            image, frame = item
            if sink is None:
                sink = open_sink(feed.spec, feed.source.info)
            start = time.perf_counter()
            sink.write(image, frame)
            frame.timings["encode"] = (time.perf_counter() - start) * 1e3
            frame.timings["end_to_end"] = (time.monotonic() - frame.captured_at) * 1e3
            feed.report.add(frame)
    except Exception as exc:  # noqa: BLE001 - this feed's output failed; the others carry on
        feed.error = str(exc) if isinstance(exc, UserError) else f"{exc.__class__.__name__}: {exc}"
        log.error("%s: %s", feed.spec.name, feed.error)
        stop_feed(feed)
        failed = True
        while feed.restored.get() is not _END:  # keep draining so the engine never blocks on us
            pass
    finally:
        if sink is not None:
            _close_sink(feed, sink, keep=not failed)


def stop_feed(feed: _Feed) -> None:
    """Called by the writer: the reader stops at its next frame. Closing the source here is safe from this
    thread (a file source waits for the packet being decoded; a live one only signals its own threads)
    and wakes a reader waiting for a live frame."""
    feed.stopped.set()
    if feed.source is not None:
        feed.source.close()


def _close_sink(feed: _Feed, sink: FrameSink, keep: bool = True) -> None:
    """Finish the output (cut short if the feed failed), or remove it when nothing was written or the output
    itself failed (a broken file must not be left looking complete)."""
    try:
        if keep and feed.report.records:
            sink.close(complete=feed.error is None)
        else:
            sink.abort()
    except Exception as exc:  # noqa: BLE001
        feed.error = feed.error or f"closing {feed.spec.output} failed: {exc}"


def _put(q: queue.Queue, item, stop: threading.Event, force: bool = False) -> bool:
    while force or not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def _finish_report(feed: _Feed, wall_seconds: float) -> None:
    report, source = feed.report, feed.source
    report.wall_seconds = wall_seconds
    if source is not None:
        report.skipped, report.dropped = source.skipped, source.dropped
        report.facts["reconnects"] = getattr(source, "reconnects", 0)
        source.close()
    report.resets = dict(feed.history.resets) if feed.history is not None else None
    report.facts["error"] = feed.error
    if feed.spec.report:
        report.write_json(feed.spec.report)


def check_outputs(args, specs: list[StreamSpec]) -> None:
    """Refuse the run before any feed starts when a feed's output or report would destroy a file or
    is written by another feed (the guard of streamrestore.outputs)."""
    from streamrestore.outputs import Read, Write, check_writes, weights_reads

    writes, reads = [], [Read("the --streams file", args.streams), *weights_reads(args.weights)]
    for spec in specs:
        where = f"--streams {args.streams} [{spec.name}]"
        writes += [Write(f"{where} output", "" if spec.output is None else str(spec.output), frames=True,
                         segmented=(spec.segment_time or args.segment_time) is not None),
                   Write(f"{where} report", None if spec.report is None else str(spec.report))]
        reads.append(Read(f"the input of [{spec.name}]", str(spec.input)))
    check_writes(writes, reads, overwrite=args.overwrite)


def run_command(args, specs: list[StreamSpec], backend, facts: dict) -> int:
    """`streamrestore run --streams streams.yaml`: 0 when every feed ran cleanly, else 1."""
    from streamrestore import io
    from streamrestore.profiles import live_source_options, open_output

    def open_source(spec: StreamSpec) -> FrameSource:
        return io.open_source(spec.input, **live_source_options(args, spec.input, spec.live_policy,
                                                                  None if spec.reconnect is None else str(spec.reconnect)))

    def open_sink(spec: StreamSpec, info: StreamInfo) -> FrameSink:
        return open_output(lambda p, i: io.open_sink(p, i, codec=args.codec, crf=args.crf, preset=args.preset,
                                                    tune=args.tune), spec.output, info,
                           spec.segment_time or args.segment_time)

    reports = run_streams(specs, backend, open_source=open_source, open_sink=open_sink, batch=args.batch,
                          batch_wait_ms=args.batch_wait_ms, facts=facts, fusion=args.temporal)
    failed = 0
    for spec, report in zip(specs, reports):
        if not args.quiet:
            print(f"[{spec.name}] {spec.input} -> {spec.output}\n{report.table()}")
        if report.facts.get("error"):
            failed += 1
            print(f"streamrestore: error: [{spec.name}] {report.facts['error']}", file=sys.stderr)
    return 1 if failed else 0
