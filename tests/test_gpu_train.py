"""benchmarks/gpu_train.py: the training photographs packed to travel to a lent GPU (the same pixels, order and
held-out split, so the same seeded draws), and a time-boxed run on the pack that names the originals in its card
and resumes (run here with --dry-run, on the CPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamrestore.io.images import read_rgb8, split_folders
from streamrestore.training.data import SyntheticPairs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_train.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_train import pack  # noqa: E402


@pytest.fixture
def photo_folders(tmp_path):
    """Two folders of smooth PNGs (WebP packs them smaller) and noisy JPEGs (kept as they are), with names whose
    order a careless rename would change ("a.png" before "a_b.png", upper case before lower)."""
    rng = np.random.default_rng(0)
    folders = []
    for k, names in enumerate([["a.png", "a_b.png", "B.jpg", "c.png", "d.jpg", "e.png", "f.png"],
                               ["x.jpg", "y.png", "z.png"]]):
        folder = tmp_path / f"photos{k}"
        folder.mkdir()
        for i, name in enumerate(names):
            yy, xx = np.mgrid[0:80, 0:96]
            image = np.stack([yy * 3 + i * 20, xx * 2, (yy + xx + 7 * i) % 256], -1) % 256
            if name.endswith(".jpg"):
                image = image + rng.integers(0, 60, image.shape)
            cv2.imwrite(str(folder / name), np.clip(image, 0, 255).astype(np.uint8))
        folders.append(str(folder))
    return folders


def test_pack_keeps_the_pixels_the_order_and_the_held_out_split(photo_folders, tmp_path):
    to = tmp_path / "pack"
    manifest = pack(photo_folders, to, every=3)
    train, held = split_folders(photo_folders, 3)
    packed_folders = [str(to / f["packed"]) for f in manifest["folders"]]
    packed, none_held = split_folders(packed_folders, 0)
    assert none_held == [] and len(packed) == len(train) == 7
    assert [Path(i["original"]).name for i in manifest["images"]] == [p.name for p in train]
    assert sorted(Path(p).name for p in manifest["held_out"]) == sorted(p.name for p in held)
    assert {p.suffix for p in packed} == {".webp", ".jpg"}  # both ways of packing were taken
    for original, copy in zip(train, packed):
        assert copy.name.startswith(original.name)
        assert np.array_equal(read_rgb8(original), read_rgb8(copy))
    # the same seed draws the same training batches from the pack as from the originals
    a = SyntheticPairs(train, "derain", 32, seed=9).batch(6)
    b = SyntheticPairs(packed, "derain", 32, seed=9).batch(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert manifest["bytes"]["packed"] < manifest["bytes"]["original"]


def test_pack_refuses_a_folder_that_is_not_a_pack(photo_folders, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    result = subprocess.run([sys.executable, SCRIPT, "pack", "--data", *photo_folders, "--to", keep],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "not a pack" in result.stderr
    assert (keep / "notes.txt").read_text() == "mine"


def test_a_time_boxed_run_on_the_pack_names_the_originals_and_resumes(photo_folders, tmp_path):
    to, results, out = tmp_path / "pack", tmp_path / "results", tmp_path / "runs" / "gpu" / "w.safetensors"
    pack(photo_folders, to, every=3)
    # as on the lent machine, which has no PyAV: the script and `streamrestore train` must not import it
    without_pyav = f"import runpy, sys; sys.modules['av'] = None; sys.argv = sys.argv[1:]; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    call = [sys.executable, "-c", without_pyav, SCRIPT, "train", "--photos", to, "--results", results, "--budget-s", "0.01", "--dry-run",
            "--", "--task", "denoise", "--stage", "baseline", "--iters", "3", "--batch", "2", "--patch", "32",
            "--workers", "1", "--out", out, "--quiet"]
    first = subprocess.run(call, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "stopped by --time-limit" in first.stdout and "--resume continues" in first.stdout
    card = json.loads((results / "w.json").read_text())
    assert card["training"]["completed"]["iteration"] == 1 and card["training"]["workers"] == 1
    assert card["data"]["folder"] == ", ".join(photo_folders)
    assert card["data"]["images"] == [p.name for p in split_folders(photo_folders, 3)[0]]
    assert sorted(card["data"]["held_out"]) == sorted(p.name for p in split_folders(photo_folders, 3)[1])
    assert (results / "w.safetensors").read_bytes() == out.read_bytes()
    second = subprocess.run([*call[:call.index("0.01")], "60", *call[call.index("0.01") + 1:], "--resume"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "stopped" not in second.stdout
    assert json.loads((results / "w.json").read_text())["training"]["completed"]["stage_index"] == 1


@pytest.mark.parametrize("options,needle", [
    (["--device", "cpu", "--out", "w.safetensors"], "--device"),
    (["--data=elsewhere", "--out", "w.safetensors"], "--data"),
    (["--out"], "--out"),
    ([], "--out"),
])
def test_train_refuses_options_the_script_sets_or_needs(photo_folders, tmp_path, options, needle):
    to = tmp_path / "pack"
    pack(photo_folders, to, every=3)
    result = subprocess.run([sys.executable, SCRIPT, "train", "--photos", to, "--results", tmp_path / "r", "--dry-run",
                             "--", "--task", "denoise", *options], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "r").exists()
