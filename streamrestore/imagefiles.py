"""Reading folders of training/evaluation photographs with one-line errors for bad files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamrestore.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path, option: str = "--data") -> list[Path]:
    """Image files directly in `folder`, sorted by name; errors if missing, empty or without images."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{option} {folder}: no such folder; pass a folder of clean photographs")
    if not folder.is_dir():
        raise UserError(f"{option} {folder}: is not a folder; pass a folder of clean photographs")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{option} {folder}: holds no images ({', '.join(IMAGE_SUFFIXES)}); add some or pick another folder")
    return files


def read_rgb8(path: Path) -> np.ndarray:
    """An 8-bit 3-channel image as (H, W, 3) uint8 RGB; grayscale, alpha-only and 16-bit files are refused."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise UserError(f"{path}: cannot be read as an image; remove it or replace it with a valid PNG/JPEG")
    if data.dtype != np.uint8:
        raise UserError(f"{path}: is {data.dtype.itemsize * 8}-bit; convert it to 8-bit RGB (e.g. `convert in.png -depth 8 out.png`)")
    if data.ndim == 2 or data.shape[2] not in (3, 4):
        raise UserError(f"{path}: is grayscale; streamrestore trains and evaluates on RGB photographs, convert it to RGB")
    if min(data.shape[:2]) < 32:
        raise UserError(f"{path}: is {data.shape[1]}x{data.shape[0]}, smaller than 32 pixels; use larger images")
    return np.ascontiguousarray(cv2.cvtColor(data, cv2.COLOR_BGRA2RGB if data.shape[2] == 4 else cv2.COLOR_BGR2RGB))


def split_holdout(files: list[Path], every: int) -> tuple[list[Path], list[Path]]:
    """(training, held-out): every `every`-th file by sorted name is held out (0 holds none out)."""
    if every <= 0:
        return list(files), []
    held = [f for i, f in enumerate(files) if i % every == every - 1]
    return [f for f in files if f not in held], held


def split_folders(folders: list[str], every: int, option: str = "--data") -> tuple[list[Path], list[Path]]:
    """(training, held-out) over several folders, each split on its own by `split_holdout`, so adding a
    folder never changes which files of another one are held out."""
    train, held = [], []
    for folder in folders:
        a, b = split_holdout(list_images(folder, option), every)
        train += a
        held += b
    return train, held


def paired_files(folder: str | Path) -> list[tuple[Path, Path]]:
    """(lq, gt) pairs from `folder/lq` and `folder/gt` with matching file names."""
    folder = Path(folder)
    lq_dir, gt_dir = folder / "lq", folder / "gt"
    if not lq_dir.is_dir() or not gt_dir.is_dir():
        raise UserError(f"--paired {folder}: needs subfolders lq/ and gt/ with matching file names")
    lq = {p.name: p for p in list_images(lq_dir, "--paired")}
    gt = {p.name: p for p in list_images(gt_dir, "--paired")}
    common = sorted(set(lq) & set(gt))
    if not common:
        raise UserError(f"--paired {folder}: no file name appears in both lq/ and gt/; name each pair the same")
    return [(lq[n], gt[n]) for n in common]
