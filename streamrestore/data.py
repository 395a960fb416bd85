"""Training batches: random patches of clean photographs degraded on the fly, or of lq/gt pairs."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from streamrestore.degradations import TRAIN_SAMPLERS
from streamrestore.imagefiles import read_rgb8

MARGIN = 16  # degrade a larger crop, then cut the border, so blur kernels see real neighbours


def _augment(patches: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation applied to every array of one sample."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    return [np.rot90(p[:, ::-1] if flip else p, k) for p in patches]


def _random_crop(images: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    h, w = images[0].shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return [im[y:y + size, x:x + size] for im in images]


def to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) float32 arrays -> (N, 3, H, W) tensor."""
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())


class SyntheticPairs:
    """(lq, hq) batches: clean patches at a random scale (0.35-1.0), degraded by the task's train sampler."""

    def __init__(self, files, task: str, patch: int, seed: int = 0):
        self.images = [read_rgb8(f) for f in files]
        self.degrade = TRAIN_SAMPLERS[task]
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def _clean_patch(self) -> np.ndarray:
        image = self.images[int(self.rng.integers(len(self.images)))]
        side = self.patch + 2 * MARGIN
        scale = self.rng.uniform(0.35, 1.0)
        src = min(int(side / scale), *image.shape[:2])
        (crop,) = _random_crop([image], src, self.rng)
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        (crop,) = _augment([crop], self.rng)
        return np.ascontiguousarray(crop, dtype=np.float32) / 255

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        lq, hq = [], []
        for _ in range(size):
            clean = self._clean_patch()
            degraded = self.degrade(clean, self.rng)
            cut = slice(MARGIN, MARGIN + self.patch)
            lq.append(degraded[cut, cut])
            hq.append(clean[cut, cut])
        return to_tensor(lq), to_tensor(hq)


class PairedPatches:
    """(lq, hq) batches of aligned random crops from a paired dataset (lq/ and gt/ folders)."""

    def __init__(self, pairs, patch: int, seed: int = 0):
        self.pairs = [(read_rgb8(a), read_rgb8(b)) for a, b in pairs]
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        lq, hq = [], []
        for _ in range(size):
            a, b = self.pairs[int(self.rng.integers(len(self.pairs)))]
            a, b = _augment(_random_crop([a, b], min(self.patch, *a.shape[:2]), self.rng), self.rng)
            lq.append(np.ascontiguousarray(a, np.float32) / 255)
            hq.append(np.ascontiguousarray(b, np.float32) / 255)
        return to_tensor(lq), to_tensor(hq)
