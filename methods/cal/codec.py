"""CAL codec: Gaussian-weighed binary heatmap G = B·C (Eq. 10) + offsets (Eq. 7), decoded as UDP
(Algorithm 2 = Eq. 9).

* ``B`` is UDP's disk ``||p - y|| <= R`` and ``C`` the Gaussian of Eq. 2 at the real-valued joint
  (unbiased, as DARK/UDP, since every method here uses UDP's unbiased coordinates); with the
  ``heatmap: binary`` ablation (Table 5) the target is ``B`` alone.
* Offsets are UDP's: ``(y - p)/R`` over the map (see :mod:`lrpose_bench.codecs.offset`); the loss
  weighs them by ``G`` (stage 1) or the MGM (stage 2), both zero outside the disk. The network
  therefore regresses offsets in units of R (≤ 1 inside the disk) and the decoder multiplies by R,
  exactly as UDP-Pose ``get_final_preds`` (``offsets *= KPD``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.codecs.offset import disk_and_offsets, disk_and_offsets_torch

HEATMAP_KINDS = ("gaussian", "binary")


def encode_cal(
    joints: np.ndarray,
    visible: np.ndarray,
    size: tuple[int, int],
    radius: float,
    sigma: float,
    heatmap: str = "gaussian",
) -> dict[str, np.ndarray]:
    """CAL targets for one instance (float32 arrays).

    Returns ``heatmap`` (K, H, W) = G (Eq. 10) or B, ``disk`` (K, H, W) = B (Eq. 6), ``offset``
    (K, 2, H, W) = (y - p)/R (Eq. 7 scaled), ``weight`` (K,) visibility-and-inside flags.
    """
    if heatmap not in HEATMAP_KINDS:
        raise ValueError(f"heatmap must be one of {HEATMAP_KINDS}, got {heatmap!r}")
    disk, offsets, dist2, weight = disk_and_offsets(joints, visible, size, radius)
    if heatmap == "gaussian":
        target = disk * np.exp(-dist2 / (2.0 * sigma**2))
    else:
        target = disk
    return {
        "heatmap": target.astype(np.float32),
        "disk": disk,
        "offset": offsets,
        "weight": weight,
    }


def encode_cal_torch(
    joints: Tensor,
    visible: Tensor,
    size: tuple[int, int],
    radius: float,
    sigma: float,
    heatmap: str = "gaussian",
) -> dict[str, Tensor]:
    """Batched torch twin of :func:`encode_cal`: joints (B, K, 2), visible (B, K) → the same keys,
    each with a leading batch axis, float32 on ``joints.device``.

    Why: ``CalMethod.encode_batch`` runs on the GPU input path, which must not leave the device
    (no host sync, no numpy). Disk B (Eq. 6), offsets (Eq. 7) and weights come from
    :func:`~lrpose_bench.codecs.offset.disk_and_offsets_torch` (equal to the reference's); the
    target is ``G = B·C`` (Eq. 10) with ``C = exp(-dist2/2σ²)`` (Eq. 2) evaluated in float32 on the
    float32 dist2, as the reference does, or ``B`` itself for the ``heatmap: binary`` ablation.
    """
    if heatmap not in HEATMAP_KINDS:
        raise ValueError(f"heatmap must be one of {HEATMAP_KINDS}, got {heatmap!r}")
    disk, offsets, dist2, weight = disk_and_offsets_torch(joints, visible, size, radius)
    if heatmap == "gaussian":
        target = disk * torch.exp(-dist2 / (2.0 * sigma**2))
    else:
        target = disk.clone()
    return {"heatmap": target, "disk": disk, "offset": offsets, "weight": weight}
