"""The families each task trains on and is graded over (streamrestore.tasks.degradations): noise, blur and exposure."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from streamrestore.tasks.degradations import (BLUR_FAMILIES, EXPOSURE_FAMILIES, FAMILIES, NOISE_FAMILIES, add_chroma_noise,
                                        blur_kernel, family_uint8, jpeg, noise_params, sensor_noise)


def photo(h=96, w=128, seed=0):
    """A smooth colour scene with edges: gradients and a few rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 9)], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h - 20), rng.integers(0, w - 20)
        image[y0:y0 + 20, x0:x0 + 20] = rng.uniform(0.1, 0.9, 3)
    return (image * 255).astype(np.uint8)


@pytest.mark.parametrize("task", list(FAMILIES))
def test_every_family_is_seeded_and_degrades(task):
    clean = photo()
    for family in FAMILIES[task]:
        degraded, target = family_uint8(task, family, clean, seed=4)
        again, _ = family_uint8(task, family, clean, seed=4)
        other, _ = family_uint8(task, family, clean, seed=5)
        assert degraded.shape == clean.shape and degraded.dtype == np.uint8
        assert np.array_equal(degraded, again), family
        assert not np.array_equal(degraded, target), family
        if task in ("denoise", "derain"):
            assert not np.array_equal(degraded, other), family


@pytest.mark.parametrize("family", ["sigma5", "sigma15", "sigma25", "sigma50"])
def test_gaussian_families_add_zero_mean_noise_of_their_sigma(family):
    grey = np.full((256, 256, 3), 128, np.uint8)
    noisy, _ = family_uint8("denoise", family, grey, seed=1)
    diff = noisy.astype(np.float64) - 128
    sigma = NOISE_FAMILIES[family]["sigma"] * 255
    assert abs(diff.mean()) < 0.2  # signed mean: no bias (128 sits mid-range, so clipping is symmetric)
    assert diff.std() == pytest.approx(sigma, rel=0.06)


def test_shot_noise_grows_with_the_signal():
    dark, bright = np.full((128, 128, 3), 40, np.uint8), np.full((128, 128, 3), 150, np.uint8)
    noisy_dark, _ = family_uint8("denoise", "shot", dark, seed=2)
    noisy_bright, _ = family_uint8("denoise", "shot", bright, seed=2)
    assert (noisy_bright.astype(float) - 150).std() > 1.8 * (noisy_dark.astype(float) - 40).std()
    assert abs((noisy_bright.astype(float) - 150).mean()) < 1.0


def test_chroma_noise_keeps_its_std_and_comes_in_blotches():
    grey = np.full((128, 128, 3), 0.5, np.float32)
    out = add_chroma_noise(grey, np.random.default_rng(0), sigma=12 / 255, blur=1.8)
    noise = out - grey
    assert noise.std() * 255 == pytest.approx(12, rel=0.05) and abs(noise.mean()) * 255 < 0.5
    neighbour = np.corrcoef(noise[:, :-1, 0].ravel(), noise[:, 1:, 0].ravel())[0, 1]
    white = np.random.default_rng(0).normal(0, 1, (128, 128))
    assert neighbour > 0.7 and abs(np.corrcoef(white[:, :-1].ravel(), white[:, 1:].ravel())[0, 1]) < 0.05
    channels = np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]
    assert abs(channels) < 0.1  # colour noise: the channels move independently


def test_jpeg_round_trip_costs_more_at_low_quality():
    image = photo().astype(np.float32) / 255
    noisy = sensor_noise(image, np.random.default_rng(0), sigma=10 / 255)
    err = {q: float(np.abs(jpeg(noisy, q) - noisy).mean()) for q in (95, 40)}
    assert 0 < err[95] < err[40]
    assert np.array_equal(jpeg(noisy, 70), jpeg(noisy, 70))


def test_training_noise_draws_cover_low_and_high_sigma_and_the_sensor_effects():
    rng = np.random.default_rng(0)
    draws = [noise_params(rng) for _ in range(4000)]
    sigmas = np.array([d["sigma"] * 255 for d in draws])
    assert sigmas.min() >= 2 and sigmas.max() <= 55
    assert 0.55 < np.mean(sigmas < 15) < 0.67  # log-uniform: ln 7.5 / ln 27.5 = 0.61 below 15 levels
    for key, share in (("peak", 0.3), ("quality", 0.25)):
        assert np.mean([d[key] is not None for d in draws]) == pytest.approx(share, abs=0.03)
    assert np.mean([d["chroma"] > 0 for d in draws]) == pytest.approx(0.25, abs=0.03)


def support(kernel):
    ys, xs = np.nonzero(kernel > 1e-4)
    return max(ys.max() - ys.min(), xs.max() - xs.min()) + 1


def test_blur_kernels_span_5_to_25_pixels_and_keep_brightness():
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(300):
        kernel = blur_kernel(rng)
        assert kernel.sum() == pytest.approx(1, abs=1e-5) and kernel.min() >= 0
        sizes.append(support(kernel))
    assert min(sizes) <= 6 and max(sizes) >= 24
    assert set(BLUR_FAMILIES) >= {"line5", "line25", "shake9", "shake25"}


def test_exposure_families_run_from_dusk_to_dark():
    clean = photo()
    means = [family_uint8("lowlight", f, clean, seed=0)[0].mean() for f in EXPOSURE_FAMILIES]
    assert means == sorted(means, reverse=True) and means[-1] < 0.15 * clean.mean()


@pytest.mark.parametrize("task", ["denoise", "deblur", "lowlight"])
def test_eval_grid_reports_each_family_of_the_task(tmp_path, capsys, task):
    from streamrestore.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "p.png"), cv2.cvtColor(photo(64, 96), cv2.COLOR_RGB2BGR))
    assert main(["eval", "--task", task, "--data", str(folder), "--grid", "--steps", "1", "--json"]) == 0
    grid = json.loads(capsys.readouterr().out)["grid"]
    assert list(grid) == [*FAMILIES[task], "mean", "clear"]
    for family in FAMILIES[task]:
        rows = grid[family]
        assert rows["degraded input"]["gain_db"] == 0
        assert rows["IR-CM 1-step"]["psnr_y"] - rows["degraded input"]["psnr_y"] == pytest.approx(
            rows["IR-CM 1-step"]["gain_db"], abs=0.011)
    # the clear row: the shipped model on the clean photograph itself, scored against it
    from streamrestore.evaluation.metrics import psnr_y
    from streamrestore.restorer import Restorer

    clean = photo(64, 96)
    assert grid["clear"]["IR-CM 1-step"]["psnr_y"] == pytest.approx(psnr_y(Restorer(task)(clean), clean), abs=0.006)
    assert grid["clear"]["degraded input"]["psnr_y"] is None and grid["clear"]["IR-CM 1-step"]["gain_db"] is None


def test_training_exposures_run_from_dusk_to_deep_night():
    from streamrestore.tasks.degradations import lowlight_params

    rng = np.random.default_rng(0)
    gains = np.array([lowlight_params(rng)["gain"] for _ in range(4000)])
    assert gains.min() >= 0.04 and gains.max() <= 0.6
    assert np.mean(gains < 0.15) == pytest.approx(np.log(0.15 / 0.04) / np.log(0.6 / 0.04), abs=0.03)  # log-uniform


def test_eval_grid_write_card_stores_the_grid_beside_the_weights(tmp_path, capsys):
    """`--grid --write-card` keeps the table in the model card (it used to be dropped), and the task's own
    recipe ("eval") stays as it was."""
    import shutil

    from streamrestore.cli import main
    from streamrestore.tasks import shipped_weights

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "p.png"), cv2.cvtColor(photo(64, 96), cv2.COLOR_RGB2BGR))
    weights = tmp_path / "deblur.safetensors"
    shutil.copy(shipped_weights("deblur"), weights)
    shutil.copy(shipped_weights("deblur").with_suffix(".json"), weights.with_suffix(".json"))
    before = json.loads(weights.with_suffix(".json").read_text())
    assert main(["eval", "--task", "deblur", "--data", str(folder), "--grid", "--steps", "1", "--weights", str(weights),
                 "--write-card", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["grid"]
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["grid"]["rows"] == printed and card["grid"]["images"] == ["p.png"]
    assert "--grid" in card["grid"]["command"] and card["eval"] == before["eval"]
