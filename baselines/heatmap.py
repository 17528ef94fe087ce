"""The Gaussian-heatmap method of HRNet and SimpleBaseline (paper Eq. 2).

Target: a Gaussian of width σ centred on the joint rounded to the nearest heatmap pixel, truncated
at 3σ (HRNet ``JointsDataset.generate_target``: ``mu = int(j + 0.5)``). Loss: per-joint
visibility-weighted MSE with HRNet's 0.5 factor (``JointsMSELoss``). Decode: arg-max plus the usual
quarter-pixel shift toward the higher neighbour (``get_final_preds``). The quantization of this
decode is what makes plain heatmaps fail at 64×48 (paper Sec. 3, Table 8).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.codecs.heatmap_ops import argmax_2d, flip_heatmaps, gaussian_maps, quarter_offset_refine
from lrpose_bench.method import Method, TrainingStage, visible_weights
from lrpose_bench.registry import register_method


@dataclass
class HeatmapParams:
    """Constants of the Gaussian heatmap codec (``configs/methods/hrnet.yaml``)."""

    sigma: float = 2.0
    truncate: float = 3.0
    quarter_shift: bool = True


def encode_gaussian_heatmap(
    joints: np.ndarray, visible: np.ndarray, size: tuple[int, int], sigma: float, truncate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Biased (integer-centred) truncated Gaussian targets (K, H, W) and joint weights (K,)."""
    height, width = size
    centres = np.floor(joints + 0.5)
    maps = gaussian_maps(centres, sigma, size)
    radius = truncate * sigma
    xs = np.arange(width)[None, None, :]
    ys = np.arange(height)[None, :, None]
    window = (np.abs(xs - centres[:, 0, None, None]) <= radius) & (np.abs(ys - centres[:, 1, None, None]) <= radius)
    maps = maps * window
    # HRNet drops joints whose 3σ patch lies entirely outside the map
    inside = (
        (centres[:, 0] + radius >= 0)
        & (centres[:, 0] - radius <= width - 1)
        & (centres[:, 1] + radius >= 0)
        & (centres[:, 1] - radius <= height - 1)
    )
    weight = (visible > 0) & inside
    maps = maps * weight[:, None, None]
    return maps.astype(np.float32), weight.astype(np.float32)


def gaussian_heatmap_torch(
    joints: Tensor, visible: Tensor, size: tuple[int, int], sigma: float, truncate: float
) -> tuple[Tensor, Tensor]:
    """Torch twin of ``baselines.heatmap.encode_gaussian_heatmap`` (HRNet ``generate_target``), batched.

    ``GaussianHeatmapMethod.encode_batch``: integer-centred
    (``floor(j + 0.5)``) Gaussians truncated to the ±``truncate``·σ window, joints whose window lies
    outside the map dropped. (B, K, 2), (B, K) → heatmaps (B, K, H, W), weights (B, K).
    """
    height, width = size
    centres = torch.floor(joints.float() + 0.5)
    radius = truncate * sigma
    xs = torch.arange(width, device=joints.device, dtype=torch.float32).view(1, 1, 1, width)
    ys = torch.arange(height, device=joints.device, dtype=torch.float32).view(1, 1, height, 1)
    dx = xs - centres[..., 0, None, None]
    dy = ys - centres[..., 1, None, None]
    maps = torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))
    window = (dx.abs() <= radius) & (dy.abs() <= radius)
    inside = (
        (centres[..., 0] + radius >= 0)
        & (centres[..., 0] - radius <= width - 1)
        & (centres[..., 1] + radius >= 0)
        & (centres[..., 1] - radius <= height - 1)
    )
    weight = ((visible > 0) & inside).float()
    return maps * window * weight[..., None, None], weight


def weighted_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """HRNet ``JointsMSELoss`` with ``use_target_weight``: 0.5·mean((w·(pred − target))²)."""
    w = visible_weights(weight)
    return 0.5 * ((pred - target) * w).pow(2).mean()


@register_method
class GaussianHeatmapMethod(Method):
    """HRNet/SimpleBaseline Gaussian heatmaps with arg-max (+¼ px) decoding."""

    name = "hrnet"
    description = "Gaussian heatmap (Eq. 2), L2 loss, arg-max + quarter-pixel decode (HRNet, SimpleBaseline)"
    codec_name = "gaussian-heatmap (integer centre)"
    loss_name = "MSE"
    #: arg-max (≤ 0.5 px) plus HRNet's quarter-pixel shift (≤ 0.25 px), per axis
    codec_bound_px = 0.75
    Params = HeatmapParams

    def head_channels(self) -> int:
        return self.context.num_joints

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        heatmap, weight = encode_gaussian_heatmap(
            joints, visible, self.context.heatmap_size, self.params.sigma, self.params.truncate
        )
        return {"heatmap": heatmap, "weight": weight}

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` (fast input path; tested equal to it)."""
        heatmap, weight = gaussian_heatmap_torch(
            joints, visible, self.context.heatmap_size, self.params.sigma, self.params.truncate
        )
        return {"heatmap": heatmap, "weight": weight}

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        loss = weighted_mse(outputs.float(), batch["heatmap"], batch["weight"])
        return {"loss": loss, "heatmap": loss.detach()}

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        heatmaps = outputs.float()
        coords, scores = argmax_2d(heatmaps)
        if self.params.quarter_shift:
            coords = quarter_offset_refine(heatmaps, coords)
        return coords, scores

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return flip_heatmaps(outputs, flip_index)
