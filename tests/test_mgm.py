"""Mixed Gaussian Mask (Algorithm 1): batched EM against scikit-learn, mask shape and shift,
degenerate batches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.mixture import GaussianMixture

from lrpose_bench.methods.cal.mgm import (
    GaussianMixture2D,
    argmax_displacements,
    fit_gmm,
    grid_offsets,
    initial_mixture,
    log_density,
    mean_log_likelihood,
    mgm_from_predictions,
    mixed_gaussian_mask,
)


def displacement_cloud(seed: int, n: int = 400) -> np.ndarray:
    """Arg-max-like displacements: a main blob, a second mode and a few far misses."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal([0.2, -0.1], [0.5, 0.4], (int(n * 0.6), 2)),
            rng.normal([-1.5, 1.0], [0.7, 0.5], (int(n * 0.3), 2)),
            rng.normal([3.0, 2.5], 0.4, (n - int(n * 0.6) - int(n * 0.3), 2)),
        ]
    )


def single(mean, cov, device=None) -> GaussianMixture2D:
    return GaussianMixture2D(
        torch.ones(1, dtype=torch.float64),
        torch.tensor([mean], dtype=torch.float64),
        torch.tensor([cov], dtype=torch.float64),
    )


# ---------------------------------------------------------------------------------------- EM
@pytest.mark.parametrize("components", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_em_matches_sklearn_with_same_initialisation(components: int, seed: int) -> None:
    points = displacement_cloud(seed)
    reg, iterations = 1e-3, 25
    tensor = torch.tensor(points, dtype=torch.float32)
    valid = torch.ones(len(points), dtype=torch.bool)
    init = initial_mixture(tensor.double(), valid, components, reg)
    ours = fit_gmm(tensor, valid, components, iterations, reg)
    reference = GaussianMixture(
        components,
        covariance_type="full",
        reg_covar=reg,
        max_iter=iterations,
        tol=0.0,
        weights_init=init.weights.numpy(),
        means_init=init.means.numpy(),
        precisions_init=np.linalg.inv(init.covariances.numpy()),
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: we fix the iteration count on purpose
        reference.fit(points)
    np.testing.assert_allclose(ours.means.numpy(), reference.means_, atol=1e-3)
    np.testing.assert_allclose(ours.covariances.numpy(), reference.covariances_, atol=1e-3)
    np.testing.assert_allclose(ours.weights.numpy(), reference.weights_, atol=1e-3)
    ours_ll = mean_log_likelihood(
        tensor.double(), valid, GaussianMixture2D(ours.weights.double(), ours.means.double(), ours.covariances.double())
    )
    assert ours_ll.item() >= reference.score(points) - 1e-4


def test_one_component_is_sample_mean_and_covariance() -> None:
    points = displacement_cloud(3, 200)
    gmm = fit_gmm(torch.tensor(points), None, 1, iterations=3, reg_covar=1e-3)
    np.testing.assert_allclose(gmm.means[0].numpy(), points.mean(0), atol=1e-10)
    expected = np.cov(points.T, bias=True) + 1e-3 * np.eye(2)
    np.testing.assert_allclose(gmm.covariances[0].numpy(), expected, atol=1e-10)
    assert gmm.weights.item() == pytest.approx(1.0)


def test_invalid_points_are_ignored() -> None:
    points = displacement_cloud(4, 100)
    noisy = np.concatenate([points, np.full((30, 2), 50.0)])
    valid = torch.tensor([True] * 100 + [False] * 30)
    with_mask = fit_gmm(torch.tensor(noisy), valid, 2, 15, 1e-3)
    subset = fit_gmm(torch.tensor(points), None, 2, 15, 1e-3)
    assert torch.allclose(with_mask.means, subset.means) and torch.allclose(with_mask.covariances, subset.covariances)


@pytest.mark.parametrize("components", [1, 2, 3])
def test_degenerate_batches_stay_finite(components: int) -> None:
    # no visible joint at all
    none = fit_gmm(torch.randn(20, 2), torch.zeros(20, dtype=torch.bool), components, 10, 1e-3)
    # every displacement identical: singular sample covariance, floored by reg_covar
    same = fit_gmm(torch.full((20, 2), 0.25), None, components, 10, 1e-3)
    for gmm in (none, same):
        assert all(torch.isfinite(t).all() for t in (gmm.weights, gmm.means, gmm.covariances))
        mask = mixed_gaussian_mask(gmm, torch.tensor([[[5.3, 4.1]]]), (16, 12), 1.75)
        assert torch.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1
    assert torch.allclose(same.covariances, 1e-3 * torch.eye(2).expand(components, 2, 2), atol=1e-6)
    assert torch.allclose(same.means, torch.full((components, 2), 0.25))


# -------------------------------------------------------------------------------------- mask
def test_argmax_displacements() -> None:
    maps = torch.zeros(1, 2, 6, 5)
    maps[0, 0, 3, 1] = 1.0
    maps[0, 1, 0, 4] = 1.0
    joints = torch.tensor([[[1.4, 2.5], [3.0, 0.25]]])
    disp = argmax_displacements(maps, joints)
    assert torch.allclose(disp, torch.tensor([[[-0.4, 0.5], [1.0, -0.25]]]))


def test_grid_is_integer_square_of_ceil_radius() -> None:
    assert grid_offsets(3.0).shape == (7, 7, 2)  # paper: {-R..R}² for integer R
    assert grid_offsets(1.75).shape == (5, 5, 2)
    grid = grid_offsets(0.875)
    assert grid.shape == (3, 3, 2) and grid[0, 0].tolist() == [-1.0, -1.0]


@settings(max_examples=25, deadline=None)
@given(
    mx=st.integers(-1, 1),
    my=st.integers(-1, 1),
    jx=st.integers(3, 8),
    jy=st.integers(3, 12),
    var=st.floats(0.2, 3.0),
)
def test_mask_in_unit_range_with_max_at_shifted_mode(mx: int, my: int, jx: int, jy: int, var: float) -> None:
    radius = 1.75
    gmm = single([mx, my], [[var, 0.1 * var], [0.1 * var, var]])
    joint = torch.tensor([[[jx + 0.0, jy + 0.0]]], dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    for support, outside in (
        ("disk", (xs - jx) ** 2 + (ys - jy) ** 2 > radius**2),
        ("square", ((xs - jx).abs() > 2) | ((ys - jy).abs() > 2)),  # Z = {-⌈R⌉..⌈R⌉}²
    ):
        mask = mixed_gaussian_mask(gmm, joint, (16, 12), radius, support)[0, 0]
        assert mask.min() >= 0 and mask.max() <= 1
        assert mask[jy + my, jx + mx] == pytest.approx(1.0)  # Eq. 13: the mode shifted to the joint
        assert torch.all(mask[outside] == 0)


@pytest.mark.parametrize("radius", [3.0, 1.75, 2.0])
def test_default_square_support_is_algorithm1_literally(radius: float) -> None:
    """Algorithm 1 steps 4-6 rebuilt literally with numpy loops: M(z) = Σ_c w_c N(z; μ_c, Σ_c) for
    every z of Z = {-⌈R⌉..⌈R⌉}², min-max normalised, then pasted at an integer joint (Eq. 13)."""
    weights, means = np.array([0.6, 0.4]), np.array([[0.3, -0.2], [-1.0, 1.2]])
    covs = np.array([[[0.8, 0.1], [0.1, 0.5]], [[0.4, 0.0], [0.0, 0.9]]])
    gmm = GaussianMixture2D(*(torch.tensor(a, dtype=torch.float64) for a in (weights, means, covs)))
    half = int(np.ceil(radius))
    z = range(-half, half + 1)
    m = np.zeros((2 * half + 1, 2 * half + 1))
    for iy, dy in enumerate(z):
        for ix, dx in enumerate(z):
            for w, mu, cov in zip(weights, means, covs):
                d = np.array([dx, dy]) - mu
                m[iy, ix] += w * np.exp(-0.5 * d @ np.linalg.inv(cov) @ d) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    m = (m - m.min()) / (m.max() - m.min())
    expected = np.zeros((16, 12))
    jx, jy = 6, 7
    expected[jy - half : jy + half + 1, jx - half : jx + half + 1] = m
    mask = mixed_gaussian_mask(gmm, torch.tensor([[[jx + 0.0, jy + 0.0]]], dtype=torch.float64), (16, 12), radius)
    np.testing.assert_allclose(mask[0, 0].numpy(), expected, atol=1e-12)


def test_integer_joint_reproduces_paper_shift_of_normalised_grid() -> None:
    """The disk ablation: Algorithm 1 steps 4-6, then cut to ||p - y|| <= R."""
    radius = 3.0
    gmm = GaussianMixture2D(
        torch.tensor([0.7, 0.3], dtype=torch.float64),
        torch.tensor([[0.3, -0.2], [-1.0, 1.2]], dtype=torch.float64),
        torch.tensor([[[0.8, 0.1], [0.1, 0.5]], [[0.4, 0.0], [0.0, 0.9]]], dtype=torch.float64),
    )
    grid = grid_offsets(radius, dtype=torch.float64)
    m = log_density(grid, gmm).exp()
    m = (m - m.min()) / (m.max() - m.min())
    joint = torch.tensor([[[6.0, 7.0]]], dtype=torch.float64)
    mask = mixed_gaussian_mask(gmm, joint, (16, 12), radius, "disk")[0, 0]
    inside = (grid**2).sum(-1) <= radius**2
    expected = torch.zeros(16, 12, dtype=torch.float64)
    expected[4:11, 3:10] = torch.where(inside, m, torch.zeros_like(m))
    assert torch.allclose(mask, expected, atol=1e-12)


@pytest.mark.parametrize("joint", [(0.3, 0.6), (11.0, 15.0), (-0.6, 7.2), (11.5, 0.0)])
def test_shift_near_border_crops(joint) -> None:
    """A joint near/over the border gives the crop of the mask of a larger canvas."""
    gmm = single([0.4, -0.3], [[0.9, 0.2], [0.2, 0.6]])
    radius, pad = 1.75, 4
    small = mixed_gaussian_mask(gmm, torch.tensor([[joint]], dtype=torch.float64), (16, 12), radius)[0, 0]
    big_joint = torch.tensor([[[joint[0] + pad, joint[1] + pad]]], dtype=torch.float64)
    big = mixed_gaussian_mask(gmm, big_joint, (16 + 2 * pad, 12 + 2 * pad), radius)[0, 0]
    assert torch.allclose(small, big[pad:-pad, pad:-pad], atol=1e-12)
    assert big.sum() > 0


def test_flat_density_falls_back_to_binary_support() -> None:
    gmm = single([0.0, 0.0], [[1e8, 0.0], [0.0, 1e8]])
    square = mixed_gaussian_mask(gmm, torch.tensor([[[5.0, 5.0]]], dtype=torch.float64), (16, 12), 1.75)[0, 0]
    assert square.sum() == 25 and torch.all(square[3:8, 3:8] == 1)
    mask = mixed_gaussian_mask(gmm, torch.tensor([[[5.0, 5.0]]], dtype=torch.float64), (16, 12), 1.75, "disk")[0, 0]
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")
    disk = ((xs - 5) ** 2 + (ys - 5) ** 2 <= 1.75**2).double()
    assert torch.allclose(mask, disk, atol=1e-6)


def test_mgm_from_predictions_end_to_end() -> None:
    torch.manual_seed(0)
    n, k, h, w = 8, 17, 16, 12
    joints = torch.rand(n, k, 2) * torch.tensor([w - 1.0, h - 1.0])
    visible = (torch.rand(n, k) > 0.3).float()
    xs, ys = torch.arange(w).float(), torch.arange(h).float()
    # predicted heatmaps peaked near (joint + noise)
    centre = joints + 0.6 * torch.randn(n, k, 2)
    heat = torch.exp(
        -(
            (xs.view(1, 1, 1, w) - centre[..., 0, None, None]) ** 2
            + (ys.view(1, 1, h, 1) - centre[..., 1, None, None]) ** 2
        )
        / 2.0
    ).requires_grad_(True)
    mask, gmm = mgm_from_predictions(heat, joints, visible, 1.75, 1, 10, 1e-3)
    assert mask.shape == (n, k, h, w) and not mask.requires_grad
    assert torch.all(mask[visible == 0] == 0)
    assert mask.min() >= 0 and mask.max() <= 1 and torch.isfinite(mask).all()
    # one component = sample mean of the visible arg-max displacements
    disp = argmax_displacements(heat.detach(), joints)[visible > 0]
    assert torch.allclose(gmm.means[0], disp.mean(0), atol=1e-5)
