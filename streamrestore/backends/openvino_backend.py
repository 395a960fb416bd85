"""OpenVINO backend: the exported graph (streamrestore.backends.export) run by OpenVINO's CPU plugin (issue 16).

The same dynamic-size ONNX graph as onnxruntime (its engine-cache entry, `cached_onnx`), read by
OpenVINO and compiled once per input shape (a static shape ran 480p in 41 ms here against 56 ms
for the dynamic graph). Precisions:

- fp32: inference precision f32 (set explicitly: on CPUs with AMX OpenVINO's default is bf16);
- bf16: inference precision bf16 where the CPU has it (AVX-512 BF16 or AMX); the plugin keeps the
  graph's tail — the OECF arithmetic, clamp and rounding after the last convolution — in f32;
- int8: the QDQ graph of streamrestore.backends.quantize (int8 convolutions, everything else f32).
"""
from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from streamrestore.backends.base import BackendBase, BackendUnavailable, LoadedModel
from streamrestore.backends.onnxruntime_backend import NoiseFeed, graph_for
from streamrestore.model.sampler import NoisePolicy

log = logging.getLogger(__name__)
INSTALL = "pip install openvino (or pip install -e '.[cpu]')"
PRECISIONS = ("fp32", "bf16", "int8")
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 graphs: the non-quantised nodes stay f32
KEPT_SHAPES = 4  # compiled models kept (one per input shape); the oldest is dropped beyond this


def import_openvino(what: str = "--backend openvino"):
    try:
        import openvino
    except ModuleNotFoundError:
        raise BackendUnavailable(f"{what}: the openvino package is not installed; {INSTALL}") from None
    return openvino


def cpu_supports(core, precision: str) -> bool:
    """Whether OpenVINO's CPU plugin has `precision` on this processor (its OPTIMIZATION_CAPABILITIES)."""
    if precision == "fp32":
        return True
    return {"bf16": "BF16", "int8": "INT8"}[precision] in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend(BackendBase):
    name = "openvino"

    def __init__(self, loaded: LoadedModel, device: str = "auto", precision: str | None = None,
                 threads: int | None = None, calibration: str | None = None):
        super().__init__(loaded)
        ov = import_openvino()
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"--backend openvino --device {device}: openvino runs on the CPU here; "
                                     "use --backend tensorrt, onnxruntime or torch on CUDA")
        self.device, self.precision = "cpu", precision or "fp32"
        if self.precision not in PRECISIONS:  # fp16 (Restorer(fp16=True)): auto moves on to the next backend
            raise BackendUnavailable(f"--precision {self.precision}: --backend openvino runs {', '.join(PRECISIONS)}")
        self.core = ov.Core()
        if not cpu_supports(self.core, self.precision):
            raise BackendUnavailable(f"--precision {self.precision}: this CPU has no {self.precision} support in "
                                     "OpenVINO (needs AVX-512 BF16 or AMX for bf16, VNNI or AVX2 for int8); use fp32")
        self.graph = graph_for(loaded, self.precision, calibration)
        self.network = self.core.read_model(str(self.graph))
        self.config = {"INFERENCE_PRECISION_HINT": HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.noise = NoiseFeed(NoisePolicy(loaded.noise, loaded.seed), loaded.steps, loaded.multiple)
        self._requests: OrderedDict[tuple, object] = OrderedDict()

    def _request(self, inputs: dict[str, np.ndarray]):
        """An infer request of the model compiled for these input shapes (compiled on first use)."""
        shapes = tuple((name, value.shape) for name, value in inputs.items())
        request = self._requests.pop(shapes, None)
        if request is None:
            network = self.network.clone()
            network.reshape({name: list(shape) for name, shape in shapes})
            request = self.core.compile_model(network, "CPU", self.config).create_infer_request()
            if len(self._requests) >= KEPT_SHAPES:
                self._requests.popitem(last=False)
        self._requests[shapes] = request  # most recently used last
        return request

    def run(self, frames: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """A temporal model's `previous` is the frames themselves when None."""
        inputs = {"frames": np.ascontiguousarray(frames), "noise": self.noise(frames.shape)}
        if self.temporal:
            inputs["previous"] = np.ascontiguousarray(frames if previous is None else previous)
        request = self._request(inputs)
        request.infer(inputs)
        return request.get_output_tensor(0).data.copy()
