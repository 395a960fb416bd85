"""Quality of each CPU precision (issue 16): held-out Y-PSNR and video flicker per task, against fp32.

For each task and each backend:precision, the IR-CM 1-step model (the noise policy its card
recommends) restores
- the held-out photographs (`streamrestore eval --split heldout`'s images and degradations):
  mean Y-PSNR / Y-SSIM;
- a clip (default ../shared/data/vtest.avi, scaled) degraded frame by frame with a new seed per
  frame, as benchmarks/flicker.py does: flicker (mean |frame-to-frame difference|, 8-bit levels)
  and Y-PSNR against the clean frames.
Each row's difference to the first configuration (the reference, torch fp32 by default) is given.

    python benchmarks/precisions.py --configs torch:fp32 openvino:fp32 openvino:bf16 openvino:int8 \
        --out benchmarks/results/precisions
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from flicker import mean_abs_step, read_clip
from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.evaluation.metrics import psnr_y
from streamrestore.evaluation.quality import score
from streamrestore.tasks.degradations import TASKS, eval_degrade_uint8

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _config(text: str) -> tuple[str, str]:
    backend, _, precision = text.partition(":")
    if not backend or not precision:
        raise argparse.ArgumentTypeError(f"{text!r}: use BACKEND:PRECISION, e.g. openvino:int8")
    return backend, precision


def heldout_pairs(task: str, data: str, max_side: int):
    from streamrestore.cli.evaluate import load_eval_pairs

    args = argparse.Namespace(paired=None, data=[data], split="heldout", holdout_every=HOLDOUT_EVERY, max_side=max_side,
                              task=task, seed=0)
    return load_eval_pairs(args)


def measure(task: str, backend: str, precision: str, pairs, clean: list, degraded: list) -> dict:
    from streamrestore.restorer import Restorer

    restorer = Restorer(task, steps=1, device="cpu", backend=backend, precision=precision, temporal=False)
    still = score(restorer, pairs)
    out = [restorer(d) for d in degraded]  # one stream, frame after frame
    return {"heldout_psnr_y": still["psnr_y"], "heldout_ssim_y": still["ssim_y"], "images": still["images"],
            "clip_flicker": round(mean_abs_step(out), 3),
            "clip_psnr_y": round(float(np.mean([psnr_y(o, c) for o, c in zip(out, clean)])), 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", type=_config, default=[("torch", "fp32"), ("openvino", "fp32"),
                                                                    ("openvino", "bf16"), ("openvino", "int8")])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--data", default=str(DATA / "clean"), help="clean photographs (their held-out split is scored)")
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--clip", default=str(DATA / "vtest.avi"))
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--out", default="benchmarks/results/precisions")
    args = p.parse_args(argv)
    for path in (args.data, args.clip):
        if not Path(path).exists():
            print(f"precisions.py: error: {path}: no such file or folder", file=sys.stderr)
            return 2
    clean = read_clip(args.clip, args.frames, args.scale)
    results = {"command": " ".join(["python", "benchmarks/precisions.py", *(argv or sys.argv[1:])]),
               "clip": f"{Path(args.clip).name} ({len(clean)} frames, {clean[0].shape[1]}x{clean[0].shape[0]})",
               "tasks": {}}
    lines = ["| task | backend | precision | held-out Y-PSNR dB | vs first | Y-SSIM | clip flicker | vs first | "
             "clip Y-PSNR dB |", "|---|---|---|---|---|---|---|---|---|"]
    for task in args.tasks:
        pairs = heldout_pairs(task, args.data, args.max_side)
        degraded = [eval_degrade_uint8(task, c, i) for i, c in enumerate(clean)]
        rows = {}
        for backend, precision in args.configs:
            row = measure(task, backend, precision, pairs, clean, degraded)
            first = rows[next(iter(rows))] if rows else row
            row["psnr_delta_db"] = round(row["heldout_psnr_y"] - first["heldout_psnr_y"], 2)
            row["flicker_change"] = round(row["clip_flicker"] / first["clip_flicker"] - 1, 3)
            rows[f"{backend}:{precision}"] = row
            lines.append(f"| {task} | {backend} | {precision} | {row['heldout_psnr_y']:.2f} | "
                         f"{row['psnr_delta_db']:+.2f} | {row['heldout_ssim_y']:.4f} | {row['clip_flicker']:.2f} | "
                         f"{100 * row['flicker_change']:+.1f} % | {row['clip_psnr_y']:.2f} |")
            print(lines[-1], flush=True)
        results["tasks"][task] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(f"`{results['command']}`; clip {results['clip']}\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
