"""Quality tables: Y-PSNR / SSIM of the degraded input, the classical baseline and models, per task."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamrestore.evaluation.metrics import psnr_y, ssim_y
from streamrestore.tasks.classical import CLASSICAL
from streamrestore.tasks.degradations import FAMILIES, eval_degrade_uint8, family_uint8


@dataclass
class EvalPair:
    name: str
    lq: np.ndarray  # (H, W, 3) uint8 RGB
    hq: np.ndarray


def fit_long_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (area interpolation) so the long side is at most max_side; even sizes kept as they are."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(16, round(image.shape[1] * scale)), max(16, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def synthetic_pairs(images: dict[str, np.ndarray], task: str, seed: int) -> list[EvalPair]:
    """Each clean image degraded by the task's evaluation sampler with its own seeded generator."""
    pairs = []
    for i, (name, clean) in enumerate(sorted(images.items())):
        pairs.append(EvalPair(name, eval_degrade_uint8(task, clean, seed + i), clean))
    return pairs


def score(method, pairs: list[EvalPair]) -> dict:
    """Mean Y-PSNR (dB) and Y-SSIM of method(lq) against hq over all pairs."""
    psnr, ssim = [], []
    for p in pairs:
        out = method(p.lq)
        psnr.append(psnr_y(out, p.hq))
        ssim.append(ssim_y(out, p.hq))
    return {"psnr_y": round(float(np.mean(psnr)), 2), "ssim_y": round(float(np.mean(ssim)), 4), "images": len(pairs)}


def evaluate(task: str, pairs: list[EvalPair], models: dict) -> dict:
    """Rows in order: input, classical, then each named model (a callable uint8 -> uint8)."""
    rows = {"degraded input": score(lambda x: x, pairs), f"classical ({CLASSICAL[task].__name__})": score(CLASSICAL[task], pairs)}
    for name, model in models.items():
        rows[name] = score(model, pairs)
    return rows


def family_grid(task: str, images: dict[str, np.ndarray], models: dict, seed: int) -> dict:
    """{family: {method: {psnr_y, ssim_y, gain_db}}} over the task's FAMILIES (streamrestore.tasks.degradations), then
    a "mean" row; each image gets its own seed per family. Last, a "clear" row (not in the mean): each method on
    the clean photographs themselves, scored against them, i.e. what it does to a frame with nothing to restore
    (the input's own score is infinite, so its psnr_y and every gain_db there are None)."""
    table = {}
    for f, family in enumerate(FAMILIES[task]):
        pairs = []
        for i, (name, clean) in enumerate(sorted(images.items())):
            degraded, target = family_uint8(task, family, clean, seed + 1000 * f + i)
            pairs.append(EvalPair(name, degraded, target))
        rows = evaluate(task, pairs, models)
        for row in rows.values():
            row["gain_db"] = round(row["psnr_y"] - rows["degraded input"]["psnr_y"], 2)
        table[family] = rows
    methods = table[next(iter(table))]
    table["mean"] = {m: {k: round(float(np.mean([table[f][m][k] for f in FAMILIES[task]])), 3)
                         for k in ("psnr_y", "ssim_y", "gain_db")} for m in methods}
    clear = evaluate(task, [EvalPair(name, clean, clean) for name, clean in sorted(images.items())], models)
    clear["degraded input"]["psnr_y"] = None
    table["clear"] = {m: {**row, "gain_db": None} for m, row in clear.items()}
    return table
