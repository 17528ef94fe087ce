"""The Gaussian-heatmap method of HRNet and SimpleBaseline (paper Eq. 2).

Target: a Gaussian of width σ centred on the joint rounded to the nearest heatmap pixel, truncated
at 3σ (HRNet ``JointsDataset.generate_target``: ``mu = int(j + 0.5)``). Loss: per-joint
visibility-weighted MSE with HRNet's 0.5 factor (``JointsMSELoss``). Decode: arg-max plus the usual
quarter-pixel shift toward the higher neighbour (``get_final_preds``). The quantization of this
decode is what makes plain heatmaps fail at 64×48 (paper Sec. 3, Table 8).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.codecs.heatmap_ops import argmax_2d, flip_heatmaps, gaussian_maps, quarter_offset_refine
from lrpose_bench.method import Method, MethodContext, TrainingStage, visible_weights
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


class HeatmapCodec(abc.ABC):
    """One heatmap codec: targets for one instance, their batched torch twin, and the decoder.

    Why a codec object: HRNet and DARK share the head (K maps), the loss and the flip test, and
    differ only here. Composing the codec (mmpose's one-class-per-codec design) means a method
    cannot inherit another method's target by accident: a codec must implement all three."""

    @abc.abstractmethod
    def encode(self, joints: np.ndarray, visible: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) heatmap-px joints, (K,) visibility → maps (K, H, W) float32, weights (K,)."""

    @abc.abstractmethod
    def encode_torch(self, joints: Tensor, visible: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Batched twin of :meth:`encode`: (B, K, 2), (B, K) → (B, K, H, W), (B, K), on the device."""

    @abc.abstractmethod
    def decode(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        """(N, K, H, W) maps → coordinates (N, K, 2) heatmap px, scores (N, K)."""


class IntegerGaussianCodec(HeatmapCodec):
    """HRNet's codec: integer-centred truncated Gaussian (Eq. 2), arg-max + quarter-pixel decode."""

    def __init__(self, params: HeatmapParams) -> None:
        self.params = params

    def encode(self, joints: np.ndarray, visible: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        return encode_gaussian_heatmap(joints, visible, size, self.params.sigma, self.params.truncate)

    def encode_torch(self, joints: Tensor, visible: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        return gaussian_heatmap_torch(joints, visible, size, self.params.sigma, self.params.truncate)

    def decode(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        coords, scores = argmax_2d(heatmaps)
        if self.params.quarter_shift:
            coords = quarter_offset_refine(heatmaps, coords)
        return coords, scores


class HeatmapMethod(Method):
    """K heatmaps trained with HRNet's weighted MSE and flipped like HRNet; the codec is composed
    (:meth:`build_codec`), not inherited. Not registered itself: HRNet and DARK are."""

    def __init__(self, params: Any, context: MethodContext) -> None:
        super().__init__(params, context)
        self.codec = self.build_codec()

    @abc.abstractmethod
    def build_codec(self) -> HeatmapCodec:
        """The codec of this method, from its constants."""

    def head_channels(self) -> int:
        return self.context.num_joints

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        heatmap, weight = self.codec.encode(joints, visible, self.context.heatmap_size)
        return {"heatmap": heatmap, "weight": weight}

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` (fast input path; tested equal to it)."""
        heatmap, weight = self.codec.encode_torch(joints, visible, self.context.heatmap_size)
        return {"heatmap": heatmap, "weight": weight}

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        loss = weighted_mse(outputs.float(), batch["heatmap"], batch["weight"])
        return {"loss": loss, "heatmap": loss.detach()}

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.codec.decode(outputs.float())

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return flip_heatmaps(outputs, flip_index)


@register_method
class GaussianHeatmapMethod(HeatmapMethod):
    """HRNet/SimpleBaseline Gaussian heatmaps with arg-max (+¼ px) decoding."""

    name = "hrnet"
    description = "Gaussian heatmap (Eq. 2), L2 loss, arg-max + quarter-pixel decode (HRNet, SimpleBaseline)"
    codec_name = "gaussian-heatmap (integer centre)"
    loss_family = "MSE"
    #: arg-max (≤ 0.5 px) plus HRNet's quarter-pixel shift (≤ 0.25 px), per axis
    codec_bound_px = 0.75
    Params = HeatmapParams

    def build_codec(self) -> HeatmapCodec:
        return IntegerGaussianCodec(self.params)
