"""Pick and build a backend by name (DESIGN.md section 4).

Explicit registry: name -> module and class. `auto` tries, in order, tensorrt (CUDA), onnxruntime
(CUDA provider), torch (CUDA), then on the CPU openvino or onnxruntime (below) before torch: on the busy 2-core machine,
both at their default 2 threads, onnxruntime took 370/823/1602 ms at 480p/720p/1080p and torch
eager 2464/2768/3312 ms (torch's OpenMP threads stall when the cores are shared); with one thread
each torch was ~20% faster (155 vs 194 ms at 480p), so revisit this on an idle machine. A backend whose runtime is missing raises
BackendUnavailable (a one-line UserError saying what to install); a backend that fails to build
falls back to the next one with one warning line.

On the CPU, openvino (when installed) and onnxruntime are measured once on a 480p frame and the
faster runs (streamrestore.backends.cpu_choice; cached beside the engine cache), then torch.
Precisions are per backend (PRECISIONS); one a backend cannot run is one line naming the backends
that can.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from streamrestore.backends.base import Backend, BackendUnavailable, LoadedModel, PassthroughBackend
from streamrestore.errors import UserError

log = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
BACKENDS = {
    "torch": ("streamrestore.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("streamrestore.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("streamrestore.backends.tensorrt_backend", "TensorRTBackend"),
    "openvino": ("streamrestore.backends.openvino_backend", "OpenVinoBackend"),
}
FALLBACK = {"tensorrt": ("onnxruntime", "torch"), "onnxruntime": ("torch",), "torch": (),
            "openvino": ("onnxruntime", "torch")}
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
CPU_ORDER = ("openvino", "onnxruntime", "torch")
PRECISION_NAMES = ("fp32", "fp16", "bf16", "int8")
PRECISIONS = {"torch": ("fp32", "fp16"), "onnxruntime": ("fp32", "fp16", "int8"), "tensorrt": ("fp32", "fp16"),
              "openvino": ("fp32", "bf16", "int8")}
TAKES_PRECISION = ("onnxruntime", "openvino")  # the others take fp16=True/False (torch, tensorrt)

__all__ = ["BACKEND_NAMES", "PRECISION_NAMES", "BackendUnavailable", "check_precision", "create_backend"]


def create_backend(task: str, *, backend: str = "auto", device: str = "auto", steps: int = 1,
                   noise: str | None = None, weights: str | None = None, fp16: bool | None = None,
                   temporal: bool = False, compile: bool = False, precision: str | None = None,
                   threads: int | None = None, calibration: str | None = None, tile: int | None = None,
                   device_colour: bool | None = None, second_time: int | None = None,
                   self_ensemble: bool = False) -> Backend:
    """Build the backend that restores frames of `task` (N,H,W,3 uint8 RGB -> same).

    temporal: without `weights`, load the task's shipped video model (streamrestore.runtime.temporal) where
    there is one; the backend's `temporal` attribute says whether the model that runs is one.
    compile: the torch backend through torch.compile (`--compile`); auto then means torch.
    precision: fp32, fp16, bf16 or int8 (`--precision`; overrides fp16), among the backend's PRECISIONS;
    auto then tries only the backends that run it. threads: inference threads (onnxruntime, openvino).
    calibration: the folder of clean photographs int8 calibrates on (streamrestore.backends.quantize).
    tile: frames above streamrestore.model.tiles.TILE_ABOVE pixels restore in tiles of this side (default
    tiles.TILE) on the torch backend, whichever backend runs the others (backends.large_frames), so
    memory stays bounded whatever the size; 0: never.
    device_colour: the torch backend takes I420 planes and converts colour where it runs (default: on CUDA;
    streamrestore.backends.torch_backend); the host converts otherwise, as for every other backend.
    second_time: where steps after the first re-noise to (streamrestore.model.sampler.sampling_times;
    default: the model card's `sampling.second_time`, else T/2).
    self_ensemble: every frame restored in its 8 flips and rotations (derain: 4, kept upright) and the
    results averaged (streamrestore.backends.self_ensemble): 8x (4x) the work.
    Task and step count are checked here, once, for every backend; the weights, their noise policy and
    description are loaded here, once (LoadedModel), and handed to each backend tried."""
    from streamrestore.tasks import check_task

    if check_task(task) == "passthrough":
        return PassthroughBackend()
    if steps < 1:
        raise UserError(f"--steps {steps}: must be 1 or more")
    if backend not in BACKEND_NAMES:
        raise UserError(f"--backend {backend!r} is not known; use one of {', '.join(BACKEND_NAMES)}")
    check_precision(backend, precision, compile)
    from streamrestore.model.tiles import check_tile

    kwargs = dict(loaded=_Loader(task, weights, steps, noise, temporal, second_time), fp16=fp16, precision=precision,
                  threads=threads, calibration=calibration, tile=check_tile(tile), device_colour=device_colour)
    if compile:
        if backend not in ("auto", "torch"):
            raise UserError(f"--compile runs the torch backend; drop --backend {backend} or --compile")
        built = build("torch", device=device, compile=True, **kwargs)
    elif backend == "auto":
        candidates = [(n, d) for n, d in _auto_candidates(device) if precision is None or precision in PRECISIONS[n]]
        built = _auto_on_cpu(candidates, kwargs) or _first_that_builds(candidates, kwargs, skip_unavailable=True)
        built = _large_frames_on_torch(built, kwargs)
    else:
        names = [name for name in (backend, *FALLBACK[backend]) if precision is None or precision in PRECISIONS[name]]
        built = _large_frames_on_torch(_first_that_builds([(name, device) for name in names], kwargs,
                                                          skip_unavailable=False), kwargs)
    if self_ensemble:
        from streamrestore.backends.self_ensemble import SelfEnsemble, views_for

        return SelfEnsemble(built, views_for(task))
    return built


def _large_frames_on_torch(built: Backend, kwargs: dict) -> Backend:
    """`built`, with its frames above TILE_ABOVE pixels sent to the torch backend's tiles (unless it is torch)."""
    import torch

    from streamrestore.backends.large_frames import LargeFrames

    if built.name == "torch" or not kwargs["tile"]:
        return built
    device = "cuda" if built.device == "cuda" and torch.cuda.is_available() else "cpu"
    options = {k: v for k, v in kwargs.items() if k not in ("precision", "threads", "calibration", "fp16",
                                                            "device_colour")}
    return LargeFrames(built, kwargs["tile"], lambda: build(
        "torch", device=device, fp16=device == "cuda" and built.precision == "fp16", **options))


class _Loader:
    """The LoadedModel for a device, loaded on first use and kept: without --weights the shipped weights
    follow where the backend runs (streamrestore.tasks.default_weights: `base` on CUDA where it restores
    better, streamrestore.tasks.BASE_ON_CUDA)."""

    def __init__(self, task: str, weights: str | None, steps: int, noise: str | None, temporal: bool,
                 second_time: int | None = None):
        self.task, self.weights, self.steps, self.noise, self.temporal = task, weights, steps, noise, temporal
        self.second_time = second_time
        self._loaded: dict[Path, LoadedModel] = {}

    def __call__(self, device: str) -> LoadedModel:
        from streamrestore.model.checkpoint import load_for_sampling, read_card, recommended_noise
        from streamrestore.tasks import default_weights

        path = Path(self.weights) if self.weights else default_weights(self.task, device, self.temporal)
        if path not in self._loaded:
            card = read_card(path)
            model = load_for_sampling(path, self.steps, self.second_time, card)
            self._loaded[path] = LoadedModel(self.task, path, model, self.steps,
                                             self.noise or recommended_noise(card), card)
        return self._loaded[path]


def weights_device(name: str, device: str) -> str:
    """Where backend `name` asked for `device` runs, as far as picking shipped weights goes."""
    if name == "tensorrt":
        return "cuda"
    if name == "openvino" or device == "cpu":
        return "cpu"
    import torch

    return "cuda" if device == "cuda" or torch.cuda.is_available() else "cpu"


def check_precision(backend: str, precision: str | None, compile: bool = False) -> None:
    """UserError unless `precision` is known and `backend` (auto: some backend) can run it."""
    if precision is None:
        return
    if precision not in PRECISION_NAMES:
        raise UserError(f"--precision {precision!r} is not known; use one of {', '.join(PRECISION_NAMES)}")
    name = "torch" if compile else backend
    if name != "auto" and precision not in PRECISIONS[name]:
        able = [n for n, p in PRECISIONS.items() if precision in p]
        raise UserError(f"--precision {precision}: --backend {name}{' --compile' if compile else ''} runs "
                        f"{_either(PRECISIONS[name])}; use --backend {_either(able)} for {precision}")


def _either(names) -> str:
    """'a, b or c'"""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _auto_candidates(device: str) -> list[tuple[str, str]]:
    """(backend, device) in AUTO_ORDER on CUDA when it is there, then onnxruntime and torch on the CPU."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return [("torch", "cuda")]  # its error says what to do
    gpu = [(name, "cuda") for name in AUTO_ORDER] if device != "cpu" and torch.cuda.is_available() else []
    cpu = [(name, "cpu") for name in CPU_ORDER] if device != "cuda" else []
    return gpu + cpu


def _auto_on_cpu(candidates: list[tuple[str, str]], kwargs: dict) -> Backend | None:
    """Where only the CPU is a candidate and openvino and onnxruntime both run: the one measured faster
    here (streamrestore.backends.cpu_choice, cached); its `auto_choice` holds the measurement. None otherwise."""
    from streamrestore.backends import cpu_choice

    names = [n for n, d in candidates]
    if any(d != "cpu" for _, d in candidates) or not set(cpu_choice.CONTENDERS) <= set(names):
        return None
    built: dict = {}

    def make(name: str) -> Backend:
        built[name] = build(name, device="cpu", **kwargs)
        return built[name]

    order, record = cpu_choice.ranked(make, kwargs.get("precision"), kwargs.get("threads"))
    if record is None:
        return None
    chosen = built[order[0]]
    chosen.auto_choice = {"order": order, "ms_per_480p_frame": record["ms"]}
    return chosen


def build(name: str, precision: str | None = None, threads: int | None = None, calibration: str | None = None,
          **kwargs) -> Backend:
    """The backend `name`; precision, threads and calibration go to the backends that take them, the
    others get fp16 from precision."""
    module, cls = BACKENDS[name]
    tile, device_colour = kwargs.pop("tile", None), kwargs.pop("device_colour", None)
    kwargs["loaded"] = kwargs["loaded"](weights_device(name, kwargs.get("device", "auto")))
    if name == "torch":
        kwargs.update(tile=tile, device_colour=device_colour)
    if name in TAKES_PRECISION:
        fp16 = kwargs.pop("fp16", None)
        precision = precision or (None if fp16 is None else "fp16" if fp16 else "fp32")
        kwargs.update(precision=precision, threads=threads, calibration=calibration)
    elif precision is not None:
        kwargs["fp16"] = precision == "fp16"
    return getattr(importlib.import_module(module), cls)(**kwargs)


def _first_that_builds(candidates: list[tuple[str, str]], kwargs: dict, skip_unavailable: bool) -> Backend:
    """The first (name, device) that builds; the first one's BackendUnavailable propagates unless skipping."""
    for i, (name, device) in enumerate(candidates):
        try:
            return build(name, device=device, **kwargs)
        except BackendUnavailable:
            if not skip_unavailable and i == 0:
                raise
            log.info("%s backend is not available on %s here; trying the next", name, device)
        except UserError:
            raise  # bad input (task, weights, steps): the same for every backend
        except Exception as exc:  # a failed export or engine build: fall back, say so in one line
            if i + 1 == len(candidates):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else ""
            log.warning("%s backend failed to build (%s: %s); falling back to %s on %s",
                        name, type(exc).__name__, reason, *candidates[i + 1])
    names = ", ".join(f"{n} ({d})" for n, d in candidates)
    raise BackendUnavailable(f"no backend could run here ({names}); pip install onnxruntime, or torch with CUDA")
