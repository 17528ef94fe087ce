"""PSNR/SSIM (Y channel, border = scale) against scikit-image and basicsr on fixed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrpose_bench.baselines.spsr import _basicsr
from lrpose_bench.baselines.spsr.metrics import psnr, rgb_to_y, ssim, to_uint8_image

skimage_metrics = pytest.importorskip("skimage.metrics")


def fixed_pair(seed: int, h: int = 64, w: int = 48, noise: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth RGB image with edges (8-bit values) and a noisy, slightly shifted copy of it."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            120 + 80 * np.sin(xs / 7.0 + seed),
            100 + 60 * np.cos(ys / 5.0),
            90 + 50 * ((xs - w / 2) ** 2 + (ys - h / 2) ** 2 < (h / 4) ** 2),
        ],
        axis=-1,
    )
    ref = np.clip(np.round(base), 0, 255)
    img = np.clip(np.round(np.roll(base, 1, axis=1) + rng.normal(0, noise, base.shape)), 0, 255)
    return img, ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_and_ssim_agree_with_scikit_image(seed: int) -> None:
    img, ref = fixed_pair(seed)
    b = 4
    y_img, y_ref = rgb_to_y(img)[b:-b, b:-b], rgb_to_y(ref)[b:-b, b:-b]
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(y_ref, y_img, data_range=255)
    expected_ssim = skimage_metrics.structural_similarity(
        y_ref, y_img, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert psnr(img, ref, crop_border=b) == pytest.approx(expected_psnr, abs=1e-9)
    assert ssim(img, ref, crop_border=b) == pytest.approx(expected_ssim, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 3])
def test_psnr_and_ssim_agree_with_basicsr(seed: int) -> None:
    calculate_psnr, calculate_ssim = _basicsr.reference_metrics()
    img, ref = fixed_pair(seed, noise=6.0)
    # basicsr's images are BGR; ours RGB
    bgr_img, bgr_ref = img[..., ::-1].copy(), ref[..., ::-1].copy()
    expected_psnr = calculate_psnr(bgr_img, bgr_ref, crop_border=4, test_y_channel=True)
    expected_ssim = calculate_ssim(bgr_img, bgr_ref, crop_border=4, test_y_channel=True)
    # basicsr converts to Y in float32: agreement to float32 precision
    assert psnr(img, ref, crop_border=4) == pytest.approx(expected_psnr, abs=1e-4)
    assert ssim(img, ref, crop_border=4) == pytest.approx(expected_ssim, abs=1e-5)
    # and without the Y conversion (all three channels)
    assert psnr(img, ref, crop_border=4, y_channel=False) == pytest.approx(
        calculate_psnr(bgr_img, bgr_ref, crop_border=4), abs=1e-9
    )
    assert ssim(img, ref, crop_border=4, y_channel=False) == pytest.approx(
        calculate_ssim(bgr_img, bgr_ref, crop_border=4), abs=1e-9
    )


def test_known_values() -> None:
    ref = np.full((20, 20, 3), 100.0)
    assert math.isinf(psnr(ref, ref))
    assert ssim(ref, ref) == pytest.approx(1.0)
    # a uniform error of 1 grey level in Y: PSNR = 10 log10(255^2 / 1)
    shifted = ref.copy()
    shifted[..., :] += 255.0 / (65.481 + 128.553 + 24.966)
    assert psnr(shifted, ref) == pytest.approx(20 * math.log10(255.0), abs=1e-9)
    # the border is excluded: a corrupt 4-pixel frame does not count
    framed = ref.copy()
    framed[:4] = 0
    assert math.isinf(psnr(framed, ref, crop_border=4))
    assert not math.isinf(psnr(framed, ref, crop_border=3))


def test_y_channel_and_uint8_conversion() -> None:
    white = np.full((1, 1, 3), 255.0)
    black = np.zeros((1, 1, 3))
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    image = to_uint8_image(np.array([[[0.5, 1.2]], [[-0.1, 0.25]], [[1.0, 0.0]]]))
    assert image.shape == (1, 2, 3)
    np.testing.assert_array_equal(image[0, 0], [128.0, 0.0, 255.0])
    np.testing.assert_array_equal(image[0, 1], [255.0, 64.0, 0.0])
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
