"""The threaded pipeline with the identity backend: order, batching, report, errors, images."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from media import make_clip, make_images, probe
from streamrestore.backends.base import PassthroughBackend
from streamrestore.errors import UserError
from streamrestore.io import open_sink, open_source
from streamrestore.runtime.pipeline import run_pipeline
from streamrestore.runtime.report import STAGES, LatencyReport


class _Failing(PassthroughBackend):
    takes_i420 = False  # a model backend: frames come as RGB through __call__

    def __call__(self, frames):
        raise RuntimeError("model exploded")


@pytest.mark.parametrize("batch", [1, 4])
def test_all_frames_in_order_with_report(tmp_path, batch):
    src = make_clip(tmp_path / "in.mp4", frames=10, vfr=True)
    source = open_source(str(src))
    sink = open_sink(str(tmp_path / "out.mp4"), source.info, source=str(src))
    report = LatencyReport(facts={"backend": "passthrough"}, warmup=2)
    result = run_pipeline(source, PassthroughBackend(), sink, batch=batch, report=report)
    assert result.frames == 10 and not result.interrupted
    assert [r["index"] for r in report.records] == list(range(10))
    assert max(r["batch"] for r in report.records) <= batch
    assert probe(tmp_path / "out.mp4")["pts"] == probe(src)["pts"]
    summary = report.summary()
    assert summary["frames"] == 10 and summary["throughput_fps"] > 0
    assert set(summary["stages_ms"]) == set(STAGES)
    assert set(summary["stages_ms"]["end_to_end"]) == {"p50", "p90", "p99", "max", "mean"}
    report.write_json(str(tmp_path / "r.json"))
    assert len(json.loads((tmp_path / "r.json").read_text())["frames"]) == 10


def test_backend_error_removes_output(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=6, audio=False)
    source = open_source(str(src))
    sink = open_sink(str(tmp_path / "out.mp4"), source.info)
    with pytest.raises(RuntimeError, match="exploded"):
        run_pipeline(source, _Failing(), sink, batch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_image_folder_keeps_names_and_sizes(tmp_path):
    inputs = make_images(tmp_path / "in", count=4, width=33, height=25)
    source = open_source(str(tmp_path / "in"))
    sink = open_sink(str(tmp_path / "out"), source.info)
    assert run_pipeline(source, PassthroughBackend(), sink, batch=3).frames == 4
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == [p.name for p in inputs]
    import cv2

    for a, b in zip(inputs, outputs):
        assert np.array_equal(cv2.imread(str(a)), cv2.imread(str(b)))


def test_zero_frame_video_is_a_user_error(tmp_path):
    import av

    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
    with pytest.raises(UserError):
        source = open_source(str(path))
        sink = open_sink(str(tmp_path / "out.mp4"), source.info)
        run_pipeline(source, PassthroughBackend(), sink)
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


class _Deferred:
    """An asynchronous backend stand-in (like CUDA double buffering): submit returns at once and
    result() finishes the work; records how many batches were in flight at most."""

    name, device, precision, model = "deferred", "cpu", "fp32", "identity+1"
    asynchronous = True

    def __init__(self):
        self.in_flight = self.max_in_flight = 0
        self.last_timings = {"upload": 0.0, "restore": 0.0, "download": 0.0}

    def submit(self, frames):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        backend = self

        class Pending:
            timings = {"upload": 1.0, "restore": 2.0, "download": 3.0}

            def result(self):
                time.sleep(0.05)  # slower than decoding, so the next batch is ready to overlap
                backend.in_flight -= 1
                return frames // 2 * 2  # a visible change: every level made even

        return Pending()


def test_submitting_backend_keeps_two_batches_in_flight_and_order(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=12, audio=False)
    source = open_source(str(src))
    sink = open_sink(str(tmp_path / "out.mp4"), source.info)
    backend = _Deferred()
    report = LatencyReport(facts={"backend": "deferred"}, warmup=0)
    result = run_pipeline(source, backend, sink, batch=2, report=report)
    assert result.frames == 12
    assert [r["index"] for r in report.records] == list(range(12))
    assert backend.max_in_flight == 2 and backend.in_flight == 0
    assert all(r["upload"] == 1.0 and r["download"] == 3.0 for r in report.records)


class _Synchronous(PassthroughBackend):
    """A backend that finishes inside the call (like onnxruntime or torch on the CPU). Before it
    restores a batch it waits (up to 2 s) until every earlier batch has been written: a pipeline
    that held finished frames back for the next batch would make every wait run out."""

    takes_i420 = False  # a model backend: frames come as RGB through __call__

    def __init__(self, sink):
        super().__init__()
        self.sink, self.calls, self.late = sink, 0, 0

    def __call__(self, frames):
        deadline = time.monotonic() + 2.0
        while self.sink.written < self.calls and time.monotonic() < deadline:
            time.sleep(0.005)
        self.late += self.sink.written < self.calls
        self.calls += len(frames)
        return frames


class _CountingSink:
    def __init__(self):
        self.written = 0

    def write(self, image, frame):
        self.written += 1

    def close(self, complete=True):
        return self.written

    def abort(self):
        pass


def test_synchronous_backend_hands_frames_on_at_once(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=10, audio=False)
    sink = _CountingSink()
    backend = _Synchronous(sink)
    result = run_pipeline(open_source(str(src)), backend, sink, batch=1)
    assert result.frames == 10 and backend.calls == 10
    assert backend.late == 0, f"{backend.late} of 10 batches found the previous one still held back"


def _timed_frame(index: int, rng: np.random.Generator):
    from fractions import Fraction

    from streamrestore.io.base import DecodedFrame

    timings = {"decode": rng.gamma(2.0, 1.5), "restore": rng.gamma(4.0, 10.0), "encode": rng.gamma(2.0, 2.0),
               "end_to_end": rng.gamma(5.0, 12.0)}
    return DecodedFrame(np.empty(0), index, pts=index * 6000, time_base=Fraction(1, 90000), timings=timings)


def test_a_live_report_keeps_the_latest_records_and_summarises_every_frame():
    """A feed that runs for months: the latest `max_records` records, a summary over all frames (percentiles
    within 2 % of the exact ones, mean and max exact), and no memory growth once full (issue 14: RSS crept
    ~46 MB/hour on a 15 fps feed, the per-frame records)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    frames = [_timed_frame(i, rng) for i in range(6000)]
    capped, full = LatencyReport(max_records=500, warmup=5), LatencyReport(warmup=5)
    for frame in frames:
        full.add(frame)
    tracemalloc.start()
    for frame in frames[:1000]:
        capped.add(frame)
    grown = tracemalloc.get_traced_memory()[0]
    for frame in frames[1000:]:
        capped.add(frame)
    growth = tracemalloc.get_traced_memory()[0] - grown
    tracemalloc.stop()
    assert growth < 20_000, f"{growth} bytes more for 5000 more frames"  # the records alone took ~730 bytes each
    assert len(capped.records) == 500 and [r["index"] for r in capped.records] == list(range(5500, 6000))
    approx, exact = capped.summary(), full.summary()
    assert approx["frames"] == exact["frames"] == 6000 and approx["frames_in_report"] == 500
    for stage in ("decode", "restore", "encode", "end_to_end"):
        a, e = approx["stages_ms"][stage], exact["stages_ms"][stage]
        assert a["max"] == e["max"] and abs(a["mean"] - e["mean"]) < 1e-3 * e["mean"] + 1e-3, stage
        for q in ("p50", "p90", "p99"):
            assert abs(a[q] - e[q]) <= 0.02 * e[q], (stage, q, a[q], e[q])
    assert approx["stages_ms"]["upload"]["p50"] == 0.0  # stages not timed (0 ms on the CPU) stay 0
