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

from lrpose_bench.codecs.offset import disk_and_offsets

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
