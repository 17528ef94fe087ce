"""CAL losses: Eq. 14 (stage 1) and Eq. 15 (stage 2).

``L = 1/(NK) Σ_i Σ_k [ L2(G, Ĝ) + α · W · L1(O, Ô) ]`` with ``W = G`` (Eq. 14) or the MGM ``m``
(Eq. 15), or the disk ``B`` for the ``offset_mask: binary`` ablation (Table 3).

Per-joint terms (the paper does not spell out the pixel reduction; we follow the MSE convention of
HRNet/UDP-Pose, which average over pixels):

* ``L2(G, Ĝ)`` = mean over the H·W pixels of ``(w·(Ĝ - G))²`` with ``w`` the joint's visibility
  (HRNet ``JointsMSELoss`` masking, without its 0.5 factor: Eq. 14 has none);
* ``W·L1(O, Ô)`` = mean over pixels of ``W(p) · (ℓ(Ôx - Ox) + ℓ(Ôy - Oy))``, the per-pixel loss
  summed over the two offset channels, with ``ℓ`` = |·| (``l1``, the paper), SmoothL1 (``smoothl1``,
  PyTorch's with ``beta``) or the square (``l2``) for the Table 6 ablation;
* both averaged over N·K, as the 1/(NK) of the equations.

Offsets are in units of R (see :mod:`lrpose_bench.methods.cal.codec`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

OFFSET_LOSSES = ("l1", "smoothl1", "l2")


def heatmap_l2(pred: Tensor, target: Tensor, visible: Tensor) -> Tensor:
    """``1/(NK) Σ mean_p (w·(Ĝ - G))²`` — the L2 heatmap term of Eq. 14/15."""
    w = visible.float()[..., None, None]
    return ((pred - target) * w).pow(2).mean()


def offset_elementwise(pred: Tensor, target: Tensor, kind: str, beta: float = 1.0) -> Tensor:
    """Per-element offset loss ℓ(Ô - O) for ``kind`` in ``l1 | smoothl1 | l2``."""
    if kind == "l1":
        return (pred - target).abs()
    if kind == "smoothl1":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    if kind == "l2":
        return (pred - target).pow(2)
    raise ValueError(f"offset loss must be one of {OFFSET_LOSSES}, got {kind!r}")


def weighted_offset_loss(pred: Tensor, target: Tensor, weight: Tensor, kind: str = "l1", beta: float = 1.0) -> Tensor:
    """``1/(NK) Σ mean_p W(p)·(ℓx + ℓy)`` for offsets (N, K, 2, H, W) and pixel weights (N, K, H, W).

    Pixels with ``W = 0`` contribute neither value nor gradient.
    """
    per_pixel = offset_elementwise(pred, target, kind, beta).sum(dim=2)
    return (weight.detach() * per_pixel).mean()


def cal_loss(
    pred_heatmap: Tensor,
    pred_offset: Tensor,
    target_heatmap: Tensor,
    target_offset: Tensor,
    visible: Tensor,
    offset_weight: Tensor,
    alpha: float,
    kind: str = "l1",
    beta: float = 1.0,
) -> dict[str, Tensor]:
    """Eq. 14/15 given the pixel weight W of the offset term; returns total and logged parts."""
    loss_hm = heatmap_l2(pred_heatmap, target_heatmap, visible)
    loss_off = weighted_offset_loss(pred_offset, target_offset, offset_weight, kind, beta)
    return {"loss": loss_hm + alpha * loss_off, "heatmap": loss_hm.detach(), "offset": loss_off.detach()}
