"""The derain family: training draws that span it, the evaluation grid, and training on several folders."""
import json

import cv2
import numpy as np
import pytest

from streamrestore.io.images import split_folders, split_holdout
from streamrestore.tasks.degradations import RAIN_FAMILIES, eval_rain, rain_family_uint8, rain_layers, random_rain


def scene(seed=0, h=96, w=128):
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    return ((np.stack([yy * 2, xx * 2, (yy + xx)], -1) % 256 + rng.integers(0, 30, (h, w, 3))) % 256).astype(np.uint8)


def test_training_draws_span_drizzle_to_downpour_and_every_slant():
    rng = np.random.default_rng(0)
    layers = [layer for _ in range(300) for layer in rain_layers(rng)]
    density = [l["density"] for l in layers]
    angle = [l["angle"] for l in layers]
    assert min(density) < 0.003 and max(density) > 0.06
    assert min(angle) < 40 and max(angle) > 140
    assert min(l["length"] for l in layers) <= 8 and max(l["length"] for l in layers) >= 65
    assert {l["blend"] for l in layers} == {"screen", "add", "alpha"}
    assert any(l["haze"] > 0 for l in layers) and any(l["haze"] == 0 for l in layers)
    assert any(l["splashes"] > 0 for l in layers)
    image = scene().astype(np.float32) / 255
    rainy = random_rain(image, np.random.default_rng(1))
    assert rainy.shape == image.shape and rainy.dtype == np.float32 and 0 <= rainy.min() and rainy.max() <= 1


def test_haze_comes_with_heavy_rain_not_with_a_drizzle():
    """A frame with a few thin streaks is not veiled: the veil is the rain too far away to resolve, which a
    drizzle does not bring (a model trained on veils drawn at any density darkened clean frames)."""
    rng = np.random.default_rng(0)
    layers = [layer for _ in range(2000) for layer in rain_layers(rng)]
    light = [l["haze"] for l in layers if l["density"] <= 0.006]
    middle = [l["haze"] for l in layers if 0.01 <= l["density"] <= 0.02]
    heavy = [l["haze"] for l in layers if l["density"] >= 0.03]
    assert len(light) > 100 and max(light) == 0
    assert 0.2 < np.mean([h > 0 for h in middle]) < np.mean([h > 0 for h in heavy]) < 0.9
    assert max(middle) < 0.25 < max(heavy)
    assert any(h == 0 for h in heavy)


def test_rain_adds_light_in_every_family():
    """Rain brightens (screen, additive and opaque-drop blends all move pixels up on a dark scene), and a
    family is a fixed recipe: the same seed gives the same picture."""
    clean = (scene() // 3).astype(np.uint8)
    for family in RAIN_FAMILIES:
        rainy, target = rain_family_uint8(family, clean, seed=3)
        again, _ = rain_family_uint8(family, clean, seed=3)
        assert np.array_equal(rainy, again)
        difference = rainy.astype(int) - target
        assert difference.mean() > 0.2, family  # signed: rain adds light
        assert (difference < -2).mean() < 0.01, family
    night_rainy, night_clean = rain_family_uint8("night", clean, seed=3)
    assert night_clean.mean() < 0.35 * clean.mean() + 1  # the night family darkens the scene itself


def test_readme_recipe_is_the_moderate_family():
    image = scene().astype(np.float32) / 255
    rainy, _ = rain_family_uint8("moderate", scene(), seed=5)
    again = (eval_rain(image, np.random.default_rng(5)) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(rainy, again)


def test_a_second_folder_leaves_the_first_folders_split_alone(tmp_path):
    folders = []
    for name, count in (("clean", 13), ("more", 8)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(count):
            cv2.imwrite(str(folder / f"{name}{i:02d}.png"), scene(i, 40, 40))
        folders.append(folder)
    alone = split_holdout(sorted(folders[0].iterdir()), 6)
    train, held = split_folders([str(f) for f in folders], 6)
    assert [f for f in held if f.parent == folders[0]] == alone[1]
    assert [f.name for f in held if f.parent == folders[1]] == ["more05.png"]
    assert len(train) + len(held) == 21 and not set(train) & set(held)


def test_eval_grid_reports_every_family_and_the_mean(tmp_path, capsys):
    from streamrestore.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.png"), scene(i, 64, 96))
    assert main(["eval", "--task", "derain", "--data", str(folder), "--grid", "--steps", "1", "--json"]) == 0
    grid = json.loads(capsys.readouterr().out)["grid"]
    assert list(grid) == [*RAIN_FAMILIES, "mean", "clear"]
    for family, rows in grid.items():
        assert list(rows) == ["degraded input", "classical (median_derain)", "IR-CM 1-step"]
        assert rows["degraded input"]["gain_db"] == (None if family == "clear" else 0)
        assert 5 < rows["IR-CM 1-step"]["psnr_y"] < 60
    mean = np.mean([grid[f]["IR-CM 1-step"]["gain_db"] for f in RAIN_FAMILIES])
    assert grid["mean"]["IR-CM 1-step"]["gain_db"] == pytest.approx(mean, abs=0.01)
