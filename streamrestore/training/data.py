"""Training batches: random patches of clean photographs degraded on the fly, or of lq/gt pairs."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from streamrestore.io.images import read_rgb8
from streamrestore.tasks.degradations import (CLEAR_SHARE, CLIP_SAMPLERS, SCENE_SAMPLERS, TRAIN_SAMPLERS,
                                              clip_read_noise, random_read_noise)

MARGIN = 16  # degrade a larger crop, then cut the border, so blur kernels see real neighbours
DETAIL_CANDIDATES = 4  # a detail draw keeps the most detailed of this many crops


def detail(crop: np.ndarray) -> float:
    """Mean absolute Laplacian of the crop's grey levels: how much fine texture (fur, moss, foliage) it holds."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


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
    """(lq, hq) batches: clean patches at a random scale (0.35-1.0), degraded by the task's train sampler;
    `clear_share` of them left as they are (None: the task's CLEAR_SHARE), so the model learns to keep a
    clean frame untouched; `detail_share` of the crops are the most detailed of DETAIL_CANDIDATES, so fine
    texture, which a small network mistakes for rain or noise, is seen more often; `read_noise_only` (denoise):
    Gaussian read noise alone, without the shot noise, chroma and JPEG of the sensor family."""

    def __init__(self, files, task: str, patch: int, seed: int = 0, clear_share: float | None = None,
                 detail_share: float = 0.0, read_noise_only: bool = False):
        self.images = [read_rgb8(f) for f in files]
        self.degrade = random_read_noise if read_noise_only else TRAIN_SAMPLERS[task]
        self.scene = SCENE_SAMPLERS.get(task, lambda image, rng: image)
        self.patch = patch
        self.clear_share = CLEAR_SHARE.get(task, 0.0) if clear_share is None else clear_share
        self.detail_share = detail_share
        self.rng = np.random.default_rng(seed)

    def left_clear(self) -> bool:
        """Whether the next draw stays undegraded (no generator draw at all when the share is 0)."""
        return self.clear_share > 0 and self.rng.random() < self.clear_share

    def _crop(self) -> np.ndarray:
        """A random square of a random photograph at a random scale, resized to the patch and its margin."""
        image = self.images[int(self.rng.integers(len(self.images)))]
        side = self.patch + 2 * MARGIN
        scale = self.rng.uniform(0.35, 1.0)
        src = min(int(side / scale), *image.shape[:2])
        (crop,) = _random_crop([image], src, self.rng)
        return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)

    def _clean_patch(self) -> np.ndarray:
        picks_detail = self.detail_share > 0 and self.rng.random() < self.detail_share
        crop = max((self._crop() for _ in range(DETAIL_CANDIDATES)), key=detail) if picks_detail else self._crop()
        (crop,) = _augment([crop], self.rng)
        return self.scene(np.ascontiguousarray(crop, dtype=np.float32) / 255, self.rng)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        lq, hq = [], []
        for _ in range(size):
            clean = self._clean_patch()
            degraded = clean if self.left_clear() else self.degrade(clean, self.rng)
            cut = slice(MARGIN, MARGIN + self.patch)
            lq.append(degraded[cut, cut])
            hq.append(clean[cut, cut])
        return to_tensor(lq), to_tensor(hq)


def camera_path(rng: np.random.Generator, frames: int, side: int, static: bool) -> list[np.ndarray]:
    """2x3 affine maps of a hand-held or panning camera: a drift of up to ~4 px per frame plus jitter,
    rotation up to ~0.6 degrees and zoom up to ~1 % per frame, about the frame centre (`static`: identity)."""
    if static:
        return [np.float32([[1, 0, 0], [0, 1, 0]]) for _ in range(frames)]
    velocity, spin, zoom = rng.normal(0, 2.0, 2), rng.normal(0, 0.3), rng.normal(0, 0.005)
    maps = []
    for k in range(frames):
        shift = velocity * k + rng.normal(0, 0.5, 2) * (k > 0)
        m = cv2.getRotationMatrix2D((side / 2, side / 2), spin * k, 1 + zoom * k)
        m[:, 2] += shift
        maps.append(m.astype(np.float32))
    return maps


def paste_object(frame: np.ndarray, sprite: np.ndarray, mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Alpha-blend `sprite` (h, w, 3) with soft `mask` (h, w, 1) into `frame` centred at `centre` (x, y), clipped."""
    h, w = sprite.shape[:2]
    x0, y0 = int(round(centre[0] - w / 2)), int(round(centre[1] - h / 2))
    fy, fx = slice(max(0, y0), min(frame.shape[0], y0 + h)), slice(max(0, x0), min(frame.shape[1], x0 + w))
    sy, sx = slice(fy.start - y0, fy.stop - y0), slice(fx.start - x0, fx.stop - x0)
    if fy.stop > fy.start and fx.stop > fx.start:
        a = mask[sy, sx]
        frame[fy, fx] = frame[fy, fx] * (1 - a) + sprite[sy, sx] * a
    return frame


class SyntheticClips(SyntheticPairs):
    """(lq, hq) pseudo-clips of shape (K, N, 3, P, P): a clean photograph seen by a moving (or, for a
    share of clips, static) camera, with 0-2 objects cut from other photographs moving on their own
    paths; the task's clip sampler keeps the degradation's parameters over the clip while its noise,
    rain streaks and grain are drawn fresh every frame; `clear_share` of the clips are left clean."""

    def __init__(self, files, task: str, patch: int, frames: int, seed: int = 0, static_share: float = 0.4,
                 clear_share: float | None = None, detail_share: float = 0.0, read_noise_only: bool = False):
        super().__init__(files, task, patch, seed, clear_share, detail_share, read_noise_only)
        self.frames, self.static_share = frames, static_share
        self.clip_degrade = clip_read_noise if read_noise_only else CLIP_SAMPLERS[task]

    def _sprite(self) -> tuple[np.ndarray, np.ndarray]:
        size = int(self.rng.integers(self.patch // 6, self.patch // 2))
        image = self.images[int(self.rng.integers(len(self.images)))]
        (crop,) = _random_crop([image], min(size, *image.shape[:2]), self.rng)
        mask = np.zeros(crop.shape[:2], np.float32)
        cv2.ellipse(mask, (crop.shape[1] // 2, crop.shape[0] // 2), (crop.shape[1] // 2 - 1, crop.shape[0] // 2 - 1),
                    0, 0, 360, 1.0, -1)
        return crop.astype(np.float32) / 255, cv2.GaussianBlur(mask, (5, 5), 1.5)[..., None]

    def clip(self) -> tuple[np.ndarray, np.ndarray]:
        """(lq, hq), each (K, P, P, 3) float32 in [0, 1]."""
        side = self.patch + 2 * MARGIN
        base = self._clean_patch()
        maps = camera_path(self.rng, self.frames, side, static=self.rng.random() < self.static_share)
        objects = []
        for _ in range(int(self.rng.integers(0, 3))):
            start, velocity = self.rng.uniform(0, side, 2), self.rng.normal(0, 4.0, 2)
            objects.append((*self._sprite(), start, velocity))
        degrade = (lambda image, rng: image) if self.left_clear() else self.clip_degrade(self.rng)
        cut = slice(MARGIN, MARGIN + self.patch)
        lq, hq = [], []
        for k, m in enumerate(maps):
            clean = cv2.warpAffine(base, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            for sprite, mask, start, velocity in objects:
                clean = paste_object(clean, sprite, mask, start + velocity * k)
            lq.append(degrade(clean, self.rng)[cut, cut])
            hq.append(clean[cut, cut])
        return np.stack(lq), np.stack(hq)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        clips = [self.clip() for _ in range(size)]
        lq = torch.from_numpy(np.stack([c[0] for c in clips], 1).transpose(0, 1, 4, 2, 3).copy())
        hq = torch.from_numpy(np.stack([c[1] for c in clips], 1).transpose(0, 1, 4, 2, 3).copy())
        return lq, hq


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless `pairs.batch(size)` in a DataLoader worker, each worker on its own generator seeded (seed, worker)."""

    def __init__(self, pairs, size: int, seed: int):
        self.pairs, self.size, self.seed = pairs, size, seed

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        self.pairs.rng = np.random.default_rng([self.seed, worker.id if worker else 0])
        while True:
            yield self.pairs.batch(self.size)


class WorkerBatches:
    """`pairs`' batches drawn ahead by `workers` processes (a torch DataLoader), so a GPU is not kept waiting on
    the host's degradations (a batch of 8 derain patches of 96 px takes about 20 ms of one CPU core, low light
    about 45). The loader takes one batch from each worker in turn, so the sequence of batches is fixed by the
    seed and the number of workers (not the same sequence as drawing in the training process)."""

    def __init__(self, pairs, size: int, workers: int, seed: int, pin_memory: bool = False):
        self.size = size
        loader = torch.utils.data.DataLoader(_BatchStream(pairs, size, seed), batch_size=None, num_workers=workers,
                                             pin_memory=pin_memory, prefetch_factor=4)
        self._batches = iter(loader)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if size != self.size:
            raise ValueError(f"these workers draw batches of {self.size}, not {size}")
        return next(self._batches)

    def close(self) -> None:
        """Stop the worker processes."""
        self._batches._shutdown_workers()


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
