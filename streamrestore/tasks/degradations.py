"""Seeded synthetic degradations, one small function each, and their parameter samplers per task.

Images are float32 (H, W, 3) RGB in [0, 1]; every function takes an explicit numpy Generator, so a
seed fixes the result. `TRAIN_SAMPLERS[task](image, rng)` draws wide parameter ranges for training;
`EVAL_SAMPLERS[task](image, rng)` draws from the held-out evaluation ranges, which are not the
training draws (denoise evaluates at the paper's sigma = 25/255).
"""
from __future__ import annotations

import cv2
import numpy as np

from streamrestore.choices import TASKS


def _line_kernel(length: int, angle_deg: float, width: int = 1) -> np.ndarray:
    """A normalised straight-line kernel of the given length, angle and width."""
    size = max(3, int(length) | 1)
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = np.cos(np.deg2rad(angle_deg)) * c, np.sin(np.deg2rad(angle_deg)) * c
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, max(1, width))
    return kernel / kernel.sum()


def add_rain(image, rng, density=0.02, angle=75.0, length=20, width=1, brightness=0.8, haze=0.0,
             blend="screen", splashes=0.0):
    """Rain streaks: sparse drops smeared along `angle` by a line kernel (a drop's motion blur during the
    exposure), blended so they add light; optional splashes (small bright blobs where drops land) and a
    haze veil (the rain too far away to resolve, Garg & Nayar 2004).

    blend: "screen" 1 - (1 - x)(1 - s); "add" x + s (clipped); "alpha" x (1 - s) + s: streaks that hide
    the scene behind them (thick, close drops).
    """
    h, w = image.shape[:2]
    drops = (rng.random((h, w)) < density).astype(np.float32) * rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    streaks = cv2.filter2D(drops, -1, _line_kernel(length, angle, width)) * length / 2
    if splashes > 0:
        spots = (rng.random((h, w)) < splashes).astype(np.float32) * rng.uniform(0.6, 1.0, (h, w)).astype(np.float32)
        streaks = streaks + cv2.GaussianBlur(cv2.dilate(spots, np.ones((2, 3), np.uint8)), (3, 3), 0.8) * 2
    streaks = np.clip(streaks * brightness, 0, 1)[..., None]
    if blend == "add":
        out = image + streaks
    elif blend == "alpha":
        out = image * (1 - streaks) + streaks * 0.9
    else:
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


def add_chroma_noise(image, rng, sigma=10 / 255, blur=1.5):
    """Colour noise in blotches: independent Gaussian noise per channel, smoothed by a Gaussian of std `blur`
    pixels (rescaled to keep std `sigma`) -- the low-frequency chroma noise of a small sensor after demosaicing."""
    noise = rng.normal(0, 1, image.shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), blur)
    noise *= sigma / max(float(noise.std()), 1e-6)
    return np.clip(image + noise, 0, 1).astype(np.float32)


def jpeg(image, quality=75):
    """The image through an 8-bit JPEG round trip at `quality` (OpenCV's libjpeg, 4:2:0): the camera's or the
    encoder's compression after the noise, which blocks and smears it."""
    bgr = cv2.cvtColor((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255


def sensor_noise(image, rng, sigma=25 / 255, peak=None, chroma=0.0, chroma_blur=1.5, quality=None):
    """Sensor-like noise: Poisson shot noise at `peak` photons (signal-dependent, optional), Gaussian read noise
    `sigma`, chroma blotches of std `chroma` (optional), then a JPEG round trip at `quality` (optional)."""
    out = add_noise(image, rng, sigma, peak)
    if chroma > 0:
        out = add_chroma_noise(out, rng, chroma, chroma_blur)
    return jpeg(out, quality) if quality else out


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

def rain_layers(rng) -> list[dict]:
    """1-3 layers of rain drawn from the whole family (README, "Rain"): a drizzle of a few thin streaks
    to a downpour, near-vertical to strongly slanted, short to long, faint to opaque, with and without
    haze and splashes, blended as screen, additive light or opaque drops.

    The haze veil grows with the layer's density (`haze_ceiling`), in how often and how strong: it is the
    rain too far away to resolve (Garg & Nayar 2004), so a drizzle brings none and a downpour is veiled in
    three draws of four, up to 0.35. Drawn independently of the density, it asked for veils that a few
    thin streaks do not bring."""
    angle = rng.uniform(30, 150)
    layers = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))):
        density = float(np.exp(rng.uniform(np.log(0.002), np.log(0.07))))
        ceiling = haze_ceiling(density)
        layers.append(dict(density=density,
                           angle=angle + rng.normal(0, 6), length=int(rng.integers(6, 71)),
                           width=int(rng.choice([1, 1, 1, 2, 2, 3])), brightness=rng.uniform(0.2, 1.0),
                           blend=str(rng.choice(["screen", "screen", "add", "alpha"])),
                           haze=rng.uniform(0.05, 1.0) * ceiling if rng.random() < 0.15 + 0.6 * ceiling / 0.35 else 0.0,
                           splashes=float(np.exp(rng.uniform(np.log(5e-4), np.log(5e-3)))) if rng.random() < 0.3 else 0.0))
    return layers


def haze_ceiling(density: float) -> float:
    """The strongest haze a rain layer of this streak density brings: none at or below 0.006 (a drizzle),
    rising with log density to 0.35 at 0.05 and above."""
    return 0.35 * float(np.clip(np.log(density / 0.006) / np.log(0.05 / 0.006), 0, 1))


def random_rain(image, rng):
    """A rain draw of the whole family (the share of draws left clear is the training data's:
    CLEAR_SHARE, streamrestore.training.data)."""
    out = image
    for layer in rain_layers(rng):
        out = add_rain(out, rng, **layer)
    return out


def random_dark_scene(image, rng, share=0.2):
    """With probability `share`, the clean scene at night (x 0.15-0.6): rain over dark backgrounds is trained
    too. Applied to the clean image, so the target is the dark scene without rain."""
    return image * rng.uniform(0.15, 0.6) if rng.random() < share else image


def read_noise_sigma(rng) -> float:
    """Gaussian read noise sigma, log-uniform in 2-55 levels (as many draws below 15 as above): the family's read
    noise, and alone the draws of `train --read-noise-only`."""
    return float(np.exp(rng.uniform(np.log(2), np.log(55)))) / 255


def noise_params(rng) -> dict:
    """sensor_noise parameters from the whole family: read noise sigma log-uniform in 2-55 levels (as many draws
    below 15 as above), shot noise in 30% of draws, chroma blotches in 25%, a JPEG round trip in 25%."""
    return dict(sigma=read_noise_sigma(rng),
                peak=float(rng.uniform(20, 300)) if rng.random() < 0.3 else None,
                chroma=float(rng.uniform(3, 20)) / 255 if rng.random() < 0.25 else 0.0,
                chroma_blur=float(rng.uniform(0.8, 2.5)),
                quality=int(rng.integers(45, 96)) if rng.random() < 0.25 else None)


def random_noise(image, rng):
    return sensor_noise(image, rng, **noise_params(rng))


def random_read_noise(image, rng):
    return add_noise(image, rng, read_noise_sigma(rng))


def blur_kernel(rng):
    """A motion kernel of 5-25 px: half straight lines at any angle, half shaken-camera trajectories."""
    if rng.random() < 0.5:
        return _line_kernel(int(rng.integers(5, 26)), rng.uniform(0, 180))
    return trajectory_kernel(rng, size=int(rng.choice([7, 9, 11, 13, 15, 17, 19, 21, 23, 25])))


def random_blur(image, rng):
    return add_blur(image, rng, blur_kernel(rng), rng.uniform(0, 0.02))


def lowlight_params(rng) -> dict:
    """darken parameters from the whole family: gain log-uniform 0.04-0.6 (as many draws below 0.15 as above:
    dusk to deep night), gamma 1.2-3.0, shot noise 40-600 photons, read noise, a colour cast."""
    return dict(gamma=rng.uniform(1.2, 3.0), gain=float(np.exp(rng.uniform(np.log(0.04), np.log(0.6)))),
                shot_peak=rng.uniform(40, 600), read_sigma=rng.uniform(0.002, 0.02), cast=1 + rng.uniform(-0.15, 0.15, 3))


def random_lowlight(image, rng):
    return darken(image, rng, **lowlight_params(rng))


def eval_rain(image, rng):
    return add_rain(image, rng, **RAIN_FAMILIES["moderate"]["layers"][0])


# The derain evaluation grid (`streamrestore eval --task derain --grid`): fixed recipes, one per kind
# of rain. "moderate" is the README's recipe; "night" darkens the scene (clean and rainy alike) first.
RAIN_FAMILIES = {
    "drizzle": {"layers": [dict(density=0.004, angle=82.0, length=12, width=1, brightness=0.5)]},
    "light": {"layers": [dict(density=0.01, angle=78.0, length=18, width=1, brightness=0.6)]},
    "moderate": {"layers": [dict(density=0.02, angle=75.0, length=25, width=1, brightness=0.8, haze=0.1)]},
    "downpour": {"layers": [dict(density=0.05, angle=95.0, length=35, width=2, brightness=0.9, haze=0.25),
                            dict(density=0.03, angle=98.0, length=20, width=1, brightness=0.7)]},
    "slanted": {"layers": [dict(density=0.02, angle=40.0, length=30, width=1, brightness=0.8)]},
    "long": {"layers": [dict(density=0.012, angle=86.0, length=60, width=1, brightness=0.8)]},
    "faint": {"layers": [dict(density=0.03, angle=70.0, length=25, width=1, brightness=0.3)]},
    "opaque": {"layers": [dict(density=0.012, angle=80.0, length=22, width=3, brightness=1.0, blend="alpha")]},
    "splashes": {"layers": [dict(density=0.015, angle=85.0, length=20, width=1, brightness=0.8, splashes=0.002)]},
    "night": {"scene": 0.3, "layers": [dict(density=0.02, angle=80.0, length=25, width=1, brightness=0.7, blend="add")]},
}


def rain_family_uint8(family: str, image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rainy, clean) 8-bit RGB for one family of the grid; the clean image is the scene (darkened at night)."""
    recipe = RAIN_FAMILIES[family]
    clean = image.astype(np.float32) / 255 * recipe.get("scene", 1.0)
    rng = np.random.default_rng(seed)
    out = clean
    for layer in recipe["layers"]:
        out = add_rain(out, rng, **layer)
    return (out * 255 + 0.5).astype(np.uint8), (clean * 255 + 0.5).astype(np.uint8)


# The grids of the other tasks (`streamrestore eval --task T --grid`): fixed sensor_noise, blur and darken
# recipes spanning each family; some sit outside the training draws (lowlight "dark", denoise "jpeg" below
# the chroma/JPEG shares). A shaken kernel is drawn from the family's seeded generator.
NOISE_FAMILIES = {
    "sigma5": dict(sigma=5 / 255), "sigma15": dict(sigma=15 / 255), "sigma25": dict(sigma=25 / 255),
    "sigma50": dict(sigma=50 / 255),
    "shot": dict(sigma=4 / 255, peak=40.0),
    "chroma": dict(sigma=8 / 255, chroma=12 / 255, chroma_blur=1.8),
    "jpeg": dict(sigma=20 / 255, quality=70),
}
BLUR_FAMILIES = {
    "line5": dict(kind="line", size=5, angle=30.0), "line11": dict(kind="line", size=11, angle=100.0),
    "line17": dict(kind="line", size=17, angle=0.0), "line25": dict(kind="line", size=25, angle=135.0),
    "shake9": dict(kind="shake", size=9), "shake15": dict(kind="shake", size=15),
    "shake21": dict(kind="shake", size=21), "shake25": dict(kind="shake", size=25),
}
EXPOSURE_FAMILIES = {
    "dusk": dict(gamma=1.6, gain=0.4, shot_peak=400.0, read_sigma=0.004),
    "evening": dict(gamma=2.2, gain=0.2, shot_peak=150.0, read_sigma=0.008, cast=(1.08, 1.0, 0.92)),
    "night": dict(gamma=2.5, gain=0.1, shot_peak=100.0, read_sigma=0.01),
    "dark": dict(gamma=2.8, gain=0.05, shot_peak=60.0, read_sigma=0.015, cast=(0.92, 1.0, 1.1)),
}


def blur_family(image, rng, kind="line", size=15, angle=0.0, noise_sigma=0.005):
    kernel = _line_kernel(size, angle) if kind == "line" else trajectory_kernel(rng, size=size)
    return add_blur(image, rng, kernel, noise_sigma)


FAMILIES = {"derain": RAIN_FAMILIES, "denoise": NOISE_FAMILIES, "deblur": BLUR_FAMILIES, "lowlight": EXPOSURE_FAMILIES}
_FAMILY_DEGRADE = {"denoise": sensor_noise, "deblur": blur_family, "lowlight": darken}


def family_uint8(task: str, family: str, image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean) 8-bit RGB for one family of a task's grid, degraded with np.random.default_rng(seed)."""
    if task == "derain":
        return rain_family_uint8(family, image, seed)
    clean = image.astype(np.float32) / 255
    out = _FAMILY_DEGRADE[task](clean, np.random.default_rng(seed), **FAMILIES[task][family])
    return (out * 255 + 0.5).astype(np.uint8), image


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
    layers = rain_layers(rng)
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
    params = noise_params(rng)
    return lambda image, frame_rng: sensor_noise(image, frame_rng, **params)


def clip_read_noise(rng):
    sigma = read_noise_sigma(rng)
    return lambda image, frame_rng: add_noise(image, frame_rng, sigma)


def clip_blur(rng):
    kernel = blur_kernel(rng)
    sigma = rng.uniform(0, 0.02)
    return lambda image, frame_rng: add_blur(image, frame_rng, kernel, sigma)


def clip_lowlight(rng):
    params = lowlight_params(rng)
    return lambda image, frame_rng: darken(image, frame_rng, **params)


def eval_clip(task: str):
    """The evaluation recipe as a clip sampler: its fixed parameters, fresh noise every frame (blur: one kernel)."""
    if task == "deblur":
        def make(rng):
            kernel = trajectory_kernel(rng, size=17)
            return lambda image, frame_rng: add_blur(image, frame_rng, kernel, 0.005)
        return make
    return lambda rng: EVAL_SAMPLERS[task]


# The default share of training draws (patches, or whole clips) left undegraded, so a model learns to leave a
# clean frame as it is (`streamrestore train --clear-share`). Derain's 0.15 is what the models up to
# 2026-12-01 trained with; the other tasks had none.
CLEAR_SHARE = {"derain": 0.15}
# Tasks whose training draws are not the same turned a quarter turn: rain falls 30-150 degrees from the horizontal
# (rain_layers), so a frame on its side holds rain no model saw (backends.self_ensemble keeps such frames upright).
UPRIGHT_TASKS = frozenset({"derain"})

TRAIN_SAMPLERS = {"derain": random_rain, "denoise": random_noise, "deblur": random_blur, "lowlight": random_lowlight}
EVAL_SAMPLERS = {"derain": eval_rain, "denoise": eval_noise, "deblur": eval_blur, "lowlight": eval_lowlight}
CLIP_SAMPLERS = {"derain": clip_rain, "denoise": clip_noise, "deblur": clip_blur, "lowlight": clip_lowlight}
SCENE_SAMPLERS = {"derain": random_dark_scene}  # applied to the clean patch before the degradation
assert tuple(TRAIN_SAMPLERS) == TASKS, "streamrestore.choices.TASKS names every task's samplers"


def eval_degrade_uint8(task: str, image: np.ndarray, seed: int) -> np.ndarray:
    """An 8-bit RGB image degraded by the task's evaluation recipe with np.random.default_rng(seed), as 8-bit."""
    return (EVAL_SAMPLERS[task](image.astype(np.float32) / 255, np.random.default_rng(seed)) * 255 + 0.5).astype(np.uint8)
