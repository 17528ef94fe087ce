"""SR quality: PSNR and SSIM on the Y channel with ``scale`` border pixels cropped.

The convention of the SR literature and of basicsr's ``calculate_psnr`` / ``calculate_ssim``
(``basicsr/metrics/psnr_ssim.py`` with ``crop_border=4, test_y_channel=True``): 8-bit range
[0, 255], Y of ITU-R BT.601 YCbCr (``Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255·255`` on
[0, 1] inputs, MATLAB ``rgb2ycbcr``), PSNR = 10·log10(255²/MSE), SSIM of Wang et al. 2004 with an
11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, averaged over the valid region. Images here
are RGB (basicsr's take BGR; the Y weights are applied to the matching channels).
"""

from __future__ import annotations

import cv2
import numpy as np

#: BT.601 luma weights for R, G, B on [0, 1] input (MATLAB rgb2ycbcr; basicsr ``rgb2ycbcr``)
Y_WEIGHTS_RGB = np.array([65.481, 128.553, 24.966])
Y_OFFSET = 16.0


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 255] → (H, W) float64 Y in [16, 235] (basicsr ``to_y_channel``)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return (image / 255.0) @ Y_WEIGHTS_RGB + Y_OFFSET


def _prepare(image: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if y_channel and image.ndim == 3 and image.shape[2] == 3:
        image = rgb_to_y(image)
    if crop_border > 0:
        image = image[crop_border:-crop_border, crop_border:-crop_border, ...]
    return image


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 4, y_channel: bool = True) -> float:
    """PSNR (dB) of ``img`` against ``ref``; both (H, W[, 3]) in [0, 255]; ``inf`` when equal."""
    if np.shape(img) != np.shape(ref):
        raise ValueError(f"image shapes differ: {np.shape(img)} vs {np.shape(ref)}")
    a, b = _prepare(img, crop_border, y_channel), _prepare(ref, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(255.0**2 / mse))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two single-channel float64 images (valid region of the 11×11 Gaussian window)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(a, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(b, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = cv2.filter2D(a**2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(b**2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(a * b, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 4, y_channel: bool = True) -> float:
    """SSIM of ``img`` against ``ref``; both (H, W[, 3]) in [0, 255]; channels averaged."""
    if np.shape(img) != np.shape(ref):
        raise ValueError(f"image shapes differ: {np.shape(img)} vs {np.shape(ref)}")
    a, b = _prepare(img, crop_border, y_channel), _prepare(ref, crop_border, y_channel)
    if a.ndim == 2:
        return _ssim_channel(a, b)
    return float(np.mean([_ssim_channel(a[..., i], b[..., i]) for i in range(a.shape[2])]))


def to_uint8_image(tensor_01: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) float64 on the 8-bit grid (round, clip), as basicsr's
    ``tensor2img`` before its metrics."""
    array = np.clip(np.asarray(tensor_01, dtype=np.float64), 0.0, 1.0)
    return np.round(array.transpose(1, 2, 0) * 255.0)
