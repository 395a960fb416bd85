"""`Restorer`: the Python entry point, restoring uint8 RGB frames with a shipped or given checkpoint."""
from __future__ import annotations

import numpy as np

from streamrestore.backends.registry import create_backend


class Restorer:
    """r = Restorer(task="derain", steps=1, device="cpu"); out = r(frame).

    frame: (H, W, 3) or (N, H, W, 3) uint8 RGB of any size; out has the same shape and dtype.
    weights: a checkpoint path (default: the shipped one for `task`). noise: fixed | fresh | zero (default: what the checkpoint's model card recommends).
    backend: torch | onnxruntime | tensorrt | auto.
    """

    def __init__(self, task: str = "derain", steps: int = 1, device: str = "cpu", weights: str | None = None,
                 noise: str | None = None, backend: str = "torch", fp16: bool | None = None):
        self.backend = create_backend(task, backend=backend, device=device, steps=steps, noise=noise,
                                      weights=weights, fp16=fp16)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (3, 4) or frame.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB of shape (H, W, 3) or (N, H, W, 3), got {frame.dtype} {frame.shape}")
        batch = frame[None] if frame.ndim == 3 else frame
        out = self.backend(batch)
        return out[0] if frame.ndim == 3 else out
