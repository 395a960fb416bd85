"""`streamrestore train` and `eval` end to end, and their one-line errors on bad input."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "streamrestore.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_main(capfd):
    """The real CLI entry point in this process (faster than a subprocess; same error handling)."""
    from streamrestore.cli import main

    def call(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out, err = capfd.readouterr()
        return Result(code, out, err)

    return call


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        yy, xx = np.mgrid[0:72, 0:80]
        img = np.stack([yy * 3, xx * 3, (yy + xx) * 2], -1) % 256
        img = (img + rng.integers(0, 20, img.shape)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"p{i}.png"), img)
    return folder


def test_help_lists_the_commands():
    """`streamrestore --help` lists exactly the registered subcommands, in order, each with a summary."""
    from streamrestore.cli import COMMANDS

    result = cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "usage: streamrestore [-h] COMMAND ..."
    # the block under "positional arguments:" up to the next blank line: "  COMMAND", then
    # one "    NAME   summary" line per subcommand
    start = lines.index("positional arguments:") + 1
    end = lines.index("", start)
    block = lines[start:end]
    assert block[0].strip() == "COMMAND"
    entries = [line.split(None, 1) for line in block[1:]]
    assert all(line.startswith("    ") and not line.startswith("     ") for line in block[1:])
    assert [entry[0] for entry in entries] == list(COMMANDS)
    assert all(len(entry) == 2 and entry[1].strip() for entry in entries)  # a summary on each


def test_help_does_not_import_torch():
    """`streamrestore --help` answers without importing torch (seconds of start-up for a usage line)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "streamrestore.cli", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    # -X importtime writes "import time: self | cumulative | package" per module to stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "streamrestore.cli" in imported or "streamrestore" in imported
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}


def test_train_then_eval_on_its_own_weights(photos, tmp_path):
    weights = tmp_path / "w.safetensors"
    result = cli("train", "--task", "denoise", "--data", photos, "--out", weights, "--iters", 3, "--batch", 2,
                 "--patch", 32, "--stage", "both", "--holdout-every", 0, "--sde-lambda", 4, "--origin-weight", 2,
                 "--clear-share", 0.25, "--psnr-balance", 1.5, "--detail-share", 0.5, "--read-noise-only", "--quiet")
    assert result.returncode == 0, result.stderr
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["task"] == "denoise" and card["architecture"]["parameters"] > 0
    assert card["schedule"]["lambda"] == pytest.approx(4 / 255) and card["losses"]["lambda_og"] == 2.0
    assert card["training"]["clear_share"] == 0.25 and card["training"]["psnr_balance"] == 1.5
    assert card["training"]["detail_share"] == 0.5 and card["training"]["read_noise_only"] is True
    assert "random_read_noise" in card["data"]["degradation"]
    assert card["architecture"]["macs_per_pixel"] > 0 and "FFT" in card["losses"]["perceptual"]
    assert [c[0] for c in card["training"]["loss_curve"]] == ["linear", "nonlinear"]
    result = cli("eval", "--task", "denoise", "--data", photos, "--weights", weights, "--baseline-weights", weights,
                 "--steps", 1, 2, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert list(rows) == ["degraded input", "classical (nlm_denoise)", "CNN-baseline", "IR-CM 1-step", "IR-CM 2-step"]
    assert all(10 < r["psnr_y"] < 60 and 0 < r["ssim_y"] <= 1 for r in rows.values())


@pytest.mark.parametrize("case", ["missing", "empty", "not-images", "unreadable", "grayscale", "16-bit"])
def test_train_and_eval_refuse_bad_data(tmp_path, case, run_main):
    folder = tmp_path / "data"
    if case != "missing":
        folder.mkdir()
    if case == "not-images":
        (folder / "notes.txt").write_text("hello")
    if case == "unreadable":
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    if case == "grayscale":
        cv2.imwrite(str(folder / "g.png"), np.zeros((64, 64), np.uint8))
    if case == "16-bit":
        cv2.imwrite(str(folder / "d.png"), np.zeros((64, 64, 3), np.uint16))
    expected = {"missing": "no such folder", "empty": "holds no images", "not-images": "holds no images",
                "unreadable": "broken.png", "grayscale": "grayscale", "16-bit": "16-bit"}[case]
    out = tmp_path / "w.safetensors"
    assert_one_line_error(run_main("train", "--task", "derain", "--data", folder, "--out", out, "--iters", 1), expected)
    assert not out.exists()
    assert_one_line_error(run_main("eval", "--task", "derain", "--data", folder, "--weights", out), expected)


@pytest.mark.parametrize("args,needle", [
    (["--task", "dehaze"], "--task"),
    (["--iters", "0"], "--iters"),
    (["--batch", "-2"], "--batch"),
    (["--patch", "50"], "--patch"),
    (["--size", "huge"], "--size"),
    (["--device", "tpu"], "--device"),
    (["--out", "weights.pt"], "safetensors"),
    (["--lr", "-1"], "--lr"),
    (["--sampling-time-fraction", "1.5"], "--sampling-time-fraction"),
    (["--two-step-weight", "-0.5"], "--two-step-weight"),
    (["--sde-lambda", "0"], "--sde-lambda"),
    (["--origin-weight", "-1"], "--origin-weight"),
    (["--clear-share", "1.5"], "--clear-share"),
    (["--psnr-balance", "-1"], "--psnr-balance"),
    (["--workers", "-1"], "--workers"),
    (["--time-limit", "0"], "--time-limit"),
    (["--time-limit", "soon"], "--time-limit"),
])
def test_train_refuses_bad_options(photos, tmp_path, args, needle, run_main):
    base = {"--task": "derain", "--data": str(photos), "--out": str(tmp_path / "w.safetensors")}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    flat = [x for kv in base.items() for x in kv]
    assert_one_line_error(run_main("train", *flat, *[a for a in args if a not in base and a not in base.values()]), needle)


def test_train_time_limit_stops_and_resume_finishes(photos, tmp_path, run_main):
    """A run stopped by --time-limit says where and how to go on; the same command without --resume is refused
    (its state would be lost), with --resume it finishes the stages."""
    weights = tmp_path / "w.safetensors"
    args = ["train", "--task", "deblur", "--data", photos, "--out", weights, "--iters", 2, "--batch", 2,
            "--patch", 32, "--stage", "both", "--holdout-every", 0, "--quiet"]
    result = run_main(*args, "--time-limit", "0.001")
    assert result.returncode == 0, result.stderr
    assert "stopped by --time-limit 0.001 at iteration 1 of 2 of stage linear" in result.stdout
    assert "--resume continues" in result.stdout
    assert json.loads(weights.with_suffix(".json").read_text())["training"]["completed"]["stage_index"] == 0
    assert_one_line_error(run_main(*args), "--resume")
    result = run_main(*args, "--resume")
    assert result.returncode == 0 and "stopped" not in result.stdout
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["training"]["completed"]["stage_index"] == 2
    assert [c[0] for c in card["training"]["loss_curve"]] == ["linear", "nonlinear"]


def test_eval_refuses_unknown_steps_and_missing_weights(photos, tmp_path, run_main):
    assert_one_line_error(run_main("eval", "--task", "denoise", "--data", photos, "--steps", "0"), "--steps")
    assert_one_line_error(run_main("eval", "--task", "denoise", "--data", photos, "--weights", tmp_path / "none.safetensors"),
                          "none.safetensors")
