"""The OpenVINO backend and the CPU precisions (issue 16): real OpenVINO and ONNX Runtime sessions.

fp32 against PyTorch FP32 on the CPU; bf16 and int8 against fp32; int8 calibrated on a folder of
photographs made here, its held-out images never used and its calibration set in the cache key;
the one-line refusals of the CLI (no openvino, a precision the backend cannot run).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from streamrestore.backends.registry import create_backend
from streamrestore.errors import UserError
from streamrestore.evaluation.metrics import psnr_y

ov = pytest.importorskip("openvino")
CLI = [sys.executable, "-m", "streamrestore.cli"]
HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


pytestmark = pytest.mark.usefixtures("shared_engine_cache")


def photograph(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth image with edges and texture, (H, W, 3) uint8: nearer a photograph than uniform noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 0.35 + 0.5
    base[h // 3: 2 * h // 3, w // 4: w // 2] = rng.uniform(0.1, 0.9, 3)
    return np.clip((base + rng.normal(0, 0.08, base.shape)) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photographs(tmp_path_factory) -> Path:
    """Seven photographs; split_holdout (every 6th) holds out the sixth, 'p5.png'."""
    folder = tmp_path_factory.mktemp("clean")
    for i in range(7):
        cv2.imwrite(str(folder / f"p{i}.png"), photograph(72, 96, i)[..., ::-1])
    return folder


def level_stats(got: np.ndarray, want: np.ndarray) -> tuple[int, float]:
    """(max |difference|, signed mean difference) in 8-bit levels."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    diff = got.astype(int) - want.astype(int)
    return int(np.abs(diff).max()), float(diff.mean())


@pytest.mark.parametrize("steps,noise", [(1, "fixed"), (2, "fresh")])
def test_openvino_fp32_matches_torch_fp32(weights, steps, noise):
    kw = dict(device="cpu", steps=steps, noise=noise, weights=weights)
    backend = create_backend("denoise", backend="openvino", **kw)
    reference = create_backend("denoise", backend="torch", **kw)
    assert (backend.name, backend.device, backend.precision, backend.asynchronous) == ("openvino", "cpu", "fp32", False)
    assert "1-step" in backend.model or "2-step" in backend.model
    rng = np.random.default_rng(0)
    batches = [photograph(37, 53, 0)[None], np.stack([photograph(64, 48, 1), photograph(64, 48, 2)]),
               rng.integers(0, 256, (1, 37, 53, 3), dtype=np.uint8)]  # sizes change, then come back
    for batch in batches:
        got, want = backend(batch), reference(batch)
        worst, mean = level_stats(got, want)
        assert worst <= 1 and abs(mean) < 0.02
        assert np.abs(want.astype(int) - batch).mean() > 1  # the model really changes the frames
    assert set(backend.last_timings) == {"upload", "restore", "download"} and backend.last_timings["restore"] > 0
    assert backend.submit(batches[0]).result().shape == batches[0].shape


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no BF16 in OpenVINO")
def test_bf16_is_close_to_fp32_and_really_bf16(weights):
    frames = np.stack([photograph(96, 128, 3)])
    fp32 = create_backend("denoise", backend="openvino", device="cpu", weights=weights, precision="fp32")(frames)
    backend = create_backend("denoise", backend="openvino", device="cpu", weights=weights, precision="bf16")
    assert backend.precision == "bf16"
    got = backend(frames)
    worst, mean = level_stats(got, fp32)
    assert 0 < worst <= 6 and abs(mean) < 0.2  # BF16 has 8 mantissa bits: it differs, a little
    assert psnr_y(got[0], fp32[0]) > 40


def test_int8_is_calibrated_on_the_training_split_and_keyed_on_it(weights, photographs, tmp_path):
    from streamrestore.backends.quantize import calibration_files

    assert [p.name for p in calibration_files(photographs)] == ["p0.png", "p1.png", "p2.png", "p3.png", "p4.png",
                                                               "p6.png"]  # p5 is held out
    frames = np.stack([photograph(96, 128, 11)])
    fp32 = create_backend("denoise", backend="openvino", device="cpu", weights=weights)(frames)
    int8 = create_backend("denoise", backend="openvino", device="cpu", weights=weights, precision="int8",
                          calibration=str(photographs))
    assert int8.precision == "int8"
    ops = {node.op_type for node in onnx.load(str(int8.graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Round", "Clip"} <= ops  # int8 body, float tail kept
    got = int8(frames)
    assert 0 < level_stats(got, fp32)[0] and psnr_y(got[0], fp32[0]) > 30
    ort8 = create_backend("denoise", backend="onnxruntime", device="cpu", weights=weights, precision="int8",
                          calibration=str(photographs))
    assert ort8.graph == int8.graph and psnr_y(ort8(frames)[0], got[0]) > 35  # the same cached QDQ graph
    # another calibration set is another cache entry; the held-out image is not part of the set
    other = tmp_path / "other"
    other.mkdir()
    for p in photographs.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    cv2.imwrite(str(other / "p5.png"), photograph(72, 96, 99)[..., ::-1])  # changes only the held-out image
    same = create_backend("denoise", backend="openvino", device="cpu", weights=weights, precision="int8",
                          calibration=str(other))
    assert same.graph == int8.graph
    cv2.imwrite(str(other / "p1.png"), photograph(72, 96, 98)[..., ::-1])
    changed = create_backend("denoise", backend="openvino", device="cpu", weights=weights, precision="int8",
                             calibration=str(other))
    assert changed.graph != int8.graph


def test_auto_on_cpu_measures_once_and_runs_the_faster(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path))
    backend = create_backend("denoise", backend="auto", device="cpu", weights=weights)
    measured = backend.auto_choice["ms_per_480p_frame"]
    assert set(measured) == {"openvino", "onnxruntime"} and measured[backend.name] == min(measured.values())
    assert backend.precision == "fp32"
    (cached,) = tmp_path.glob("cpu-choice-*.json")  # beside the engine cache
    record = json.loads(cached.read_text())
    record["order"].reverse()  # the next run reads the cached choice; it does not measure again
    cached.write_text(json.dumps(record))
    assert create_backend("denoise", backend="auto", device="cpu", weights=weights).name == record["order"][0]
    if HAS_BF16:  # only openvino runs bf16: nothing to measure
        assert create_backend("denoise", backend="auto", device="cpu", weights=weights, precision="bf16").name == "openvino"


def test_precisions_a_backend_cannot_run_are_refused_in_one_line(weights):
    with pytest.raises(UserError, match="--backend torch runs fp32 or fp16; use --backend onnxruntime or openvino"):
        create_backend("denoise", backend="torch", device="cpu", weights=weights, precision="int8")
    with pytest.raises(UserError, match="--backend openvino runs fp32, bf16 or int8"):
        create_backend("denoise", backend="openvino", device="cpu", weights=weights, precision="fp16")


def cli(folder: Path, *args, prelude: str = "pass") -> subprocess.CompletedProcess:
    code = f"import sys; {prelude}; from streamrestore.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=folder, capture_output=True, text=True,
                          timeout=120)


def one_line_refusal(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, weights):
    run = ["run", "sample", "--task", "denoise", "-o", "out.mp4", "--weights", weights]
    # no openvino package: what to install (the import is blocked in the child, as when it is not installed)
    one_line_refusal(cli(tmp_path, *run, "--backend", "openvino", prelude="sys.modules['openvino'] = None"),
                     "--backend openvino", "pip install openvino")
    one_line_refusal(cli(tmp_path, *run, "--backend", "torch", "--precision", "int8"), "--precision int8",
                     "use --backend onnxruntime or openvino")
    one_line_refusal(cli(tmp_path, *run, "--precision", "int4"), "--precision 'int4'")
    one_line_refusal(cli(tmp_path, *run, "--backend", "openvino", "--precision", "int8",
                         "--calibration-data", tmp_path / "missing"), "--calibration-data", "missing")
    assert list(tmp_path.iterdir()) == []


def test_run_with_openvino_reports_precision_and_thread_plan(tmp_path, weights, photographs):
    from media import make_clip

    clip = make_clip(tmp_path / "in.mp4", frames=6)
    result = cli(tmp_path, "run", clip, "--task", "denoise", "-o", "out.mp4", "--weights", weights, "--backend",
                 "openvino", "--precision", "int8" if not HAS_BF16 else "bf16", "--threads", "1", "--report",
                 "report.json", "--quiet", "--calibration-data", photographs)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "report.json").read_text())["summary"]
    assert (summary["backend"], summary["precision"]) == ("openvino", "bf16" if HAS_BF16 else "int8")
    assert summary["threads"] == {"inference": 1, "opencv": 1, "spin": False} and summary["frames"] == 6


def test_export_int8_writes_a_quantised_graph_openvino_runs(tmp_path, weights, photographs):
    out = tmp_path / "int8.onnx"
    result = cli(tmp_path, "export", "--task", "denoise", "--weights", weights, "--precision", "int8",
                 "--calibration-data", photographs, "--height", "40", "--width", "56", "--noise", "zero", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "int8 convolutions (QDQ)" in result.stdout and "40x56" in result.stdout
    graph = onnx.load(str(out))
    assert [i.name for i in graph.graph.input] == ["frames"]  # the zero noise baked in
    assert "QuantizeLinear" in {node.op_type for node in graph.graph.node}
    compiled = ov.Core().compile_model(str(out), "CPU")
    frames = photograph(40, 56, 5)[None]
    restored = compiled({"frames": frames})[compiled.output(0)]
    assert restored.shape == frames.shape and restored.dtype == np.uint8 and np.abs(restored.astype(int) - frames).mean() > 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "int8.onnx"] == []  # nothing else left behind
