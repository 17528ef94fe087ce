"""DARK (Zhang et al., CVPR 2020; paper ref [29], Table 8): unbiased Gaussian heatmaps, L2 loss,
distribution-modulated Taylor decoding.

Codec in :mod:`lrpose_bench.codecs.dark` (mmpose ``MSRAHeatmap(unbiased=True)``, DarkPose
``lib/core/inference.py``). Loss: HRNet's visibility-weighted MSE (``JointsMSELoss``), as DarkPose
trains with it unchanged. Flip test: mirror + swap, no pixel shift (unbiased coordinates; DarkPose
issue 23).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from lrpose_bench.baselines.heatmap import HeatmapCodec, HeatmapMethod
from lrpose_bench.codecs.dark import dark_refine, unbiased_gaussian_heatmaps, unbiased_gaussian_heatmaps_torch
from lrpose_bench.codecs.heatmap_ops import argmax_2d
from lrpose_bench.config import POSITIVE, OddSize, bounded
from lrpose_bench.registry import register_method


@dataclass
class DarkParams:
    """Constants of DARK (``configs/methods/dark.yaml``): target σ and modulation kernel (heatmap px)."""

    sigma: float = bounded(2.0, POSITIVE)
    blur_kernel: int = bounded(11, OddSize(why="1 = no modulation"))


class DarkCodec(HeatmapCodec):
    """DARK's codec: the unbiased Gaussian at the real-valued joint (Eq. 2, no rounding), decoded
    by arg-max + distribution modulation + log-Taylor step (:mod:`lrpose_bench.codecs.dark`)."""

    def __init__(self, params: DarkParams) -> None:
        self.params = params

    def encode(self, joints: np.ndarray, visible: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return unbiased_gaussian_heatmaps(joints, visible, size, self.params.sigma)

    def encode_torch(self, joints: Tensor, visible: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        return unbiased_gaussian_heatmaps_torch(joints, visible, size, self.params.sigma)

    def decode(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        coords, scores = argmax_2d(heatmaps)
        return dark_refine(heatmaps, coords, self.params.blur_kernel), scores


@register_method
class DarkMethod(HeatmapMethod):
    """Unbiased Gaussian heatmaps decoded by DARK's distribution-aware Taylor refinement.

    Head (K maps), loss (HRNet's weighted MSE) and flip test are the shared heatmap method's; the
    codec (target and decoder) is DARK's, composed."""

    name = "dark"
    description = "DARK: unbiased Gaussian heatmap, L2 loss, blur + log-Taylor sub-pixel decode"
    codec_name = "unbiased-gaussian-heatmap + DARK"
    loss_family = "MSE"
    Params = DarkParams
    #: oracle bound (heatmap px, away from borders) checked by tests/test_oracle.py
    codec_bound_px = 0.05

    def build_codec(self) -> HeatmapCodec:
        return DarkCodec(self.params)

    def oracle_outputs(self, targets: dict[str, Tensor]) -> Tensor:
        """Perfect network output: the target heatmaps themselves."""
        return targets["heatmap"].float()
