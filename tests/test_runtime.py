"""The one runtime (streamrestore.runtime.pipeline) with in-memory feeds: one feed is the case N = 1 of several, so
both report the same facts; several feeds share engine calls, keep their order and fail alone."""
from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from streamrestore.backends.base import PassthroughBackend
from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.runtime.pipeline import run_pipeline, run_streams
from streamrestore.runtime.report import LatencyReport
from streamrestore.runtime.streams import StreamSpec


def _image(height: int, width: int, index: int) -> np.ndarray:
    return np.full((height, width, 3), index % 256, np.uint8)


class _Source:
    """In-memory frames of the given sizes; `live` paces them `interval` s apart with the latest-frame policy."""

    def __init__(self, sizes, *, live=False, interval=0.0, fail_after=None):
        self.sizes, self.interval, self.fail_after = sizes, interval, fail_after
        self.info = StreamInfo(width=sizes[0][1], height=sizes[0][0], time_base=Fraction(1, 25),
                               average_rate=Fraction(25), is_live=live, name="memory")
        self.policy = "latest" if live else None
        self.skipped = self.dropped = self.reconnects = 0
        self.closed = False

    def __iter__(self):
        for i, (h, w) in enumerate(self.sizes):
            if i == self.fail_after:
                raise UserError("memory: feed lost (a test source)")
            time.sleep(self.interval)
            yield DecodedFrame(_image(h, w, i), i, pts=i, time_base=self.info.time_base)

    def close(self):
        self.closed = True


class _Sink:
    def __init__(self, fail_at=None):
        self.frames, self.fail_at, self.state = [], fail_at, "open"

    def write(self, image, frame):
        if len(self.frames) == self.fail_at:
            raise UserError("out: disk full (a test sink)")
        assert image[0, 0, 0] == frame.index % 256
        self.frames.append(frame.index)

    def close(self, complete=True):
        self.state = "complete" if complete else "cut short"
        return len(self.frames)

    def abort(self):
        self.state = "removed"


class _Slow(PassthroughBackend):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def __call__(self, frames):
        time.sleep(self.seconds)
        return super().__call__(frames)


class _Deferred:
    """An asynchronous backend stand-in (CUDA double buffering): records the most batches in flight."""

    name, device, precision, model = "deferred", "cpu", "fp32", "identity"
    asynchronous = True

    def __init__(self):
        self.in_flight = self.max_in_flight = 0
        self.last_timings = {}

    def submit(self, frames):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        backend = self

        class Pending:
            timings = {"restore": 1.0}

            def result(self):
                time.sleep(0.02)
                backend.in_flight -= 1
                return frames

        return Pending()


def _streams(sources, sinks, backend=None, **options):
    specs = [StreamSpec(f"s{i}", f"in{i}", f"out{i}") for i in range(len(sources))]
    by_name = {spec.name: (source, sink) for spec, source, sink in zip(specs, sources, sinks)}

    def open_source(spec):
        source = by_name[spec.name][0]
        if isinstance(source, Exception):
            raise source
        return source

    return run_streams(specs, backend or PassthroughBackend(), open_source=open_source,
                       open_sink=lambda spec, info: by_name[spec.name][1], **options)


def test_one_feed_reports_the_facts_of_several():
    source, sink = _Source([(8, 8)] * 5), _Sink()
    report = LatencyReport(facts={"backend": "passthrough"})
    result = run_pipeline(source, PassthroughBackend(), sink, batch=2, report=report)
    assert result.frames == 5 and sink.state == "complete" and source.closed
    (several,) = _streams([_Source([(8, 8)] * 5)], [_Sink()], batch=2)
    one = report.summary()
    assert one["reconnects"] == several.summary()["reconnects"] == 0
    assert one["error"] is None and several.summary()["error"] is None
    assert set(several.summary()) - set(one) == {"stream", "input", "output"}


def test_feeds_share_engine_calls_and_each_keeps_its_order():
    sizes = [(8, 8)] * 3 + [(6, 10)] * 3 + [(8, 8)] * 3  # a size change inside a batch
    sinks = [_Sink(), _Sink(), _Sink()]
    reports = _streams([_Source(sizes), _Source([(8, 8)] * 9), _Source([(6, 10)] * 9)], sinks, batch=6,
                       batch_wait_ms=None)
    assert [sink.frames for sink in sinks] == [list(range(9))] * 3
    assert all(r.facts["error"] is None for r in reports) and all(s.state == "complete" for s in sinks)
    assert max(r["batch"] for r in reports[1].records) > 1  # frames of several feeds in one call


def test_one_feed_in_order_across_size_changes():
    sizes = [(8, 8), (6, 10), (8, 8), (8, 8), (6, 10), (6, 10), (8, 8)]
    sink = _Sink()
    assert run_pipeline(_Source(sizes), PassthroughBackend(), sink, batch=4).frames == len(sizes)
    assert sink.frames == list(range(len(sizes)))


def test_a_failing_feed_is_reported_and_the_others_carry_on():
    sinks = [_Sink(), _Sink(fail_at=3), _Sink(), _Sink()]
    sources = [_Source([(8, 8)] * 20), _Source([(8, 8)] * 20), _Source([(8, 8)] * 20, fail_after=4),
               UserError("in3: cannot open (a test source)")]
    reports = _streams(sources, sinks, batch=4)
    errors = [r.facts["error"] for r in reports]
    assert errors == [None, "out: disk full (a test sink)", "memory: feed lost (a test source)",
                      "in3: cannot open (a test source)"]
    assert sinks[0].frames == list(range(20)) and sinks[0].state == "complete"
    assert sinks[1].state == "removed"  # the output itself failed: nothing that looks complete is left
    assert sinks[2].frames == list(range(4)) and sinks[2].state == "cut short"  # what arrived is kept
    assert sinks[3].state == "open" and reports[3].frames == 0  # never opened


def test_a_failing_feed_stops_a_single_feed_run_and_removes_its_output():
    sink = _Sink()
    with pytest.raises(UserError, match="feed lost"):
        run_pipeline(_Source([(8, 8)] * 20, fail_after=4), PassthroughBackend(), sink, batch=2)
    assert sink.state == "removed"


def test_an_engine_error_removes_every_output_and_is_raised():
    sinks = [_Sink(), _Sink()]

    class Failing(PassthroughBackend):
        def __call__(self, frames):
            if all(sink.frames for sink in sinks):  # once both outputs hold frames
                raise RuntimeError("model exploded")
            return super().__call__(frames)

    with pytest.raises(RuntimeError, match="exploded"):
        _streams([_Source([(8, 8)] * 50), _Source([(8, 8)] * 50)], sinks, Failing(), batch=2)
    assert all(sink.frames for sink in sinks)  # both had written before the engine failed
    assert [s.state for s in sinks] == ["removed", "removed"]


def test_a_feed_without_frames_is_an_error():
    sinks = [_Sink(), _Sink()]
    reports = _streams([_Source([(8, 8)] * 3), _Source([(8, 8)] * 3, fail_after=0)], sinks, batch=2)
    assert reports[0].facts["error"] is None and "feed lost" in reports[1].facts["error"]
    empty = _Source([(8, 8)])
    empty.sizes = []
    with pytest.raises(UserError, match="no video frames"):
        run_pipeline(empty, PassthroughBackend(), sinks[1])


def test_asynchronous_backend_keeps_two_batches_in_flight_across_feeds():
    backend, sinks = _Deferred(), [_Sink(), _Sink()]
    _streams([_Source([(8, 8)] * 12), _Source([(8, 8)] * 12)], sinks, backend, batch=2, batch_wait_ms=None)
    assert backend.max_in_flight == 2 and backend.in_flight == 0
    assert [s.frames for s in sinks] == [list(range(12))] * 2


def test_latest_policy_drops_stale_frames_and_counts_them():
    source, sink = _Source([(8, 8)] * 40, live=True, interval=0.002), _Sink()
    report = LatencyReport()
    result = run_pipeline(source, _Slow(0.02), sink, batch=1, report=report)
    assert report.dropped == source.dropped > 0 and result.frames + report.dropped == 40
    assert sink.frames == sorted(sink.frames) and sink.frames[-1] == 39  # the newest frame always gets through
    assert report.max_records is not None  # a live feed's report keeps only the latest records


def test_stop_finishes_what_is_in_flight_and_cuts_the_outputs_short():
    stop, sinks = threading.Event(), [_Sink(), _Sink()]
    threading.Timer(0.2, stop.set).start()
    reports = _streams([_Source([(8, 8)] * 500, interval=0.005), _Source([(8, 8)] * 500, interval=0.005)], sinks,
                       batch=2, stop=stop)
    for sink, report in zip(sinks, reports):
        assert 0 < len(sink.frames) < 500 and sink.frames == list(range(len(sink.frames)))
        assert sink.state == "cut short" and report.interrupted and report.facts["error"] is None
