"""Temporal stability of each noise policy on a real clip: does the restored video flicker?

For each task and noise policy (fixed, fresh, zero) and step count, the clean clip (default
../shared/data/vtest.avi, scaled) is degraded frame by frame with the task's evaluation recipe
(a new seed per frame, as real rain and sensor noise change every frame), restored, and compared:

- flicker: mean absolute frame-to-frame difference of the output, in 8-bit levels, next to the
  same figure for the clean clip (the motion that is really there);
- Y-PSNR of the output against the clean frames.

    python benchmarks/flicker.py --clip ../shared/data/vtest.avi --frames 40 --out benchmarks/results/flicker

--size base measures (and with --write-cards, sets the policy of) the shipped `base` weights instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from _output import write_table
from streamrestore import Restorer
from streamrestore.choices import SIZE_NAMES
from streamrestore.errors import UserError
from streamrestore.evaluation.metrics import psnr_y
from streamrestore.model.sampler import NOISE_POLICIES
from streamrestore.tasks import shipped_weights
from streamrestore.tasks.degradations import TASKS, eval_degrade_uint8


def read_clip(path: str, frames: int, scale: float) -> list[np.ndarray]:
    with av.open(path) as container:
        out = []
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            out.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
            if len(out) == frames:
                break
    return out


def mean_abs_step(frames: list[np.ndarray]) -> float:
    """Mean |x_k - x_{k-1}| over all pixels and consecutive pairs, in 8-bit levels."""
    return float(np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames[1:], frames[:-1])]))


def measure(task: str, clean: list[np.ndarray], steps: int, policies, weights=None) -> dict:
    degraded = [eval_degrade_uint8(task, c, i) for i, c in enumerate(clean)]
    rows = {"clean": {"flicker": round(mean_abs_step(clean), 3)},
            "degraded input": {"flicker": round(mean_abs_step(degraded), 3),
                               "psnr_y": round(float(np.mean([psnr_y(d, c) for d, c in zip(degraded, clean)])), 2)}}
    for policy in policies:
        restorer = Restorer(task, steps=steps, device="cpu", noise=policy, backend="torch", weights=weights)
        out = [restorer(d) for d in degraded]  # one stream: frame after frame, as the pipeline runs it
        rows[f"{policy}"] = {"flicker": round(mean_abs_step(out), 3),
                             "psnr_y": round(float(np.mean([psnr_y(o, c) for o, c in zip(out, clean)])), 2)}
    return rows


def choose_policy(rows: dict, tolerance_db: float = 0.1) -> str:
    """The policy that flickers least among those within `tolerance_db` of the best Y-PSNR."""
    best = max(rows[p]["psnr_y"] for p in NOISE_POLICIES)
    keep = [p for p in NOISE_POLICIES if rows[p]["psnr_y"] >= best - tolerance_db]
    return min(keep, key=lambda p: rows[p]["flicker"])


def write_recommendation(weights: Path, per_steps: dict, clip: str) -> None:
    """Record the measured figures and the chosen default policy (1-step) in the shipped model card `weights`."""
    from streamrestore.model.checkpoint import read_card, write_card

    card = read_card(weights)
    card["noise_policy"] = {"default": choose_policy(per_steps["1"]), "rule": "least flicker within 0.1 dB of the best "
                            "Y-PSNR, 1-step", "measured_on": clip, "figures": per_steps}
    write_card(weights, card)  # atomic: a crash never leaves half a card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip", default=str(Path(__file__).resolve().parents[2] / "shared/data/vtest.avi"))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--steps", nargs="+", type=int, default=[1, 2])
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--size", default="small", choices=SIZE_NAMES, help="which shipped weights (default: small)")
    p.add_argument("--out", default="benchmarks/results/flicker")
    p.add_argument("--write-cards", action="store_true",
                   help="store the figures and the chosen default noise policy in each shipped model card")
    args = p.parse_args(argv)
    if not Path(args.clip).is_file():
        print(f"flicker.py: error: --clip {args.clip}: no such file; pass a clean video clip", file=sys.stderr)
        return 2
    try:
        weights = {task: shipped_weights(task, args.size) for task in args.tasks}
    except UserError as error:
        print(f"flicker.py: error: --size {args.size}: {error}", file=sys.stderr)
        return 2
    clean = read_clip(args.clip, args.frames, args.scale)
    results = {"clip": Path(args.clip).name, "frames": len(clean), "size": list(clean[0].shape[:2][::-1]), "tasks": {}}
    lines = ["| task | steps | clean | input | " + " | ".join(f"{p} flicker / Y-PSNR" for p in NOISE_POLICIES) + " |",
             "|---|---|---|---|" + "---|" * len(NOISE_POLICIES)]
    for task in args.tasks:
        for steps in args.steps:
            rows = measure(task, clean, steps, NOISE_POLICIES, weights=str(weights[task]))
            results["tasks"].setdefault(task, {})[str(steps)] = rows
            cells = " | ".join(f"{rows[p]['flicker']:.2f} / {rows[p]['psnr_y']:.2f}" for p in NOISE_POLICIES)
            lines.append(f"| {task} | {steps} | {rows['clean']['flicker']:.2f} | "
                         f"{rows['degraded input']['flicker']:.2f} / {rows['degraded input']['psnr_y']:.2f} | {cells} |")
            print(lines[-1], flush=True)
        if args.write_cards:
            write_recommendation(weights[task], results["tasks"][task], f"{results['clip']} ({len(clean)} frames)")
    write_table(Path(args.out), results, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
