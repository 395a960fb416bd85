"""The built-in sample clip: a procedurally drawn street scene, degraded for a task, frame by frame.

So `streamrestore run sample --task derain -o restored.mp4` works with no file of the user's.
The clean scene is drawn here (no media is shipped); the degradation is the task's evaluation
recipe from `streamrestore.tasks.degradations`, seeded per frame.
"""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Iterator

import cv2
import numpy as np

from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.tasks.degradations import EVAL_SAMPLERS, eval_degrade_uint8

PREFIX = "sample"


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Sky gradient, a row of textured buildings with windows, and a road (uint8 RGB)."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = (np.array([120, 160, 210]) * (1 - y) + np.array([210, 220, 230]) * y).repeat(width, 1)
    horizon = int(height * 0.62)
    x = 0
    while x < width:
        w, h = int(rng.integers(40, 110)), int(rng.integers(height // 5, height // 2))
        colour = rng.integers(70, 190, 3)
        cv2.rectangle(image, (x, horizon - h), (x + w, horizon), colour.tolist(), -1)
        for wy in range(horizon - h + 8, horizon - 10, 16):
            for wx in range(x + 6, x + w - 8, 14):
                lit = rng.random() < 0.4
                cv2.rectangle(image, (wx, wy), (wx + 7, wy + 9), (250, 230, 150) if lit else (40, 50, 70), -1)
        x += w + int(rng.integers(0, 12))
    image[horizon:] = 75
    image += rng.normal(0, 6, image.shape)  # surface texture, so restoration has detail to keep
    return np.clip(image, 0, 255).astype(np.uint8)


class SampleClip:
    """A FrameSource of `frames` frames at `fps`, each the clean scene degraded for `task`."""

    def __init__(self, task: str, frames: int = 48, fps: int = 12, width: int = 640, height: int = 360):
        if task not in EVAL_SAMPLERS:
            raise UserError(f"INPUT sample: has no degradation for --task {task!r}; use one of {', '.join(EVAL_SAMPLERS)}")
        self.task, self.frame_count, self.fps = task, frames, fps
        self.info = StreamInfo(width=width, height=height, time_base=Fraction(1, fps), average_rate=Fraction(fps),
                               frames=frames, name=f"{PREFIX}:{task}", pix_fmt="yuv420p", codec="h264",
                               colour={"colorspace": 1, "color_range": 1, "color_primaries": 1, "color_trc": 1})  # BT.709, limited
        self.skipped = self.dropped = 0
        self._background = _background(width, height, np.random.default_rng(0))

    def _clean(self, index: int) -> np.ndarray:
        """The scene at frame `index`: two cars driving across and moving lane markings."""
        image = self._background.copy()
        h, w = image.shape[:2]
        road = int(h * 0.62)
        for k in range(0, w + 80, 80):
            x = (k - index * 6) % (w + 80) - 40
            cv2.rectangle(image, (x, road + (h - road) // 2 - 3), (x + 40, road + (h - road) // 2 + 3), (235, 235, 235), -1)
        for lane, (speed, colour) in enumerate(((7, (200, 40, 40)), (-5, (30, 90, 200)))):
            x = int((80 + lane * 300 + index * speed) % (w + 160)) - 80
            y = road + 12 + lane * (h - road) // 2
            cv2.rectangle(image, (x, y), (x + 110, y + 34), colour, -1)
            cv2.rectangle(image, (x + 22, y - 18), (x + 84, y + 2), (60, 70, 90), -1)
        return image

    def __iter__(self) -> Iterator[DecodedFrame]:
        for index in range(self.frame_count):
            image = eval_degrade_uint8(self.task, self._clean(index), index)
            yield DecodedFrame(image, index, pts=index, time_base=self.info.time_base, captured_at=time.monotonic(),
                               duration=1)

    def close(self) -> None:
        pass
