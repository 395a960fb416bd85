"""Backends behind one interface: ONNX Runtime against PyTorch FP32, auto choice, fallback, GPU parity."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from streamrestore.backends.registry import BackendUnavailable, create_backend
from streamrestore.errors import UserError
from streamrestore.restorer import Restorer

CUDA = torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("shared_engine_cache")


def frames(h: int, w: int, n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def max_level_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(int) - b).max())


@pytest.mark.parametrize("steps,noise", [(1, "fixed"), (2, "fresh")])
def test_onnxruntime_cpu_matches_torch_fp32(weights, steps, noise):
    kw = dict(device="cpu", steps=steps, noise=noise, weights=weights)
    ort_backend = create_backend("denoise", backend="onnxruntime", **kw)
    torch_backend = create_backend("denoise", backend="torch", **kw)
    assert (ort_backend.name, ort_backend.device, ort_backend.precision) == ("onnxruntime", "cpu", "fp32")
    for batch in (frames(37, 53), frames(64, 48, n=2, seed=1), frames(37, 53, seed=2)):  # sizes change back
        got, want = ort_backend(batch), torch_backend(batch)
        assert max_level_difference(got, want) <= 1
        assert np.abs(want.astype(int) - batch).mean() > 1
    assert set(ort_backend.last_timings) == {"upload", "restore", "download"}


def test_auto_on_cpu_picks_a_measured_fast_backend_and_restorer_uses_it(weights):
    restorer = Restorer(task="denoise", device="cpu", weights=weights, backend="auto")
    try:
        import openvino  # noqa: F401
        fastest = {"openvino", "onnxruntime"}  # whichever measured faster here (tests/test_openvino.py)
    except ModuleNotFoundError:
        fastest = {"onnxruntime"}  # measured faster than torch eager on the CPU
    assert restorer.backend.name in fastest
    assert restorer(frames(37, 53)[0]).shape == (37, 53, 3)


def test_failed_build_falls_back_with_one_line(weights, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(blocker / "engines"))  # the export cannot be written
    with caplog.at_level(logging.WARNING, logger="streamrestore"):
        backend = create_backend("denoise", backend="onnxruntime", device="cpu", weights=weights)
    assert backend.name == "torch"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "onnxruntime backend failed to build" in lines[0] and "falling back to torch" in lines[0]


def test_missing_runtime_is_one_line(weights):
    try:
        import tensorrt  # noqa: F401
        if CUDA:
            pytest.skip("tensorrt and CUDA are present")
    except ModuleNotFoundError:
        pass
    with pytest.raises(BackendUnavailable) as info:
        create_backend("denoise", backend="tensorrt", weights=weights)
    assert "\n" not in str(info.value) and "tensorrt" in str(info.value)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(Exception, match="use one of auto, torch, onnxruntime, tensorrt, openvino"):
        create_backend("denoise", backend="tvm")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_fp16_matches_fp32_on_cuda(weights, backend):
    if backend == "onnxruntime":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            pytest.skip("onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    reference = create_backend("denoise", backend="torch", device="cpu", weights=weights)
    half = create_backend("denoise", backend=backend, device="cuda", weights=weights, fp16=True)
    assert half.precision == "fp16"
    for batch in (frames(37, 53), frames(64, 48, n=2)):
        assert max_level_difference(half(batch), reference(batch)) <= 2


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_matches_torch(weights, fp16):
    pytest.importorskip("tensorrt")
    if not CUDA:
        pytest.skip("needs CUDA")
    reference = create_backend("denoise", backend="torch", device="cpu", weights=weights)
    engine = create_backend("denoise", backend="tensorrt", device="cuda", weights=weights, fp16=fp16)
    assert engine.name == "tensorrt"
    for batch in (frames(37, 53), frames(64, 48)):
        assert max_level_difference(engine(batch), reference(batch)) <= 2


def test_compiled_torch_matches_eager_and_pads_a_short_batch(weights):
    """`--compile` (torch.compile; Inductor's C++ on the CPU) gives the eager model's frames; a file's
    last, shorter batch replays the full batch's graph (padded) and still gives its own frames."""
    eager = create_backend("denoise", backend="torch", device="cpu", weights=weights)
    compiled = create_backend("denoise", backend="auto", device="cpu", weights=weights, compile=True)
    assert compiled.name == "torch" and "torch.compile" in compiled.model
    batch = frames(40, 56, n=3, seed=3)
    want, got = eager(batch), compiled(batch)
    assert compiled.restorer.compiled  # it did not fall back to eager
    difference = got.astype(int) - want
    assert np.abs(difference).max() <= 1 and abs(difference.mean()) < 0.01
    assert np.abs(want.astype(int) - batch).mean() > 1
    short = compiled(batch[:2])
    assert short.shape == (2, 40, 56, 3)
    assert max_level_difference(short, want[:2]) <= 1


def test_compile_with_another_backend_is_one_line(weights):
    with pytest.raises(UserError, match="--compile runs the torch backend"):
        create_backend("denoise", backend="onnxruntime", device="cpu", weights=weights, compile=True)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_double_buffer_times_each_stage_on_its_own_stream(weights):
    """Two batches in flight: the second batch's upload runs before the first batch's restore ends,
    and "restore" is timed from when the compute stream starts it, not from its upload."""
    engine = create_backend("denoise", backend="torch", device="cuda", weights=weights, fp16=True)
    batch = frames(720, 1280, n=4)
    engine(batch)
    first, second = engine.submit(batch), engine.submit(batch)
    first.result(), second.result()
    a, b = first.spans, second.spans
    assert b["start"] < a["restored"]  # uploaded while the first batch was being restored
    assert b["restore_start"] >= a["restored"]
    assert second.timings["restore"] == pytest.approx(b["restored"] - b["restore_start"], abs=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_compiled_cuda_matches_eager_fp32(weights):
    reference = create_backend("denoise", backend="torch", device="cuda", weights=weights, fp16=False)
    compiled = create_backend("denoise", backend="torch", device="cuda", weights=weights, compile=True)
    for batch in (frames(64, 48, n=2), frames(64, 48, n=1)):
        assert max_level_difference(compiled(batch), reference(batch)) <= 2
    assert compiled.restorer.compiled
