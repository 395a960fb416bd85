"""Pick and build a backend by name (DESIGN.md section 4).

Explicit registry: name -> module and class. `auto` tries, in order, tensorrt (CUDA), onnxruntime
(CUDA provider), torch (CUDA), then on the CPU onnxruntime before torch (measured faster on the CPU,
see tests/test_backends.py and the export notes). A backend whose runtime is missing raises
BackendUnavailable (a one-line UserError saying what to install); a backend that fails to build
falls back to the next one with one warning line.
"""
from __future__ import annotations

import importlib
import logging

from streamrestore.backends.base import Backend, PassthroughBackend
from streamrestore.errors import UserError

log = logging.getLogger("streamrestore")

BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt")
BACKENDS = {
    "torch": ("streamrestore.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("streamrestore.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("streamrestore.backends.tensorrt_backend", "TensorRTBackend"),
}
FALLBACK = {"tensorrt": ("onnxruntime", "torch"), "onnxruntime": ("torch",), "torch": ()}
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")


class BackendUnavailable(UserError):
    """The runtime a backend needs is not installed or has no such device: the message says what to install."""


def create_backend(task: str, *, backend: str = "auto", device: str = "auto", steps: int = 1,
                   noise: str = "fixed", weights: str | None = None, fp16: bool | None = None) -> Backend:
    """Build the backend that restores frames of `task` (N,H,W,3 uint8 RGB -> same)."""
    if task == "passthrough":
        return PassthroughBackend()
    if backend not in BACKEND_NAMES:
        raise UserError(f"--backend {backend!r} is not known; use one of {', '.join(BACKEND_NAMES)}")
    kwargs = dict(task=task, device=device, steps=steps, noise=noise, weights=weights, fp16=fp16)
    if backend == "auto":
        return _first_that_builds(_auto_order(device), kwargs, skip_unavailable=True)
    return _first_that_builds((backend, *FALLBACK[backend]), kwargs, skip_unavailable=False)


def _auto_order(device: str) -> tuple[str, ...]:
    """tensorrt, onnxruntime, torch; on a CPU-only request tensorrt is left out."""
    return AUTO_ORDER[1:] if device == "cpu" else AUTO_ORDER


def build(name: str, **kwargs) -> Backend:
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)


def _first_that_builds(names: tuple[str, ...], kwargs: dict, skip_unavailable: bool) -> Backend:
    """The first of `names` that builds; the first one's BackendUnavailable propagates unless skipping."""
    for i, name in enumerate(names):
        try:
            return build(name, **kwargs)
        except BackendUnavailable:
            if not skip_unavailable and i == 0:
                raise
            log.info("streamrestore: %s backend is not available here; trying the next", name)
        except UserError:
            raise  # bad input (task, weights, steps): the same for every backend
        except Exception as exc:  # a failed export or engine build: fall back, say so in one line
            if i + 1 == len(names):
                raise
            log.warning("streamrestore: %s backend failed to build (%s: %s); falling back to %s",
                        name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", names[i + 1])
    raise BackendUnavailable(f"no backend could run here ({', '.join(names)}); pip install onnxruntime or torch")
