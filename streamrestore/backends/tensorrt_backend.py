"""TensorRT backend: a plan built from the exported ONNX graph with the TensorRT 10 Python API.

One engine per frame shape (N, H, W) with min = opt = max (video keeps its size; the fastest
engine), cached on disk under (graph hash, shape profile, precision, TensorRT version, GPU name
and compute capability). FP16 builds a strongly typed network from the FP16-body graph, so the
casts in the graph decide precision and LayerNorm and the OECF stay float32 (DESIGN.md s.7);
the FP16 builder flag would let TensorRT lower them to half. A timing cache is kept beside the
engines. Buffers are torch CUDA tensors; the fixed noise is uploaded once per shape.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from streamrestore.atomic import atomic_write
from streamrestore.backends import engine_cache
from streamrestore.backends.base import BackendBase, BackendUnavailable, LoadedModel
from streamrestore.backends.export import OUTPUT, noise_shape
from streamrestore.backends.onnxruntime_backend import NoiseFeed, cached_onnx
from streamrestore.model.sampler import NoisePolicy

log = logging.getLogger(__name__)
INSTALL = "pip install 'streamrestore[gpu]' (tensorrt>=10 on a machine with an NVIDIA GPU)"


def import_tensorrt(option: str = "--backend tensorrt"):
    """The tensorrt module, or BackendUnavailable naming what to install."""
    try:
        import tensorrt
    except ModuleNotFoundError:
        raise BackendUnavailable(f"{option}: tensorrt is not installed; {INSTALL}") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"{option}: no CUDA device is visible; on the CPU use the onnx format or backend")
    return tensorrt


def gpu_facts() -> dict:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def build_plan(trt, onnx_path: Path, plan_path: Path, profile: dict[str, tuple], fp16: bool, timing: Path) -> None:
    """Parse the ONNX graph, set one optimisation profile {input: (min, opt, max)}, write the plan."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if fp16 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # IBuilderConfig::setTimingCache -> bool
        log.warning("the TensorRT timing cache %s is from another TensorRT or GPU; building without it", timing)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    shapes = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        shapes.set_shape(name, low, opt, high)
    config.add_optimization_profile(shapes)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
    plan_path.write_bytes(bytes(plan))
    atomic_write(timing, bytes(cache.serialize()))


def shape_profile(steps: int, frames: tuple, multiple: int, low: tuple | None = None, high: tuple | None = None,
                  temporal: bool = False) -> dict:
    """{input: (min, opt, max)} for frames (N, H, W, 3); low/high (N, H, W) widen it to a range.
    A temporal graph's `previous` input has the frames' shapes."""
    def both(n, h, w):
        return (n, h, w, 3), noise_shape(steps, n, h, w, multiple)

    lo, opt, hi = both(*(low or frames[:3])), both(*frames[:3]), both(*(high or frames[:3]))
    profile = {"frames": (lo[0], opt[0], hi[0]), "noise": (lo[1], opt[1], hi[1])}
    if temporal:
        profile["previous"] = profile["frames"]
    return profile


class TensorRTBackend(BackendBase):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, loaded: LoadedModel, device: str = "auto", fp16: bool | None = None):
        super().__init__(loaded)
        if device == "cpu":
            raise BackendUnavailable("--backend tensorrt needs --device cuda (or auto) and an NVIDIA GPU")
        self.trt = import_tensorrt()
        self.precision = "fp32" if fp16 is False else "fp16"
        self.steps, self.multiple = loaded.steps, loaded.multiple
        self.graph = cached_onnx(loaded.model, loaded.path, loaded.steps, self.precision == "fp16")
        self.noise = NoiseFeed(NoisePolicy(loaded.noise, loaded.seed), loaded.steps, self.multiple)
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self._contexts: dict[tuple, object] = {}
        self._device_noise: tuple[np.ndarray | None, torch.Tensor | None] = (None, None)
        self.stream = torch.cuda.Stream()

    def _context(self, frames_shape: tuple):
        """The execution context of the engine for this (N, H, W), from the cache or built now."""
        if frames_shape not in self._contexts:
            profile = shape_profile(self.steps, frames_shape, self.multiple, temporal=self.temporal)
            facts = {"artifact": "tensorrt-plan", "graph": engine_cache.file_sha256(self.graph),
                     "profile": {k: [list(s) for s in v] for k, v in profile.items()}, "precision": self.precision,
                     "runtime": f"tensorrt {self.trt.__version__}", **gpu_facts()}
            gpu = gpu_facts()["gpu"].replace(" ", "_").replace("/", "_")
            timing = engine_cache.cache_dir() / f"tensorrt-{self.trt.__version__}-{gpu}.timing"
            _, engine, _ = engine_cache.cached_artifact(
                "tensorrt", ".plan", facts,
                build=lambda tmp: build_plan(self.trt, self.graph, tmp, profile, self.precision == "fp16", timing),
                load=self._deserialize)
            self._contexts[frames_shape] = (engine, engine.create_execution_context())
        return self._contexts[frames_shape][1]

    def _deserialize(self, path: Path):
        engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not load {path}")
        return engine

    def _noise_on_device(self, frames_shape: tuple) -> torch.Tensor:
        noise = self.noise(frames_shape)
        if noise is not self._device_noise[0]:  # once per shape for the fixed and zero policies
            self._device_noise = (noise, torch.from_numpy(noise).cuda())
        return self._device_noise[1]

    @torch.inference_mode()
    def run(self, frames: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """The batch on the engine for its shape (a temporal model's `previous` is the frames when None)."""
        context = self._context(tuple(frames.shape[:3]))
        with torch.cuda.stream(self.stream):
            inputs = {"frames": torch.from_numpy(np.ascontiguousarray(frames)).cuda(non_blocking=True),
                      "noise": self._noise_on_device(frames.shape)}
            if self.temporal:
                history = frames if previous is None else previous
                inputs["previous"] = torch.from_numpy(np.ascontiguousarray(history)).cuda(non_blocking=True)
            out = torch.empty(frames.shape, dtype=torch.uint8, device="cuda")
            for name, tensor in inputs.items():
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            context.set_tensor_address(OUTPUT, out.data_ptr())
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            return out.cpu().numpy()
