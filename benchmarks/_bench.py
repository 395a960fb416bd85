"""Measuring helpers for benchmarks/latency.py: test clips, peak memory, a paced camera stand-in,
and the four measurements (model only, file pipeline, naive baseline, several streams)."""
from __future__ import annotations

import io
import itertools
import os
import platform
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.io.video import VideoFileSink, VideoFileSource
from streamrestore.runtime.pipeline import run_pipeline
from streamrestore.runtime.report import LatencyReport

VTEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "vtest.avi"


def percentiles(values_ms, warmup: int = 0) -> dict:
    """p50/p99/max/mean of milliseconds, the first `warmup` values left out when enough remain."""
    values = np.asarray(values_ms[warmup:] if len(values_ms) > 2 * warmup else values_ms, dtype=np.float64)
    if not values.size:
        return {}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(p50, 2), "p99": round(p99, 2), "max": round(values.max(), 2),
            "mean": round(values.mean(), 2), "n": int(values.size)}


# ---- test clips -------------------------------------------------------------------------------

def make_clip(path: Path, width: int, height: int, frames: int, rate: int = 30) -> str:
    """An H.264 clip (x264 defaults, yuv420p) of `frames` frames: vtest.avi scaled to the size
    (real street content, looped), or moving noise texture when vtest.avi is not there."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.colorspace, stream.codec_context.color_range = 1, 1  # BT.709, limited
        for i, frame in enumerate(_content(width, height, frames)):
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return "vtest.avi scaled" if VTEST.is_file() else "synthetic texture"


def _content(width: int, height: int, frames: int):
    if VTEST.is_file():
        made = 0
        while made < frames:
            with av.open(str(VTEST)) as src:
                for frame in src.decode(video=0):
                    yield frame.reformat(width, height, format="yuv420p", interpolation="BILINEAR",
                                         dst_colorspace="ITU709", dst_color_range="MPEG")
                    made += 1
                    if made == frames:
                        return
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(base, 4, 0), 4, 1)
    for i in range(frames):
        image = np.roll(base, 3 * i, axis=1)[:height, :width]
        yield av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")


# ---- memory and machine -----------------------------------------------------------------------

class PeakMemory:
    """Peak host RSS (VmHWM, reset through /proc/self/clear_refs) and peak CUDA allocation."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:  # not Linux, or not allowed: the figure is the process's lifetime peak
            self.reset = False
        self.cuda = _cuda()
        if self.cuda:
            self.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self.host_mb = round(_vm_hwm_kb() / 1024, 1)
        self.gpu_mb = round(self.cuda.max_memory_allocated() / 2**20, 1) if self.cuda else None

    def figures(self) -> dict:
        return {"host_peak_mb": self.host_mb, "gpu_peak_mb": self.gpu_mb, "host_peak_reset": self.reset}


def _vm_hwm_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda if torch.cuda.is_available() else None


def machine() -> dict:
    """CPU model, cores, RAM, GPU (when present), OS."""
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    cuda = _cuda()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram, 1) if ram else None,
            "gpu": cuda.get_device_name(0) if cuda else None, "os": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


# ---- the measurements -------------------------------------------------------------------------

def model_only(backend, width: int, height: int, iters: int, warmup: int, batch: int = 1) -> dict:
    """Milliseconds per backend call on a (batch, H, W, 3) frame: p50 (median), p99."""
    frame = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    times = []
    for _ in range(warmup + iters):
        start = time.perf_counter()
        backend(frame)
        times.append((time.perf_counter() - start) * 1e3)
    return percentiles(times[warmup:])


def file_pipeline(clip: str, backend, out: Path, batch: int, warmup: int, fusion: bool = False) -> dict:
    """The product's threaded decode -> restore (-> fusion) -> encode pipeline over a clip: FPS and latencies."""
    source = VideoFileSource(clip)
    report = LatencyReport(warmup=warmup)
    run_pipeline(source, backend, VideoFileSink(str(out), source.info), batch=batch, report=report, fusion=fusion)
    out.unlink(missing_ok=True)
    return _pipeline_figures(report)


def _pipeline_figures(report: LatencyReport) -> dict:
    summary = report.summary()
    stages = summary["stages_ms"]
    return {"frames": summary["frames"], "fps": summary["throughput_fps"], "wall_s": summary["wall_seconds"],
            "dropped": summary["dropped_frames"], "end_to_end_ms": stages.get("end_to_end", {}),
            "stages_p50_ms": {k: v["p50"] for k, v in stages.items() if k != "end_to_end"},
            "end_to_end_samples_ms": [r["end_to_end"] for r in report.records]}


def naive_baseline(clip: str, backend, out: Path, warmup: int) -> dict:
    """Sequential decode, one frame through `backend`, encode; nothing overlaps."""
    source = VideoFileSource(clip)
    sink = VideoFileSink(str(out), source.info)
    frames, latencies = iter(source), []
    started = time.perf_counter()
    while True:
        start = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            break
        sink.write(backend(frame.image[None])[0], frame)
        latencies.append((time.perf_counter() - start) * 1e3)
    sink.close()
    wall = time.perf_counter() - started
    source.close()
    out.unlink(missing_ok=True)
    return {"frames": len(latencies), "fps": round(len(latencies) / wall, 3), "wall_s": round(wall, 3),
            "end_to_end_ms": percentiles(latencies, warmup), "end_to_end_samples_ms": [round(x, 3) for x in latencies]}


def driving(clip: str, backend, out: Path, seconds: float, rate: int, warmup: int, encoder: dict | None = None) -> dict:
    """Batch 1 over a camera stand-in paced at `rate` fps for `seconds`, latest-frame policy; `encoder`: the
    sink's preset / tune (default: the live default)."""
    feed = PacedFeed(clip, rate, seconds)
    report = LatencyReport(warmup=warmup)
    run_pipeline(feed, backend, VideoFileSink(str(out), feed.info, **(encoder or {})), batch=1, report=report)
    out.unlink(missing_ok=True)
    figures = _pipeline_figures(report)
    figures["frame_interval_ms"] = round(1e3 / rate, 2)
    figures["fits_frame_interval"] = bool(figures["end_to_end_ms"].get("p99", float("inf")) <= 1e3 / rate)
    return figures


class PacedFeed:
    """A live camera stand-in: `clip` looped and decoded at `rate` fps for `seconds`; a frame not
    taken before the next one arrives is dropped (latest-frame policy, also in the pipeline's
    queue). captured_at is the frame's tick, so decoding counts in the end-to-end latency."""

    policy = "latest"

    def __init__(self, clip: str, rate: int, seconds: float):
        probe = VideoFileSource(clip)
        info = probe.info
        probe.close()
        self.info = StreamInfo(info.width, info.height, time_base=Fraction(1, rate), average_rate=Fraction(rate),
                               is_live=True, colour=dict(info.colour), name=f"{clip} paced at {rate} fps",
                               pix_fmt=info.pix_fmt, codec=info.codec)
        self.clip, self.rate, self.seconds = clip, rate, seconds
        self.skipped = self.dropped = 0
        self.i420 = False  # passed on to the file source: frames as I420 planes (a backend that converts colour)
        self._latest: DecodedFrame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()

    def __iter__(self):
        producer = threading.Thread(target=self._produce, daemon=True, name="paced feed")
        producer.start()
        end = time.monotonic() + self.seconds
        try:
            for index in itertools.count():
                with self._cond:
                    if not self._cond.wait_for(lambda: self._latest is not None, timeout=30.0):
                        raise RuntimeError(f"{self.clip}: the paced feed produced no frame for 30 s")
                    frame, self._latest = self._latest, None
                if index and frame.captured_at > end:
                    return
                frame.index = index
                yield frame
        finally:  # the producer closes its file before the feed ends: no decoder left running at exit
            self._stop.set()
            producer.join()

    def _produce(self) -> None:
        tick, interval, due = 0, 1.0 / self.rate, time.monotonic()
        while not self._stop.is_set():
            source = VideoFileSource(self.clip)
            source.i420 = self.i420
            for decoded in _timed(source):
                if self._stop.is_set():
                    break
                captured, (decoded_frame, decode_ms) = decoded
                frame = DecodedFrame(decoded_frame.image, tick, tick, self.info.time_base, captured_at=captured,
                                     timings={"decode": decode_ms}, ycbcr=decoded_frame.ycbcr)
                with self._cond:
                    self.dropped += self._latest is not None
                    self._latest = frame
                    self._cond.notify_all()
                tick, due = tick + 1, max(due + interval, time.monotonic())
                time.sleep(max(0.0, due - time.monotonic()))
            source.close()

    def close(self) -> None:
        self._stop.set()


def _timed(source: VideoFileSource):
    """(tick time, (frame, decode ms)) per frame: the tick is taken before the frame is decoded."""
    frames = iter(source)
    while True:
        captured = time.monotonic()
        frame = next(frames, None)
        if frame is None:
            return
        yield captured, (frame, (time.monotonic() - captured) * 1e3)


def surveillance(clip: str, backend, out_dir: Path, streams: int, batch: int, batch_wait_ms: float,
                 warmup: int, encoder: dict | None = None) -> dict:
    """`streams` feeds of `clip` on one backend (streamrestore.runtime.pipeline.run_streams): aggregate and per-stream FPS.
    `encoder`: the sinks' preset and tune (the profile's)."""
    from streamrestore.runtime.pipeline import run_streams
    from streamrestore.runtime.streams import StreamSpec

    specs = [StreamSpec(f"stream{i + 1}", clip, str(out_dir / f"stream{i + 1}.mp4")) for i in range(streams)]
    started = time.perf_counter()
    reports = run_streams(specs, backend, open_source=lambda s: VideoFileSource(s.input),
                          open_sink=lambda s, info: VideoFileSink(s.output, info, **(encoder or {})), batch=batch,
                          batch_wait_ms=batch_wait_ms)
    wall = time.perf_counter() - started
    for spec in specs:
        Path(spec.output).unlink(missing_ok=True)
    for report in reports:
        report.warmup = warmup
    per_stream = [r.summary()["throughput_fps"] for r in reports]
    latencies = [rec["end_to_end"] for r in reports for rec in r.records[warmup:]] or \
        [rec["end_to_end"] for r in reports for rec in r.records]
    errors = [r.facts["error"] for r in reports if r.facts.get("error")]
    total = sum(len(r.records) for r in reports)
    return {"streams": streams, "batch": batch, "batch_wait_ms": batch_wait_ms, "frames": total,
            "wall_s": round(wall, 3), "aggregate_fps": round(total / wall, 3), "per_stream_fps": per_stream,
            "per_stream_fps_min": min(per_stream), "end_to_end_ms": percentiles(latencies),
            "end_to_end_samples_ms": latencies,
            "batch_sizes": sorted({rec["batch"] for r in reports for rec in r.records}), "errors": errors}


def encoder_speed(clip: str, preset: str, tune: str | None) -> dict:
    """libx264 alone (crf 23) on the clip's decoded yuv420p frames, into memory: wall and CPU
    milliseconds (all encoder threads) per frame, the flush of its look-ahead included, and size."""
    with av.open(clip) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        rate = stream.average_rate or Fraction(30)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as out:
        options = {"preset": preset, **({"tune": tune} if tune else {})}
        video = out.add_stream("libx264", rate=rate, options=options)
        video.width, video.height, video.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        wall, cpu = time.perf_counter(), time.process_time()
        for index, frame in enumerate(frames):
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(frames)
    return {"preset": preset, "tune": tune, "frames": n, "wall_ms_per_frame": round(wall * 1e3 / n, 2),
            "cpu_ms_per_frame": round(cpu * 1e3 / n, 2), "kbytes_per_frame": round(len(buffer.getvalue()) / 1e3 / n, 2)}
