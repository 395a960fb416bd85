"""Still images through OpenCV.

`run`: an image file or a folder of images in, the same names out (ImageSource, ImageSink). Images
are read as 8-bit RGB (16-bit PNG/TIFF scaled to 8 bits, grey expanded, alpha dropped) and written as
PNG unless the output names another format; each file is written to a temporary name beside it and
renamed when complete.

`train` and `eval`: folders of clean photographs (`list_images`, `read_rgb8`, which refuses what it
would have to guess at), split into training and held-out files by name (`split_holdout`,
`split_folders`), or lq/ + gt/ pairs (`paired_files`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from streamrestore.atomic import atomic_path
from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, StreamInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_path(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image file; UserError if OpenCV cannot read it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can read; remove it or convert it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageSource:
    """Yields one `DecodedFrame` per image file (sorted by name); `name` is the file name."""

    def __init__(self, path: str) -> None:
        root = Path(path)
        if root.is_dir():
            self.paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.paths:
                raise UserError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif root.is_file():
            self.paths = [root]
        else:
            raise UserError(f"{path}: no such file or folder; check the INPUT path")
        first = read_rgb(self.paths[0])
        self.info = StreamInfo(width=first.shape[1], height=first.shape[0], frames=len(self.paths),
                               name=path, pix_fmt="rgb24")
        self.skipped = 0
        self.dropped = 0

    def __iter__(self) -> Iterator[DecodedFrame]:
        for index, path in enumerate(self.paths):
            yield DecodedFrame(read_rgb(path), index, name=path.name, captured_at=time.monotonic())

    def close(self) -> None:
        pass


class ImageSink:
    """Writes each restored frame as an image: to `path` itself (one image) or into folder `path`.

    In a folder the name is the frame's own file name (or its index for video input) with the
    suffix `suffix` (PNG by default).
    """

    def __init__(self, path: str, *, single: bool, suffix: str = ".png") -> None:
        self.dest = Path(path)
        self.single = single
        self.suffix = suffix
        self.written: list[Path] = []
        self._made_folder = False
        if not single and not self.dest.is_dir():
            self.dest.mkdir(parents=True)
            self._made_folder = True

    def write(self, image: np.ndarray, frame: DecodedFrame) -> None:
        """Write one (H, W, 3) uint8 RGB image (or I420 planes: see DecodedFrame) under its final name, atomically."""
        image = frame.rgb(image)
        if self.single:
            target = self.dest
        else:
            stem = Path(frame.name).stem if frame.name else f"frame_{frame.index:06d}"
            target = self.dest / f"{stem}{self.suffix}"
        with atomic_path(target) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise UserError(f"{target}: cannot write this image format; use .png or .jpg")
        self.written.append(target)

    def close(self, complete: bool = True) -> int:
        return len(self.written)

    def abort(self) -> None:
        """Remove what this sink wrote (and the folder, if it made it)."""
        for path in self.written:
            path.unlink(missing_ok=True)
        if self._made_folder and not any(self.dest.iterdir()):
            self.dest.rmdir()


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
