"""`streamrestore eval`: Y-PSNR / SSIM of input, classical baseline, CNN-baseline and IR-CM at each step count."""
from __future__ import annotations

import json
from pathlib import Path

from streamrestore.backends.registry import BACKEND_NAMES, PRECISION_NAMES
from streamrestore.choices import DEVICES, HOLDOUT_EVERY, NOISE_POLICIES, TASKS
from streamrestore.cli.options import add_second_time, add_self_ensemble, choice, positive_int, sampling_steps
from streamrestore.errors import UserError


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="measure restoration quality (Y-PSNR, SSIM)",
                              description="Compare the degraded input, a classical OpenCV baseline, the CNN-baseline "
                                          "and IR-CM at each step count on seeded synthetic degradations (--data) "
                                          "or a paired lq/ + gt/ folder (--paired).")
    p.add_argument("--task", required=True, type=choice("--task", TASKS))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", metavar="FOLDER",
                        help="folders of clean RGB photographs, degraded with the evaluation sampler")
    source.add_argument("--paired", help="folder with lq/ and gt/ subfolders of matching file names")
    p.add_argument("--steps", nargs="+", default=[1, 2], type=sampling_steps("--steps"))
    add_second_time(p)
    add_self_ensemble(p)
    p.add_argument("--weights", help="IR-CM checkpoint (default: the shipped one for --task)")
    p.add_argument("--baseline-weights", help="CNN-baseline checkpoint (default: the shipped one, when present)")
    p.add_argument("--split", default="all", type=choice("--split", ("all", "heldout")),
                   help="heldout: only the images train held out of --data (every --holdout-every-th by name)")
    p.add_argument("--holdout-every", default=HOLDOUT_EVERY, type=positive_int("--holdout-every"))
    p.add_argument("--max-side", default=512, type=positive_int("--max-side", minimum=32),
                   help="downscale images so the long side is at most this (speed)")
    p.add_argument("--noise", type=choice("--noise", NOISE_POLICIES),
                   help="sampling noise (default: what the model card recommends)")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--device", default="cpu", type=choice("--device", DEVICES))
    p.add_argument("--backend", default="torch", type=choice("--backend", BACKEND_NAMES),
                   help="what runs IR-CM (default torch; the CNN-baseline always runs on torch)")
    p.add_argument("--precision", type=choice("--precision", PRECISION_NAMES),
                   help="IR-CM's precision: fp32, fp16, bf16 (openvino) or int8 (openvino, onnxruntime)")
    p.add_argument("--calibration-data", metavar="FOLDER",
                   help="int8: clean photographs to calibrate on (default: $STREAMRESTORE_CALIBRATION_DATA, else the "
                        "checkout's ../shared/data/clean); its held-out images are never used")
    p.add_argument("--grid", action="store_true",
                   help="one row per kind of degradation and their mean (streamrestore.tasks.degradations.FAMILIES): "
                        "derain drizzle ... downpour, slanted, long, faint, opaque, splashes, night; denoise sigma "
                        "5-50, shot, chroma, jpeg; deblur lines and shaken kernels of 5-25 px; lowlight dusk ... dark; "
                        "then a clear row: each method on the clean photographs themselves")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--write-card", action="store_true", help="store the table in the IR-CM weights' model card")
    p.set_defaults(handler=main)


def load_clean_images(args) -> dict:
    """{name: uint8 RGB} of --data (all, or the held-out split of each folder), fitted to --max-side."""
    from streamrestore.evaluation.quality import fit_long_side
    from streamrestore.io.images import read_rgb8, split_folders

    train, held = split_folders(args.data, args.holdout_every)
    files = held if args.split == "heldout" else sorted(train + held)
    if not files:
        raise UserError(f"--data {' '.join(args.data)}: too few images to hold any out with --holdout-every "
                        f"{args.holdout_every}")
    return {f.name: fit_long_side(read_rgb8(f), args.max_side) for f in files}


def load_eval_pairs(args):
    from streamrestore.evaluation.quality import EvalPair, fit_long_side, synthetic_pairs
    from streamrestore.io.images import paired_files, read_rgb8

    if args.paired:
        return [EvalPair(lq.name, fit_long_side(read_rgb8(lq), args.max_side), fit_long_side(read_rgb8(gt), args.max_side))
                for lq, gt in paired_files(args.paired)]
    return synthetic_pairs(load_clean_images(args), args.task, args.seed)


def ir_cm_row(args, steps: int) -> str:
    """The table's name for IR-CM at `steps`: "IR-CM 2-step"; with --self-ensemble, "IR-CM 2-step x8" (or x4,
    the task's number of views)."""
    from streamrestore.backends.self_ensemble import views_label

    return f"IR-CM {steps}-step" + (f" {views_label(args.task)}" if args.self_ensemble else "")


def _write_card(args, images: list[str], rows: dict, key: str = "eval") -> None:
    """Record the figures, the images and the command in the model card beside the IR-CM weights, under `key`
    ("eval" for the task's own recipe, "grid" for the table over its families)."""
    import shlex

    from streamrestore.model.checkpoint import read_card, write_card
    from streamrestore.tasks import shipped_weights

    weights = Path(args.weights) if args.weights else shipped_weights(args.task)
    card = read_card(weights)
    card[key] = {"command": "streamrestore " + shlex.join(args.command_line), "split": args.split,
                 "max_side": args.max_side, "images": images, "rows": rows}
    write_card(weights, card)


def main(args) -> int:
    from streamrestore.evaluation.quality import evaluate
    from streamrestore.restorer import Restorer
    from streamrestore.tasks import shipped_weights

    if args.write_card and args.self_ensemble:
        raise UserError("--write-card with --self-ensemble: the model card records the model's own figures; "
                        "drop --self-ensemble to write them, or --write-card to measure the ensemble")
    if args.grid:
        return _grid(args)
    pairs = load_eval_pairs(args)
    models = {}
    baseline = args.baseline_weights
    if baseline is None:
        try:
            baseline = shipped_weights(args.task, kind="cnn-baseline")
        except UserError:
            baseline = None
    if baseline is not None:
        models["CNN-baseline"] = Restorer(args.task, steps=1, device=args.device, weights=baseline, noise="zero")
    engine = "" if args.backend == "torch" and args.precision is None else f" ({args.backend} {args.precision or ''})"
    for steps in args.steps:
        models[f"{ir_cm_row(args, steps)}{engine.replace(' )', ')')}"] = Restorer(
            args.task, steps=steps, device=args.device, weights=args.weights, noise=args.noise, backend=args.backend,
            precision=args.precision, calibration=args.calibration_data, second_time=args.second_time,
            self_ensemble=args.self_ensemble)
    rows = evaluate(args.task, pairs, models)
    if args.write_card:
        _write_card(args, [p.name for p in pairs], rows)
    if args.json:
        print(json.dumps({"task": args.task, "images": [p.name for p in pairs], "rows": rows}, indent=2))
        return 0
    print(f"{args.task}: {len(pairs)} images ({'paired ' + args.paired if args.paired else args.split + ' of ' + ' '.join(args.data)})")
    print(f"{'method':<34} {'Y-PSNR dB':>10} {'Y-SSIM':>8}")
    for name, r in rows.items():
        print(f"{name:<34} {r['psnr_y']:>10.2f} {r['ssim_y']:>8.4f}")
    for name, model in models.items():  # what ran: weights, sampling times, noise policy
        print(f"{name}: {model.backend.model}")
    return 0


def _grid(args) -> int:
    """The task over its grid of families: per family, the input, classical and IR-CM Y-PSNR, and the mean."""
    from streamrestore.evaluation.quality import family_grid
    from streamrestore.restorer import Restorer

    if args.paired:
        raise UserError("--grid degrades clean photographs; give --data, not --paired")
    models = {ir_cm_row(args, steps): Restorer(args.task, steps=steps, device=args.device, weights=args.weights,
                                               noise=args.noise, second_time=args.second_time,
                                               self_ensemble=args.self_ensemble) for steps in args.steps}
    images = load_clean_images(args)
    table = family_grid(args.task, images, models, args.seed)
    if args.write_card:
        _write_card(args, sorted(images), table, key="grid")
    if args.json:
        print(json.dumps({"task": args.task, "split": args.split, "grid": table}, indent=2))
        return 0
    names = list(next(iter(table.values())))
    print(f"{args.task} grid: {args.split} images of {' '.join(args.data)}; Y-PSNR dB (gain over the input); "
          "clear: each method on the clean photographs, scored against them")
    print(f"{'family':<10}" + "".join(f"{n.split(' (')[0]:>22}" for n in names))
    for family, row in table.items():
        cells = ["clean" if r["psnr_y"] is None else f"{r['psnr_y']:.2f}" +
                 ("" if r["gain_db"] is None or n == "degraded input" else f" ({r['gain_db']:+.2f})")
                 for n, r in row.items()]
        print(f"{family:<10}" + "".join(f"{c:>22}" for c in cells))
    return 0
