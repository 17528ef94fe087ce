"""DARK codec (Zhang et al., CVPR 2020; paper ref [29]): unbiased Gaussian targets and decoding by
distribution modulation + second-order Taylor expansion of the log-heatmap.

Matched references (read, not copied):

* encode: mmpose ``codecs/utils/gaussian_heatmap.py::generate_unbiased_gaussian_heatmaps`` — a
  full-map Gaussian ``exp(-||p - μ||² / 2σ²)`` (Eq. 2) at the *real-valued* joint μ; a joint whose
  3σ window lies entirely off the map gets weight 0;
* decode: mmpose ``codecs/utils/refinement.py::refine_keypoints_dark`` and DarkPose
  ``lib/core/inference.py`` (``gaussian_blur`` + ``taylor``): arg-max on the raw heatmap, then
  blur the heatmap with a ``k×k`` Gaussian (zero padding of ``(k-1)/2``), rescale each map to its
  original maximum, clip to ``≥ 1e-10``, take the log and move the arg-max by ``-H⁻¹∇`` where the
  derivatives are the references' central differences (``dxx`` over ±2 px with factor 1/4).
  Guards as the references: only ``1 < x < W-2`` and ``1 < y < H-2``; a singular Hessian
  (``det == 0``) gives no shift.

The blur kernel is OpenCV's ``cv2.getGaussianKernel(k, 0)``, i.e. exactly what the references'
``cv2.GaussianBlur(.., (k, k), 0)`` uses: for ``k ≤ 7`` OpenCV takes fixed binomial-like tables
(``k = 3`` → ``[1/4, 1/2, 1/4]``), otherwise a sampled Gaussian with the cv2 rule
``σ = 0.3((k-1)·0.5 - 1) + 0.8`` (``k = 11`` ↔ σ = 2, ``k = 3`` ↔ σ ≈ 0.8 nominally). The 1-D kernel
is built once per ``k`` on the host; the blur itself is a separable ``conv2d`` on the maps' device,
vectorised over N×K.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: smallest value kept before the log (DarkPose / mmpose ``np.maximum(hm, 1e-10)``)
LOG_FLOOR = 1e-10


def cv2_sigma_for_kernel(kernel: int) -> float:
    """OpenCV's rule for the Gaussian σ of a ``kernel``-tap blur with ``sigma=0`` (documented rule)."""
    return 0.3 * ((kernel - 1) * 0.5 - 1.0) + 0.8


@lru_cache(maxsize=32)
def _cv2_kernel_1d(kernel: int) -> tuple[float, ...]:
    """1-D kernel that ``cv2.GaussianBlur(x, (k, k), 0)`` applies along each axis."""
    return tuple(float(v) for v in cv2.getGaussianKernel(int(kernel), 0).ravel())


def gaussian_kernel_1d(kernel: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """OpenCV's 1-D Gaussian kernel of odd size ``kernel`` as a tensor (sums to 1)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel must be a positive odd integer, got {kernel}")
    return torch.tensor(_cv2_kernel_1d(int(kernel)), device=device, dtype=dtype)


def gaussian_blur_maps(maps: Tensor, kernel: int, padding: str = "zeros") -> Tensor:
    """Separable Gaussian blur of every (H, W) map of a (..., H, W) tensor.

    ``padding="zeros"`` is DARK's explicit zero border; ``padding="reflect"`` is OpenCV's default
    ``BORDER_REFLECT_101`` used by UDP-Pose/mmpose when they call ``cv2.GaussianBlur`` on the map
    itself (falls back to edge replication when the map is narrower than the kernel radius);
    ``padding="odd"`` reflects through the edge value (``2·f(edge) - f(mirror)``), which leaves a
    linear field such as an offset map unchanged up to the border.
    ``kernel <= 1`` returns the maps unchanged.
    """
    if kernel <= 1:
        return maps
    shape = maps.shape
    height, width = shape[-2], shape[-1]
    flat = maps.reshape(-1, 1, height, width)
    taps = gaussian_kernel_1d(kernel, flat.device, flat.dtype)
    pad = kernel // 2
    if padding == "zeros":
        flat = F.pad(flat, (pad, pad, pad, pad))
    elif padding in ("reflect", "odd"):
        mode = "reflect" if pad < min(height, width) else "replicate"
        mirrored = F.pad(flat, (pad, pad, pad, pad), mode=mode)
        if padding == "odd":
            # point reflection about the edge pixel, f(-i) = 2 f(0) - f(i): exact for linear fields
            edge = F.pad(flat, (pad, pad, pad, pad), mode="replicate")
            mirrored = 2.0 * edge - mirrored
        flat = mirrored
    else:
        raise ValueError(f"padding must be 'zeros', 'reflect' or 'odd', got {padding!r}")
    flat = F.conv2d(flat, taps.view(1, 1, 1, -1))
    flat = F.conv2d(flat, taps.view(1, 1, -1, 1))
    return flat.reshape(shape)


def unbiased_gaussian_heatmaps(
    joints: np.ndarray, visible: np.ndarray, size: tuple[int, int], sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """DARK's unbiased targets: full-map Gaussians at the real-valued joints (K, H, W), weights (K,).

    Matches mmpose ``generate_unbiased_gaussian_heatmaps``: the weight is 0 for unlabelled joints and
    for joints whose ±3σ window lies completely outside the map; their maps are all zero.
    """
    height, width = size
    joints = np.asarray(joints, dtype=np.float64)
    xs = np.arange(width, dtype=np.float64)[None, None, :]
    ys = np.arange(height, dtype=np.float64)[None, :, None]
    cx = joints[:, 0, None, None]
    cy = joints[:, 1, None, None]
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2))
    radius = 3.0 * sigma
    inside = (
        (joints[:, 0] + radius >= 0)
        & (joints[:, 0] - radius < width)
        & (joints[:, 1] + radius >= 0)
        & (joints[:, 1] - radius < height)
    )
    weight = (np.asarray(visible) > 0) & inside & np.isfinite(joints).all(axis=1)
    maps = np.where(weight[:, None, None], maps, 0.0)
    return maps.astype(np.float32), weight.astype(np.float32)


def unbiased_gaussian_heatmaps_torch(
    joints: Tensor, visible: Tensor, size: tuple[int, int], sigma: float
) -> tuple[Tensor, Tensor]:
    """Batched torch twin of :func:`unbiased_gaussian_heatmaps`: (B, K, 2), (B, K) → (B, K, H, W), (B, K).

    Why: the GPU input path encodes whole batches on the device; this avoids the per-instance numpy
    round trip and has no host sync (no ``.item()``, no data-dependent branches).

    The Gaussian of Eq. 2 is separable, ``exp(-(dx² + dy²)/2σ²) = exp(-dx²/2σ²)·exp(-dy²/2σ²)``, so
    the exponentials are taken on the (B, K, W) and (B, K, H) axis profiles only (in float64, as
    the reference) and the map is their float32 outer product (≤ ~2 float32 ulp from the reference).
    Joints are rounded to float32 first (what the reference receives) and the discrete decisions
    (finite, ±3σ window inside the map, visible) are taken in float64 exactly as the reference.
    Unlabelled, non-finite or off-map joints get weight 0 and an all-zero map (no NaN).
    """
    height, width = size
    points = joints.float().double()
    finite = torch.isfinite(points).all(dim=-1)
    safe = torch.where(finite[..., None], points, torch.zeros_like(points))
    radius = 3.0 * sigma
    x, y = points[..., 0], points[..., 1]
    inside = (x + radius >= 0) & (x - radius < width) & (y + radius >= 0) & (y - radius < height)
    weight = (visible > 0) & inside & finite
    gx = _gaussian_profile(safe[..., 0], width, sigma)  # (B, K, W)
    gy = _gaussian_profile(safe[..., 1], height, sigma)  # (B, K, H)
    maps = gy[..., :, None] * gx[..., None, :]
    maps = torch.where(weight[..., None, None], maps, torch.zeros_like(maps))
    return maps, weight.float()


def _gaussian_profile(centres: Tensor, length: int, sigma: float) -> Tensor:
    """``exp(-(i - c)²/2σ²)`` for ``i = 0..length-1``: (...,) float64 centres → (..., length) float32."""
    grid = torch.arange(length, device=centres.device, dtype=torch.float64)
    delta = grid - centres[..., None]
    return torch.exp(-(delta * delta) / (2.0 * sigma**2)).float()


def modulate(heatmaps: Tensor, kernel: int) -> Tensor:
    """DARK's distribution modulation: blur (zero border), rescale each map to its original maximum.

    As DarkPose ``gaussian_blur``: ``hm *= origin_max / max(hm)``. A map whose blurred maximum is
    not positive is left at the blurred values (the reference would divide by zero).
    """
    if kernel <= 1:
        return heatmaps
    blurred = gaussian_blur_maps(heatmaps, kernel, padding="zeros")
    origin_max = heatmaps.amax(dim=(-2, -1), keepdim=True)
    blurred_max = blurred.amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(blurred_max > 0, origin_max / blurred_max.clamp_min(1e-30), torch.ones_like(blurred_max))
    return blurred * scale


def dark_refine(heatmaps: Tensor, coords: Tensor, kernel: int) -> Tensor:
    """Sub-pixel refinement of integer arg-max ``coords`` (N, K, 2) on ``heatmaps`` (N, K, H, W).

    Second-order Taylor expansion of ``log(max(blur(h), 1e-10))`` at the arg-max (DARK Eq. 2-5):
    ``μ = m - H⁻¹ ∇`` with the references' finite differences; vectorised over N×K with the 2×2
    inverse in closed form. Returns refined float coordinates of the same shape.
    """
    n, k, height, width = heatmaps.shape
    logmap = modulate(heatmaps.float(), kernel).clamp_min(LOG_FLOOR).log().reshape(n * k, height, width)
    px = coords[..., 0].reshape(-1).long()
    py = coords[..., 1].reshape(-1).long()
    ok = (px > 1) & (px < width - 2) & (py > 1) & (py < height - 2)
    # clamp indices so gathers stay in range; guarded entries get no shift below
    cx = px.clamp(2, max(width - 3, 2))
    cy = py.clamp(2, max(height - 3, 2))
    idx = torch.arange(n * k, device=heatmaps.device)

    def at(dy: int, dx: int) -> Tensor:
        return logmap[idx, (cy + dy).clamp(0, height - 1), (cx + dx).clamp(0, width - 1)]

    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = ok & (det != 0) & torch.isfinite(det)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # -H^{-1} ∇ with H^{-1} = [[dyy, -dxy], [-dxy, dxx]] / det
    shift_x = -(dyy * dx - dxy * dy) / safe_det
    shift_y = -(-dxy * dx + dxx * dy) / safe_det
    shift = torch.stack([shift_x, shift_y], dim=-1)
    shift = torch.where(ok[:, None], shift, torch.zeros_like(shift))
    return coords + shift.reshape(n, k, 2).to(coords.dtype)
