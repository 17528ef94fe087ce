"""Mixed Gaussian Mask (MGM), the paper's Algorithm 1 (Eq. 11-13), in batched torch.

Every stage-2 mini-batch: arg-max displacements of the *predicted* heatmaps from the true joints
(Eq. 11), a Gaussian mixture fitted to them by EM (Eq. 12), sampled on the grid Z (IMGM), min-max
normalised, and shifted to every joint (Eq. 13).

Everything runs on the heatmaps' device with fixed shapes and a fixed iteration count, so a
training step never waits for the host (no ``.item()``, no boolean indexing, no numpy):
invisible joints are carried as zero-weight points instead of being removed.

Choices the paper leaves open (documented here and in ``configs/methods/cal.yaml``):

* **Displacements** ``d = ŷ - y``: ``ŷ`` the integer arg-max of the predicted heatmap, ``y`` the real
  sub-pixel joint (heatmap px), visible joints only.
* **EM initialisation** (deterministic, k-means++-free): points sorted by displacement norm; the
  mean of component ``c`` starts at the point of rank ``⌊(c + ½)/C · n⌋`` (norm quantiles), all
  covariances at the pooled sample covariance + ``reg_covar``·I, weights ``1/C``. EM then runs
  ``iterations`` E+M steps (scikit-learn's ``GaussianMixture`` order, ``covariance_type="full"``,
  ``reg_covar`` added to the diagonal in each M-step), with the 2×2 determinant and inverse in
  closed form. One matmul against the features ``[1, x, y, x², xy, y²]`` gives all log-densities
  (E-step) and all sufficient statistics (M-step), so an iteration is ~25 small tensor ops. With one
  component (64×48, 128×96) the first M-step is already the exact fit (sample mean/covariance), so
  the loop is skipped. Tested against ``sklearn.mixture.GaussianMixture``.
* **Cost**: the density is evaluated only in the (2⌈R⌉+2)² window around each joint (the mask is 0
  beyond R), then gathered into the (N, K, H, W) map; measured at ~0.5 % of an hrnet-w8
  forward+backward at 64×48 (``benchmark_mgm.py``), against the paper's ~12 % of training time.
* **Grid Z** (Algorithm 1 step 4): the integer offsets ``{-⌈R⌉..⌈R⌉}²``; for an integer R this is
  the paper's ``{-R..R}²``. The min and max of the mixture density on Z normalise it (step 5).
* **Shift** (Eq. 13): the mask at pixel ``p`` is the normalised density evaluated at the
  *real-valued* ``p - y`` (not at ``p - round(y)``), clipped to [0, 1], on the support of Z moved
  to the joint: ``|p - y|_∞ <= ⌈R⌉`` (``support="square"``, the paper's grid, the default) or the
  disk ``||p - y|| <= R`` (``support="disk"``, an ablation: UDP's offset support). For an integer
  joint the square is exactly ``shift(norm(M), y)``; for a sub-pixel joint it is its continuous
  version, so the mask moves with the joint instead of snapping to the nearest pixel (the targets it
  weighs are sub-pixel too). Why the square matters: at 128×96 (R = 1.75) an arg-max 2 px off the
  joint lands outside the disk, so the disk gives exactly the pixels the MGM is about no offset
  training.
* **Degenerate batches**: no visible joint → means 0 and covariance ``reg_covar``·I (the mask is then
  irrelevant: every offset weight is multiplied by visibility 0); all displacements equal → the
  covariance is floored by ``reg_covar`` (finite, a sharp mask at that displacement); a density
  flat on Z (max − min ≈ 0) → mask 1 on the disk, i.e. the binary weight of Table 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)
#: floor of exponents before ``exp``: keeps results normal float32 (denormals are slow on CPUs)
EXP_FLOOR = -80.0


@dataclass
class GaussianMixture2D:
    """Parameters of a 2-D Gaussian mixture: weights (C,), means (C, 2), covariances (C, 2, 2)."""

    weights: Tensor
    means: Tensor
    covariances: Tensor

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])


def argmax_displacements(heatmaps: Tensor, joints: Tensor) -> Tensor:
    """Eq. 11: ``ŷ - y`` with ``ŷ`` the integer arg-max of each (H, W) map → (N, K, 2) float32."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).argmax(dim=-1)
    coarse = torch.stack([(flat % w), torch.div(flat, w, rounding_mode="floor")], dim=-1).float()
    return coarse - joints.float()


def _inverse_2x2(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form inverse and determinant of (..., 2, 2) matrices."""
    a, b = cov[..., 0, 0], cov[..., 0, 1]
    c, d = cov[..., 1, 0], cov[..., 1, 1]
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]
    return inv, det


def _component_terms(gmm: GaussianMixture2D) -> tuple[Tensor, ...]:
    """Per-component scalars (C,): means, inverse-covariance entries and ``log w - ½ log det - log 2π``."""
    inv, det = _inverse_2x2(gmm.covariances)
    const = gmm.weights.clamp_min(1e-30).log() - 0.5 * det.log() - LOG_2PI  # d = 2
    return gmm.means[:, 0], gmm.means[:, 1], inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1], const


def _log_terms(dx: Tensor, dy: Tensor, terms: tuple[Tensor, ...]) -> Tensor:
    """``log w_c + log N`` from coordinate tensors broadcasting against a trailing (C,) axis.

    The quadratic form is written out (``a·u² + 2b·u·v + d·v²``) so that separable grids, e.g.
    (N, K, 1, W, 1) against (N, K, H, 1, 1), are never materialised as (…, 2) point tensors.
    """
    mx, my, ia, ib, idd, const = terms
    u = dx - mx
    v = dy - my
    return const - 0.5 * (ia * u * u + 2.0 * ib * u * v + idd * v * v)


def component_log_density(points: Tensor, gmm: GaussianMixture2D) -> Tensor:
    """``log w_c + log N(x; μ_c, Σ_c)`` for points (..., 2) → (..., C)."""
    return _log_terms(points[..., 0, None], points[..., 1, None], _component_terms(gmm))


def log_density(points: Tensor, gmm: GaussianMixture2D) -> Tensor:
    """Mixture log-density ``log H(x; θ)`` at points (..., 2) → (...)."""
    return torch.logsumexp(component_log_density(points, gmm), dim=-1)


def mean_log_likelihood(points: Tensor, valid: Tensor, gmm: GaussianMixture2D) -> Tensor:
    """Average log-likelihood over the valid points (the quantity EM maximises, Eq. 12)."""
    valid = valid.float()
    return (log_density(points, gmm) * valid).sum() / valid.sum().clamp_min(1.0)


def initial_mixture(points: Tensor, valid: Tensor, n_components: int, reg_covar: float) -> GaussianMixture2D:
    """Deterministic initialisation from norm quantiles (see module docstring)."""
    valid_f = valid.to(points.dtype)
    count = valid_f.sum()
    safe = torch.where(valid[:, None], points, torch.zeros_like(points))
    norms = torch.where(valid, safe.norm(dim=-1), torch.full_like(valid_f, float("inf")))
    order = torch.argsort(norms, stable=True)
    ranks = (torch.arange(n_components, device=points.device, dtype=points.dtype) + 0.5) / n_components
    pick = (ranks * count).floor().long().clamp(0, points.shape[0] - 1)
    means = safe[order[pick]]
    mean_all = (safe * valid_f[:, None]).sum(0) / count.clamp_min(1.0)
    centred = (safe - mean_all) * valid_f[:, None]
    cov = centred.T @ centred / count.clamp_min(1.0)
    cov = cov + reg_covar * torch.eye(2, device=points.device, dtype=points.dtype)
    covs = cov.expand(n_components, 2, 2).clone()
    weights = torch.full((n_components,), 1.0 / n_components, device=points.device, dtype=points.dtype)
    return GaussianMixture2D(weights, means, covs)


def _m_step(px: Tensor, py: Tensor, resp: Tensor, count: Tensor, reg_covar: float) -> GaussianMixture2D:
    """scikit-learn's full-covariance M-step from responsibilities (P, C) (zero rows = invalid)."""
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # sklearn's guard against empty components
    mx = (resp * px[:, None]).sum(0) / nk
    my = (resp * py[:, None]).sum(0) / nk
    u = px[:, None] - mx
    v = py[:, None] - my
    cxx = (resp * u * u).sum(0) / nk + reg_covar
    cxy = (resp * u * v).sum(0) / nk
    cyy = (resp * v * v).sum(0) / nk + reg_covar
    covs = torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2)
    weights = nk / count.clamp_min(1.0)
    return GaussianMixture2D(weights / weights.sum(), torch.stack([mx, my], -1), covs)


def _moment_features(points: Tensor) -> Tensor:
    """(P, 6) features ``[1, x, y, x², xy, y²]``: one matmul then gives every sufficient statistic
    and every Gaussian log-density (a quadratic in x, y), keeping an EM step at ~25 tensor ops."""
    px, py = points[:, 0], points[:, 1]
    return torch.stack([torch.ones_like(px), px, py, px * px, px * py, py * py], dim=-1)


def _log_density_coefficients(w: Tensor, mx: Tensor, my: Tensor, cxx: Tensor, cxy: Tensor, cyy: Tensor) -> Tensor:
    """(6, C) coefficients θ with ``features @ θ = log w_c + log N(x; μ_c, Σ_c)`` (2×2 inverse in closed form)."""
    det = cxx * cyy - cxy * cxy
    a, b, d = cyy / det, -cxy / det, cxx / det  # Σ⁻¹ = [[a, b], [b, d]]
    lin_x = a * mx + b * my
    lin_y = b * mx + d * my
    const = w.clamp_min(1e-30).log() - 0.5 * det.log() - LOG_2PI - 0.5 * (mx * lin_x + my * lin_y)
    return torch.stack([const, lin_x, lin_y, -0.5 * a, -b, -0.5 * d], dim=0)


def _em_iterations(
    feats: Tensor, valid_f: Tensor, gmm: GaussianMixture2D, iterations: int, reg_covar: float
) -> GaussianMixture2D:
    """``iterations`` E+M steps (scikit-learn's full-covariance updates) on moment features.

    E-step: responsibilities from ``feats @ θ`` by a softmax whose exponent is floored at -80
    (``e^-80`` is still a normal float32: no denormal arithmetic, ~10× slower on CPUs, when
    components are far apart). M-step: ``resp.T @ feats`` gives N_k, Σx, Σy, Σx², Σxy, Σy²;
    covariances ``E[xxᵀ] - μμᵀ + reg·I`` (variances floored at 0 before the regulariser).
    """
    count = valid_f.sum().clamp_min(1.0)
    eps = 10 * torch.finfo(feats.dtype).eps  # sklearn's guard against empty components
    w, mx, my = gmm.weights, gmm.means[:, 0], gmm.means[:, 1]
    cxx, cxy, cyy = gmm.covariances[:, 0, 0], gmm.covariances[:, 0, 1], gmm.covariances[:, 1, 1]
    for _ in range(int(iterations)):
        log_prob = feats @ _log_density_coefficients(w, mx, my, cxx, cxy, cyy)  # (P, C)
        resp = (log_prob - log_prob.amax(dim=-1, keepdim=True)).clamp_min(EXP_FLOOR).exp()
        resp = resp * (valid_f[:, None] / resp.sum(dim=-1, keepdim=True))
        stats = resp.T @ feats  # (C, 6)
        nk = stats[:, 0] + eps
        moments = stats[:, 1:] / nk[:, None]
        mx, my = moments[:, 0], moments[:, 1]
        cxx = (moments[:, 2] - mx * mx).clamp_min(0.0) + reg_covar
        cxy = moments[:, 3] - mx * my
        cyy = (moments[:, 4] - my * my).clamp_min(0.0) + reg_covar
        w = nk / count
        w = w / w.sum()
    covs = torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2)
    return GaussianMixture2D(w, torch.stack([mx, my], -1), covs)


def em_step(points: Tensor, valid: Tensor, gmm: GaussianMixture2D, reg_covar: float) -> GaussianMixture2D:
    """One E-step + M-step (scikit-learn ``GaussianMixture`` full-covariance update)."""
    return _em_iterations(_moment_features(points), valid.to(points.dtype), gmm, 1, reg_covar)


def fit_gmm(
    points: Tensor,
    valid: Tensor | None = None,
    n_components: int = 1,
    iterations: int = 20,
    reg_covar: float = 1e-3,
    init: GaussianMixture2D | None = None,
) -> GaussianMixture2D:
    """Eq. 12: fit a ``n_components`` Gaussian mixture to points (P, 2) by ``iterations`` EM steps.

    ``valid`` (P,) bool selects the points that count (invisible joints stay in the tensor with
    weight 0, keeping shapes fixed). Runs in float32 or float64 on the points' device. With one
    component every responsibility is 1, so the first M-step already gives the maximum-likelihood
    fit (sample mean and covariance + ``reg_covar``); further iterations would repeat it and are
    skipped.
    """
    if points.dtype not in (torch.float32, torch.float64):
        points = points.float()
    if valid is None:
        valid = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
    valid = valid & torch.isfinite(points).all(dim=-1)
    points = torch.where(valid[:, None], points, torch.zeros_like(points))
    if n_components == 1 and init is None:
        resp = valid.to(points.dtype)[:, None]
        return _m_step(points[:, 0], points[:, 1], resp, resp.sum(), reg_covar)
    gmm = init if init is not None else initial_mixture(points, valid, n_components, reg_covar)
    return _em_iterations(_moment_features(points), valid.to(points.dtype), gmm, iterations, reg_covar)


def grid_offsets(radius: float, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Grid Z = ``{-⌈R⌉..⌈R⌉}²`` as (S, S, 2) (x, y) offsets (Algorithm 1 step 4)."""
    half = int(math.ceil(radius - 1e-9))
    axis = torch.arange(-half, half + 1, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


MGM_SUPPORTS = ("square", "disk")


def mixed_gaussian_mask(
    gmm: GaussianMixture2D,
    joints: Tensor,
    heatmap_size: tuple[int, int],
    radius: float,
    support: str = "square",
) -> Tensor:
    """Eq. 13: MGMs (N, K, H, W) from a fitted mixture, shifted to joints (N, K, 2).

    ``M`` = the mixture density on Z, min-max normalised (Algorithm 1 steps 4-5); the mask at pixel
    ``p`` is ``clip(norm(H(p - y)), 0, 1)`` on the support (``square``: Z shifted to the joint,
    ``|p - y|_∞ <= ⌈R⌉``; ``disk``: ``||p - y|| <= R``), 0 outside.

    Only the (2⌈R⌉+2)² window around each joint can be non-zero, so the density is evaluated there
    and the window is then gathered into the full map (one gather, no scatter: deterministic on
    every device). This keeps the cost at N·K·(2⌈R⌉+2)² density evaluations instead of N·K·H·W.
    """
    height, width = heatmap_size
    device, dtype = gmm.means.device, gmm.means.dtype
    n, k = joints.shape[:2]
    terms = _component_terms(gmm)
    grid_log = log_density(grid_offsets(radius, device, dtype), gmm)
    top = grid_log.max()
    low = (grid_log - top).clamp_min(EXP_FLOOR).exp().min()  # min of M / max of M, in (0, 1]
    span = 1.0 - low
    flat = span < 1e-6
    joints = joints.to(dtype)
    joints = torch.where(torch.isfinite(joints), joints, torch.full_like(joints, -1e6))
    half = int(math.ceil(radius - 1e-9))
    size = 2 * half + 2
    base = joints.floor() - half  # (N, K, 2) top-left pixel of each window
    local = torch.arange(size, device=device, dtype=dtype)
    # window pixel offsets p - y, separable: x (N, K, 1, S, 1), y (N, K, S, 1, 1); last axis = components
    rel_x = (base[..., 0, None] + local - joints[..., 0, None])[:, :, None, :, None]
    rel_y = (base[..., 1, None] + local - joints[..., 1, None])[:, :, :, None, None]
    # M(p - y) / max M, summed over components (exp of log terms relative to the grid maximum)
    value = (_log_terms(rel_x, rel_y, terms) - top).clamp_min(EXP_FLOOR).exp().sum(-1)
    value = (value - low) / torch.where(flat, torch.ones_like(span), span)
    value = torch.where(flat, torch.ones_like(value), value.clamp(0.0, 1.0))
    if support == "square":
        inside = (rel_x[..., 0].abs() <= half + 1e-9) & (rel_y[..., 0].abs() <= half + 1e-9)
    elif support == "disk":
        inside = (rel_x[..., 0] ** 2 + rel_y[..., 0] ** 2) <= radius * radius
    else:
        raise ValueError(f"support must be one of {MGM_SUPPORTS}, got {support!r}")
    window = torch.where(inside, value, torch.zeros_like(value))  # (N, K, S, S)
    window = F.pad(window, (0, 1, 0, 1))  # row/column S = 0: "outside the window"
    # gather the window into the map, one axis at a time: pixel (x, y) reads window cell
    # (y - base_y, x - base_x), or the zero row/column when that falls outside the window
    base_long = base.long()
    wx = torch.arange(width, device=device).view(1, 1, width) - base_long[..., 0, None]  # (N, K, W)
    wy = torch.arange(height, device=device).view(1, 1, height) - base_long[..., 1, None]  # (N, K, H)
    ax = torch.where((wx >= 0) & (wx < size), wx, torch.full_like(wx, size))
    ay = torch.where((wy >= 0) & (wy < size), wy, torch.full_like(wy, size))
    rows = window.gather(2, ay[..., None].expand(n, k, height, size + 1))  # (N, K, H, S+1)
    return rows.gather(3, ax[:, :, None, :].expand(n, k, height, width))


def mgm_from_predictions(
    pred_heatmaps: Tensor,
    joints: Tensor,
    visible: Tensor,
    radius: float,
    n_components: int,
    iterations: int,
    reg_covar: float,
    gather: Callable[[Tensor], Tensor] | None = None,
    support: str = "square",
) -> tuple[Tensor, GaussianMixture2D]:
    """Algorithm 1 end to end: predicted heatmaps (N, K, H, W) → MGMs (N, K, H, W) and the mixture.

    The heatmaps are detached (the mask is a weight, not a path for gradients); masks of invisible
    joints are zero. ``gather`` (data-parallel training): concatenates a tensor over the processes
    (:func:`lrpose_bench.comm.all_gather_cat`), so the mixture is fitted to the
    displacements of the *global* mini-batch, the statistics Algorithm 1 means, identical on every
    rank and equal to the one-process fit of the same batch; each rank then masks its own joints.
    """
    heat = pred_heatmaps.detach()
    n, k, h, w = heat.shape
    disp = argmax_displacements(heat, joints).reshape(n * k, 2)
    valid = visible.reshape(n * k) > 0
    if gather is not None:
        disp = gather(disp.contiguous())
        valid = gather(valid.to(disp.dtype).contiguous()) > 0  # gloo has no bool all_gather
    gmm = fit_gmm(disp, valid, n_components, iterations, reg_covar)
    mask = mixed_gaussian_mask(gmm, joints.float(), (h, w), radius, support)
    return mask * (visible.float() > 0)[..., None, None].to(mask.dtype), gmm
