"""UDP (Huang et al., CVPR 2020; paper refs [13], Eq. 6-9): binary disk + offset field ("combined"
target), arg-max + offset decode, unbiased data processing.

Codec in :mod:`lrpose_bench.codecs.offset`. Losses (``loss`` switch):

* ``mse`` (default): UDP-Pose ``lib/core/loss.py::JointsMSELoss_offset`` — the loss the released
  UDP models were trained with (and mmpose ``CombinedTargetMSELoss``):
  ``Σ_k 0.5·MSE(cls·w, cls_gt·w) + 0.5·MSE(cls_gt·ôx, cls_gt·ox) + 0.5·MSE(cls_gt·ôy, cls_gt·oy)``, /K;
  the class channel is a plain regression output. ``alpha`` multiplies the offset term (1.0, the
  default, is UDP-Pose's equal weighting; other values are the loss-balance ablation that CAL's
  Eq. 14 α also exposes, so both offset methods can be tuned the same way);
* ``paper``: the paper's description of UDP (Eq. 8): binary cross-entropy with logits on the class
  map + ``α``·SmoothL1 on the offsets inside the disk (both averaged over N·K·H·W, the offset term
  over the disk pixels' weights). The class channel is then a logit and decoding applies a sigmoid.

Offsets are stored divided by R (UDP-Pose ``generate_target``), so the loss sees values in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrpose_bench.codecs.offset import (
    argmax_offset_decode,
    disk_and_offsets,
    disk_and_offsets_torch,
    flip_combined,
    interleave,
    offset_radius,
    split_combined,
)
from lrpose_bench.config import POSITIVE, OddSize, bounded
from lrpose_bench.method import Method, TrainingStage, visible_weights
from lrpose_bench.registry import register_method


@dataclass
class UdpParams:
    """Constants of UDP (``configs/methods/udp.yaml``)."""

    radius_factor: float = bounded(0.0546875, POSITIVE)
    cls_blur_kernel: int = bounded(15, OddSize(allow_off=True))
    offset_blur_kernel: int = bounded(7, OddSize(allow_off=True))
    loss: Literal["mse", "paper"] = "mse"
    alpha: float = bounded(1.0, POSITIVE)
    smoothl1_beta: float = bounded(1.0, POSITIVE)


def udp_mse_loss(cls: Tensor, offsets: Tensor, batch: Mapping[str, Tensor], alpha: float = 1.0) -> dict[str, Tensor]:
    """UDP-Pose ``JointsMSELoss_offset`` (per-joint 0.5·MSE terms summed over joints, /K), the
    offset terms weighed by ``alpha`` (1.0 reproduces the reference)."""
    w = visible_weights(batch["weight"])
    disk = batch["disk"]
    loss_hm = 0.5 * ((cls - disk) * w).pow(2).mean()
    diff = (offsets - batch["offset"]) * disk[:, :, None]
    loss_os = 0.5 * diff.pow(2).mean(dim=(0, 1, 3, 4)).sum()
    return {"loss": loss_hm + alpha * loss_os, "heatmap": loss_hm.detach(), "offset": loss_os.detach()}


def udp_paper_loss(
    logits: Tensor, offsets: Tensor, batch: Mapping[str, Tensor], alpha: float, beta: float
) -> dict[str, Tensor]:
    """Eq. 8 as the paper describes UDP: BCE-with-logits on B + α·SmoothL1 on offsets inside B."""
    w = visible_weights(batch["weight"]).expand_as(logits)
    disk = batch["disk"]
    loss_hm = F.binary_cross_entropy_with_logits(logits, disk, weight=w)
    per_pixel = F.smooth_l1_loss(offsets, batch["offset"], reduction="none", beta=beta).sum(dim=2)
    loss_os = (per_pixel * disk).mean()
    return {"loss": loss_hm + alpha * loss_os, "heatmap": loss_hm.detach(), "offset": loss_os.detach()}


@register_method
class UdpMethod(Method):
    """UDP's combined target: binary disk + offsets, arg-max + R·offset decoding."""

    name = "udp"
    description = "UDP: binary disk (Eq. 6) + offsets (Eq. 7), arg-max + offset decode (Eq. 9)"
    codec_name = "udp-combined (disk + offset)"
    loss_family = "JointsMSELoss_offset (UDP-Pose)"
    Params = UdpParams
    codec_bound_px = 0.05

    def __init__(self, params: Any, context: Any) -> None:
        super().__init__(params, context)
        self.radius = offset_radius(params.radius_factor, context.heatmap_size)

    @property
    def loss_name(self) -> str:
        """``loss: mse`` is UDP-Pose's released loss; ``paper`` the paper's Eq. 8."""
        return self.loss_family if self.params.loss == "mse" else "BCE + α·SmoothL1 in disk (paper Eq. 8)"

    def head_channels(self) -> int:
        return 3 * self.context.num_joints

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        disk, offsets, _, weight = disk_and_offsets(joints, visible, self.context.heatmap_size, self.radius)
        return {"disk": disk, "offset": offsets, "weight": weight}

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` for the GPU input path (no host sync; tested equal):
        disk (Eq. 6), offsets/R (Eq. 7) and weights for (B, K) joints."""
        disk, offsets, _, weight = disk_and_offsets_torch(joints, visible, self.context.heatmap_size, self.radius)
        return {"disk": disk, "offset": offsets, "weight": weight}

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        cls, offsets = split_combined(outputs.float())
        if self.params.loss == "paper":
            return udp_paper_loss(cls, offsets, batch, self.params.alpha, self.params.smoothl1_beta)
        return udp_mse_loss(cls, offsets, batch, self.params.alpha)

    def heatmaps(self, outputs: Tensor) -> Tensor:
        cls, _ = split_combined(outputs)
        return cls.sigmoid() if self.params.loss == "paper" else cls

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        _, offsets = split_combined(outputs.float())
        return argmax_offset_decode(
            self.heatmaps(outputs.float()),
            offsets,
            self.radius,
            self.params.cls_blur_kernel,
            self.params.offset_blur_kernel,
        )

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return flip_combined(outputs, flip_index)

    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        """Perfect network output: the target channels (class maps as logits for ``loss: paper``)."""
        cls = targets["disk"].float()
        if self.params.loss == "paper":
            cls = torch.logit(cls.clamp(1e-4, 1 - 1e-4))
        return interleave(cls, targets["offset"].float())

    def describe_params(self) -> dict[str, Any]:
        info = super().describe_params()
        info["radius_px"] = self.radius
        info["loss_name"] = self.loss_name
        return info
