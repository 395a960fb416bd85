"""Where 2-step sampling should re-noise to: the second time of Algorithm 3, chosen per checkpoint.

Algorithm 3 re-noises the first origin estimate to t_2 and restores again. Multistep consistency
sampling takes its intermediate times as an input (Song et al., "Consistency Models", ICML 2023,
Algorithm 1), so they can be chosen per model by measuring. Here, for each shipped IR-CM checkpoint:
the training photographs of --data (never the held-out ones: streamrestore.io.images.split_folders),
degraded by the task's evaluation recipe with seeds the README's evaluation does not use (or, with
--draws train, by one draw of the task's training sampler each), restored at 1 step and at 2 steps
for each candidate t_2; the mean Y-PSNR of each goes in the table, and with --write-cards the best t_2
goes in the model card (`sampling.second_time`), which every backend then samples with (T, t_2,
t_2/2, ...; streamrestore.model.sampler.sampling_times). A video model is measured on the photographs
as a stream's first frame.

    python benchmarks/step_times.py --write-cards --out benchmarks/results/step-times
"""
from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np

from _output import write_table
from streamrestore import Restorer
from streamrestore.choices import HOLDOUT_EVERY, SIZE_NAMES
from streamrestore.errors import UserError
from streamrestore.evaluation.metrics import psnr_y
from streamrestore.evaluation.quality import EvalPair, fit_long_side, synthetic_pairs
from streamrestore.io.images import read_rgb8, split_folders
from streamrestore.model.checkpoint import read_card, write_card
from streamrestore.tasks import shipped_weights
from streamrestore.tasks.degradations import SCENE_SAMPLERS, TASKS, TRAIN_SAMPLERS

DATA = Path(__file__).resolve().parents[2] / "shared/data"
CANDIDATES = (50, 35, 25, 18, 12, 9, 6, 4, 3, 2, 1)  # the halving ladder from T/2 and the steps between
SEED = 10_000  # the README's evaluation seeds each photograph from 0 (streamrestore eval --seed 0)


def shipped_models(tasks) -> list[tuple[str, Path]]:
    """(task, weights) of every shipped IR-CM checkpoint of `tasks`: each size, one-frame and video."""
    found = []
    for task in tasks:
        for size in SIZE_NAMES:
            for temporal in (False, True):
                try:
                    found.append((task, shipped_weights(task, size, temporal=temporal)))
                except UserError:
                    pass
    return found


def training_photographs(folders: list[str], count: int | None, max_side: int) -> dict[str, np.ndarray]:
    """Up to `count` training photographs of `folders` (evenly spaced by name), fitted to `max_side`."""
    files = sorted(split_folders(folders, HOLDOUT_EVERY)[0], key=lambda f: f.name)
    if count and count < len(files):
        files = [files[round(i * len(files) / count)] for i in range(count)]
    return {f.name: fit_long_side(read_rgb8(f), max_side) for f in files}


def training_draw_pairs(images: dict[str, np.ndarray], task: str, seed: int) -> list[EvalPair]:
    """Each photograph degraded by one draw of the task's training sampler, its scene draw first (derain's
    night scenes), with its own seeded generator: the spread of degradations the model was trained on,
    where the evaluation recipe is one point of it."""
    def uint8(image):
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    pairs = []
    for i, (name, clean) in enumerate(sorted(images.items())):
        rng = np.random.default_rng(seed + i)
        scene = SCENE_SAMPLERS.get(task, lambda image, rng: image)(clean.astype(np.float32) / 255, rng)
        pairs.append(EvalPair(name, uint8(TRAIN_SAMPLERS[task](scene, rng)), uint8(scene)))
    return pairs


def mean_psnr(restorer, pairs) -> float:
    return round(float(np.mean([psnr_y(restorer(p.lq), p.hq) for p in pairs])), 3)


def measure(task: str, weights: Path, pairs, candidates) -> dict:
    """Mean Y-PSNR of the input, 1 step and 2 steps at each candidate second time; the best of those."""
    def restorer(steps: int, second_time: int | None = None):
        return Restorer(task, steps=steps, weights=str(weights), backend="torch", temporal=False,
                        second_time=second_time)

    two_step = {str(t): mean_psnr(restorer(2, t), pairs) for t in candidates}
    best = max(candidates, key=lambda t: two_step[str(t)])
    return {"input": mean_psnr(lambda x: x, pairs), "one_step": mean_psnr(restorer(1), pairs),
            "two_step": two_step, "second_time": best}


DRAWS = {"recipe": "the task's evaluation recipe", "train": "one draw each of the task's training sampler"}


def write_choice(weights: Path, row: dict, images: list[str], command: str, draws: str) -> None:
    card = read_card(weights)
    card["sampling"] = {"second_time": row["second_time"], "date": date.today().isoformat(), "command": command,
                        "chosen_on": f"{len(images)} training photographs, {DRAWS[draws]}",
                        "images": images, "psnr_y": {k: row[k] for k in ("input", "one_step", "two_step")}}
    write_card(weights, card)  # atomic: a crash never leaves half a card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--data", nargs="+", default=[str(DATA / "clean"), str(DATA / "more")],
                   help="folders of clean photographs; only their training split is used")
    p.add_argument("--images", type=int, default=24, help="training photographs to measure on (0: all)")
    p.add_argument("--max-side", type=int, default=384)
    p.add_argument("--candidates", nargs="+", type=int, default=list(CANDIDATES))
    p.add_argument("--weights", nargs="+", help="checkpoints of the first --tasks entry (default: every shipped one)")
    p.add_argument("--out", default="benchmarks/results/step-times")
    p.add_argument("--draws", choices=sorted(DRAWS), default="recipe",
                   help="degrade the photographs by the task's evaluation recipe, or by one draw each of its "
                        "training sampler (the whole family it was trained on)")
    p.add_argument("--write-cards", action="store_true", help="store the best second time in each model card")
    args = p.parse_args(argv)
    for folder in args.data:
        if not Path(folder).is_dir():
            print(f"step_times.py: error: --data {folder}: no such folder of photographs", file=sys.stderr)
            return 2
    models = [(args.tasks[0], Path(w)) for w in args.weights] if args.weights else shipped_models(args.tasks)
    images = training_photographs(args.data, args.images, args.max_side)
    command = "python benchmarks/step_times.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"images": sorted(images), "max_side": args.max_side, "seed": SEED, "draws": args.draws, "models": {}}
    make_pairs = training_draw_pairs if args.draws == "train" else synthetic_pairs
    lines = ["| weights | input | 1-step | " + " | ".join(f"t2={t}" for t in args.candidates) + " | chosen |",
             "|---|---|---|" + "---|" * len(args.candidates) + "---|"]
    for task, weights in models:
        try:
            row = measure(task, weights, make_pairs(images, task, SEED), args.candidates)
        except UserError as error:
            print(f"step_times.py: error: {error}", file=sys.stderr)
            return 2
        results["models"][weights.name] = {"task": task, **row}
        cells = " | ".join(f"{row['two_step'][str(t)]:.2f}" for t in args.candidates)
        lines.append(f"| {weights.name} | {row['input']:.2f} | {row['one_step']:.2f} | {cells} | {row['second_time']} |")
        print(lines[-1], flush=True)
        if args.write_cards:
            write_choice(weights, row, sorted(images), command, args.draws)
    write_table(Path(args.out), results, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
