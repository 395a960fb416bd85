"""Classical OpenCV baselines, one per task: what a user gets without a learned model.

Each takes and returns (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import cv2
import numpy as np


def median_derain(image: np.ndarray) -> np.ndarray:
    """Thin bright streaks removed by a 5x5 median filter."""
    return cv2.medianBlur(image, 5)


def nlm_denoise(image: np.ndarray) -> np.ndarray:
    """Non-local means (Buades et al. 2005) with its strength set from a robust noise estimate (MAD of a Laplacian)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    residual = cv2.Laplacian(gray, cv2.CV_32F) / np.sqrt(20.0)
    sigma = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    h = float(np.clip(sigma, 3, 40))
    return cv2.fastNlMeansDenoisingColored(image, None, h, h, 7, 21)


def unsharp_deblur(image: np.ndarray) -> np.ndarray:
    """Unsharp masking: image + 1.0 * (image - Gaussian(sigma 2))."""
    blurred = cv2.GaussianBlur(image, (0, 0), 2.0)
    return cv2.addWeighted(image, 2.0, blurred, -1.0, 0)


def clahe_lowlight(image: np.ndarray) -> np.ndarray:
    """Gamma that maps mean luma to 0.45, then CLAHE on the L channel of Lab, then a 3x3 median for noise."""
    x = image.astype(np.float32) / 255
    mean = float(np.clip(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean() / 255, 1e-3, 0.99))
    gamma = np.log(0.45) / np.log(mean)
    bright = (np.power(x, gamma) * 255).clip(0, 255).astype(np.uint8)
    lab = cv2.cvtColor(bright, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.medianBlur(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 3)


CLASSICAL = {"derain": median_derain, "denoise": nlm_denoise, "deblur": unsharp_deblur, "lowlight": clahe_lowlight}
