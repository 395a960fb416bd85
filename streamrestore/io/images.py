"""Still images through OpenCV: an image file or a folder of images in, the same names out.

Images are read as 8-bit RGB (16-bit PNG/TIFF scaled to 8 bits, grey expanded, alpha dropped)
and written as PNG unless the output names another format; each file is written to a temporary
name beside it and renamed when complete.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from streamrestore.errors import UserError
from streamrestore.atomic import atomic_path
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
        """Write one (H, W, 3) uint8 RGB image under its final name, atomically."""
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
