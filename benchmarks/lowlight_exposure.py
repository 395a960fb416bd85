"""How much of the low-light loss is the scene's brightness, which a dark frame leaves open.

    python benchmarks/lowlight_exposure.py [--weights W [W ...]] [--data ../shared/data/clean ../shared/data/more]
        [--out benchmarks/results/lowlight-exposure]

For each exposure family of `streamrestore eval --task lowlight --grid` (the same held-out photographs,
long side 512, and the same seeds), the Y-PSNR (dB) of
  - the model's 1-step output (its card's noise policy), as `eval --grid` scores it;
  - that output scaled per channel so its means equal the clean photograph's ("oracle brightness": the
    brightness a user could set by hand; what is left is the restoration itself);
  - that output scaled per channel to the mean colour of the *training* photographs (a fixed
    auto-exposure, no oracle);
and the mean ratio clean / output of the channel means (1: right brightness; above 1: too dark).
A dark frame does not say how bright the scene was: a dim scene at a long exposure and a bright one
at a short exposure can give the same input, so a model can only pick a likely brightness.
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.evaluation.metrics import psnr_y
from streamrestore.evaluation.quality import fit_long_side
from streamrestore.io.images import read_rgb8, split_folders
from streamrestore.restorer import Restorer
from streamrestore.tasks.degradations import FAMILIES, family_uint8

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def channel_means(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).astype(np.float64).mean(0)


def rescaled(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float64) * gains, 0, 255).round().astype(np.uint8)


def measure(model, held_out: dict, target_means: np.ndarray, seed: int = 0) -> dict:
    """{family: {model, oracle_brightness, fixed_exposure, ratio, ratio_min, ratio_max}} and their mean."""
    table = {}
    for f, family in enumerate(FAMILIES["lowlight"]):
        rows = {"model": [], "oracle_brightness": [], "fixed_exposure": [], "ratio": []}
        for i, (_, clean) in enumerate(sorted(held_out.items())):
            degraded, target = family_uint8("lowlight", family, clean, seed + 1000 * f + i)  # as eval --grid
            out = model(degraded)
            out_means = np.maximum(channel_means(out), 1e-3)
            oracle_gains = channel_means(target) / out_means
            rows["model"].append(psnr_y(out, target))
            rows["oracle_brightness"].append(psnr_y(rescaled(out, oracle_gains), target))
            rows["fixed_exposure"].append(psnr_y(rescaled(out, target_means / out_means), target))
            rows["ratio"].append(float(np.mean(oracle_gains)))
        table[family] = {k: round(float(np.mean(v)), 2) for k, v in rows.items()}
        table[family].update(ratio_min=round(min(rows["ratio"]), 2), ratio_max=round(max(rows["ratio"]), 2))
    table["mean"] = {k: round(float(np.mean([table[f][k] for f in FAMILIES["lowlight"]])), 2)
                     for k in ("model", "oracle_brightness", "fixed_exposure", "ratio")}
    return table


def markdown(result: dict) -> str:
    lines = ["# Low light: the model's brightness against an oracle's (benchmarks/lowlight_exposure.py)", "",
             f"{len(result['images'])} held-out photographs of {', '.join(result['data'])}, long side 512, the exposure "
             "families and seeds of `streamrestore eval --task lowlight --grid`, 1 step, each card's noise policy. Y-PSNR dB; "
             "ratio = clean / output channel means (1 = right brightness, > 1 = too dark).", ""]
    for name, table in result["models"].items():
        lines += [f"## {name}", "", "| kind | model | oracle brightness | fixed exposure | ratio (min-max) |",
                  "|---|---|---|---|---|"]
        for family, row in table.items():
            spread = f" ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})" if "ratio_min" in row else ""
            lines.append(f"| {family} | {row['model']:.2f} | {row['oracle_brightness']:.2f} | "
                         f"{row['fixed_exposure']:.2f} | {row['ratio']:.2f}{spread} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", default=[None], help="IR-CM weights (default: the shipped lowlight model)")
    p.add_argument("--data", nargs="+", default=[str(DATA / "clean"), str(DATA / "more")])
    p.add_argument("--out", default="benchmarks/results/lowlight-exposure")
    args = p.parse_args(argv)
    train, held = split_folders(args.data, HOLDOUT_EVERY)  # the split of `streamrestore eval --split heldout`
    held_out = {f.name: fit_long_side(read_rgb8(f), 512) for f in held}
    target_means = np.mean([channel_means(fit_long_side(read_rgb8(f), 512)) for f in train], 0)
    result = {"images": sorted(held_out), "data": [Path(d).name for d in args.data],
              "fixed_exposure_means": [round(float(m), 2) for m in target_means], "models": {}}
    for weights in args.weights:
        name = "shipped lowlight-small" if weights is None else Path(weights).stem
        result["models"][name] = measure(Restorer("lowlight", steps=1, weights=weights), held_out,
                                         target_means)
        print(name, json.dumps(result["models"][name]["mean"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
