"""Pick and build a backend by name (DESIGN.md section 4).

Explicit registry: name -> module and class. `auto` tries, in order, tensorrt (CUDA), onnxruntime
(CUDA provider), torch (CUDA), then on the CPU onnxruntime before torch: on the busy 2-core machine,
both at their default 2 threads, onnxruntime took 370/823/1602 ms at 480p/720p/1080p and torch
eager 2464/2768/3312 ms (torch's OpenMP threads stall when the cores are shared); with one thread
each torch was ~20% faster (155 vs 194 ms at 480p), so revisit this on an idle machine. A backend whose runtime is missing raises
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
                   noise: str | None = None, weights: str | None = None, fp16: bool | None = None,
                   temporal: bool = False, compile: bool = False) -> Backend:
    """Build the backend that restores frames of `task` (N,H,W,3 uint8 RGB -> same).

    temporal: without `weights`, load the task's shipped video model (streamrestore.temporal) where
    there is one; the backend's `temporal` attribute says whether the model that runs is one.
    compile: the torch backend through torch.compile (`--compile`); auto then means torch.
    Task and step count are checked here, once, for every backend."""
    from streamrestore.tasks import check_task

    if check_task(task) == "passthrough":
        return PassthroughBackend()
    if steps < 1:
        raise UserError(f"--steps {steps}: must be 1 or more")
    if backend not in BACKEND_NAMES:
        raise UserError(f"--backend {backend!r} is not known; use one of {', '.join(BACKEND_NAMES)}")
    kwargs = dict(task=task, steps=steps, noise=noise, weights=weights, fp16=fp16, temporal=temporal)
    if compile:
        if backend not in ("auto", "torch"):
            raise UserError(f"--compile runs the torch backend; drop --backend {backend} or --compile")
        return build("torch", device=device, compile=True, **kwargs)
    if backend == "auto":
        return _first_that_builds(_auto_candidates(device), kwargs, skip_unavailable=True)
    candidates = [(name, device) for name in (backend, *FALLBACK[backend])]
    return _first_that_builds(candidates, kwargs, skip_unavailable=False)


def _auto_candidates(device: str) -> list[tuple[str, str]]:
    """(backend, device) in AUTO_ORDER on CUDA when it is there, then onnxruntime and torch on the CPU."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return [("torch", "cuda")]  # its error says what to do
    gpu = [(name, "cuda") for name in AUTO_ORDER] if device != "cpu" and torch.cuda.is_available() else []
    cpu = [(name, "cpu") for name in AUTO_ORDER[1:]] if device != "cuda" else []
    return gpu + cpu


def build(name: str, **kwargs) -> Backend:
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)


def _first_that_builds(candidates: list[tuple[str, str]], kwargs: dict, skip_unavailable: bool) -> Backend:
    """The first (name, device) that builds; the first one's BackendUnavailable propagates unless skipping."""
    for i, (name, device) in enumerate(candidates):
        try:
            return build(name, device=device, **kwargs)
        except BackendUnavailable:
            if not skip_unavailable and i == 0:
                raise
            log.info("streamrestore: %s backend is not available on %s here; trying the next", name, device)
        except UserError:
            raise  # bad input (task, weights, steps): the same for every backend
        except Exception as exc:  # a failed export or engine build: fall back, say so in one line
            if i + 1 == len(candidates):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else ""
            log.warning("streamrestore: %s backend failed to build (%s: %s); falling back to %s on %s",
                        name, type(exc).__name__, reason, *candidates[i + 1])
    names = ", ".join(f"{n} ({d})" for n, d in candidates)
    raise BackendUnavailable(f"no backend could run here ({names}); pip install onnxruntime, or torch with CUDA")
