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

from lrpose_bench.baselines.heatmap import GaussianHeatmapMethod
from lrpose_bench.codecs.dark import dark_refine, unbiased_gaussian_heatmaps, unbiased_gaussian_heatmaps_torch
from lrpose_bench.codecs.heatmap_ops import argmax_2d
from lrpose_bench.errors import ConfigError
from lrpose_bench.registry import register_method


@dataclass
class DarkParams:
    """Constants of DARK (``configs/methods/dark.yaml``): target σ and modulation kernel (heatmap px)."""

    sigma: float = 2.0
    blur_kernel: int = 11

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ConfigError(f"methods.dark.sigma: must be > 0, got {self.sigma!r}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ConfigError(
                f"methods.dark.blur_kernel: must be a positive odd integer (1 = no modulation), got {self.blur_kernel!r}"
            )


@register_method
class DarkMethod(GaussianHeatmapMethod):
    """Unbiased Gaussian heatmaps decoded by DARK's distribution-aware Taylor refinement.

    Head (K maps), loss (HRNet's weighted MSE) and flip test are the plain heatmap method's; only
    the target (sub-pixel centre) and the decoder differ."""

    name = "dark"
    description = "DARK: unbiased Gaussian heatmap, L2 loss, blur + log-Taylor sub-pixel decode"
    codec_name = "unbiased-gaussian-heatmap + DARK"
    loss_name = "MSE"
    Params = DarkParams
    #: oracle bound (heatmap px, away from borders) checked by tests/test_oracle.py
    codec_bound_px = 0.05

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        heatmap, weight = unbiased_gaussian_heatmaps(joints, visible, self.context.heatmap_size, self.params.sigma)
        return {"heatmap": heatmap, "weight": weight}

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` for the GPU input path (no host sync; tested equal).

        Must override the inherited ``GaussianHeatmapMethod.encode_batch``: that one encodes HRNet's
        integer-centred Gaussian, not DARK's unbiased one (Eq. 2 at the real-valued joint)."""
        heatmap, weight = unbiased_gaussian_heatmaps_torch(
            joints, visible, self.context.heatmap_size, self.params.sigma
        )
        return {"heatmap": heatmap, "weight": weight}

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        heatmaps = outputs.float()
        coords, scores = argmax_2d(heatmaps)
        return dark_refine(heatmaps, coords, self.params.blur_kernel), scores

    def oracle_outputs(self, targets: dict[str, Tensor]) -> Tensor:
        """Perfect network output: the target heatmaps themselves."""
        return targets["heatmap"].float()
