"""Small tensor/array operations shared by heatmap codecs: arg-max, Gaussian maps, flipping."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def gaussian_maps(centres: np.ndarray, sigma: float, size: tuple[int, int]) -> np.ndarray:
    """Gaussian maps ``exp(-||p - c||² / 2σ²)`` (Eq. 2) for centres (K, 2) on an (H, W) grid → (K, H, W)."""
    height, width = size
    xs = np.arange(width, dtype=np.float32)[None, None, :]
    ys = np.arange(height, dtype=np.float32)[None, :, None]
    cx = centres[:, 0].astype(np.float32)[:, None, None]
    cy = centres[:, 1].astype(np.float32)[:, None, None]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2)).astype(np.float32)


def argmax_2d(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Integer arg-max location (N, K, 2) as float (x, y) and the maximum value (N, K)."""
    n, k, h, w = heatmaps.shape
    values, flat = heatmaps.reshape(n, k, h * w).max(dim=-1)
    xs = (flat % w).to(heatmaps.dtype)
    ys = torch.div(flat, w, rounding_mode="floor").to(heatmaps.dtype)
    return torch.stack([xs, ys], dim=-1), values


def quarter_offset_refine(heatmaps: Tensor, coords: Tensor) -> Tensor:
    """The common arg-max refinement: move 0.25 px toward the higher neighbour in x and y.

    Reproduces HRNet ``lib/core/inference.py::get_final_preds``: the shift is applied, on both axes
    at once, only when ``1 < px < W-1 and 1 < py < H-1`` (one joint guard; an arg-max in the first
    or second column or row is not shifted at all). mmpose's ``refine_keypoints`` guards each axis
    separately; the paper's baselines are HRNet's, so this is HRNet's.
    """
    n, k, h, w = heatmaps.shape
    px = coords[..., 0].long()
    py = coords[..., 1].long()
    flat = heatmaps.reshape(n * k, h, w)
    idx = torch.arange(n * k, device=heatmaps.device)
    pxf, pyf = px.reshape(-1), py.reshape(-1)
    inner = (pxf > 1) & (pxf < w - 1) & (pyf > 1) & (pyf < h - 1)
    right = flat[idx, pyf, (pxf + 1).clamp(max=w - 1)]
    left = flat[idx, pyf, (pxf - 1).clamp(min=0)]
    down = flat[idx, (pyf + 1).clamp(max=h - 1), pxf]
    up = flat[idx, (pyf - 1).clamp(min=0), pxf]
    dx = torch.where(inner, torch.sign(right - left), torch.zeros_like(right)) * 0.25
    dy = torch.where(inner, torch.sign(down - up), torch.zeros_like(down)) * 0.25
    return coords + torch.stack([dx, dy], dim=-1).reshape(n, k, 2).to(coords.dtype)


def flip_heatmaps(heatmaps: Tensor, flip_index: Tensor) -> Tensor:
    """Mirror (N, K, H, W) maps horizontally and swap left/right joints.

    Under the unbiased coordinate system used by every method here (UDP), mirroring the input maps
    heatmap x to ``W - 1 - x`` exactly, so no one-pixel shift is applied (UDP-Pose ``flip_back``;
    DarkPose issue 23).
    """
    return heatmaps.flip(-1)[:, flip_index]
