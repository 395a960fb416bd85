"""ONNX Runtime backend: the exported graph (streamrestore.backends.export) run by ONNX Runtime.

Providers: CPU (threads = os.cpu_count(), graph optimisation ALL); on `--device cuda` the
TensorRT provider (FP16 with --fp16, its engine and timing caches on) when this onnxruntime has
it, then the CUDA provider. The graph is exported once per (weights, steps, precision) into the
engine cache; its noise input is bound once per frame size with IO binding for the fixed and
zero policies, so only the uint8 frames cross to the device per batch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import torch

from streamrestore.backends import engine_cache
from streamrestore.backends.base import BackendBase, BackendUnavailable, LoadedModel
from streamrestore.backends.export import OPSET, OUTPUT, code_version, export_onnx, noise_shape
from streamrestore.errors import UserError
from streamrestore.model.sampler import NoisePolicy, sampling_times

log = logging.getLogger(__name__)
GPU_INSTALL = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"


def _import_ort():
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise BackendUnavailable("--backend onnxruntime: onnxruntime is not installed; pip install onnxruntime") from None
    return onnxruntime


def resolve_device(device: str) -> str:
    """auto -> cuda when this onnxruntime has the CUDA provider, else cpu."""
    has_cuda = "CUDAExecutionProvider" in _import_ort().get_available_providers()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cuda" and not has_cuda:
        raise BackendUnavailable(f"--backend onnxruntime --device cuda: this onnxruntime has no CUDA provider; {GPU_INSTALL}")
    return device


def providers(device: str, fp16: bool, cache: Path) -> list:
    """Execution providers in order of preference for `device`."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    chosen: list = []
    if "TensorrtExecutionProvider" in _import_ort().get_available_providers():
        trt_cache = str(cache / "ort-tensorrt")
        chosen.append(("TensorrtExecutionProvider", {
            "trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": trt_cache,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": trt_cache}))
    return chosen + ["CUDAExecutionProvider", "CPUExecutionProvider"]


def cached_onnx(model, weights: Path, steps: int, fp16: bool) -> Path:
    """The dynamic-size ONNX graph of `model`, from the engine cache or exported now (checked on load)."""
    facts = {"artifact": "onnx", "weights": engine_cache.file_sha256(weights), "steps": steps,
             "times": sampling_times(model.schedule.T, steps, model.second_time),
             "shapes": "dynamic", "precision": "fp16" if fp16 else "fp32", "opset": OPSET, "code": code_version(),
             "runtime": f"torch {torch.__version__} onnx {onnx.__version__}"}
    path, _, built = engine_cache.cached_artifact(
        "graph", ".onnx", facts, build=lambda tmp: export_onnx(model, tmp, steps, fp16),
        load=lambda p: onnx.checker.check_model(str(p), full_check=True))
    if built:
        log.info("exported %s", path)
    return path


def graph_for(loaded: LoadedModel, precision: str, calibration: str | None) -> Path:
    """The cached ONNX graph a runtime runs at `precision`: the int8 QDQ graph (streamrestore.backends.quantize),
    else the float graph, with an FP16 body for fp16 (bf16 runtimes take the FP32 graph and a hint)."""
    if precision == "int8":
        from streamrestore.backends.quantize import cached_int8_onnx

        return cached_int8_onnx(loaded.model, loaded.path, loaded.steps, loaded.task, calibration)
    return cached_onnx(loaded.model, loaded.path, loaded.steps, precision == "fp16")


class NoiseFeed:
    """The `noise` input (M, N, 3, Hp, Wp) float32 from a NoisePolicy; fixed and zero are kept per shape."""

    def __init__(self, policy: NoisePolicy, steps: int, multiple: int):
        self.policy, self.steps, self.multiple = policy, steps, multiple
        self._kept: dict[tuple, np.ndarray] = {}

    def __call__(self, frames_shape: tuple[int, ...]) -> np.ndarray:
        """The noise for a batch of `frames_shape` (N, H, W, 3): the same array again unless fresh."""
        shape = noise_shape(self.steps, frames_shape[0], frames_shape[1], frames_shape[2], self.multiple)
        if shape in self._kept:
            return self._kept[shape]
        like = torch.empty(shape[1:])
        noise = np.ascontiguousarray(torch.stack(self.policy.draw(self.steps, like)).numpy())
        if self.policy.kind != "fresh":
            self._kept[shape] = noise
        return noise


class OnnxRuntimeBackend(BackendBase):
    name = "onnxruntime"

    def __init__(self, loaded: LoadedModel, device: str = "auto", precision: str | None = None,
                 threads: int | None = None, calibration: str | None = None):
        """precision: fp32, fp16 (default on CUDA) or int8 (the QDQ graph of streamrestore.backends.quantize, CPU);
        threads: intra-op threads (default: os.cpu_count()); given, a thread plan is in effect
        (streamrestore.backends.threads) and the workers do not spin-wait between operators."""
        super().__init__(loaded)
        ort = _import_ort()
        self.device = resolve_device(device)
        self.precision = precision or ("fp16" if self.device == "cuda" else "fp32")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise BackendUnavailable(f"--precision {self.precision}: --backend onnxruntime runs fp32, fp16 or int8")
        if self.precision == "int8" and self.device != "cpu":
            raise BackendUnavailable("--precision int8: onnxruntime runs the int8 graph on the CPU; use --device cpu")
        self.graph = graph_for(loaded, self.precision, calibration)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        if threads:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no per-node provider chatter
        cache = engine_cache.cache_dir()
        self.session = ort.InferenceSession(str(self.graph), options,
                                            providers=providers(self.device, self.precision == "fp16", cache))
        running = self.session.get_providers()
        if self.device == "cuda" and not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(running):
            # a GPU provider that fails to load (CUDA/cuDNN libraries) leaves the session on the CPU silently
            raise BackendUnavailable(f"--backend onnxruntime --device cuda: the CUDA provider did not load "
                                     f"(running {', '.join(running)}); check the CUDA and cuDNN libraries")
        self.noise = NoiseFeed(NoisePolicy(loaded.noise, loaded.seed), loaded.steps, loaded.multiple)
        self._binding, self._ort, self._bound_noise = self.session.io_binding(), ort, None

    def run(self, frames: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """A temporal model's `previous` is the frames themselves when None."""
        noise = self.noise(frames.shape)
        if noise is not self._bound_noise:  # upload once per frame size for the fixed and zero policies
            self._binding.bind_ortvalue_input("noise", self._ort.OrtValue.ortvalue_from_numpy(noise, self.device, 0))
            self._bound_noise = noise
        self._binding.bind_cpu_input("frames", np.ascontiguousarray(frames))
        if self.temporal:
            self._binding.bind_cpu_input("previous", np.ascontiguousarray(frames if previous is None else previous))
        self._binding.bind_output(OUTPUT, "cpu")
        self.session.run_with_iobinding(self._binding)
        return self._binding.copy_outputs_to_cpu()[0]
