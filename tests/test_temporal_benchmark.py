"""benchmarks/temporal.py: its metrics on hand-made frames with known answers, a tiny end-to-end run
that writes its three files, the one line when ffmpeg is missing, and one-line option errors."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media import make_clip

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "temporal.py"
Y_PER_RGB_LEVEL = 219 / 255  # BT.601 studio-range Y moves this much per level of equal R, G and B


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its sibling _bench and latency
    try:
        spec = importlib.util.spec_from_file_location("temporal_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def grey(level: int, size: tuple[int, int] = (16, 12)) -> np.ndarray:
    return np.full((size[1], size[0], 3), level, np.uint8)


def test_flicker_is_the_mean_absolute_change_of_luma(bench):
    frames = [grey(100), grey(110), grey(100), grey(100)]
    assert bench.flicker_series(frames) == pytest.approx([10 * Y_PER_RGB_LEVEL, 10 * Y_PER_RGB_LEVEL, 0.0])
    assert bench.flicker(frames) == pytest.approx(20 / 3 * Y_PER_RGB_LEVEL)
    half = grey(100)
    half[:, :8] = 120  # half the pixels change by 20 levels
    assert bench.flicker([grey(100), half]) == pytest.approx(10 * Y_PER_RGB_LEVEL)


def test_moving_mask_is_the_changed_pixels_dilated(bench):
    first, second = grey(100, (32, 32)), grey(100, (32, 32))
    second[10, 20] = 150  # moves: 50 levels
    second[25, 5] = 105  # noise-sized change (4.3 Y levels): not motion
    masks = bench.moving_masks([first, second, second])
    assert not masks[0].any() and not masks[2].any()  # no previous frame; nothing changed
    expected = np.zeros((32, 32), bool)
    expected[8:13, 18:23] = True  # a 5x5 square: dilated by 2 px
    assert np.array_equal(masks[1], expected)


def test_moving_psnr_counts_only_masked_pixels(bench):
    clean = [grey(100, (32, 32)) for _ in range(2)]
    out = [c.copy() for c in clean]
    out[1][:5, :5] = 110  # 10 RGB levels wrong inside the mask
    out[1][20:, 20:] = 0  # badly wrong, but outside it
    masks = [np.zeros((32, 32), bool), np.zeros((32, 32), bool)]
    masks[1][:5, :5] = True
    assert bench.masked_psnr_y(out, clean, masks) == pytest.approx(20 * np.log10(255 / (10 * Y_PER_RGB_LEVEL)))
    assert bench.masked_psnr_y(out, clean, [np.zeros((32, 32), bool)] * 2) is None


def test_sizes_keep_the_aspect_and_stay_even(bench):
    assert bench.scaled_size(768, 576, 320) == (320, 240)
    assert bench.scaled_size(720, 528, 320) == (320, 234)
    assert bench.scaled_size(640, 480, 64) == (64, 48)


def test_clips_are_read_scaled_with_evenly_spaced_times(bench, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=96, height=72, frames=5, rate=25, audio=False)
    frames, seconds = bench.read_clip(clip, 3, 64)
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3 and frames[0].dtype == np.uint8
    assert seconds == pytest.approx([0.0, 0.04, 0.08])


def test_atadenoise_settings_a_clip_is_too_short_for_are_left_out(bench):
    assert bench.runs_on("atadenoise=0a=0.1:0b=0.3:1a=0.1:1b=0.3:2a=0.1:2b=0.3:s=15", 8)
    assert not bench.runs_on("atadenoise=0a=0.1:0b=0.3:1a=0.1:1b=0.3:2a=0.1:2b=0.3:s=15", 7)
    assert bench.runs_on("hqdn3d=4:3:6:4.5", 2)


def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def tiny_args(tmp_path: Path, weights: Path, out: str) -> list[str]:
    clip = make_clip(tmp_path / "clip.mp4", width=96, height=72, frames=4, audio=False)
    return ["--tasks", "denoise", "--clips", str(clip), "--frames", "3", "--width", "64", "--tune-frames", "3",
            "--threads", "1", "--temporal-weights", str(weights), "--out", str(tmp_path / out)]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
def test_tiny_run_writes_json_markdown_and_picture(tmp_path, temporal_weights):
    result = run_script(*tiny_args(tmp_path, temporal_weights, "results"), "--write-cards")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results"
    data = json.loads((out / "temporal.json").read_text())
    assert data["command"].startswith("python benchmarks/temporal.py --tasks denoise")
    assert {"machine", "versions", "settings", "weights", "ffmpeg", "results", "means", "fusion_cost_ms"} <= data.keys()
    clip = data["results"]["denoise"]["clip.mp4"]
    assert clip["size"] == [64, 48] and clip["frames"] == 3
    assert set(clip["rows"]) == set(data["means"]["denoise"]) == set(
        ("clean clip", "degraded input", "one-frame model", "temporal model", "one-frame + fusion",
         "temporal + fusion", "fusion + one-frame", "default stream, clean clip in", "ffmpeg atadenoise",
         "ffmpeg hqdn3d", "ffmpeg nlmeans"))
    assert all(len(row["flicker_series"]) == 2 for row in clip["rows"].values())
    assert clip["resets"]["temporal model"] == {}  # a clip with no cut or gap keeps its state
    assert clip["rows"]["one-frame + fusion"]["fps"] > 0 and clip["rows"]["ffmpeg hqdn3d"]["fps"] > 0
    clear = clip["rows"]["default stream, clean clip in"]  # the clean clip through the default stream, scored
    assert 5 < clear["psnr_y"] < 100 and clear["fps"] > 0 and clip["resets"]["default stream, clean clip in"] == {}
    tuned = data["ffmpeg"]["tuning"]["denoise"]["ffmpeg hqdn3d"]
    assert tuned["chosen"] in [g["setting"] for g in tuned["grid"]] and len(tuned["grid"]) > 1
    table = (out / "temporal.md").read_text()
    assert "| row | clip.mp4 (64x48) | mean over clips |" in table and "| temporal + fusion |" in table
    assert tuned["chosen"] in table
    assert (out / "temporal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads(temporal_weights.with_suffix(".json").read_text())["temporal_eval"]  # --write-cards
    assert card["rows"]["temporal + fusion"][0] == data["means"]["denoise"]["temporal + fusion"]["psnr_y"]


def test_without_ffmpeg_one_line_and_the_other_rows(tmp_path, temporal_weights):
    python_only = tmp_path / "bin"
    python_only.mkdir()
    env = {**os.environ, "PATH": str(python_only)}  # no ffmpeg (nor git) on PATH
    result = run_script(*tiny_args(tmp_path, temporal_weights, "plain"), env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.replace(str(tmp_path), "TMP").splitlines()
    assert [l for l in lines if "ffmpeg" in l] == [
        "temporal.py: ffmpeg not found on PATH; the atadenoise, hqdn3d and nlmeans rows are skipped"]
    rows = json.loads((tmp_path / "plain" / "temporal.json").read_text())["results"]["denoise"]["clip.mp4"]["rows"]
    assert "one-frame + fusion" in rows and not any(r.startswith("ffmpeg") for r in rows)


def test_size_base_puts_the_base_weights_in_the_one_frame_rows(tmp_path, temporal_weights):
    """--size base: the CUDA default's one-frame weights beside the video model, so a CUDA stream's
    choice between them is measured on the same clips."""
    python_only = tmp_path / "bin"
    python_only.mkdir()
    env = {**os.environ, "PATH": str(python_only)}  # no ffmpeg: only our rows, quicker
    result = run_script(*tiny_args(tmp_path, temporal_weights, "base"), "--size", "base", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "base" / "temporal.json").read_text())
    assert data["weights"]["denoise"]["one-frame"]["path"] == "engines/denoise-base.safetensors"
    rows = data["results"]["denoise"]["clip.mp4"]["rows"]
    assert rows["one-frame model"]["psnr_y"] > rows["degraded input"]["psnr_y"] and "temporal + fusion" in rows


def test_one_frame_weights_puts_that_checkpoint_in_the_one_frame_rows(tmp_path, temporal_weights, tiny_weights):
    """--one-frame-weights: a candidate one-frame checkpoint measured beside the shipped video model."""
    python_only = tmp_path / "bin"
    python_only.mkdir()
    env = {**os.environ, "PATH": str(python_only)}  # no ffmpeg: only our rows, quicker
    result = run_script(*tiny_args(tmp_path, temporal_weights, "given"), "--one-frame-weights", str(tiny_weights),
                        env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "given" / "temporal.json").read_text())
    assert data["weights"]["denoise"]["one-frame"]["path"].endswith(tiny_weights.name)
    assert "temporal + fusion" in data["results"]["denoise"]["clip.mp4"]["rows"]


def test_steps_runs_both_models_at_that_many_steps(tmp_path, temporal_weights):
    """--steps 2: the one-frame and the video rows sample twice (the settings say so, the outputs change)."""
    python_only = tmp_path / "bin"
    python_only.mkdir()
    env = {**os.environ, "PATH": str(python_only)}  # no ffmpeg: only our rows, quicker
    rows = {}
    for steps in ("1", "2"):
        result = run_script(*tiny_args(tmp_path, temporal_weights, f"steps{steps}"), "--steps", steps, env=env)
        assert result.returncode == 0, result.stderr
        data = json.loads((tmp_path / f"steps{steps}" / "temporal.json").read_text())
        assert data["settings"]["steps"] == int(steps)
        rows[steps] = data["results"]["denoise"]["clip.mp4"]["rows"]
    for row in ("one-frame model", "temporal model"):
        assert rows["2"][row]["psnr_y"] != rows["1"][row]["psnr_y"], row


@pytest.mark.parametrize("args, words", [
    (["--width", "63"], "--width: '63': use an even whole number, 16 or more"),
    (["--frames", "1"], "--frames: '1': use a whole number, 2 or more"),
    (["--tasks", "sharpen"], "'sharpen' is not a task"),
    (["--clips", "missing.mp4"], "--clips missing.mp4: no such file"),
    (["--temporal-weights", "missing.safetensors", "--tasks", "denoise"], "missing.safetensors: no such file"),
    (["--temporal-weights", "one.safetensors"], "put {task} in the path when running several tasks"),
    (["--size", "base", "--tasks", "deblur"], "--size base: no shipped weights deblur-base.safetensors"),
    (["--one-frame-weights", "gone.safetensors", "--tasks", "denoise"],
     "--one-frame-weights gone.safetensors: no such file"),
    (["--steps", "2", "--write-cards"], "--write-cards with --steps 2: the cards hold the default run's figures"),
])
def test_bad_options_give_one_line_and_exit_2(bench, capsys, tmp_path, args, words):
    if "--clips" not in args:  # a clip that exists, so the option under test is the one refused
        args = [*args, "--clips", str(make_clip(tmp_path / "clip.mp4", frames=2, audio=False))]
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("temporal.py: error: ") and words in err
