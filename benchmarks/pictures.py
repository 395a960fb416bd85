"""README pictures: the degradation sample sheet and a before/after strip per task (small PNGs).

    python benchmarks/pictures.py --data ../shared/data/clean --out benchmarks/results

Crops come from a held-out photograph (every 6th by name is held out of training); the
degradation is each task's evaluation recipe with seed 0.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from streamrestore import Restorer
from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.io.images import list_images, read_rgb8, split_holdout
from streamrestore.tasks.degradations import TASKS, eval_degrade_uint8

CROP = 192


def crop_of(path: Path) -> np.ndarray:
    """A CROP x CROP crop from the middle of the photograph, after scaling its short side to 2 * CROP."""
    image = read_rgb8(path)
    scale = 2 * CROP / min(image.shape[:2])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    y, x = (image.shape[0] - CROP) // 2, (image.shape[1] - CROP) // 2
    return image[y:y + CROP, x:x + CROP]


def degrade(task: str, clean: np.ndarray) -> np.ndarray:
    return eval_degrade_uint8(task, clean, 0)


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save(path: Path, rgb: np.ndarray) -> None:
    """A small PNG: 256-colour palette (Pillow's median cut), maximum compression."""
    from PIL import Image

    Image.fromarray(rgb).quantize(256).save(path, optimize=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/clean"))
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--image", default="wall_OneStandsOut.jpg", help="held-out photograph to crop")
    args = p.parse_args(argv)
    held = {f.name: f for f in split_holdout(list_images(args.data), HOLDOUT_EVERY)[1]}
    clean = crop_of(held[args.image])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save(out / "sample-sheet.png", np.concatenate(
        [np.concatenate([label(clean, "clean"), label(degrade(t, clean), t)], 1) for t in TASKS], 0))
    for task in TASKS:
        lq = degrade(task, clean)
        restored = Restorer(task, steps=1, device="cpu", backend="torch")(lq)
        save(out / f"before-after-{task}.png",
             np.concatenate([label(lq, "input"), label(restored, "IR-CM 1-step"), label(clean, "clean")], 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
