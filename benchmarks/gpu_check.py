"""The CUDA engine checked and measured in one call on a GPU machine (issue 17, part B).

    python benchmarks/gpu_check.py [--out DIR] [--budget-s 420] [--dry-run]

Sections, most important first; each is written to DIR/gpu_check.json as soon as it ends, and a
section that fails records its error and the next one runs. A section that would not fit in what
is left of --budget-s is skipped and says so.

  machine       the GPU, driver, PyTorch and CUDA versions
  parity        FP16 against FP32 at 1080p on every task's shipped model (and the video model with
                its `previous` input): max, signed mean and share of pixels more than 2 levels apart;
                and colour on the device (I420 in and out, FP16) against the host's (FP32), in the planes
  model_only    restore calls on frames already on the GPU (uint8 in, uint8 out), timed with CUDA
                events: 480p/720p/1080p x 1/2 steps x batch 1/4/8, eager FP16, FP32 at batch 1,
                eager FP16 with channels-last weights at 1080p
  overlap       the double buffer's upload / restore / download spans from CUDA events over
                pipelined 1080p batches (I420, as a run sends them): how much of each copy ran while
                another batch was restored
  syncs         host synchronisations inside the batch loop (I420 batches): torch.cuda.set_sync_debug_mode
                warnings and the CUDA runtime's synchronising calls seen by torch.profiler, per frame
  compiled      the same with `--compile` (torch.compile, CUDA graphs): compile time, parity with the
                eager FP32 output, model-only speed, overlap and syncs
  pipeline      the threaded file pipeline (decode -> restore -> encode) on a 1080p H.264 clip per
                x264 preset (and h264_nvenc where the driver has it), colour on the device (the
                default on CUDA) and on the host, passthrough as its ceiling, against the naive loop
                (decode, eager FP32 one frame, encode, nothing overlapped)
  driving       batch 1 on a feed paced at 30 fps: end-to-end p50/p99, and what the model adds over
                the passthrough pipeline, with the live default encoder and with x264 ultrafast
  surveillance  16 feeds of 1080p on one engine (the profile's batch 8, 30 ms wait, veryfast +
                zerolatency, and x264 ultrafast): aggregate and per-feed FPS, eager, compiled, passthrough
  cpu_stages    a 1080p frame's host time: decode alone, YCbCr <-> RGB, the I420 planes' copies
                (what colour on the device leaves the host), libx264 alone per preset
  cli           `streamrestore run` as a user types it on the 1080p clip (the default temporal mode,
                and --temporal off --batch 8 --preset ultrafast, eager and with --compile)

--dry-run runs the same code on the CPU at tiny sizes, to check the script before a GPU call; its
figures mean nothing. Also writes DIR/gpu_check.md, a table of the figures.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

TASKS = ("denoise", "derain", "deblur", "lowlight")
SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
DRY_SIZES = {"480p": (64, 48), "720p": (96, 64), "1080p": (128, 72)}
PARITY_LEVELS = 2  # the bound: FP16 within 2 levels of FP32


class Check:
    """Holds the results, the time budget and the sizes of this run (GPU or --dry-run)."""

    def __init__(self, out: Path, budget_s: float, dry_run: bool):
        self.out, self.dry = out, dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.sizes = DRY_SIZES if dry_run else SIZES
        self.deadline = time.monotonic() + budget_s
        self.results: dict = {"dry_run": dry_run, "sections": {}}
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str, fn, need_s: float) -> None:
        """Run one section, record its figures or its error, and save everything so far."""
        if self.left() < need_s:
            self.results["sections"][name] = {"skipped": f"{self.left():.0f} s left, needs about {need_s:.0f} s"}
            say(f"{name}: skipped ({self.left():.0f} s left)")
        else:
            say(f"{name}: start ({self.left():.0f} s left)")
            started = time.monotonic()
            try:
                figures = fn(self)
            except Exception as exc:  # record it and go on: one call must bring back every section it can
                figures = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
                say(figures["traceback"])
            figures["seconds"] = round(time.monotonic() - started, 1)
            self.results["sections"][name] = figures
            say(f"{name}: done in {figures['seconds']} s")
        self.save()

    def save(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str))
        (self.out / "gpu_check.md").write_text(markdown(self.results))


def say(text: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {text}", flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def backend(check: Check, task: str = "denoise", **options):
    from streamrestore.backends.registry import create_backend

    if check.dry:
        options.pop("fp16", None)
    return create_backend(task, backend="torch", device=check.device, **options)


def sample_frames(task: str, width: int, height: int, count: int) -> np.ndarray:
    """`count` (at most 8) frames of the built-in sample scene degraded for `task` (uint8 N, H, W, 3)."""
    return _eight_frames(task, width, height)[:count]


@functools.lru_cache(maxsize=None)
def _eight_frames(task: str, width: int, height: int) -> np.ndarray:
    from streamrestore.io.sample import SampleClip

    frames = np.stack([frame.image for frame in SampleClip(task, frames=8, width=width, height=height)])
    return frames


def i420_batch(frames: np.ndarray):
    """(I420 planes (N, 3H/2, W), their coding): RGB frames as a BT.709 limited-range 4:2:0 decoder gives them."""
    from streamrestore.io import ycbcr

    fmt = ycbcr.YCbCrFormat.of("yuv420p", ycbcr.BT709, ycbcr.LIMITED)
    return np.stack([ycbcr.frame_to_i420(ycbcr.rgb_to_frame(f, fmt)) for f in frames]), fmt


def submit_as_run(engine, frames: np.ndarray, coded):
    """engine.submit as the pipeline calls it: I420 planes (`coded` from i420_batch) or RGB (None)."""
    return engine.submit(coded[0], ycbcr=coded[1]) if coded is not None else engine.submit(frames)


# ---- sections ---------------------------------------------------------------------------------

def machine(check: Check) -> dict:
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "cpu_cores": os.cpu_count(), "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                     multiprocessors=p.multi_processor_count)
        try:
            facts["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm",
                                              "--format=csv,noheader"], capture_output=True, text=True,
                                             timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            facts["driver"] = f"nvidia-smi: {exc}"
    try:
        import av

        facts["pyav"] = av.__version__
    except ImportError:
        facts["pyav"] = None
    return facts


def levels(a: np.ndarray, b: np.ndarray) -> dict:
    """How far uint8 image batches a and b are apart, in 8-bit levels (a - b)."""
    d = a.astype(np.int16) - b.astype(np.int16)
    m = np.abs(d)
    return {"max": int(m.max()), "mean_signed": round(float(d.mean()), 4), "mean_abs": round(float(m.mean()), 4),
            "p99_99": float(np.percentile(m, 99.99)), f"share_over_{PARITY_LEVELS}": float((m > PARITY_LEVELS).mean())}


def parity(check: Check) -> dict:
    width, height = check.sizes["1080p"]
    rows = {}
    for task in TASKS:
        frames = sample_frames(task, width, height, 2)
        fp32 = backend(check, task, fp16=False)(frames)
        fp16 = backend(check, task, fp16=True)(frames)
        rows[task] = levels(fp16, fp32)
    from streamrestore.tasks import shipped_weights

    for task in ("denoise", "derain"):  # the video models, with a previous frame that is not the frame itself
        frames = sample_frames(task, width, height, 3)
        previous, now = frames[:2], frames[1:]
        video = str(shipped_weights(task, temporal=True))  # on CUDA the default for denoise is the base one-frame model
        fp32 = backend(check, task, fp16=False, temporal=True, weights=video)(now, previous)
        fp16 = backend(check, task, fp16=True, temporal=True, weights=video)(now, previous)
        rows[f"{task} video model"] = levels(fp16, fp32)
    # colour on the device: I420 in and out on the FP16 engine, against the host's conversions around FP32
    from streamrestore.io import ycbcr

    frames = sample_frames("denoise", width, height, 2)
    planes, fmt = i420_batch(frames)
    device = backend(check, "denoise", fp16=True, device_colour=True).submit(planes, ycbcr=fmt).result()
    decoded = np.stack([ycbcr.frame_to_rgb(ycbcr.i420_to_frame(p, fmt), fmt) for p in planes])
    host = backend(check, "denoise", fp16=False, device_colour=False)(decoded)
    reference = np.stack([ycbcr.frame_to_i420(ycbcr.rgb_to_frame(f, fmt)) for f in host])
    rows["denoise, colour on the device (I420 planes)"] = levels(device, reference)
    worst = max(r["max"] for r in rows.values())
    return {"size": f"{width}x{height}", "rows": rows, "worst_max": worst,
            "meets_2_levels": worst <= PARITY_LEVELS}


def time_calls(fn, device: str, seconds: float = 0.4, warmup: int = 3) -> dict:
    """Mean milliseconds per call of fn() over enough calls to last about `seconds`, CUDA-event timed."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - start, 1e-4)
    iters = int(min(60, max(3, seconds / once)))
    if device == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        total = begin.elapsed_time(end)
    else:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        total = (time.perf_counter() - start) * 1e3
    return {"ms_per_call": round(total / iters, 3), "calls": iters}


def on_compute_stream(engine):
    """The CUDA stream the backend itself restores on: a compiled engine's CUDA graphs are recorded
    and replayed there. (In the first GPU run, an engine whose graphs were first recorded on the
    default stream and then replayed by the double buffer's stream failed its capture and fell back
    to eager.)"""
    import contextlib

    cuda = getattr(engine, "_cuda", None)
    return torch.cuda.stream(cuda.compute) if cuda is not None else contextlib.nullcontext()


def model_row(check: Check, engine, res: str, batch: int, label: str) -> dict:
    width, height = check.sizes[res]
    with torch.inference_mode(), on_compute_stream(engine):
        frames = torch.from_numpy(sample_frames("denoise", width, height, batch)).to(check.device)
        timing = time_calls(lambda: engine.restorer(frames), check.device)
    fps = batch * 1e3 / timing["ms_per_call"]
    row = {"variant": label, "resolution": res, "batch": batch, "steps": engine.restorer.steps,
           "precision": engine.precision, **timing, "fps": round(fps, 1)}
    say(f"  {label} {res} b{batch} {row['steps']}-step: {timing['ms_per_call']} ms, {row['fps']} FPS")
    return row


def model_only(check: Check) -> dict:
    rows = []
    for steps in (1, 2):
        engine = backend(check, steps=steps, fp16=True)
        for res in ("480p", "720p", "1080p"):
            for batch in (1, 4, 8):
                rows.append(model_row(check, engine, res, batch, "eager"))
    fp32 = backend(check, fp16=False)
    for res in ("480p", "720p", "1080p"):
        rows.append(model_row(check, fp32, res, 1, "eager fp32"))
    if not check.dry:
        nhwc = backend(check, fp16=True)
        nhwc.restorer.model.network.to(memory_format=torch.channels_last)
        rows.append(model_row(check, nhwc, "1080p", 8, "eager channels-last"))
    return {"rows": rows}


def spans(check: Check, engine, res: str, batch: int, batches: int) -> tuple[list[dict], float]:
    """Per batch: the CUDA-event times (ms from the first upload) of each stage, over `batches`
    batches submitted two in flight as the pipeline does (I420 when the engine takes it); and the host
    seconds it took."""
    width, height = check.sizes[res]
    frames = sample_frames("denoise", width, height, batch)
    coded = i420_batch(frames) if engine.takes_i420 else None
    submit_as_run(engine, frames, coded).result()  # the slots exist and anything lazy has run
    submit_as_run(engine, frames, coded).result()
    out, pending = [], []
    started = time.perf_counter()
    for _ in range(batches):
        pending.append(submit_as_run(engine, frames, coded))
        if len(pending) == 2:
            first = pending.pop(0)
            first.result()
            out.append(dict(getattr(first, "spans", {})))
    for p in pending:
        p.result()
        out.append(dict(getattr(p, "spans", {})))
    return out, time.perf_counter() - started


def overlap_of(batches: list[dict]) -> dict:
    """How much of the copies ran while another batch was being restored, from event spans."""
    def inter(a, b):
        return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))

    if not batches or "restore_start" not in batches[0]:
        return {"note": "no CUDA event spans (CPU run)"}
    up = [(b["start"], b["uploaded"]) for b in batches]
    rs = [(b["restore_start"], b["restored"]) for b in batches]
    dn = [(b["download_start"], b["done"]) for b in batches]
    up_total = sum(e - s for s, e in up[1:])
    dn_total = sum(e - s for s, e in dn[:-1])
    up_hidden = sum(inter(up[k + 1], rs[k]) for k in range(len(batches) - 1))
    dn_hidden = sum(inter(dn[k - 1], rs[k]) for k in range(1, len(batches)))
    wall = batches[-1]["done"] - batches[0]["start"]
    restoring = sum(e - s for s, e in rs)
    return {"upload_ms_mean": round(up_total / max(1, len(up) - 1), 3),
            "restore_ms_mean": round(restoring / len(rs), 3),
            "download_ms_mean": round(dn_total / max(1, len(dn) - 1), 3),
            "upload_hidden_share": round(up_hidden / up_total, 3) if up_total else None,
            "download_hidden_share": round(dn_hidden / dn_total, 3) if dn_total else None,
            "gpu_restoring_share_of_wall": round(restoring / wall, 3) if wall else None,
            "first_batches": [{k: round(v, 3) for k, v in b.items()} for b in batches[:3]]}


def count_syncs(check: Check, engine, res: str, batch: int, batches: int) -> dict:
    """Host synchronisations in the steady batch loop: set_sync_debug_mode warnings, and the CUDA
    runtime's synchronising calls (cuda*Synchronize, blocking cudaMemcpy) seen by torch.profiler."""
    width, height = check.sizes[res]
    frames = sample_frames("denoise", width, height, batch)
    coded = i420_batch(frames) if engine.takes_i420 else None
    submit_as_run(engine, frames, coded).result()
    submit_as_run(engine, frames, coded).result()

    def loop():
        pending = []
        for _ in range(batches):
            pending.append(submit_as_run(engine, frames, coded))
            if len(pending) == 2:
                pending.pop(0).result()
        for p in pending:
            p.result()

    result = {"frames": batches * batch, "i420": coded is not None}
    if check.device != "cuda":
        return {**result, "note": "CPU run: nothing to count"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loop()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    flagged = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    result["sync_debug_warnings"] = len(flagged)
    result["sync_debug_warnings_per_frame"] = round(len(flagged) / result["frames"], 3)
    result["sync_debug_examples"] = sorted(set(flagged))[:5]
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        loop()
    calls: dict[str, int] = {}
    for event in prof.events():
        name = event.name
        if "Synchronize" in name or (name.startswith("cudaMemcpy") and "Async" not in name):
            calls[name] = calls.get(name, 0) + 1
    result["runtime_sync_calls"] = calls
    result["runtime_sync_calls_per_batch"] = {k: round(v / batches, 2) for k, v in calls.items()}
    result["explained"] = ("cudaEventSynchronize: result() waits for its batch's download (the frames must "
                           "reach the host) and submit() waits for the slot it reuses (already done in the "
                           "steady state); anything else is a sync inside the batch loop")
    return result


def overlap(check: Check) -> dict:
    engine = backend(check, fp16=True)
    batches, wall = spans(check, engine, "1080p", 8, 12 if not check.dry else 3)
    return {"resolution": "1080p", "batch": 8, "i420": engine.takes_i420, "batches": len(batches),
            "host_seconds": round(wall, 3),
            "fps": round(8 * len(batches) / wall, 1), **overlap_of(batches)}


def syncs(check: Check) -> dict:
    return count_syncs(check, backend(check, fp16=True), "1080p", 8, 8 if not check.dry else 2)


def compiled(check: Check) -> dict:
    width, height = check.sizes["1080p"]
    frames = sample_frames("denoise", width, height, 8)
    engine = backend(check, fp16=True, compile=True)
    started = time.perf_counter()
    first = engine(frames)
    compile_s = time.perf_counter() - started
    figures = {"compile_seconds_1080p_b8": round(compile_s, 1), "still_compiled": engine.restorer.compiled}
    reference = backend(check, fp16=False)(frames)
    figures["parity_vs_eager_fp32"] = levels(engine(frames), reference)
    figures["parity_first_call"] = levels(first, reference)
    figures["partial_batch_parity"] = levels(engine(frames[:3]), reference[:3])
    rows = [model_row(check, engine, "1080p", 8, "compiled")]
    batches, wall = spans(check, engine, "1080p", 8, 12 if not check.dry else 3)
    figures["overlap"] = {"fps": round(8 * len(batches) / wall, 1), **overlap_of(batches)}
    figures["syncs"] = count_syncs(check, engine, "1080p", 8, 8 if not check.dry else 2)
    figures["rows"] = rows
    figures["still_compiled"] = engine.restorer.compiled  # False: compilation failed and eager took over
    check.compiled_engine = engine
    return figures


def compiled_sizes(check: Check) -> dict:
    """More sizes compiled, one static graph each: batch 1 (the driving profile), 720p, 480p, 2 steps."""
    rows, engine = [], getattr(check, "compiled_engine", None)
    for res, batch, steps in check.compiled_sizes:
        if check.left() < 60:
            rows.append({"skipped": f"{res} b{batch} {steps}-step ({check.left():.0f} s left)"})
            break
        # a compiled engine pads a smaller batch to the largest it has seen at that size: batch 1 and
        # 2 steps get engines of their own
        other = engine if engine is not None and batch == 8 and steps == 1 else \
            backend(check, fp16=True, compile=True, steps=steps)
        started = time.perf_counter()
        with torch.inference_mode(), on_compute_stream(other):
            other.restorer(torch.from_numpy(sample_frames("denoise", *check.sizes[res], batch)).to(check.device))
        compile_s = round(time.perf_counter() - started, 1)
        rows.append({**model_row(check, other, res, batch, "compiled"), "compile_seconds": compile_s})
        if batch == 1:
            check.compiled_engine_b1 = other
    return {"rows": rows, "still_compiled_at_end": engine.restorer.compiled if engine else None}


def make_clip(check: Check, res: str, frames: int) -> str:
    import _bench

    path = check.tmp / f"clip-{res}.mp4"
    if not path.exists():
        _bench.make_clip(path, *check.sizes[res], frames)
    return str(path)


def file_run(clip: str, engine, out: Path, batch: int, **sink_options) -> dict:
    import _bench
    from streamrestore.io.video import VideoFileSink, VideoFileSource
    from streamrestore.runtime.pipeline import run_pipeline
    from streamrestore.runtime.report import LatencyReport

    source = VideoFileSource(clip)
    report = LatencyReport(warmup=batch * 2)
    run_pipeline(source, engine, VideoFileSink(str(out), source.info, **sink_options), batch=batch, report=report)
    out.unlink(missing_ok=True)
    figures = _bench._pipeline_figures(report)
    figures.pop("end_to_end_samples_ms", None)
    figures["stages_p50_ms"] = {k: round(float(v), 2) for k, v in figures["stages_p50_ms"].items()}
    return figures


def pipeline(check: Check) -> dict:
    import _bench
    from streamrestore.backends.base import PassthroughBackend

    frames = 240 if not check.dry else 8
    clip = make_clip(check, "1080p", frames)
    out = check.tmp / "out.mp4"
    rows = []

    def row(label, engine, batch, **sink):
        try:
            figures = file_run(clip, engine, out, batch, **sink)
        except Exception as exc:
            figures = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        rows.append({"variant": label, "batch": batch, **sink, **figures})
        say(f"  pipeline {label} b{batch} {sink}: {figures.get('fps', figures.get('error'))} FPS")

    eager = backend(check, fp16=True)
    row("passthrough", PassthroughBackend(), 8, preset="ultrafast")
    row("eager fp16, colour on the host", backend(check, fp16=True, device_colour=False), 8, preset="ultrafast")
    for preset in ("ultrafast", "veryfast", "medium"):
        row("eager fp16", eager, 8, preset=preset)
    row("eager fp16", eager, 4, preset="ultrafast")
    row("eager fp16", eager, 8, codec="h264_nvenc")
    engine = getattr(check, "compiled_engine", None)
    if engine is not None:
        row("compiled fp16", engine, 8, preset="ultrafast")
        row("compiled fp16", engine, 8, preset="veryfast")
    naive_engine = backend(check, fp16=False)
    naive = _bench.naive_baseline(clip, naive_engine, out, warmup=2)
    naive.pop("end_to_end_samples_ms", None)
    best = max((r for r in rows if r["variant"] != "passthrough" and "fps" in r), key=lambda r: r["fps"], default=None)
    return {"clip": f"{check.sizes['1080p'][0]}x{check.sizes['1080p'][1]}, {frames} frames, H.264",
            "rows": rows, "naive_loop": naive,
            "best": best and {"variant": best["variant"], "fps": best["fps"], "preset": best.get("preset"),
                              "codec": best.get("codec"), "x_naive": round(best["fps"] / naive["fps"], 2)}}


def driving(check: Check) -> dict:
    import _bench
    from streamrestore.backends.base import PassthroughBackend

    clip = make_clip(check, "1080p", 240 if not check.dry else 8)
    seconds = 8 if not check.dry else 1
    out = check.tmp / "drive.mp4"
    rows = {}
    compiled_b1 = getattr(check, "compiled_engine_b1", None)
    eager = backend(check, fp16=True)
    # the live default (veryfast + zerolatency), then x264's fastest preset, still zerolatency
    for encoder in ({}, {"preset": "ultrafast", "tune": "zerolatency"}):
        name = f" ({encoder['preset']})" if encoder else ""
        for label, engine in (("passthrough", PassthroughBackend()), ("eager fp16", eager), ("compiled fp16", compiled_b1)):
            if engine is None:
                continue
            figures = _bench.driving(clip, engine, out, seconds, 30, warmup=10, encoder=encoder)
            figures.pop("end_to_end_samples_ms", None)
            rows[label + name] = figures
            say(f"  driving {label}{name}: p99 {figures['end_to_end_ms'].get('p99')} ms, "
                f"stages p50 {figures.get('stages_p50_ms')}")
        base = rows["passthrough" + name]["end_to_end_ms"]
        for label in [k for k in rows if k.endswith(name) and (name or "(" not in k)]:
            e2e = rows[label]["end_to_end_ms"]
            rows[label]["added_ms"] = {k: round(e2e[k] - base[k], 2) for k in ("p50", "p99") if k in e2e and k in base}
    return {"rate": 30, "seconds": seconds, "rows": rows}


def surveillance(check: Check) -> dict:
    """16 feeds of 1080p on one engine, the profile's encoder (veryfast + zerolatency) and x264 ultrafast;
    passthrough as the ceiling the host's decode and encode leave."""
    import _bench
    from streamrestore.backends.base import PassthroughBackend

    short = check.tmp / "feed-1080p.mp4"
    if not short.exists():  # 60 frames (2 s at 30 fps) per feed
        _bench.make_clip(short, *check.sizes["1080p"], 60 if not check.dry else 6)
    rows = {}
    profile, fastest = {"preset": "veryfast", "tune": "zerolatency"}, {"preset": "ultrafast", "tune": "zerolatency"}
    engines = [("eager fp16", backend(check, fp16=True), profile), ("passthrough (ultrafast)", PassthroughBackend(), fastest)]
    if getattr(check, "compiled_engine", None) is not None:
        engines += [("compiled fp16", check.compiled_engine, profile), ("compiled fp16 (ultrafast)", check.compiled_engine, fastest)]
    for label, engine, encoder in engines:
        if check.left() < 25:
            rows[label] = {"skipped": f"{check.left():.0f} s left"}
            continue
        figures = _bench.surveillance(str(short), engine, check.tmp, 16 if not check.dry else 2, 8, 30.0, warmup=8,
                                      encoder=encoder)
        figures.pop("end_to_end_samples_ms", None)
        figures["per_stream_fps"] = [round(x, 1) for x in figures["per_stream_fps"]]
        figures["keeps_up_with_30fps_each"] = figures["per_stream_fps_min"] >= 30
        rows[label] = figures
        say(f"  surveillance {label}: {figures['aggregate_fps']} FPS in all, {figures['per_stream_fps_min']} per feed")
    return {"feeds": 16, "resolution": "1080p", "rows": rows}


def cpu_stages(check: Check) -> dict:
    """Where a 1080p frame's host time goes: decode alone (PyAV, frame threads), YCbCr -> RGB and back
    (streamrestore.io.ycbcr, OpenCV), and libx264 alone per preset (benchmarks/_bench.encoder_speed)."""
    import av
    import cv2

    import _bench
    from streamrestore.io import ycbcr

    clip = make_clip(check, "1080p", 240 if not check.dry else 8)
    with av.open(clip) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        started = time.perf_counter()
        frames = list(container.decode(stream))
        decode_ms = (time.perf_counter() - started) * 1e3 / len(frames)
    fmt = ycbcr.YCbCrFormat.of("yuv420p", ycbcr.BT709, ycbcr.LIMITED)
    figures = {"frames": len(frames), "decode_ms": round(decode_ms, 2), "opencv_threads": cv2.getNumThreads()}
    for threads in (cv2.getNumThreads(), 1):
        cv2.setNumThreads(threads)
        rgb = [ycbcr.frame_to_rgb(f, fmt) for f in frames[:5]]  # warm-up
        started = time.perf_counter()
        rgb = [ycbcr.frame_to_rgb(f, fmt) for f in frames[:40]]
        to_rgb = (time.perf_counter() - started) * 1e3 / len(rgb)
        started = time.perf_counter()
        for image in rgb:
            ycbcr.rgb_to_frame(image, fmt)
        from_rgb = (time.perf_counter() - started) * 1e3 / len(rgb)
        figures[f"opencv_{threads}_threads"] = {"to_rgb_ms": round(to_rgb, 2), "from_rgb_ms": round(from_rgb, 2)}
    cv2.setNumThreads(figures["opencv_threads"])
    started = time.perf_counter()
    planes = [ycbcr.frame_to_i420(f) for f in frames[:40]]
    figures["i420_out_of_frame_ms"] = round((time.perf_counter() - started) * 1e3 / len(planes), 3)
    started = time.perf_counter()
    for p in planes:
        ycbcr.i420_to_frame(p, fmt)
    figures["i420_into_frame_ms"] = round((time.perf_counter() - started) * 1e3 / len(planes), 3)
    figures["x264"] = [_bench.encoder_speed(clip, preset, tune) for preset, tune in
                       (("ultrafast", None), ("veryfast", "zerolatency"), ("veryfast", None), ("medium", None))]
    return figures


def cli(check: Check) -> dict:
    """`streamrestore run` as a user types it, on the 1080p clip: FPS and stages from its --report."""
    clip = make_clip(check, "1080p", 240 if not check.dry else 8)
    device = ["--device", check.device]
    runs = {"default (temporal auto: the default weights + fusion, its warp and blend on the GPU)": [],
            "--temporal off --batch 8 --preset ultrafast": ["--temporal", "off", "--batch", "8", "--preset", "ultrafast"],
            "--temporal off --compile --batch 8 --preset ultrafast": ["--temporal", "off", "--compile", "--batch", "8",
                                                                     "--preset", "ultrafast"]}
    rows = {}
    for label, options in runs.items():
        report, out = check.tmp / "cli.json", check.tmp / "cli.mp4"
        command = [sys.executable, "-m", "streamrestore.cli", "run", clip, "--task", "denoise", "-o", str(out),
                   "--report", str(report), "--quiet", "--overwrite", *device, *options]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(30, check.left() - 20))
        wall = time.perf_counter() - started
        if done.returncode:
            rows[label] = {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "rc": done.returncode}
            continue
        summary = json.loads(report.read_text())["summary"]
        rows[label] = {"fps": summary["throughput_fps"], "command_seconds": round(wall, 1),
                       "stages_p50_ms": {k: v.get("p50") for k, v in summary["stages_ms"].items()}}
        say(f"  cli {label}: {summary['throughput_fps']} FPS, {wall:.1f} s in all")
    return {"command": "streamrestore run CLIP --task denoise -o OUT --report R --quiet --device cuda ...", "rows": rows}


# ---- report -----------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    s = results["sections"]
    lines = ["# GPU check (benchmarks/gpu_check.py)", ""]
    if results.get("dry_run"):
        lines += ["**Dry run on the CPU at tiny sizes: the figures mean nothing.**", ""]
    m = s.get("machine", {})
    lines += [f"Machine: {m.get('gpu', 'no GPU')} (compute {m.get('capability', '-')}), driver {m.get('driver', '-')}, "
              f"PyTorch {m.get('torch')}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}, {m.get('cpu_cores')} CPU cores, "
              f"PyAV {m.get('pyav')}.", ""]
    for name, figures in s.items():
        if name == "machine":
            continue
        lines.append(f"## {name}")
        lines.append("")
        if "skipped" in figures or "error" in figures:
            lines += [f"{figures.get('skipped') or figures.get('error')}", ""]
            continue
        if name == "parity":
            lines += [f"FP16 against FP32, {figures['size']}, 8-bit levels:", "",
                      "| model | max | signed mean | mean abs | p99.99 | share > 2 |", "|---|---|---|---|---|---|"]
            lines += [f"| {k} | {r['max']} | {r['mean_signed']} | {r['mean_abs']} | {r['p99_99']} | "
                      f"{r['share_over_2']:.2e} |" for k, r in figures["rows"].items()]
            lines.append("")
        elif name in ("model_only", "compiled", "compiled_sizes") and figures.get("rows"):
            if name == "compiled":
                lines += [f"Compile time (1080p, batch 8): {figures.get('compile_seconds_1080p_b8')} s; still compiled: "
                          f"{figures.get('still_compiled')}; parity with eager FP32: "
                          f"{figures.get('parity_vs_eager_fp32')}; overlap: {json.dumps(figures.get('overlap', {}).get('upload_hidden_share'))} of uploads hidden, "
                          f"syncs: {figures.get('syncs', {}).get('runtime_sync_calls_per_batch')} per batch", ""]
            lines += ["| variant | size | batch | steps | precision | ms per call | FPS |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['variant']} | {r['resolution']} | {r['batch']} | {r['steps']} | {r['precision']} | "
                      f"{r['ms_per_call']} | {r['fps']} |" if "variant" in r else f"| {r} |" for r in figures["rows"]]
            lines.append("")
        elif name == "pipeline":
            lines += [f"Clip: {figures['clip']}. Naive loop: {figures['naive_loop']['fps']} FPS.", "",
                      "| variant | batch | encoder | FPS | end-to-end p50 / p99 ms | stage p50 ms |", "|---|---|---|---|---|---|"]
            for r in figures["rows"]:
                enc = r.get("codec") or r.get("preset")
                if "error" in r:
                    lines.append(f"| {r['variant']} | {r['batch']} | {enc} | {r['error']} | | |")
                    continue
                e2e = r.get("end_to_end_ms", {})
                lines.append(f"| {r['variant']} | {r['batch']} | {enc} | {r['fps']} | {e2e.get('p50')} / {e2e.get('p99')} | "
                             f"{r.get('stages_p50_ms')} |")
            lines += ["", f"Best: {figures.get('best')}", ""]
        else:
            lines += ["```", json.dumps({k: v for k, v in figures.items() if k != "traceback"}, indent=1)[:4000], "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this (default 420)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script, measure nothing")
    p.add_argument("--sections", nargs="+", help="run only these sections, in this order (machine always runs)")
    p.add_argument("--compiled-sizes", nargs="+", default=["1080p:1:1", "720p:8:1", "480p:8:1", "1080p:8:2"],
                   metavar="RES:BATCH:STEPS", help="compiled_sizes rows (default: %(default)s)")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        sys.stderr.write("gpu_check.py: no CUDA device is visible; use --dry-run to check the script on the CPU\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.budget_s, args.dry_run)
    check.compiled_sizes = [(r, int(b), int(n)) for r, b, n in (x.split(":") for x in args.compiled_sizes)]
    torch.backends.cudnn.benchmark = True
    plan = {"parity": (parity, 20), "model_only": (model_only, 40), "overlap": (overlap, 10), "syncs": (syncs, 10),
            "compiled": (compiled, 90), "pipeline": (pipeline, 60), "surveillance": (surveillance, 40),
            "compiled_sizes": (compiled_sizes, 60), "driving": (driving, 30), "cpu_stages": (cpu_stages, 20),
            "cli": (cli, 40)}
    unknown = set(args.sections or ()) - set(plan)
    if unknown:
        p.error(f"--sections: unknown {', '.join(sorted(unknown))}; use {', '.join(plan)}")
    check.section("machine", machine, 0)
    for name in args.sections or plan:
        check.section(name, *plan[name])
    say(f"wrote {args.out / 'gpu_check.json'} and gpu_check.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
