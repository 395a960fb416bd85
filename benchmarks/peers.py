"""The held-out photographs restored by the tools a user would try instead, next to streamrestore.

    python benchmarks/peers.py [--tasks denoise derain deblur lowlight] [--sigmas 15 25 50]
        [--data ../shared/data/clean] [--max-side 512] [--steps 1 2] [--self-ensemble]
        [--out benchmarks/results]

Per task, on the held-out split of --data (every 6th photograph by name, as `streamrestore eval
--split heldout`), degraded by the task's evaluation recipe (denoise: Gaussian noise at each of
--sigmas): Y-PSNR, Y-SSIM and milliseconds per megapixel of
  - the degraded input and the classical OpenCV baseline (streamrestore.tasks.classical);
  - BM3D (PyPI `bm3d`, Makinen et al. 2020, given the true sigma) for denoise, when installed;
  - FFmpeg's `nlmeans` and `hqdn3d` (denoise, strengths set from the true sigma), `median`
    (derain), `unsharp` (deblur) and `eq` gamma/brightness (lowlight), at the fixed settings in
    FFMPEG and denoise_filters (not tuned per image), when the ffmpeg command is there;
  - streamrestore's shipped IR-CM `small` (and `base` where shipped) at each of --steps, on the CPU;
    with --self-ensemble, each of those again as the self-ensemble (`run --self-ensemble`: x8, derain x4).
Writes peers.json and peers.md into --out.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from streamrestore.backends.self_ensemble import views_label
from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.errors import UserError
from streamrestore.evaluation.metrics import psnr_y, ssim_y
from streamrestore.evaluation.quality import fit_long_side
from streamrestore.io.images import list_images, read_rgb8, split_holdout
from streamrestore.restorer import Restorer
from streamrestore.tasks import shipped_weights
from streamrestore.tasks.classical import CLASSICAL
from streamrestore.tasks.degradations import add_noise, eval_degrade_uint8

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clean"
# FFmpeg filter per task (denoise's nlmeans strength follows sigma, in 8-bit levels)
FFMPEG = {"derain": {"ffmpeg median": "median=radius=2"},
          "deblur": {"ffmpeg unsharp": "unsharp=7:7:1.5"},
          "lowlight": {"ffmpeg eq": "eq=gamma=2.2:brightness=0.05"}}


def denoise_filters(sigma: float) -> dict[str, str]:
    return {"ffmpeg nlmeans": f"nlmeans=s={max(1.0, sigma * 0.5):.1f}:p=7:r=15",
            "ffmpeg hqdn3d": f"hqdn3d={sigma * 0.4:.1f}:{sigma * 0.3:.1f}:0:0"}


def ffmpeg_filter(image: np.ndarray, graph: str) -> np.ndarray:
    """`image` through an FFmpeg filter graph, as an RGB24 PNG in and out (no chroma subsampling)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / "out.png"
        cv2.imwrite(str(src), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"format=gbrp,{graph},format=rgb24",
                        str(dst)], check=True, capture_output=True)
        return cv2.cvtColor(cv2.imread(str(dst)), cv2.COLOR_BGR2RGB)


def bm3d_filter(sigma: float):
    import bm3d

    def run(image: np.ndarray) -> np.ndarray:
        out = bm3d.bm3d_rgb(image.astype(np.float32) / 255, sigma / 255)
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    return run


def score(method, pairs) -> dict:
    psnr, ssim, ms, pixels = [], [], 0.0, 0
    method(np.ascontiguousarray(pairs[0][0][:64, :64]))  # warm-up: model loading is not counted
    for lq, hq in pairs:
        start = time.perf_counter()
        out = method(lq)
        ms += (time.perf_counter() - start) * 1e3
        pixels += lq.shape[0] * lq.shape[1]
        psnr.append(psnr_y(out, hq))
        ssim.append(ssim_y(out, hq))
    return {"psnr_y": round(float(np.mean(psnr)), 2), "ssim_y": round(float(np.mean(ssim)), 4),
            "ms_per_megapixel": round(ms / (pixels / 1e6), 1)}


def methods_for(task: str, sigma: float | None, steps: list[int], self_ensemble: bool = False) -> dict:
    methods = {"degraded input": lambda x: x, f"classical ({CLASSICAL[task].__name__})": CLASSICAL[task]}
    for size in ("small", "base"):
        try:  # base: the GPU size, where one is shipped for the task (the default on CUDA), run here on the CPU
            weights = str(shipped_weights(task, size))
        except UserError:
            continue
        for n in steps:  # 2 steps and more: at the model card's second sampling time (benchmarks/step_times.py)
            for ensemble in (False, True) if self_ensemble else (False,):
                views = f" {views_label(task)}" if ensemble else ""
                methods[f"streamrestore IR-CM {size} {n}-step{views}"] = Restorer(
                    task, steps=n, device="cpu", backend="torch", weights=weights, self_ensemble=ensemble)
    if task == "denoise":
        try:
            import bm3d  # noqa: F401
            methods["BM3D (true sigma)"] = bm3d_filter(sigma)
        except ImportError:
            print("peers.py: bm3d is not installed (pip install bm3d): its row is left out", file=sys.stderr)
    if shutil.which("ffmpeg"):
        filters = denoise_filters(sigma) if task == "denoise" else FFMPEG[task]
        methods.update({name: (lambda x, g=graph: ffmpeg_filter(x, g)) for name, graph in filters.items()})
    return methods


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="peers.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["denoise", "derain", "deblur", "lowlight"],
                   choices=["denoise", "derain", "deblur", "lowlight"])
    p.add_argument("--sigmas", nargs="+", type=float, default=[15, 25, 50], help="denoise sigmas, 8-bit levels")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--steps", nargs="+", type=int, default=[1, 2], help="streamrestore's sampling steps (rows)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="also each IR-CM row as the self-ensemble (8 flips and rotations averaged; derain 4, upright)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    held = split_holdout(list_images(args.data), HOLDOUT_EVERY)[1]
    clean = {f.name: fit_long_side(read_rgb8(f), args.max_side) for f in held}
    table = {}
    for task in args.tasks:
        for sigma in (args.sigmas if task == "denoise" else [None]):
            label = f"denoise sigma {sigma:g}" if sigma else task
            if sigma:
                pairs = [((add_noise(img.astype(np.float32) / 255, np.random.default_rng(i), sigma / 255) * 255 + 0.5)
                          .astype(np.uint8), img) for i, img in enumerate(clean.values())]
            else:
                pairs = [(eval_degrade_uint8(task, img, i), img) for i, img in enumerate(clean.values())]
            table[label] = {}
            for name, method in methods_for(task, sigma, args.steps, args.self_ensemble).items():
                table[label][name] = score(method, pairs)
                print(f"{label:<18} {name:<36} {table[label][name]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    facts = {"images": sorted(clean), "max_side": args.max_side, "data": str(args.data), "rows": table}
    (args.out / "peers.json").write_text(json.dumps(facts, indent=1))
    lines = ["# Peers on the held-out photographs (benchmarks/peers.py)", "",
             f"{len(clean)} held-out photographs, long side {args.max_side} px, on this CPU. Y-PSNR dB / Y-SSIM / ms "
             "per megapixel (FFmpeg's include starting one ffmpeg process per image).", "",
             "| degradation | method | Y-PSNR | Y-SSIM | ms/MP |", "|---|---|---|---|---|"]
    for label, rows in table.items():
        lines += [f"| {label} | {name} | {r['psnr_y']} | {r['ssim_y']} | {r['ms_per_megapixel']} |" for name, r in rows.items()]
    (args.out / "peers.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
