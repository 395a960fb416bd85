"""streamrestore.runtime.fusion.RecursiveFusion: it averages noise away on still content without bias, moving
objects leave no ghost, a new size starts afresh and a cut found by the stream state clears it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamrestore.runtime.fusion import RecursiveFusion


def scene(width: int = 96, height: int = 72) -> np.ndarray:
    """Smooth texture in mid-range values (no clipping when noise is added), float32 RGB."""
    rng = np.random.default_rng(1)
    texture = cv2.resize(rng.uniform(60, 190, (height // 8, width // 8, 3)).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC)
    return np.clip(texture, 40, 210)


def noisy(clean: np.ndarray, rng, sigma: float = 6.0) -> np.ndarray:
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8)


def test_still_noisy_clip_error_falls_and_the_mean_stays():
    clean, rng = scene(), np.random.default_rng(0)
    fusion = RecursiveFusion()
    for _ in range(12):
        frame = noisy(clean, rng)
        fused = fusion(frame)
    alone, out = frame.astype(np.float64) - clean, fused.astype(np.float64) - clean
    assert np.sqrt((out**2).mean()) < 0.6 * np.sqrt((alone**2).mean())  # 6 levels of noise -> under 3.6
    assert np.abs(out).max() < 0.6 * np.abs(alone).max()
    assert abs(out.mean()) < 0.3  # no bias: the signed mean error stays near 0
    assert np.abs(out.mean(axis=(0, 1))).max() < 0.4  # per colour channel too


def square_clip(frames: int, step: int = 6, side: int = 16):
    """Clean frames of a bright square moving right by `step` px a frame over a still scene, and its boxes."""
    background = scene()
    clips, boxes = [], []
    for k in range(frames):
        image, x = background.copy(), 8 + step * k
        image[28:28 + side, x:x + side] = (235, 230, 40)
        clips.append(image)
        boxes.append((slice(28, 28 + side), slice(x, x + side)))
    return clips, boxes


def test_moving_square_leaves_no_ghost():
    clean, boxes = square_clip(10)
    rng, fusion = np.random.default_rng(2), RecursiveFusion()
    for k, image in enumerate(clean):
        fused = fusion(noisy(image, rng, 3.0)).astype(np.float64)
        if k < 2:
            continue
        vacated = np.zeros(image.shape[:2], bool)
        vacated[boxes[k - 1]] = True
        vacated[boxes[k]] = False  # where the square was a frame ago and is not now: background again
        error = np.abs(fused - image)
        assert error[vacated].mean() < 4.0 and error[vacated].max() < 30, k
        assert error[boxes[k]].mean() < 4.0, k  # and the square itself is where it is now, not lagging


def test_starts_afresh_on_a_new_size_and_on_request():
    rng, fusion = np.random.default_rng(3), RecursiveFusion()
    small, large = scene(64, 48), scene(80, 60)
    for _ in range(3):
        fusion(noisy(small, rng))
    frame = noisy(large, rng)
    assert np.array_equal(fusion(frame), frame)  # a new size starts afresh
    fusion(noisy(large, rng))
    fusion.reset()
    frame = noisy(large * 0.2, rng)
    assert np.array_equal(fusion(frame), frame)


def test_a_cut_seen_by_the_stream_state_clears_the_fusion():
    """Cuts are the stream state's to find (streamrestore.runtime.temporal); it clears the fusion it holds."""
    from streamrestore.runtime.temporal import StreamHistory

    rng = np.random.default_rng(4)
    history = StreamHistory(RecursiveFusion())
    bright, dark = noisy(scene(), rng), noisy(scene() * 0.2, rng)
    for k in range(3):
        fresh = history.previous_for(bright, k / 25) is None
        history.remember(bright)
        history.fuse(bright, fresh)
    fresh = history.previous_for(dark, 3 / 25) is None  # a cut to a darker scene: nothing of the old one may show
    assert history.resets == {"cut": 1} and np.array_equal(history.fuse(dark, fresh), dark)


def test_bad_input_and_settings_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        RecursiveFusion()(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="max_weight"):
        RecursiveFusion(max_weight=1.0)
    with pytest.raises(ValueError, match="preset"):
        RecursiveFusion(preset="slowest")


def test_the_first_blend_is_the_average_without_bias():
    """The second frame of a still scene is blended half and half: the mean of the two frames, ties rounded
    to even, not all down (cv2.blendLinear's epsilon did that: -0.25 level on the frame)."""
    rng = np.random.default_rng(7)
    first, second = noisy(scene(), rng), noisy(scene(), rng)
    fusion = RecursiveFusion()
    fusion(first)
    error = fusion(second).astype(np.float64) - (first.astype(np.float64) + second) / 2
    assert abs(error.mean()) < 0.03 and np.abs(error).max() <= 6


def _device_against_host(device: str) -> None:
    """The fusion with its full-size warp and blend on a torch `device` against the OpenCV path, on a still
    noisy scene and on the moving square: the same output up to interpolation rounding (OpenCV's remap
    quantises the map to 1/32 pixel), no bias; and both start afresh the same way."""
    rng = np.random.default_rng(5)
    still = [noisy(scene(), rng) for _ in range(6)]
    moving = [noisy(image, rng, 3.0) for image in square_clip(6)[0]]
    for clip in (still, moving):
        host, on_device = RecursiveFusion(), RecursiveFusion(device=device)
        for k, frame in enumerate(clip):
            diff = host(frame).astype(np.int16) - on_device(frame)
            if k == 0:
                assert not diff.any()  # the first frame passes through
            # exact halves (weight 1/2 on the second frame) may round either way: |diff| <= 1 there, no bias
            assert abs(diff.mean()) < 0.02 and np.abs(diff).mean() < 0.15 and (np.abs(diff) > 1).mean() < 2e-3, k
        host.reset()
        on_device.reset()
        assert np.array_equal(on_device(clip[0]), clip[0])


def test_fusion_on_a_torch_device_is_the_host_fusion():
    _device_against_host("cpu")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_fusion_on_the_gpu_is_the_host_fusion():
    _device_against_host("cuda")
