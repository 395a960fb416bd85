"""The IR-CM restorer as one ONNX graph (DESIGN.md sections 1 and 4): streamrestore.model.frames.RestoreFrames traced.

Graph inputs:
    frames  (N, H, W, 3) uint8 RGB;
    noise   (M, N, 3, Hp, Wp) float32 standard normal, one z per step of Algorithm 3, where
            Hp, Wp are H, W rounded up to the network's pad_multiple (`noise_shape`).
            With a fixed noise baked in (fixed sizes only) the graph has no `noise` input.
    previous (N, H, W, 3) uint8 RGB, temporal models only: each frame's previous restored frame
            (the stream state, streamrestore.runtime.temporal; the frame itself where a stream starts afresh).
Graph output:
    restored (N, H, W, 3) uint8 RGB.
Inside: normalise to [0, 1], replicate-pad, Algorithm 3 with every t_n a constant, crop, round
(the torch backend runs the same module).
The sampling arithmetic and the OECF stay float32; with fp16 only the network body is half.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch

from streamrestore.atomic import atomic_path
from streamrestore.model.consistency import ConsistencyModel
from streamrestore.model.frames import RestoreFrames, noise_shape, padded

OPSET = 17
INPUTS, OUTPUT = ("frames", "noise", "previous"), "restored"
# Traced at a tiny odd size (the graph must not assume a multiple; eager FP16 convolutions on the
# CPU are slow), always with free sizes; fixed sizes and a baked noise are set on the ONNX afterwards.
EXAMPLE_SIZE = (13, 15)


def code_version() -> str:
    """SHA-256 (16 hex digits) of the source that defines the exported graph (this module, the frame path,
    the network, the consistency function, the schedule and the sampler): part of the engine cache key, so a
    change to any of them replaces graphs cached by older code instead of loading them."""
    import hashlib

    from streamrestore.model import consistency, frames, network, sampler, sde

    digest = hashlib.sha256()
    for module in (consistency, frames, network, sampler, sde):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def build_graph(model: ConsistencyModel, fp16: bool = False) -> RestoreFrames:
    """A float32 CPU copy of `model` (network body in half with `fp16`) wrapped as the frame path to trace."""
    model = copy.deepcopy(model).cpu().float().eval()
    if fp16:
        model.network.half()  # LayerNorm2d and the OECF stay float32 (DESIGN.md s.7)
    return RestoreFrames(model).eval()


def export_onnx(model: ConsistencyModel, path: str | Path, steps: int = 1, fp16: bool = False,
                size: tuple[int, int] | None = None, fixed_noise: torch.Tensor | None = None) -> Path:
    """Trace, simplify, check and atomically write the ONNX graph; `size` (H, W) fixes H and W.

    fixed_noise: (M, 1, 3, Hp, Wp) baked in as a constant (needs `size`); the graph then has no noise input.
    """
    if fixed_noise is not None and size is None:
        raise ValueError("a baked-in fixed noise needs fixed sizes")
    device = "cuda" if fp16 and torch.cuda.is_available() else "cpu"  # FP16 convolutions are slow on the CPU
    graph = build_graph(model, fp16).to(device)
    h, w = EXAMPLE_SIZE
    frames = torch.zeros((2, h, w, 3), dtype=torch.uint8, device=device)  # batch 1 would be traced as fixed
    inputs = (frames, torch.zeros(noise_shape(steps, 2, h, w, multiple(model)), device=device))
    proto = _trace(graph, inputs + ((frames.clone(),) if model.is_temporal else ()))
    if size is not None:
        fix_sizes(proto, size, multiple(model), fixed_noise)
    proto = simplify(proto)
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def multiple(model: ConsistencyModel) -> int:
    return model.network.pad_multiple


def _trace(graph: RestoreFrames, inputs: tuple) -> onnx.ModelProto:
    """TorchScript-trace export (about 1 s; the dynamo exporter takes ~20 s for the same graph here)."""
    axes = {"frames": {0: "batch", 1: "height", 2: "width"}, OUTPUT: {0: "batch", 1: "height", 2: "width"},
            "noise": {1: "batch", 3: "padded_height", 4: "padded_width"},
            "previous": {0: "batch", 1: "height", 2: "width"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice and tracer warnings
        torch.onnx.export(graph, inputs, buffer, dynamo=False, opset_version=OPSET, input_names=list(INPUTS[:len(inputs)]),
                          output_names=[OUTPUT], dynamic_axes={k: v for k, v in axes.items() if k in INPUTS[:len(inputs)] or k == OUTPUT})
    return onnx.load_from_string(buffer.getvalue())


def fix_sizes(proto: onnx.ModelProto, size: tuple[int, int], multiple: int,
              fixed_noise: torch.Tensor | None = None) -> None:
    """Set H, W (and Hp, Wp) on the graph's inputs and output; a fixed noise becomes an initializer."""
    h, w = size
    dims = {"frames": {1: h, 2: w}, OUTPUT: {1: h, 2: w}, "noise": {3: padded(h, multiple), 4: padded(w, multiple)},
            "previous": {1: h, 2: w}}
    for value in [*proto.graph.input, *proto.graph.output]:
        for axis, length in dims[value.name].items():
            value.type.tensor_type.shape.dim[axis].dim_value = length
    if fixed_noise is not None:
        kept = [value for value in proto.graph.input if value.name != "noise"]
        del proto.graph.input[:]
        proto.graph.input.extend(kept)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(fixed_noise.float().numpy(), "noise"))


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and dead-node removal (onnxscript's optimizer): the fixed t path folds away."""
    from onnxscript import optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optimizer.optimize(proto)
