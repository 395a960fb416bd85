"""benchmarks/lowlight_exposure.py: the oracle brightness and the ratio it reports are the clean photograph's
channel means against the output's, and the script writes its tables for the shipped model."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamrestore.evaluation.metrics import psnr_y
from streamrestore.tasks.degradations import FAMILIES, family_uint8

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import lowlight_exposure  # noqa: E402


def photo(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(30, 220, (6, 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def test_a_flat_grey_output_is_scored_too_dark_and_the_oracle_gives_it_the_clean_means():
    clean = photo()
    grey = lambda degraded: np.full_like(degraded, 100)  # a "model" that always answers mid-dark grey
    table = lowlight_exposure.measure(grey, {"p.png": clean}, target_means=np.array([50.0, 50.0, 50.0]))
    means = clean.reshape(-1, 3).astype(np.float64).mean(0)
    for f, family in enumerate(FAMILIES["lowlight"]):
        _, target = family_uint8("lowlight", family, clean, 1000 * f)  # the grid's seed for image 0
        row = table[family]
        assert row["ratio"] == pytest.approx(means.mean() / 100, abs=0.01)
        flat = np.broadcast_to(np.clip(np.round(100 * means / 100), 0, 255).astype(np.uint8), clean.shape)
        assert row["oracle_brightness"] == pytest.approx(psnr_y(flat, target), abs=0.01)
        assert row["fixed_exposure"] == pytest.approx(psnr_y(np.full_like(clean, 50), target), abs=0.01)
        assert row["model"] == pytest.approx(psnr_y(np.full_like(clean, 100), target), abs=0.01)
    assert table["mean"]["model"] == pytest.approx(np.mean([table[f]["model"] for f in FAMILIES["lowlight"]]), abs=0.01)


def test_the_script_writes_both_tables_for_the_shipped_model(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):  # every 6th by name is held out: one held-out photograph
        cv2.imwrite(str(folder / f"p{i}.png"), photo(seed=i))
    out = tmp_path / "exposure"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lowlight_exposure.py"), "--data", str(folder),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.with_suffix(".json").read_text())
    table = data["models"]["shipped lowlight-small"]
    assert list(table) == [*FAMILIES["lowlight"], "mean"] and len(data["images"]) == 1
    assert all(table[f]["ratio_min"] <= table[f]["ratio"] <= table[f]["ratio_max"] for f in FAMILIES["lowlight"])
    assert "| dark |" in out.with_suffix(".md").read_text()
