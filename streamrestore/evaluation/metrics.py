"""Image quality on the Y channel, the convention of the restoration papers IR-CM compares with."""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (H, W, 3) uint8 RGB in studio range [16, 235] (MATLAB rgb2ycbcr), float64."""
    rgb = image.astype(np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def psnr_y(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of the BT.601 Y channel, peak 255."""
    mse = np.mean((rgb_to_y(prediction) - rgb_to_y(target)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim_y(prediction: np.ndarray, target: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of the Y channel."""
    return float(structural_similarity(rgb_to_y(prediction), rgb_to_y(target), data_range=255.0,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
