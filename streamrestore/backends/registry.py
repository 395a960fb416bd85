"""Pick and build a backend by name (DESIGN.md section 4)."""
from __future__ import annotations

from streamrestore.backends.base import Backend, PassthroughBackend
from streamrestore.errors import UserError

BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt")


def create_backend(task: str, *, backend: str = "auto", device: str = "auto", steps: int = 1,
                   noise: str = "fixed", weights: str | None = None, fp16: bool | None = None) -> Backend:
    """Build the backend that restores frames of `task` (N,H,W,3 uint8 RGB -> same)."""
    if task == "passthrough":
        return PassthroughBackend()
    if backend not in BACKEND_NAMES:
        raise UserError(f"--backend {backend!r} is not known; use one of {', '.join(BACKEND_NAMES)}")
    from streamrestore.backends.torch_backend import TorchBackend

    return TorchBackend(task=task, device=device, steps=steps, noise=noise, weights=weights, fp16=fp16)
