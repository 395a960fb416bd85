"""Latency and throughput of every backend x precision x resolution x steps, against a naive baseline.

    python benchmarks/latency.py [--backends ...] [--resolutions 480p 720p 1080p] [--steps 1 2]
        [--profile driving|surveillance|all] [--frames N] [--out DIR] [--quick]
        [--encoder-presets ultrafast ... slow] [--encoder-tunes none zerolatency]

Per configuration: model-only latency (p50, p99), the threaded file pipeline's FPS and end-to-end
p50/p99 on H.264 clips made at each resolution (vtest.avi scaled when it is there), peak host and
GPU memory, and the speed-up over a naive baseline run in the same process (sequential decode,
PyTorch eager FP32 one frame at a time, encode). Driving: batch 1 on a feed paced at 30 fps, p99
end-to-end against the 33 ms frame interval. Surveillance: K streams at 720p on one engine,
aggregate and per-stream FPS. Encoder: libx264 alone at each resolution, per preset and tune (what
`run --preset/--tune` choose between), wall and CPU ms per frame. Writes latency.json, latency.md and
latency.png (when matplotlib is installed) into --out.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import _bench
import _output

BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # a backend that cannot run one is skipped, with its reason
RESOLUTIONS = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
DRIVING_RATE = 30  # fps of the paced driving feed: the p99 budget is one frame interval
ENCODER_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
ENCODER_TUNES = ("none", "zerolatency")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"latency.py: error: {message}\n")


def _backend(text: str) -> str:
    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not known; use one of {', '.join(BACKENDS)}")
    return text


def _resolution(text: str) -> str:
    if text in RESOLUTIONS or text == "vtest":
        return text
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 16 or int(match[1]) % 2 or int(match[2]) % 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not known; use {', '.join(RESOLUTIONS)}, vtest "
                                         "(the real clip, 768x576) or WIDTHxHEIGHT (even, 16 or more)")
    return text


def _threads(text: str) -> str | int:
    return text if text == "auto" else _positive(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number, 1 or more")
    return int(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="latency.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", type=_backend, default=list(BACKENDS))
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="default: fp32 on CPU, fp32 fp16 on CUDA")
    p.add_argument("--resolutions", nargs="+", type=_resolution, help="default 480p 720p 1080p (--quick: 480p)")
    p.add_argument("--steps", nargs="+", type=_positive, default=[1])
    p.add_argument("--profile", choices=("driving", "surveillance", "all", "model"), default="all",
                   help="model: model-only latency of every backend x precision, interleaved call by call "
                        "(no pipeline, no baseline), with each one's speed against onnxruntime fp32")
    p.add_argument("--frames", type=_positive, help="frames per clip and per stream (default 30; --quick 6)")
    p.add_argument("--iters", type=_positive, help="model-only calls after warm-up (default 20; --quick 4)")
    p.add_argument("--streams", type=_positive, help="surveillance streams (default 4 on CPU, 16 on GPU)")
    p.add_argument("--stream-resolution", type=_resolution, default="720p", help="surveillance streams (720p)")
    p.add_argument("--stream-batch", type=_positive, help="surveillance engine batch (default: the profile's, 8)")
    p.add_argument("--batch", type=_positive, default=1, help="pipeline batch of the single-stream runs (1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=_threads, default="auto",
                   help="torch CPU threads; auto: torch's default, lowered to the cores left idle by other "
                        "processes (1-minute load average), since spinning threads on busy cores are ~10x slower")
    p.add_argument("--plan", action="store_true",
                   help="the thread plan of `run` (streamrestore.backends.threads): --threads (auto: every core) inference "
                        "threads for onnxruntime and openvino, no spinning onnxruntime workers, OpenCV at 1 thread")
    p.add_argument("--fusion", action="store_true",
                   help="the file pipeline with the fusion stage, as `run` does on video (OpenCV per frame)")
    p.add_argument("--task", default="denoise", help="whose weights (latency does not depend on the task)")
    p.add_argument("--weights", help="checkpoint instead of engines/{task}-small.safetensors")
    p.add_argument("--out", default="benchmarks/results", help="folder for latency.json/.md/.png")
    p.add_argument("--encoder-presets", nargs="*", choices=ENCODER_PRESETS, default=list(ENCODER_PRESETS),
                   help="libx264 presets to time at each resolution (none: skip the encoder rows)")
    p.add_argument("--encoder-tunes", nargs="+", choices=ENCODER_TUNES, default=list(ENCODER_TUNES),
                   help="with each preset: no tune and/or zerolatency (the live default)")
    p.add_argument("--encoder-frames", type=_positive, help="frames per encoder timing (default 30; --quick 10)")
    p.add_argument("--quick", action="store_true", help="a small run: under 2 minutes on a 2-core CPU")
    args = p.parse_args(argv)
    quick = args.quick
    args.resolutions = args.resolutions or (["480p"] if quick else list(RESOLUTIONS))
    args.frames = args.frames or (6 if quick else 30)
    args.iters = args.iters or (4 if quick else 20)
    args.warmup = 1 if quick or args.frames < 10 else 3
    args.stream_frames = min(args.frames, 3) if quick else args.frames
    args.encoder_frames = args.encoder_frames or (10 if quick else 30)
    if args.frames < 2:
        p.error("--frames: use 2 or more")
    args.command = shlex.join(["python", "benchmarks/latency.py", *argv])
    return args


def size_of(resolution: str) -> tuple[int, int]:
    if resolution == "vtest":
        return (768, 576)
    return RESOLUTIONS.get(resolution) or tuple(int(v) for v in resolution.split("x"))


def note(text: str) -> None:
    print(f"latency.py: {text}", file=sys.stderr, flush=True)


# ---- set-up -----------------------------------------------------------------------------------

def pick_weights(args, tmp: Path) -> dict:
    """The task's shipped small weights, else a randomly initialised small model (said so)."""
    from streamrestore.errors import UserError
    from streamrestore.tasks import shipped_weights

    if args.weights:
        return {"path": args.weights, "random": False, "note": f"weights {args.weights}"}
    try:
        path = shipped_weights(args.task, "small")
        return {"path": str(path), "random": False, "note": f"shipped weights {path.name}"}
    except UserError:
        from streamrestore.model.checkpoint import save_model
        from streamrestore.training.loop import build_model

        path = tmp / f"random-{args.task}-small.safetensors"
        save_model(path, build_model("small"), {"task": args.task, "kind": "ir-cm", "architecture": {"size": "small"}})
        note(f"no shipped weights for {args.task}: timing a randomly initialised small model")
        return {"path": str(path), "random": True, "note": "randomly initialised small model (no shipped weights yet)"}


def resolve_device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("latency.py: error: --device cuda: no CUDA device is visible to PyTorch")
    return name if name != "auto" else "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(wanted) -> int:
    """torch intra-op threads: `wanted`, or for auto torch's default capped at the idle cores."""
    import os

    import torch

    if wanted == "auto":
        idle = (os.cpu_count() or 1) - round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else None
        wanted = max(1, min(torch.get_num_threads(), idle if idle is not None else torch.get_num_threads()))
    torch.set_num_threads(wanted)
    return wanted


def build(args, backend: str, precision: str, steps: int):
    """(backend object, set-up seconds) or (None, reason) when it cannot be made here."""
    from streamrestore.backends.registry import create_backend
    from streamrestore.errors import UserError

    start = time.perf_counter()
    try:
        engine = create_backend(args.task, backend=backend, device=args.device, steps=steps,
                                weights=args.weights_path, precision=precision,
                                threads=args.inference_threads if args.plan else None)
    except (UserError, ImportError) as exc:
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except RuntimeError as exc:  # an engine build that fails on this machine (no provider, no GPU)
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if getattr(engine, "name", backend) != backend:
        return None, f"did not build here; the registry fell back to {engine.name} (see its warning)"
    if getattr(engine, "precision", precision) != precision:
        return None, f"gave {engine.precision} instead of {precision}"
    return engine, round(time.perf_counter() - start, 2)


def versions() -> dict:
    import subprocess

    import av
    import numpy
    import torch

    found = {"python": sys.version.split()[0], "torch": torch.__version__, "av": av.__version__,
             "ffmpeg": ".".join(map(str, av.library_versions.get("libavcodec", ()))) or None,
             "numpy": numpy.__version__, "cuda": torch.version.cuda}
    for module in ("onnxruntime", "tensorrt", "openvino"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = None
    try:
        found["streamrestore_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                       text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["streamrestore_commit"] = None
    return found


# ---- the runs ---------------------------------------------------------------------------------

class Clips:
    """One encoded clip per (resolution, frames), made on first use."""

    def __init__(self, folder: Path):
        self.folder, self.made, self.content = folder, {}, {}

    def get(self, resolution: str, frames: int) -> str:
        if resolution == "vtest" and _bench.VTEST.is_file():
            self.content[resolution] = "vtest.avi (MS-MPEG4, 768x576, 10 fps)"
            return str(_bench.VTEST)
        key = (resolution, frames)
        if key not in self.made:
            path = self.folder / f"clip-{resolution}-{frames}.mp4"
            self.content[resolution] = _bench.make_clip(path, *size_of(resolution), frames)
            self.made[key] = str(path)
        return self.made[key]


def measured(run, *args, **kwargs) -> dict:
    """run(*args) with its peak host and GPU memory added to the result."""
    with _bench.PeakMemory() as memory:
        result = run(*args, **kwargs)
    return {**result, **memory.figures()}


def run_baselines(args, clips: Clips, tmp: Path, steps: int, wanted: list[tuple[str, int]]) -> dict:
    """The naive baseline at each (resolution, frames), by resolution."""
    engine, setup = build(args, "torch", "fp32", steps)
    if engine is None:
        raise SystemExit(f"latency.py: error: the naive baseline (torch fp32) cannot run: {setup}")
    out = {}
    for res, frames in wanted:
        width, height = size_of(res)
        _bench.model_only(engine, width, height, iters=1, warmup=0)  # first call: allocations, not timed
        result = measured(_bench.naive_baseline, clips.get(res, frames), engine, tmp / "baseline.mp4", args.warmup)
        out[res] = {"resolution": res, "steps": steps, "width": width, "height": height, **result}
        note(f"naive baseline {res} {steps}-step: {result['fps']:.2f} FPS")
    return out


def run_single_stream(args, engine, clips: Clips, tmp: Path, res: str, base: dict) -> dict:
    """Model only, file pipeline and (driving profile) the paced feed at one resolution."""
    width, height = size_of(res)
    with _bench.PeakMemory() as memory:
        model = _bench.model_only(engine, width, height, args.iters, warmup=1)
        pipeline = _bench.file_pipeline(clips.get(res, args.frames), engine, tmp / "pipeline.mp4", args.batch,
                                        args.warmup, fusion=args.fusion)
        drive = None
        if args.profile in ("driving", "all"):
            # long enough for about `frames` restored frames at the model speed just measured
            seconds = args.frames * max(1.0 / DRIVING_RATE, 1.2 * model["p50"] / 1e3)
            drive = _bench.driving(clips.get(res, args.frames), engine, tmp / "driving.mp4", seconds,
                                   DRIVING_RATE, args.warmup)
    return {"resolution": res, "width": width, "height": height, "batch": args.batch, "model_ms": model,
            "pipeline": pipeline, "driving": drive, "speedup": round(pipeline["fps"] / base["fps"], 3),
            **memory.figures()}


def run_surveillance(args, engine, clips: Clips, tmp: Path, base: dict) -> dict:
    from streamrestore.runtime.profiles import PROFILES

    settings = PROFILES["surveillance"]
    result = measured(_bench.surveillance, clips.get(args.stream_resolution, args.stream_frames), engine, tmp,
                      args.streams, args.stream_batch or settings["batch"], settings["batch_wait_ms"],
                      0 if args.quick else args.warmup, {"preset": settings["preset"], "tune": settings["tune"]})
    memory = {k: result.pop(k) for k in ("host_peak_mb", "gpu_peak_mb", "host_peak_reset")}
    return {"resolution": args.stream_resolution, "result": result,
            "speedup": round(result["aggregate_fps"] / base["fps"], 3), **memory}


def run_all(args, tmp: Path, data: dict) -> None:
    if args.profile == "model":
        return run_model_only(args, data)
    clips = Clips(tmp)
    wanted = [(res, args.frames) for res in args.resolutions] if args.profile != "surveillance" else []
    if args.profile != "driving" and args.stream_resolution not in dict(wanted):
        wanted.append((args.stream_resolution, args.stream_frames))
    for steps in args.steps:
        by_res = run_baselines(args, clips, tmp, steps, wanted)
        data["baseline"] += by_res.values()
        for backend in args.backends:
            for precision in args.precisions:
                run_backend(args, clips, tmp, data, backend, precision, steps, by_res)
    data["encoder"] = run_encoder(args, clips)
    data["clips"] = clips.content


def run_model_only(args, data: dict) -> None:
    """Model-only latency of every (backend, precision), interleaved call by call so that the load of a
    shared machine falls on all of them alike; `vs_onnxruntime_fp32`: its p50 speed-up over that one."""
    import numpy as np

    for steps in args.steps:
        engines = {}
        for backend in args.backends:
            for precision in args.precisions:
                engine, setup = build(args, backend, precision, steps)
                if engine is None:
                    data["skipped"].append({"backend": backend, "precision": precision, "steps": steps, "reason": setup})
                    note(f"{backend} {precision} {steps}-step skipped: {setup}")
                    continue
                engines[(backend, precision)] = (engine, setup)
        for res in args.resolutions:
            width, height = size_of(res)
            frame = np.random.default_rng(0).integers(0, 256, (args.batch, height, width, 3), dtype=np.uint8)
            times = {key: [] for key in engines}
            for _ in range(args.warmup + args.iters):  # the first calls compile for the shape
                for key, (engine, _) in engines.items():
                    start = time.perf_counter()
                    engine(frame)
                    times[key].append((time.perf_counter() - start) * 1e3)
            figures = {key: {**_bench.percentiles(values, args.warmup), "min": round(min(values[args.warmup:]), 2)}
                       for key, values in times.items()}
            reference = figures.get(("onnxruntime", "fp32"))
            for (backend, precision), ms in figures.items():
                engine, setup = engines[(backend, precision)]
                data["model_only"].append({
                    "backend": backend, "precision": precision, "steps": steps, "resolution": res, "width": width,
                    "height": height, "batch": args.batch, "device": engine.device, "model": engine.model,
                    "setup_s": setup, "model_ms": ms,
                    "vs_onnxruntime_fp32": round(reference["p50"] / ms["p50"], 2) if reference else None})
                note(f"{backend} {precision} {res} {steps}-step model only: p50 {ms['p50']:.1f} ms"
                     + (f" (x{reference['p50'] / ms['p50']:.2f} onnxruntime fp32)" if reference else ""))


def run_encoder(args, clips: Clips) -> list[dict]:
    """libx264 alone per resolution x preset x tune, on the same content as the pipeline runs."""
    rows = []
    for res in args.resolutions if args.encoder_presets else ():
        clip = clips.get(res, args.encoder_frames)
        for preset in args.encoder_presets:
            for tune in args.encoder_tunes:
                row = {"resolution": res, **_bench.encoder_speed(clip, preset, None if tune == "none" else tune)}
                rows.append(row)
                note(f"encoder {res} {preset} {tune}: {row['wall_ms_per_frame']:.1f} ms/frame wall, "
                     f"{row['cpu_ms_per_frame']:.1f} CPU ms/frame")
    return rows


def run_backend(args, clips: Clips, tmp: Path, data: dict, backend: str, precision: str, steps: int,
                by_res: dict) -> None:
    engine, setup = build(args, backend, precision, steps)
    what = {"backend": backend, "precision": precision, "steps": steps}
    if engine is None:
        data["skipped"].append({**what, "reason": setup})
        note(f"{backend} {precision} {steps}-step skipped: {setup}")
        return
    facts = {**what, "device": engine.device, "model": engine.model, "setup_s": setup}
    if args.profile in ("driving", "all"):
        for res in args.resolutions:
            row = {**facts, **run_single_stream(args, engine, clips, tmp, res, by_res[res])}
            data["driving"].append(row)
            note(f"{backend} {precision} {res} {steps}-step: model p50 {row['model_ms']['p50']:.0f} ms, "
                 f"pipeline {row['pipeline']['fps']:.2f} FPS (x{row['speedup']:.2f})")
    if args.profile in ("surveillance", "all"):
        row = {**facts, **run_surveillance(args, engine, clips, tmp, by_res[args.stream_resolution])}
        data["surveillance"].append(row)
        note(f"{backend} {precision} {args.streams} streams {args.stream_resolution} {steps}-step: "
             f"{row['result']['aggregate_fps']:.2f} FPS aggregate (x{row['speedup']:.2f})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = time.perf_counter()
    args.device = resolve_device(args.device)
    if args.plan:
        from streamrestore.backends.threads import plan

        args.inference_threads = plan(None if args.threads == "auto" else args.threads).inference
        plan().apply(torch_threads=False)  # OpenCV; torch keeps --threads (the naive baseline's, too)
    args.threads = set_threads(args.threads)
    args.precisions = args.precisions or (["fp32", "fp16"] if args.device == "cuda" else ["fp32"])
    args.streams = args.streams or (16 if args.device == "cuda" else 4)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"machine": _bench.machine(), "versions": versions(), "baseline": [], "driving": [],
            "surveillance": [], "skipped": [], "model_only": []}
    with tempfile.TemporaryDirectory(prefix="streamrestore-bench-") as tmp:
        data["weights"] = pick_weights(args, Path(tmp))
        args.weights_path = data["weights"]["path"]
        data["configuration"] = {k: v for k, v in vars(args).items() if k != "weights_path"}
        run_all(args, Path(tmp), data)
    data["wall_seconds"] = round(time.perf_counter() - started, 1)
    v = data["versions"]
    data["versions_line"] = f"torch {v['torch']}, PyAV {v['av']}, onnxruntime {v['onnxruntime'] or '-'}, openvino {v['openvino'] or '-'}"
    write(data, out)
    return 0


def write(data: dict, out: Path) -> None:
    (out / "latency.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "latency.md").write_text(_output.markdown(data))
    pipeline = bool(data["baseline"] or data["driving"] or data["surveillance"])  # --profile model: no plot
    plotted = _output.plot(data, out / "latency.png") if pipeline else False
    print(_output.markdown(data))
    if not pipeline:
        (out / "latency.png").unlink(missing_ok=True)
    elif not plotted:
        (out / "latency.png").unlink(missing_ok=True)  # an older run's plot would not match these figures
        note(_output.PLOT_NEEDS)
    note(f"wrote {out / 'latency.json'}, latency.md{', latency.png' if plotted else ''} ({data['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
