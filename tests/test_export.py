"""ONNX export: graph facts, ONNX Runtime CPU against PyTorch FP32, FP16 body, engine cache, CLI errors."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from streamrestore.backends import engine_cache
from streamrestore.backends.export import OPSET, OUTPUT, build_graph, export_onnx, noise_shape
from streamrestore.cli import main as cli_main
from streamrestore.model.checkpoint import save_model
from streamrestore.training.loop import build_model

SIZES = [(37, 53), (64, 48)]


def tiny_model(seed: int = 0):
    """The small architecture with a random (not zero) last conv, so the output is not just mu."""
    torch.manual_seed(seed)
    model = build_model("small").eval()
    torch.nn.init.normal_(model.network.ending.weight, std=0.05)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def graph_1step(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("graph") / "g.onnx", steps=1)


def run_session(path, frames: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"frames": frames} if noise is None else {"frames": frames, "noise": noise}
    return session.run(None, feed)[0]


def random_batch(h: int, w: int, steps: int, n: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    noise = rng.standard_normal(noise_shape(steps, n, h, w, 16)).astype(np.float32)
    return frames, noise


def torch_fp32(model, steps: int, frames: np.ndarray, noise: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return build_graph(model)(torch.from_numpy(frames), torch.from_numpy(noise)).numpy()


def test_graph_facts(graph_1step):
    proto = onnx.load(str(graph_1step))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17 == OPSET
    assert [i.name for i in proto.graph.input] == ["frames", "noise"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    assert not any(n.op_type == "Loop" or n.op_type == "If" for n in proto.graph.node)


@pytest.mark.parametrize("h,w", SIZES)
def test_onnxruntime_cpu_matches_torch_fp32(model, graph_1step, h, w):
    frames, noise = random_batch(h, w, 1)
    got, want = run_session(graph_1step, frames, noise), torch_fp32(model, 1, frames, noise)
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want).max() <= 1
    assert np.abs(want.astype(int) - frames).mean() > 1  # the random model does change the frames


def test_two_steps_with_baked_noise(model, tmp_path):
    h, w = SIZES[0]
    frames, noise = random_batch(h, w, 2, n=1)
    want = torch_fp32(model, 2, frames, noise)
    baked = export_onnx(model, tmp_path / "baked.onnx", steps=2, size=(h, w), fixed_noise=torch.from_numpy(noise))
    assert [i.name for i in onnx.load(str(baked)).graph.input] == ["frames"]
    assert np.abs(run_session(baked, frames).astype(int) - want).max() <= 1


@pytest.mark.slow  # tracing FP16 depthwise convolutions on the CPU takes ~12 s per network evaluation
def test_fp16_body_on_onnxruntime_cpu(model, tmp_path):
    frames, noise = random_batch(*SIZES[0], 1)
    fp16 = export_onnx(model, tmp_path / "fp16.onnx", steps=1, fp16=True)
    assert np.abs(run_session(fp16, frames, noise).astype(int) - torch_fp32(model, 1, frames, noise)).max() <= 2


def test_cache_rebuilds_corrupt_and_stale_entries(tmp_path, caplog):
    builds = []

    def build(path):
        builds.append(path)
        path.write_bytes(b"artifact")

    args = dict(kind="graph", ext=".bin", facts={"weights": "abc"}, build=build, load=lambda p: p.read_bytes(),
                root=tmp_path)
    path, loaded, built = engine_cache.cached_artifact(**args)
    assert (loaded, built, len(builds)) == (b"artifact", True, 1)
    assert engine_cache.cached_artifact(**args)[2] is False  # reused, verified
    path.write_bytes(b"garbage")  # corrupt: hash no longer matches
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        assert engine_cache.cached_artifact(**args)[1:] == (b"artifact", True)
    assert "stale or corrupt" in caplog.text and len(builds) == 2
    other = dict(args, facts={"weights": "abd"})
    assert engine_cache.cached_artifact(**other)[0] != path  # a different key is a different entry


def test_cache_load_failure_of_cached_entry_rebuilds(tmp_path):
    calls = {"load": 0}

    def load(path):
        calls["load"] += 1
        if calls["load"] == 2:
            raise RuntimeError("session creation failed")
        return True

    args = dict(kind="graph", ext=".bin", facts={}, build=lambda p: p.write_bytes(b"x"), load=load, root=tmp_path)
    engine_cache.cached_artifact(**args)
    assert engine_cache.cached_artifact(**args)[2] is True  # the failed load made it rebuild


def test_cli_export_and_bad_input(model, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_model(weights, model)
    out = tmp_path / "fixed.onnx"
    assert cli_main(["export", "--task", "denoise", "--weights", str(weights), "--height", "37", "--width", "53",
                     "--noise", "zero", "-o", str(out)]) == 0
    assert "checked and simplified" in capsys.readouterr().out and out.is_file()
    bad = {("--format", "engine"): "--format 'engine': unknown; use one of onnx, tensorrt",
           ("--height", "8", "--width", "64"): "--height 8: must be at least 16",
           ("--height", "64"): "--height and --width go together",
           ("--height", "64", "--width", "64", "--dynamic"): "--dynamic cannot be combined"}
    for extra, message in bad.items():
        assert run_cli(["export", "--task", "denoise", "-o", str(tmp_path / "x.onnx"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def run_cli(argv: list[str]) -> int:
    """The exit code, whether argparse exits (bad option value) or main returns (UserError)."""
    try:
        return cli_main(argv)
    except SystemExit as exc:
        return exc.code


def test_cli_missing_tensorrt_is_one_line(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        if torch.cuda.is_available():
            pytest.skip("tensorrt and CUDA are present")
    except ModuleNotFoundError:
        pass
    assert run_cli(["export", "--task", "denoise", "--format", "tensorrt", "-o", str(tmp_path / "x.plan")]) == 2
    err = capsys.readouterr().err
    assert "--format tensorrt" in err and err.count("\n") == 1



def test_graph_cache_key_holds_the_export_code(tmp_path, monkeypatch, tiny_weights):
    """A graph cached by older export code is not reused after the code changes."""
    from streamrestore.backends import onnxruntime_backend
    from streamrestore.model.checkpoint import load_model

    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path / "cache"))
    model = load_model(tiny_weights)
    first = onnxruntime_backend.cached_onnx(model, tiny_weights, 1, False)
    assert onnxruntime_backend.cached_onnx(model, tiny_weights, 1, False) == first
    monkeypatch.setattr(onnxruntime_backend, "code_version", lambda: "changed")
    assert onnxruntime_backend.cached_onnx(model, tiny_weights, 1, False) != first


def test_uint8_only_enters_and_leaves_through_a_cast(model, tmp_path):
    """TensorRT accepts uint8 tensors only as the input of a Cast or the output of one: every
    consumer of the uint8 `frames` (and `previous`) input is a Cast, and the uint8 output is a Cast's."""
    from conftest import temporal_model

    for name, graph_model in (("one", model), ("temporal", temporal_model())):
        path = export_onnx(graph_model, tmp_path / f"{name}.onnx", steps=2)
        graph = onnx.load(str(path)).graph
        uint8 = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
        assert uint8 == ({"frames", "previous"} if name == "temporal" else {"frames"})
        consumers = [n for n in graph.node if uint8 & set(n.input)]
        assert consumers and all(n.op_type == "Cast" for n in consumers), [n.op_type for n in consumers]
        producer = [n for n in graph.node if OUTPUT in n.output]
        assert [n.op_type for n in producer] == ["Cast"]


def test_fp16_graph_keeps_reductions_in_float32(model, tmp_path):
    """With an FP16 body, every mean over the positions (the blocks' channel attention, up to ~0.5 M
    positions at 1080p) reads float32, as LayerNorm does: FP16 sums overflow or lose precision."""
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(onnx.load(str(export_onnx(model, tmp_path / "h.onnx", fp16=True)))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    means = [n for n in graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    assert means and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in means)
