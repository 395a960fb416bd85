"""Temporal restoration on real clips: the one-frame model, the temporal model, recursive fusion and ffmpeg's filters.

    python benchmarks/temporal.py [--tasks denoise derain lowlight] [--clips A.avi B.mp4 ...] [--frames 60]
        [--width 320] [--temporal-weights 'runs/{task}-temporal.safetensors'] [--size base] [--steps 2]
        [--one-frame-weights PATH] [--self-ensemble] [--out benchmarks/results]

--size base puts the shipped `base` one-frame weights (the CUDA default) in the one-frame rows, beside the
`small` video model, so a CUDA stream's choice between them is measured. --self-ensemble runs both models
as `run --self-ensemble` does (streamrestore.backends.self_ensemble).

Per task and clip (frames scaled to --width, aspect kept, even sizes), the clean frames are degraded
with the task's evaluation recipe drawn fresh per frame (degradations.eval_clip, seeded), then
restored by each row: the one-frame model, the temporal model (Restorer.stream), each of them
followed by streamrestore.runtime.fusion.RecursiveFusion, and ffmpeg's atadenoise, hqdn3d and nlmeans at
settings tuned on the built-in sample clip (never on a scored clip). Figures per row:

- Y-PSNR: BT.601 Y (streamrestore.evaluation.metrics.psnr_y), mean over frames;
- moving Y-PSNR: over the pixels where the clean frame's Y differs from the previous clean frame's
  by more than MOVING_LEVELS, dilated by MOVING_DILATE px (all such pixels of the clip pooled), so
  ghosting and lag show;
- the row "default stream, clean clip in": the default stream's rows (temporal + fusion, or one-frame +
  fusion with no temporal model) run on the clean clip itself and scored against it, i.e. what the
  model does to footage with nothing to restore;
- flicker: mean |Y_k - Y_(k-1)| over pixels and consecutive frames, 8-bit levels, next to the
  clean clip's own (the motion really there);
- FPS on already-decoded frames: our rows time the loop (fusion rows: model + fusion); ffmpeg
  rows time the whole process fed rgb24 through a pipe and read back (start-up included).

Writes temporal.json (every figure, per-frame series, the chosen ffmpeg settings, machine, commit,
command), temporal.md (one table per task) and temporal.png (frames of one clip and flicker over time).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

import _bench
from streamrestore.choices import SIZE_NAMES
from streamrestore.evaluation.metrics import psnr_y, rgb_to_y

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = [DATA / "vtest.avi", DATA / "video" / "box.mp4", DATA / "video" / "cup.mp4", DATA / "video" / "Megamind.avi"]
TASKS = ("denoise", "derain", "lowlight")
MOVING_LEVELS, MOVING_DILATE = 6.0, 2
FFMPEG_ROWS = ("ffmpeg atadenoise", "ffmpeg hqdn3d", "ffmpeg nlmeans")
CLEAR_ROW = "default stream, clean clip in"
ROWS = ("clean clip", "degraded input", "one-frame model", "temporal model", "one-frame + fusion",
        "temporal + fusion", "fusion + one-frame", CLEAR_ROW, *FFMPEG_ROWS)
PICTURE_ROWS = ("clean clip", "degraded input", "one-frame model", "one-frame + fusion", "temporal + fusion")


def _ata(a: float, b: float, s: int) -> str:
    return f"atadenoise=0a={a}:0b={b}:1a={a}:1b={b}:2a={a}:2b={b}:s={s}"


# Strength grids, each filter from light to strong, wide enough that no task's best sits on the edge (checked
# on the sample clip). Y-PSNR does not see chroma, so hqdn3d's chroma strengths keep ffmpeg's default ratios
# (4:3:6:4.5) and the grid varies luma: spatial strength, and temporal at 1.5x (the default) or 3x of it.
FFMPEG_GRIDS = {
    "ffmpeg atadenoise": [_ata(a, b, s) for s in (5, 9, 15, 25) for a, b in
                          ((0.02, 0.04), (0.05, 0.15), (0.1, 0.3), (0.2, 0.6), (0.3, 1.0), (0.3, 2.0), (0.3, 4.0))],
    "ffmpeg hqdn3d": [f"hqdn3d={ls}:{ls * 0.75:g}:{ls * t:g}:{ls * t * 0.75:g}" for t in (1.5, 3.0)
                      for ls in (4, 8, 16, 24, 32, 48, 64)],
    "ffmpeg nlmeans": [f"nlmeans=s={s}:p=7:r=15" for s in (2, 4, 6, 8, 10, 12, 14, 18, 24)],
}


# ---- metrics ----------------------------------------------------------------------------------

def flicker_series(frames: list[np.ndarray]) -> list[float]:
    """Mean |Y_k - Y_(k-1)| (BT.601 Y, 8-bit levels) for k = 1..n-1."""
    y = [rgb_to_y(f) for f in frames]
    return [float(np.abs(b - a).mean()) for a, b in zip(y, y[1:])]


def flicker(frames: list[np.ndarray]) -> float:
    """Mean of flicker_series: the clip's mean absolute frame-to-frame change of Y."""
    return float(np.mean(flicker_series(frames)))


def moving_masks(clean: list[np.ndarray], levels: float = MOVING_LEVELS,
                 dilate: int = MOVING_DILATE) -> list[np.ndarray]:
    """Per frame, bool (H, W): |Y_k - Y_(k-1)| of the clean clip > levels, dilated by `dilate` px
    (a square); frame 0 has no previous frame and no moving pixels."""
    y = [rgb_to_y(f) for f in clean]
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    masks = [np.zeros(y[0].shape, bool)]
    for a, b in zip(y, y[1:]):
        masks.append(cv2.dilate((np.abs(b - a) > levels).astype(np.uint8), kernel) > 0)
    return masks


def masked_psnr_y(out: list[np.ndarray], clean: list[np.ndarray], masks: list[np.ndarray]) -> float | None:
    """Y-PSNR over the masked pixels of all frames pooled; None when no pixel is masked."""
    squared = [((rgb_to_y(o) - rgb_to_y(c))[m] ** 2) for o, c, m in zip(out, clean, masks) if m.any()]
    if not squared:
        return None
    mse = float(np.concatenate(squared).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def score(out: list[np.ndarray], clean: list[np.ndarray], masks: list[np.ndarray], seconds: float | None) -> dict:
    psnr = [psnr_y(o, c) for o, c in zip(out, clean)]
    series = flicker_series(out)
    moving = masked_psnr_y(out, clean, masks)
    return {"psnr_y": round(float(np.mean(psnr)), 3), "psnr_moving": None if moving is None else round(moving, 3),
            "flicker": round(float(np.mean(series)), 3), "fps": None if not seconds else round(len(out) / seconds, 2),
            "psnr_series": [round(p, 2) for p in psnr], "flicker_series": [round(f, 3) for f in series]}


# ---- clips ------------------------------------------------------------------------------------

def scaled_size(width: int, height: int, target: int) -> tuple[int, int]:
    """(target, even height keeping the aspect ratio), at least 2."""
    return target, max(2, round(height * target / width / 2) * 2)


def read_clip(path: Path, frames: int, width: int) -> tuple[list[np.ndarray], list[float]]:
    """The first `frames` frames as (H, W, 3) uint8 RGB scaled to `width` (area), and their times in
    seconds: index / average frame rate, since the decoder's order is the true one but the pts of
    box.mp4 and Megamind.avi go backwards every few frames, which would reset the temporal model."""
    images = []
    with av.open(str(path)) as container:
        rate = float(container.streams.video[0].average_rate or 25)
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            size = scaled_size(image.shape[1], image.shape[0], width)
            images.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            if len(images) == frames:
                break
    return images, [k / rate for k in range(len(images))]


def sample_clip(task: str, frames: int, width: int) -> list[np.ndarray]:
    """Clean frames of the built-in sample clip (streamrestore.io.sample), scaled to `width`: the tuning clip."""
    from streamrestore.io.sample import SampleClip

    clip = SampleClip(task, frames=frames)
    size = scaled_size(clip.info.width, clip.info.height, width)
    return [cv2.resize(clip._clean(i), size, interpolation=cv2.INTER_AREA) for i in range(frames)]


def degrade(task: str, clean: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each frame degraded by the evaluation recipe of `task`: clip parameters from `seed`, frame k's
    noise, rain and grain from np.random.default_rng(seed + k)."""
    from streamrestore.tasks.degradations import eval_clip

    recipe = eval_clip(task)(np.random.default_rng(seed))
    return [(recipe(c.astype(np.float32) / 255, np.random.default_rng(seed + k)) * 255 + 0.5).astype(np.uint8)
            for k, c in enumerate(clean)]


# ---- the methods ------------------------------------------------------------------------------

def run_one_frame(restorer, degraded: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    restorer(degraded[0])  # warm-up at this size, not timed
    start = time.perf_counter()
    out = [restorer(d) for d in degraded]
    return out, time.perf_counter() - start


def run_temporal(restorer, degraded: list[np.ndarray], seconds: list[float]) -> tuple[list[np.ndarray], float, dict]:
    with restorer.stream(fusion=False) as warm:
        warm(degraded[0])
    with restorer.stream(fusion=False) as stream:
        start = time.perf_counter()
        out = [stream(d, seconds=t) for d, t in zip(degraded, seconds)]
        elapsed = time.perf_counter() - start
        resets = stream.resets
    return out, elapsed, resets


def fuse_stream(images: list[np.ndarray], degraded: list[np.ndarray], seconds: list[float],
                **settings) -> tuple[list[np.ndarray], float, dict]:
    """RecursiveFusion over `images` as a stream's state runs it in the product (streamrestore.runtime.temporal:
    cuts and gaps found on the degraded frames reset it): (outputs, seconds taken, resets)."""
    from streamrestore.runtime.fusion import RecursiveFusion
    from streamrestore.runtime.temporal import StreamHistory

    history = StreamHistory(RecursiveFusion(**settings))
    start = time.perf_counter()
    out = []
    for image, before, t in zip(images, degraded, seconds):
        fresh = history.previous_for(before, t) is None
        history.remember(image)
        out.append(history.fuse(image, fresh))
    return out, time.perf_counter() - start, dict(history.resets)


def run_fusion(restored: list[np.ndarray], degraded: list[np.ndarray], seconds: list[float]):
    """Design (c): the fusion after the model."""
    return fuse_stream(restored, degraded, seconds)


def run_input_fusion(restorer, degraded: list[np.ndarray], seconds: list[float]):
    """Design (b), measured against (c): the same fusion on the degraded frames (its noise gate opened
    to input noise levels), then the one-frame model on each fused frame."""
    fused, took, resets = fuse_stream(degraded, degraded, seconds, noise_ceiling=64.0)
    start = time.perf_counter()
    out = [restorer(f) for f in fused]
    return out, took + time.perf_counter() - start, resets


def run_default_stream(one, temporal, frames: list[np.ndarray], seconds: list[float]):
    """What a stream runs by default (the temporal model where one is shipped, else the one-frame model, then the
    fusion) given `frames` as they are: on the clean clip, it shows what restoring does to footage with
    nothing to restore (a camera where the rain has stopped)."""
    if temporal is None:
        restored, took = run_one_frame(one, frames)
    else:
        restored, took, _ = run_temporal(temporal, frames, seconds)
    fused, seconds_fusing, resets = run_fusion(restored, frames, seconds)
    return fused, took + seconds_fusing, resets


def run_ffmpeg(filter_: str, frames: list[np.ndarray], threads: int) -> tuple[list[np.ndarray], float]:
    """`frames` through `ffmpeg -vf format=yuv444p,FILTER` as rawvideo rgb24 on pipes; (out, process seconds)."""
    h, w = frames[0].shape[:2]
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", "25", "-i", "pipe:0", "-filter_threads", str(threads),
               "-sws_flags", "accurate_rnd+full_chroma_int", "-vf", f"format=yuv444p,{filter_}",
               "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    data = np.ascontiguousarray(np.stack(frames)).tobytes()
    start = time.perf_counter()
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=120 + len(frames))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ffmpeg -vf {filter_} produced nothing in {120 + len(frames)} s") from None
    elapsed = time.perf_counter() - start
    out = np.frombuffer(done.stdout, np.uint8)
    if done.returncode or out.size != len(data):
        raise RuntimeError(f"ffmpeg -vf {filter_} failed (exit {done.returncode}, {out.size} of {len(data)} bytes): "
                           f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return list(out.reshape(len(frames), h, w, 3)), elapsed


def runs_on(setting: str, frames: int) -> bool:
    """Whether ffmpeg can run `setting` on a clip of `frames` frames: atadenoise waits forever (ffmpeg 5.1)
    for a clip shorter than half its window s plus one."""
    window = re.search(r"atadenoise=.*:s=(\d+)", setting)
    return window is None or frames >= int(window[1]) // 2 + 1


def tune_ffmpeg(task: str, args) -> dict:
    """Per ffmpeg row: the grid setting with the best mean Y-PSNR on the sample clip, and the whole grid
    (settings the scored clips are too short for left out)."""
    clean = sample_clip(task, args.tune_frames, args.width)
    degraded = degrade(task, clean, args.seed + 1_000_000)
    tuned = {}
    for row, settings in FFMPEG_GRIDS.items():
        grid = [s for s in settings if runs_on(s, min(args.frames, args.tune_frames))]
        if not grid:
            continue
        scores = []
        for setting in grid:
            out = run_ffmpeg(setting, degraded, args.threads)[0]
            scores.append({"setting": setting, "psnr_y": round(float(np.mean(list(map(psnr_y, out, clean)))), 3)})
        best = max(scores, key=lambda g: g["psnr_y"])
        tuned[row] = {"chosen": best["setting"], "psnr_y_on_tuning_clip": best["psnr_y"], "grid": scores}
        note(f"{task}: {row} tuned on the sample clip: {best['setting']} ({best['psnr_y']:.2f} dB)")
    return tuned


def fusion_cost(path: Path, sizes=((320, 240), (768, 576)), frames: int = 24) -> list[dict]:
    """RecursiveFusion's milliseconds per frame (p50, mean; 4 warm-up frames left out) on `path`'s
    frames resized to each size, with a fixed 3-level Gaussian residual added as a restored frame has."""
    from streamrestore.runtime.fusion import RecursiveFusion

    source, _ = read_clip(path, frames, sizes[-1][0])
    rng = np.random.default_rng(0)
    figures = []
    for size in sizes:
        images = [np.clip(cv2.resize(s, size, interpolation=cv2.INTER_AREA) + rng.normal(0, 3, (*size[::-1], 3)),
                          0, 255).astype(np.uint8) for s in source]
        fusion, times = RecursiveFusion(), []
        for image in images:
            start = time.perf_counter()
            fusion(image)
            times.append((time.perf_counter() - start) * 1e3)
        figures.append({"size": f"{size[0]}x{size[1]}", **_bench.percentiles(times, warmup=4)})
    return figures


# ---- one task ---------------------------------------------------------------------------------

def temporal_weights(task: str, template: str | None) -> tuple[Path | None, str]:
    """The temporal model's checkpoint for `task` (--temporal-weights, else the shipped one), or None and why."""
    from streamrestore.errors import UserError
    from streamrestore.tasks import shipped_weights

    if template:
        path = Path(template.replace("{task}", task))
        if path.is_file():
            return path, "--temporal-weights"
        return None, f"--temporal-weights {path}: no such file; {task} temporal rows skipped"
    try:
        return shipped_weights(task, temporal=True), "shipped"
    except UserError:
        return None, (f"no shipped temporal weights for {task} (engines/{task}-small-temporal.safetensors); "
                      "temporal rows skipped: pass --temporal-weights PATH")


def weights_facts(path: Path) -> dict:
    """Path (relative to the repository when inside it), SHA-256 (first 16 hex digits) and, from the
    model card beside it, the training's stages, iterations and progress."""
    root = Path(__file__).resolve().parents[1]
    shown = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
    facts = {"path": str(shown), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    card = path.with_suffix(".json")
    if card.is_file():
        training = json.loads(card.read_text()).get("training", {})
        facts["training"] = {k: training[k] for k in ("stages", "iters", "completed") if k in training}
    return facts


def build_restorers(task: str, args, data: dict):
    from streamrestore import Restorer

    single = args.one_frame_weights[task]
    one = Restorer(task, weights=str(single), temporal=False, backend=args.backend, device="cpu", steps=args.steps,
                   self_ensemble=args.self_ensemble)
    path, how = temporal_weights(task, args.temporal_weights)
    info = {"one-frame": weights_facts(single)}
    temporal = None
    if path is None:
        data["skipped"].append(how)
        note(how)
    else:
        temporal = Restorer(task, weights=str(path), backend=args.backend, device="cpu", steps=args.steps,
                            self_ensemble=args.self_ensemble)
        info["temporal"] = {**weights_facts(path), "from": how}
        if not temporal.backend.temporal:
            message = f"{path} is a one-frame model; {task} temporal rows skipped"
            data["skipped"].append(message)
            note(message)
            temporal = None
    data["weights"][task] = info
    return one, temporal


def measure_clip(task: str, clip: dict, index: int, restorers, tuned: dict, args) -> tuple[dict, dict]:
    """All rows on one clip: (figures per row plus resets, outputs per row)."""
    one, temporal = restorers
    clean = clip["frames"]
    degraded = degrade(task, clean, args.seed + 1000 * index)
    masks = moving_masks(clean)
    outputs, timing, resets = {"clean clip": clean, "degraded input": degraded}, {}, {}
    outputs["one-frame model"], timing["one-frame model"] = run_one_frame(one, degraded)
    fused, seconds, resets["one-frame + fusion"] = run_fusion(outputs["one-frame model"], degraded, clip["seconds"])
    outputs["one-frame + fusion"], timing["one-frame + fusion"] = fused, timing["one-frame model"] + seconds
    fusion_ms = {"one-frame + fusion": round(seconds / len(clean) * 1e3, 2)}
    if temporal is not None:
        outputs["temporal model"], timing["temporal model"], resets["temporal model"] = run_temporal(
            temporal, degraded, clip["seconds"])
        fused, seconds, resets["temporal + fusion"] = run_fusion(outputs["temporal model"], degraded, clip["seconds"])
        outputs["temporal + fusion"], timing["temporal + fusion"] = fused, timing["temporal model"] + seconds
        fusion_ms["temporal + fusion"] = round(seconds / len(clean) * 1e3, 2)
    outputs["fusion + one-frame"], timing["fusion + one-frame"], resets["fusion + one-frame"] = run_input_fusion(
        one, degraded, clip["seconds"])
    outputs[CLEAR_ROW], timing[CLEAR_ROW], resets[CLEAR_ROW] = run_default_stream(one, temporal, clean, clip["seconds"])
    for row, found in tuned.items():
        outputs[row], timing[row] = run_ffmpeg(found["chosen"], degraded, args.threads)
    rows = {row: score(out, clean, masks, timing.get(row)) for row, out in outputs.items()}
    rows["clean clip"]["psnr_y"] = rows["clean clip"]["psnr_moving"] = None
    rows["clean clip"].pop("psnr_series")
    figures = {"size": list(clean[0].shape[1::-1]), "frames": len(clean),
               "moving_share": round(float(np.mean([m.mean() for m in masks[1:]])), 4),
               "resets": resets, "fusion_ms_per_frame": fusion_ms, "rows": rows}
    return figures, outputs


def mean_over_clips(per_clip: dict) -> dict:
    means = {}
    for row in ROWS:
        found = [c["rows"][row] for c in per_clip.values() if row in c["rows"]]
        if found:
            means[row] = {k: (round(float(np.mean([f[k] for f in found])), 3) if all(f[k] is not None for f in found)
                              else None) for k in ("psnr_y", "psnr_moving", "flicker", "fps")}
    return means


def run_task(task: str, clips: list[dict], args, data: dict, pictures: dict) -> None:
    restorers = build_restorers(task, args, data)
    tuned = tune_ffmpeg(task, args) if data["ffmpeg"]["available"] else {}
    data["ffmpeg"]["tuning"][task] = tuned
    per_clip = {}
    for index, clip in enumerate(clips):
        figures, outputs = measure_clip(task, clip, index, restorers, tuned, args)
        per_clip[clip["name"]] = figures
        r = figures["rows"]
        note(f"{task} {clip['name']}: " + ", ".join(f"{row} {r[row]['psnr_y']:.2f} dB" for row in r
                                                   if r[row]["psnr_y"]))
        if index == 0:
            middle = len(clip["frames"]) // 2
            pictures[task] = {row: out[middle] for row, out in outputs.items()}
    data["results"][task] = per_clip
    data["means"][task] = mean_over_clips(per_clip)


# ---- options and main -------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"temporal.py: error: {message}\n")


def _whole(minimum: int, even: bool = False):
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum or (even and int(text) % 2):
            raise argparse.ArgumentTypeError(
                f"{text!r}: use {'an even' if even else 'a'} whole number, {minimum} or more")
        return int(text)
    return parse


def _task(text: str) -> str:
    from streamrestore.tasks.degradations import TASKS as ALL

    if text not in ALL:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task; use one of {', '.join(ALL)}")
    return text


def _threads(text: str) -> str | int:
    return text if text == "auto" else _whole(1)(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="temporal.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", type=_task, default=list(TASKS))
    p.add_argument("--clips", nargs="+", default=[str(c) for c in CLIPS], help="clean video clips to score")
    p.add_argument("--frames", type=_whole(2), default=60, help="frames per clip (60)")
    p.add_argument("--width", type=_whole(16, even=True), default=320, help="frames scaled to this width (320)")
    p.add_argument("--tune-frames", type=_whole(2), default=30, help="frames of the sample clip for ffmpeg tuning (30)")
    p.add_argument("--temporal-weights", metavar="PATH",
                   help="temporal checkpoint; {task} in it is replaced by the task (default: the shipped one)")
    p.add_argument("--size", default="small", choices=SIZE_NAMES,
                   help="which shipped one-frame weights (default: small; base: the CUDA default, run here on the CPU)")
    p.add_argument("--one-frame-weights", metavar="PATH",
                   help="one-frame checkpoint instead of the shipped one; {task} in it is replaced by the task")
    p.add_argument("--steps", type=_whole(1), default=1,
                   help="sampling steps of both models (1, the default run's; 2 and more at each card's second time)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="both models as the self-ensemble of `run --self-ensemble` (x8; derain x4, upright)")
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    p.add_argument("--threads", type=_threads, default="auto",
                   help="CPU threads for torch, OpenCV and ffmpeg's filters; auto: as benchmarks/latency.py")
    p.add_argument("--seed", type=_whole(0), default=0)
    p.add_argument("--out", default="benchmarks/results", help="folder for temporal.json, .md, .png")
    p.add_argument("--write-cards", action="store_true",
                   help="store each task's figures (means over the clips) in the model card of the temporal weights used")
    args = p.parse_args(argv)
    if args.write_cards and args.steps != 1:
        p.error(f"--write-cards with --steps {args.steps}: the cards hold the default run's figures (1 step)")
    if args.write_cards and args.self_ensemble:
        p.error("--write-cards with --self-ensemble: the cards hold the default run's figures (no ensemble)")
    for clip in args.clips:
        if not Path(clip).is_file():
            p.error(f"--clips {clip}: no such file; pass clean video clips")
    if args.temporal_weights:
        if "{task}" not in args.temporal_weights and len(args.tasks) > 1:
            p.error(f"--temporal-weights {args.temporal_weights}: put {{task}} in the path when running several tasks")
        found = [t for t in args.tasks if Path(args.temporal_weights.replace("{task}", t)).is_file()]
        if not found:  # with {task}, a task without a file only loses its temporal rows (said in one line)
            p.error(f"--temporal-weights {args.temporal_weights.replace('{task}', args.tasks[0])}: no such file")
    from streamrestore.errors import UserError
    from streamrestore.tasks import shipped_weights

    if args.one_frame_weights:
        if "{task}" not in args.one_frame_weights and len(args.tasks) > 1:
            p.error(f"--one-frame-weights {args.one_frame_weights}: put {{task}} in the path when running several "
                    "tasks")
        given = {task: Path(args.one_frame_weights.replace("{task}", task)) for task in args.tasks}
        for path in given.values():
            if not path.is_file():
                p.error(f"--one-frame-weights {path}: no such file")
        args.one_frame_weights = given
    else:
        try:  # resolved once here: build_restorers takes each task's one-frame weights from this
            args.one_frame_weights = {task: shipped_weights(task, args.size) for task in args.tasks}
        except UserError as error:
            p.error(f"--size {args.size}: {error}")
    args.command = shlex.join(["python", "benchmarks/temporal.py", *argv])
    return args


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ffmpeg_facts() -> dict:
    path = shutil.which("ffmpeg")
    if path is None:
        return {"available": False, "tuning": {}}
    version = subprocess.run([path, "-version"], capture_output=True, text=True).stdout.splitlines()
    return {"available": True, "path": path, "version": version[0].split(" Copyright")[0] if version else None,
            "tuning": {},
            "grids": FFMPEG_GRIDS,
            "tuning_clip": "streamrestore.io.sample (the built-in sample clip), scaled like the clips"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from latency import set_threads, versions

    from streamrestore.errors import UserError

    started = time.perf_counter()
    args.threads = set_threads(args.threads)
    cv2.setNumThreads(args.threads)
    av.logging.set_level(av.logging.PANIC)  # the clips' harmless decoder complaints
    data = {"command": args.command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": _bench.machine(),
            "versions": versions(),  # settings: the options as given (the resolved weights go under "weights")
            "settings": {k: v for k, v in vars(args).items() if k not in ("command", "one_frame_weights")},
            "metrics": {"moving_levels": MOVING_LEVELS, "moving_dilate_px": MOVING_DILATE},
            "ffmpeg": ffmpeg_facts(), "weights": {}, "results": {}, "means": {}, "skipped": []}
    if not data["ffmpeg"]["available"]:
        note("temporal.py: ffmpeg not found on PATH; the atadenoise, hqdn3d and nlmeans rows are skipped")
        data["skipped"].append("ffmpeg not found on PATH: ffmpeg rows skipped")
    clips = []
    for path in map(Path, args.clips):
        frames, seconds = read_clip(path, args.frames, args.width)
        clips.append({"name": path.name, "frames": frames, "seconds": seconds})
    pictures: dict = {}
    try:
        for task in args.tasks:
            run_task(task, clips, args, data, pictures)
    except UserError as exc:  # e.g. weights that do not load: one line, as for a bad option
        note(f"temporal.py: error: {exc}")
        return 2
    data["fusion_cost_ms"] = fusion_cost(Path(args.clips[0]))
    data["wall_seconds"] = round(time.perf_counter() - started, 1)
    write(data, pictures, Path(args.out))
    if args.write_cards:
        write_cards(data)
    return 0


def write_cards(data: dict) -> None:
    """The mean rows of each task (and the command) into the card of the temporal weights measured."""
    from streamrestore.model.checkpoint import read_card, write_card

    keep = ("degraded input", "one-frame model", "temporal model", "one-frame + fusion", "temporal + fusion")
    for task, info in data["weights"].items():
        if "temporal" not in info:
            continue
        path = Path(info["temporal"]["path"])
        path = path if path.is_absolute() else Path(__file__).resolve().parents[1] / path
        card = read_card(path)
        card["temporal_eval"] = {
            "command": data["command"], "date": data["date"], "clips": list(data["results"][task]),
            "frames_per_clip": data["settings"]["frames"], "width": data["settings"]["width"],
            "cells": "Y-PSNR dB / moving-pixel Y-PSNR dB / flicker (8-bit levels), means over the clips",
            "clean_flicker": data["means"][task]["clean clip"]["flicker"],
            "rows": {row: [figures.get(k) for k in ("psnr_y", "psnr_moving", "flicker")]
                     for row, figures in data["means"][task].items() if row in keep}}
        write_card(path, card)


# ---- outputs ----------------------------------------------------------------------------------

def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(figures: dict | None) -> str:
    if figures is None:
        return "not run"
    return " / ".join((_num(figures["psnr_y"]), _num(figures["psnr_moving"]), _num(figures["flicker"]),
                       _num(figures["fps"], 1)))


def _weights_line(task: str, info: dict) -> str:
    def one(facts: dict) -> str:
        training = facts.get("training", {})
        done, stages = training.get("completed", {}), training.get("stages", [])
        running = "iteration" in done and done.get("stage_index", len(stages)) < len(stages)
        progress = (f", training in progress: iteration {done['iteration']} of {training.get('iters')}"
                    if running else "")
        return f"`{facts['path']}` (sha256 {facts['sha256']}{progress})"
    temporal = one(info["temporal"]) if "temporal" in info else "not run"
    return f"- {task}: one-frame {one(info['one-frame'])}; temporal {temporal}"


def markdown(data: dict) -> str:
    m, s, v = data["machine"], data["settings"], data["versions"]
    lines = [f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, load average at start "
             f"{m['load_average']}; {s['threads']} thread(s) for torch, OpenCV and ffmpeg's filters; "
             f"backend {s['backend']}.",
             f"**Command:** `{data['command']}` ({data['wall_seconds']:.0f} s, {data['date']}, commit "
             f"{v.get('streamrestore_commit')}); torch {v['torch']}; {data['ffmpeg'].get('version') or 'no ffmpeg'}.",
             f"**Clips:** the first {s['frames']} frames, scaled to {s['width']} px wide; each task's evaluation "
             f"degradation drawn fresh per frame (seed {s['seed']}).", "", "**Weights:**"]
    lines += [_weights_line(task, info) for task, info in data["weights"].items()] + [""]
    for task, per_clip in data["results"].items():
        names = list(per_clip)
        lines += [f"### {task}", "",
                  "Each cell: Y-PSNR dB / moving-pixel Y-PSNR dB / flicker (8-bit levels) / FPS.", "",
                  "| row | " + " | ".join(f"{n} ({c['size'][0]}x{c['size'][1]})" for n, c in per_clip.items())
                  + " | mean over clips |", "|---|" + "---|" * (len(names) + 1)]
        for row in ROWS:
            if any(row in c["rows"] for c in per_clip.values()):
                cells = [_cell(per_clip[n]["rows"].get(row)) for n in names] + [_cell(data["means"][task].get(row))]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _ffmpeg_lines(data) + _fusion_lines(data)
    lines += [f"- skipped: {s}" for s in data["skipped"]]
    lines += ["", "Moving pixels: clean Y changed by more than "
              f"{data['metrics']['moving_levels']:g} levels from the previous clean frame, dilated "
              f"{data['metrics']['moving_dilate_px']} px, pooled over the clip. FPS: our rows time the loop "
              "over decoded frames (fusion rows: model + fusion); ffmpeg rows time the process fed rgb24 "
              "through a pipe (start-up included). atadenoise averages a centred window of s frames (it "
              "waits for later frames: not causal); hqdn3d is causal; nlmeans is spatial only (one frame)."]
    return "\n".join(lines) + "\n"


def _ffmpeg_lines(data: dict) -> list[str]:
    tuning = {task: t for task, t in data["ffmpeg"]["tuning"].items() if t}
    if not tuning:
        return []
    lines = ["ffmpeg settings, each the best Y-PSNR of its grid on the built-in sample clip "
             "(Y-PSNR there in brackets):", "", "| task | " + " | ".join(FFMPEG_ROWS) + " |",
             "|---|" + "---|" * len(FFMPEG_ROWS)]
    for task, found in tuning.items():
        lines.append(f"| {task} | " + " | ".join(f"`{found[r]['chosen']}` ({found[r]['psnr_y_on_tuning_clip']:.2f})"
                                               for r in FFMPEG_ROWS) + " |")
    return lines + [""]


def _fusion_lines(data: dict) -> list[str]:
    cost = ", ".join(f"{c['size']}: p50 {c['p50']:.1f} ms, mean {c['mean']:.1f} ms" for c in data["fusion_cost_ms"])
    return [f"Recursive fusion cost per frame (streamrestore.runtime.fusion, {data['settings']['threads']} thread(s)): "
            f"{cost}.", ""]


def best_ffmpeg(rows: dict) -> str | None:
    found = [r for r in FFMPEG_ROWS if r in rows]
    return max(found, key=lambda r: rows[r]["psnr_y"]) if found else None


def plot(data: dict, pictures: dict, path: Path) -> None:
    """One row of frames per task (the first clip's middle frame), then flicker over time per row."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    tasks = list(pictures)
    clip = next(iter(data["results"][tasks[0]]))
    columns = len(PICTURE_ROWS) + 1
    fig = plt.figure(figsize=(2.6 * columns, 2.2 * len(tasks) + 3.2), dpi=80)
    grid = fig.add_gridspec(len(tasks) + 1, columns, height_ratios=[1] * len(tasks) + [1.5])
    for i, task in enumerate(tasks):
        rows = data["results"][task][clip]["rows"]
        for j, row in enumerate([*PICTURE_ROWS, best_ffmpeg(rows)]):
            ax = fig.add_subplot(grid[i, j])
            ax.axis("off")
            if row in pictures[task]:
                ax.imshow(pictures[task][row])
                score = "" if rows[row]["psnr_y"] is None else f" {rows[row]['psnr_y']:.2f} dB"
                ax.set_title(f"{task}: {row}{score}", fontsize=7)
    plots = grid[-1, :].subgridspec(1, len(tasks))
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(plots[0, i])
        for row, figures in data["results"][task][clip]["rows"].items():
            ax.plot(range(1, len(figures["flicker_series"]) + 1), figures["flicker_series"],
                    "--" if row == "clean clip" else "-", color="k" if row == "clean clip" else f"C{ROWS.index(row)}",
                    label=row, linewidth=1)
        ax.set(title=f"{task}, {clip}: flicker per frame", xlabel="frame", ylabel="mean |dY| (levels)", yscale="log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(data: dict, pictures: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "temporal.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "temporal.md").write_text(markdown(data))
    plot(data, pictures, out / "temporal.png")
    print(markdown(data))
    note(f"wrote {out / 'temporal.json'}, temporal.md, temporal.png ({data['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
