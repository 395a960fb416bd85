"""Seeded synthetic degradations, one small function each, and their parameter samplers per task.

Images are float32 (H, W, 3) RGB in [0, 1]; every function takes an explicit numpy Generator, so a
seed fixes the result. `TRAIN_SAMPLERS[task](image, rng)` draws wide parameter ranges for training;
`EVAL_SAMPLERS[task](image, rng)` draws from the held-out evaluation ranges, which are not the
training draws (denoise evaluates at the paper's sigma = 25/255).
"""
from __future__ import annotations

import cv2
import numpy as np


def _line_kernel(length: int, angle_deg: float, width: int = 1) -> np.ndarray:
    """A normalised straight-line kernel of the given length, angle and width."""
    size = max(3, int(length) | 1)
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = np.cos(np.deg2rad(angle_deg)) * c, np.sin(np.deg2rad(angle_deg)) * c
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, max(1, width))
    return kernel / kernel.sum()


def add_rain(image, rng, density=0.02, angle=75.0, length=20, width=1, brightness=0.8, haze=0.0):
    """Rain streaks: sparse noise smeared along `angle` by a line kernel, screen-blended; optional haze veil."""
    h, w = image.shape[:2]
    drops = (rng.random((h, w)) < density).astype(np.float32) * rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    streaks = cv2.filter2D(drops, -1, _line_kernel(length, angle, width)) * length / 2
    streaks = np.clip(streaks * brightness, 0, 1)[..., None]
    out = 1 - (1 - image) * (1 - streaks)
    if haze > 0:
        out = out * (1 - haze) + haze * rng.uniform(0.7, 0.95)
    return np.clip(out, 0, 1).astype(np.float32)


def add_noise(image, rng, sigma=25 / 255, peak=None):
    """Gaussian noise of std `sigma`; with `peak`, Poisson shot noise at that photon count first."""
    out = image
    if peak is not None:
        out = rng.poisson(np.clip(image, 0, 1) * peak).astype(np.float32) / peak
    out = out + rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def trajectory_kernel(rng, size=21, steps=64) -> np.ndarray:
    """A random camera-shake trajectory (a smoothed random walk) rasterised into a blur kernel."""
    velocity = rng.normal(0, 1, (steps, 2)).cumsum(0) * 0.3 + rng.normal(0, 1, 2)
    path = velocity.cumsum(0)
    path -= path.mean(0)
    path *= (size / 2 - 1) / max(np.abs(path).max(), 1e-6)
    kernel = np.zeros((size, size), np.float32)
    for x, y in path + size // 2:
        kernel[int(round(y)), int(round(x))] += 1
    kernel = cv2.GaussianBlur(kernel, (3, 3), 0.5)
    return kernel / kernel.sum()


def add_blur(image, rng, kernel: np.ndarray, noise_sigma=0.01):
    """Convolve with a motion kernel (reflected borders), then add slight Gaussian noise."""
    out = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return add_noise(out, rng, noise_sigma)


def darken(image, rng, gamma=2.0, gain=0.25, shot_peak=200.0, read_sigma=0.01, cast=(1.0, 1.0, 1.0)):
    """Low light: x^gamma * gain per channel cast, then Poisson shot and Gaussian read noise."""
    out = np.power(np.clip(image, 0, 1), gamma) * gain * np.asarray(cast, np.float32)
    return add_noise(out, rng, read_sigma, peak=shot_peak)


# --- parameter samplers: (image, rng) -> degraded image -------------------------------------

def random_rain(image, rng, wide=True):
    layers = rng.integers(1, 4) if wide else 1
    out = image
    angle = rng.uniform(50, 130)
    for _ in range(layers):
        out = add_rain(out, rng, density=rng.uniform(0.005, 0.04), angle=angle + rng.normal(0, 5),
                       length=int(rng.integers(8, 40)), width=int(rng.integers(1, 3)),
                       brightness=rng.uniform(0.4, 1.0), haze=rng.uniform(0, 0.25) if rng.random() < 0.3 else 0.0)
    return out


def random_noise(image, rng):
    sigma = rng.uniform(2, 50) / 255
    peak = rng.uniform(20, 300) if rng.random() < 0.3 else None
    return add_noise(image, rng, sigma, peak)


def random_blur(image, rng):
    if rng.random() < 0.5:
        kernel = _line_kernel(int(rng.integers(5, 22)), rng.uniform(0, 180))
    else:
        kernel = trajectory_kernel(rng, size=int(rng.choice([11, 15, 19, 23])))
    return add_blur(image, rng, kernel, rng.uniform(0, 0.02))


def random_lowlight(image, rng):
    cast = 1 + rng.uniform(-0.15, 0.15, 3)
    return darken(image, rng, gamma=rng.uniform(1.2, 3.0), gain=rng.uniform(0.08, 0.5),
                  shot_peak=rng.uniform(60, 600), read_sigma=rng.uniform(0.002, 0.02), cast=cast)


def eval_rain(image, rng):
    return add_rain(image, rng, density=0.02, angle=75.0, length=25, width=1, brightness=0.8, haze=0.1)


def eval_noise(image, rng):
    return add_noise(image, rng, sigma=25 / 255)


def eval_blur(image, rng):
    return add_blur(image, rng, trajectory_kernel(rng, size=17), 0.005)


def eval_lowlight(image, rng):
    return darken(image, rng, gamma=2.2, gain=0.2, shot_peak=150.0, read_sigma=0.008, cast=(1.08, 1.0, 0.92))


# --- clip samplers for video: parameters drawn once per clip, noise/streaks fresh every frame ---
# CLIP_SAMPLERS[task](rng) -> degrade(image, rng): the returned function keeps the clip's parameters
# (rain angle/density/length, noise level, blur kernel, exposure) while its own rng draws change per frame.

def clip_rain(rng):
    layers = [dict(density=rng.uniform(0.005, 0.04), angle=rng.uniform(50, 130), length=int(rng.integers(8, 40)),
                   width=int(rng.integers(1, 3)), brightness=rng.uniform(0.4, 1.0),
                   haze=rng.uniform(0, 0.25) if rng.random() < 0.3 else 0.0) for _ in range(rng.integers(1, 4))]
    haze_level = rng.uniform(0.7, 0.95)

    def degrade(image, frame_rng):
        out = image
        for layer in layers:
            out = add_rain(out, frame_rng, **{**layer, "haze": 0.0})
            if layer["haze"] > 0:
                out = out * (1 - layer["haze"]) + layer["haze"] * haze_level
        return np.clip(out, 0, 1).astype(np.float32)
    return degrade


def clip_noise(rng):
    sigma = rng.uniform(2, 50) / 255
    peak = rng.uniform(20, 300) if rng.random() < 0.3 else None
    return lambda image, frame_rng: add_noise(image, frame_rng, sigma, peak)


def clip_blur(rng):
    if rng.random() < 0.5:
        kernel = _line_kernel(int(rng.integers(5, 22)), rng.uniform(0, 180))
    else:
        kernel = trajectory_kernel(rng, size=int(rng.choice([11, 15, 19, 23])))
    sigma = rng.uniform(0, 0.02)
    return lambda image, frame_rng: add_blur(image, frame_rng, kernel, sigma)


def clip_lowlight(rng):
    params = dict(cast=1 + rng.uniform(-0.15, 0.15, 3), gamma=rng.uniform(1.2, 3.0), gain=rng.uniform(0.08, 0.5),
                  shot_peak=rng.uniform(60, 600), read_sigma=rng.uniform(0.002, 0.02))
    return lambda image, frame_rng: darken(image, frame_rng, **params)


def eval_clip(task: str):
    """The evaluation recipe as a clip sampler: its fixed parameters, fresh noise every frame (blur: one kernel)."""
    if task == "deblur":
        def make(rng):
            kernel = trajectory_kernel(rng, size=17)
            return lambda image, frame_rng: add_blur(image, frame_rng, kernel, 0.005)
        return make
    return lambda rng: EVAL_SAMPLERS[task]


TRAIN_SAMPLERS = {"derain": random_rain, "denoise": random_noise, "deblur": random_blur, "lowlight": random_lowlight}
EVAL_SAMPLERS = {"derain": eval_rain, "denoise": eval_noise, "deblur": eval_blur, "lowlight": eval_lowlight}
CLIP_SAMPLERS = {"derain": clip_rain, "denoise": clip_noise, "deblur": clip_blur, "lowlight": clip_lowlight}
TASKS = tuple(TRAIN_SAMPLERS)


def eval_degrade_uint8(task: str, image: np.ndarray, seed: int) -> np.ndarray:
    """An 8-bit RGB image degraded by the task's evaluation recipe with np.random.default_rng(seed), as 8-bit."""
    return (EVAL_SAMPLERS[task](image.astype(np.float32) / 255, np.random.default_rng(seed)) * 255 + 0.5).astype(np.uint8)
