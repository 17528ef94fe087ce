"""DARK codec (and the plain ``hrnet`` heatmap codec's round trip): blur, targets, Taylor decode,
round-trip and flip-test properties."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrpose_bench.baselines.dark import DarkMethod
from lrpose_bench.baselines.heatmap import GaussianHeatmapMethod
from lrpose_bench.codecs.dark import (
    cv2_sigma_for_kernel,
    dark_refine,
    gaussian_blur_maps,
    gaussian_kernel_1d,
    modulate,
    unbiased_gaussian_heatmaps,
)
from lrpose_bench.codecs.heatmap_ops import argmax_2d
from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import MethodContext
from lrpose_bench.oracle import oracle_outputs
from lrpose_bench.resolution import Resolution

RESOLUTIONS = ("64x48", "128x96", "256x192")
K = 17


def build(cls, res: str, **ablation):
    resolution = Resolution.parse(res)
    return cls(resolve_method_params(cls.Params, cls.name, resolution, ablation or None), MethodContext(resolution))


# ------------------------------------------------------------------------------------ blur
@pytest.mark.parametrize("kernel", [3, 5, 7, 11, 17])
def test_zero_padded_blur_matches_darkpose_cv2(kernel: int) -> None:
    """DarkPose gaussian_blur: zero border of (k-1)/2, cv2.GaussianBlur(k, 0), crop."""
    rng = np.random.default_rng(kernel)
    maps = rng.random((16, 12))
    border = kernel // 2
    padded = np.zeros((16 + 2 * border, 12 + 2 * border))
    padded[border:-border, border:-border] = maps
    expected = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
    ours = gaussian_blur_maps(torch.tensor(maps)[None, None], kernel, padding="zeros")[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-12)


@pytest.mark.parametrize("kernel", [3, 7, 11])
def test_reflect_blur_matches_cv2_default_border(kernel: int) -> None:
    rng = np.random.default_rng(kernel + 1)
    maps = rng.random((16, 12))
    expected = cv2.GaussianBlur(maps, (kernel, kernel), 0)
    ours = gaussian_blur_maps(torch.tensor(maps)[None, None], kernel, padding="reflect")[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_kernel_rule_and_normalisation() -> None:
    assert cv2_sigma_for_kernel(11) == pytest.approx(2.0)
    assert cv2_sigma_for_kernel(17) == pytest.approx(2.9)
    for kernel in (3, 7, 11, 23):
        taps = gaussian_kernel_1d(kernel, dtype=torch.float64)
        assert taps.sum().item() == pytest.approx(1.0)
        assert torch.allclose(taps, taps.flip(0))
    # OpenCV's fixed table for k = 3 (sigma = 0): [1/4, 1/2, 1/4]
    assert torch.allclose(
        gaussian_kernel_1d(3, dtype=torch.float64), torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    )
    with pytest.raises(ValueError):
        gaussian_kernel_1d(4)


def test_modulate_keeps_original_maximum() -> None:
    maps = torch.rand(2, 3, 16, 12) + 0.1
    out = modulate(maps, 3)
    assert torch.allclose(out.amax(dim=(-2, -1)), maps.amax(dim=(-2, -1)))


# --------------------------------------------------------------------------------- targets
def test_unbiased_target_is_full_map_gaussian_at_real_centre() -> None:
    joints = np.array([[5.3, 7.8], [0.2, 1.1], [-20.0, 5.0], [3.0, 3.0]])
    visible = np.array([1, 1, 1, 0])
    maps, weight = unbiased_gaussian_heatmaps(joints, visible, (16, 12), sigma=1.5)
    assert maps.shape == (4, 16, 12) and maps.dtype == np.float32
    ys, xs = np.mgrid[0:16, 0:12]
    expected = np.exp(-((xs - 5.3) ** 2 + (ys - 7.8) ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(maps[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(weight, [1, 1, 0, 0])  # off-map (3 sigma) and invisible → 0
    assert maps[2].max() == 0 and maps[3].max() == 0


# ----------------------------------------------------------------------------- Taylor guard
def test_taylor_guards() -> None:
    height, width = 16, 12
    maps = torch.zeros(1, 3, height, width)
    maps[0, 0, 5, 1] = 1.0  # border maximum (x = 1 is not > 1): no shift
    maps[0, 1] = 1.0  # constant map: singular Hessian → no shift
    maps[0, 2] = -1.0  # non-positive values: clipped to 1e-10, finite, no shift
    coords, _ = argmax_2d(maps)
    refined = dark_refine(maps, coords, 3)
    assert torch.isfinite(refined).all()
    assert torch.equal(refined, coords)


def test_taylor_recovers_exact_log_quadratic_without_blur() -> None:
    """Without blur the log of a Gaussian is exactly quadratic: the Taylor step is exact."""
    joints = np.array([[5.37, 7.81], [6.9, 4.2]])
    maps, _ = unbiased_gaussian_heatmaps(joints, np.ones(2), (16, 12), sigma=1.3)
    t = torch.tensor(maps, dtype=torch.float64)[None]
    coords, _ = argmax_2d(t)
    refined = dark_refine(t, coords, 1)
    np.testing.assert_allclose(refined[0].numpy(), joints, atol=1e-9)


# ------------------------------------------------------------------------------ round trip
def joints_strategy(margin_of):
    """Random (x, y) for one joint, at least ``margin`` px from the map border."""

    @st.composite
    def draw(draw_fn, res: str):
        height, width = Resolution.parse(res).heatmap
        margin = margin_of(res)
        x = draw_fn(st.floats(margin, width - 1 - margin, allow_nan=False))
        y = draw_fn(st.floats(margin, height - 1 - margin, allow_nan=False))
        return x, y

    return draw


def dark_margin(res: str) -> float:
    # away from the border: the Taylor guard (2 px) plus 2σ of the target (σ from dark.yaml)
    sigma = resolve_method_params(DarkMethod.Params, "dark", Resolution.parse(res)).sigma
    return 2.0 * sigma + 2.0


@pytest.mark.parametrize("res", RESOLUTIONS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_dark_round_trip_within_005(res: str, data) -> None:
    method = build(DarkMethod, res)
    points = [data.draw(joints_strategy(dark_margin)(res)) for _ in range(3)]
    joints = np.zeros((1, K, 2), np.float32)
    joints[0, :3] = points
    joints[0, 3:] = points[0]
    visible = np.ones((1, K), np.float32)
    coords, scores = method.decode(oracle_outputs(method, joints, visible))
    assert (coords - torch.tensor(joints)).abs().max() <= 0.05
    # the score is the peak pixel's value: the nearest pixel is at most √½ px away, so at least
    # exp(-½ / (2σ²)) (0.78 at σ 1, 0.64 at the 64x48 σ 0.75)
    sigma = resolve_method_params(DarkMethod.Params, "dark", Resolution.parse(res)).sigma
    assert torch.all(scores >= np.exp(-0.5 / (2 * sigma**2)) - 1e-4)


@pytest.mark.parametrize("res", RESOLUTIONS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_hrnet_round_trip_within_075(res: str, data) -> None:
    """Arg-max quantization (≤ 0.5) + the quarter shift (≤ 0.25) per axis, anywhere on the map."""
    method = build(GaussianHeatmapMethod, res)
    x, y = data.draw(joints_strategy(lambda r: 0.0)(res))
    joints = np.tile(np.array([[x, y]], np.float32), (1, K, 1))
    coords, _ = method.decode(oracle_outputs(method, joints, np.ones((1, K), np.float32)))
    assert (coords - torch.tensor(joints)).abs().max() <= 0.75 + 1e-6


def flipped_input_joints(joints: np.ndarray, width: int) -> np.ndarray:
    """Joints as they appear in the horizontally flipped input: mirrored and left/right swapped."""
    flipped = joints[:, flip_index(joints.shape[1])].copy()
    flipped[..., 0] = width - 1 - flipped[..., 0]
    return flipped


@pytest.mark.parametrize("cls", [DarkMethod, GaussianHeatmapMethod])
@pytest.mark.parametrize("res", RESOLUTIONS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_flip_test_consistency(cls, res: str, seed: int) -> None:
    """decode(flip_outputs(output of the flipped input)) == decode(output) (no pixel shift)."""
    method = build(cls, res)
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(0, width - 1, (2, K)), rng.uniform(0, height - 1, (2, K))], -1).astype(np.float32)
    if cls is GaussianHeatmapMethod:  # integer-centred target: avoid exact .5 ties of the rounding
        assume(np.all(np.abs(joints % 1.0 - 0.5) > 1e-3))
    visible = np.ones((2, K), np.float32)
    index = torch.as_tensor(flip_index(K))
    original = oracle_outputs(method, joints, visible)
    back = method.flip_outputs(oracle_outputs(method, flipped_input_joints(joints, width), visible), index)
    assert torch.allclose(back, original, atol=1e-5)
    coords, _ = method.decode(original)
    flip_coords, _ = method.decode(back)
    averaged, _ = method.decode(0.5 * (original + back))
    assert torch.allclose(flip_coords, coords, atol=1e-4)
    assert torch.allclose(averaged, coords, atol=1e-4)


# ---------------------------------------------------------------------------------- method
def test_dark_method_contract() -> None:
    method = build(DarkMethod, "128x96")
    assert method.head_channels() == K
    assert (method.params.sigma, method.params.blur_kernel) == (1.0, 3)
    joints = np.random.default_rng(0).uniform(2, 10, (K, 2)).astype(np.float32)
    targets = method.encode(joints, np.ones(K, np.float32))
    assert targets["heatmap"].shape == (K, 32, 24) and targets["heatmap"].dtype == np.float32
    batch = {key: torch.from_numpy(value)[None] for key, value in targets.items()}
    outputs = torch.zeros(1, K, 32, 24, requires_grad=True)
    parts = method.loss(outputs, batch, None)
    parts["loss"].backward()
    # HRNet JointsMSELoss: 0.5·mean((w·(pred − target))²)
    assert parts["loss"].item() == pytest.approx(0.5 * float((targets["heatmap"] ** 2).mean()), rel=1e-5)
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()


def test_dark_params_validation() -> None:
    with pytest.raises(ConfigError, match="blur_kernel"):
        build(DarkMethod, "64x48", blur_kernel=4)
    with pytest.raises(ConfigError, match="sigma"):
        build(DarkMethod, "64x48", sigma=0.0)
