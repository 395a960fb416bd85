"""benchmarks/latency.py on a tiny configuration: every output is written with its fields, a
backend that cannot run is reported as skipped, and bad arguments give one line and exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamrestore.model.checkpoint import save_model
from streamrestore.training.loop import build_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "latency.py"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def random_weights(tmp_path):
    path = tmp_path / "random.safetensors"
    save_model(path, build_model("small"), {"task": "denoise", "kind": "ir-cm", "architecture": {"size": "small"}})
    return str(path)


def test_quick_tiny_run_writes_json_markdown_and_plot(tmp_path, random_weights):
    out = tmp_path / "bench"
    result = bench("--quick", "--resolutions", "64x48", "--stream-resolution", "48x32", "--frames", "4",
                   "--streams", "2", "--iters", "2", "--backends", "torch", "tensorrt", "--threads", "1",
                   "--weights", random_weights, "--encoder-presets", "ultrafast", "medium", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "latency.json").read_text())
    assert {"machine", "versions", "configuration", "weights", "baseline", "driving", "surveillance",
            "skipped", "wall_seconds"} <= data.keys()
    assert data["configuration"]["command"].startswith("python benchmarks/latency.py --quick")
    assert [b["resolution"] for b in data["baseline"]] == ["64x48", "48x32"]
    row = data["driving"][0]
    assert (row["backend"], row["precision"], row["resolution"], row["steps"]) == ("torch", "fp32", "64x48", 1)
    assert {"p50", "p99"} <= row["model_ms"].keys() and {"p50", "p99"} <= row["pipeline"]["end_to_end_ms"].keys()
    assert row["pipeline"]["fps"] > 0 and row["speedup"] > 0 and row["host_peak_mb"] > 0
    assert isinstance(row["driving"]["fits_frame_interval"], bool) and row["driving"]["frames"] >= 1
    surveillance = data["surveillance"][0]["result"]
    assert surveillance["streams"] == 2 and len(surveillance["per_stream_fps"]) == 2
    assert surveillance["frames"] == 2 * 3 and surveillance["aggregate_fps"] > 0 and not surveillance["errors"]
    if data["versions"]["tensorrt"] is None:
        assert [s["backend"] for s in data["skipped"]] == ["tensorrt"]
        assert "tensorrt fp32 1-step skipped: " in result.stderr
    table = (out / "latency.md").read_text()
    assert "| naive baseline (torch eager) | fp32 | 64x48 | 1 |" in table and "| torch | fp32 | 64x48 | 1 |" in table
    assert "aggregate FPS" in table and "randomly initialised" not in table
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [(r["resolution"], r["preset"], r["tune"]) for r in data["encoder"]]
    assert rows == [("64x48", "ultrafast", None), ("64x48", "ultrafast", "zerolatency"), ("64x48", "medium", None),
                    ("64x48", "medium", "zerolatency")]
    assert all(r["frames"] == 10 and r["cpu_ms_per_frame"] > 0 and r["kbytes_per_frame"] > 0 for r in data["encoder"])
    assert "| libx264 | 64x48 | medium | zerolatency |" in table


def test_without_matplotlib_the_plot_is_skipped_in_one_line(tmp_path, random_weights):
    """The README's set-up installs matplotlib; without it the run still finishes and says what to install."""
    out = tmp_path / "bench"
    argv = [str(SCRIPT), "--quick", "--resolutions", "64x48", "--frames", "2", "--iters", "1", "--backends", "torch",
            "--profile", "driving", "--threads", "1", "--weights", random_weights, "--encoder-presets", "ultrafast",
            "--encoder-tunes", "none", "--out", str(out)]
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "  # what `import matplotlib` meets when missing
            f"sys.path.insert(0, {str(SCRIPT.parent)!r}); sys.argv = {argv!r}; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    said = [line for line in result.stderr.splitlines() if "matplotlib is not" in line]
    assert len(said) == 1 and "pip install" in said[0], result.stderr
    assert (out / "latency.json").is_file() and (out / "latency.md").is_file()
    assert not (out / "latency.png").exists()


@pytest.mark.parametrize("args, words", [
    (["--backends", "tensorflow"], "'tensorflow' is not known"),
    (["--resolutions", "999p"], "'999p' is not known"),
    (["--steps", "0"], "use a whole number, 1 or more"),
])
def test_bad_arguments_say_so_in_one_line(args, words, tmp_path):
    result = bench(*args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr and result.stderr.startswith("latency.py: error:")
    assert not (tmp_path / "latency.json").exists()


def test_gpu_check_dry_run_brings_back_every_section(tmp_path):
    """benchmarks/gpu_check.py is the one prepared script for a lent GPU: its --dry-run runs the same
    code on the CPU, so a break shows here before device time is spent on it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    sections = ["parity", "overlap", "syncs", "cpu_stages", "pipeline", "surveillance"]
    result = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path), "--sections", *sections],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert list(figures) == ["machine", *sections]
    assert not [name for name, f in figures.items() if "error" in f or "skipped" in f]
    assert set(figures["parity"]["rows"]) == {"denoise", "derain", "deblur", "lowlight", "denoise video model",
                                              "derain video model", "denoise, colour on the device (I420 planes)"}
    device_colour = figures["parity"]["rows"]["denoise, colour on the device (I420 planes)"]
    assert device_colour["max"] <= 1 and abs(device_colour["mean_signed"]) < 0.05
    assert figures["pipeline"]["naive_loop"]["frames"] == 8 and figures["pipeline"]["best"]["fps"] > 0
    assert "## parity" in (tmp_path / "gpu_check.md").read_text()
    import torch

    if not torch.cuda.is_available():  # without --dry-run, on a CPU: one line, exit 2
        refused = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode == 2 and "no CUDA device" in refused.stderr
