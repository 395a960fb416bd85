"""Frames too large for a whole-frame graph go to the torch backend's tiled path (streamrestore.model.tiles)."""
from __future__ import annotations

import logging

import numpy as np

from streamrestore.backends.base import Done, check_batch
from streamrestore.model.tiles import TILE_ABOVE, tiled

log = logging.getLogger(__name__)


class LargeFrames:
    """A backend (onnxruntime, openvino, tensorrt) for frames up to TILE_ABOVE pixels; frames above go
    to a torch backend of the same task, weights, steps, noise and device, built on first use, which
    restores them in tiles of `tile` pixels, so memory stays bounded whatever the size. Every other
    attribute (name, model, temporal, ...) is the wrapped backend's.

    make_torch: builds that torch backend (streamrestore.backends.registry.create_backend's options).
    """

    def __init__(self, inner, tile: int, make_torch):
        self.inner, self.tile, self._make_torch = inner, tile, make_torch
        self._torch = None
        self._last = inner  # the backend that ran the last call: its last_timings are ours

    def __getattr__(self, name: str):
        if name.startswith("__") or "inner" not in self.__dict__:  # copy and pickle look before __init__ ran
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def last_timings(self) -> dict[str, float]:
        return self._last.last_timings

    @property
    def model(self) -> str:
        """What runs, as the run summary and report say it: the large frames' path too."""
        return f"{self.inner.model}; frames above {TILE_ABOVE / 1e6:.1f} MP: torch in {self.tile}-pixel tiles"

    def _for(self, frames: np.ndarray):
        if not tiled(frames.shape, self.tile):
            return self.inner
        if self._torch is None:
            log.info("frames above %.1f MP (%dx%d) restore in %d-pixel tiles on the torch backend",
                     TILE_ABOVE / 1e6, frames.shape[2], frames.shape[1], self.tile)
            self._torch = self._make_torch()
        return self._torch

    def submit(self, frames: np.ndarray, previous: np.ndarray | None = None):
        frames = check_batch(frames, previous)
        self._last = backend = self._for(frames)
        args = (frames,) if previous is None else (frames, previous)
        submit = getattr(backend, "submit", None)
        return submit(*args) if submit else Done(backend(*args), dict(backend.last_timings))

    def __call__(self, frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        frames = check_batch(frames, previous)
        self._last = backend = self._for(frames)
        return backend(frames) if previous is None else backend(frames, previous)
