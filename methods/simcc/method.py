"""SimCC / SimDR (Li, Yang, Wang, et al., "SimCC: a Simple Coordinate Classification Perspective for
Human Pose Estimation", ECCV 2022), registered as ``simcc``.

Each joint's x and y are classified independently over ``k·w`` and ``k·h`` bins (split ratio ``k``):

* head (mmpose ``SimCCHead`` without deconvolutions, ``deconv_out_channels=None``): the backbone's
  1x1 ``final_layer`` gives K maps at heatmap resolution (input/4); each map is flattened and two
  linear layers shared by all joints, ``mlp_head_x: H·W → k·w`` and ``mlp_head_y: H·W → k·h``, give
  the 1-D logits (init N(0, 0.01), bias 0, mmpose ``default_init_cfg``). The network output is one
  tensor (N, K, k·w + k·h): x logits, then y logits;
* target: Gaussian-smoothed (σ in bins) or one-hot labels (:mod:`.codec`, mmpose ``SimCCLabel``);
* loss: mmpose ``KLDiscretLoss`` (use_target_weight): per joint and axis the bin-mean of
  ``KL(label ‖ softmax(logits))``, weighted, summed over the batch, x + y, divided by K;
* decode: arg-max of each vector (mmpose ``get_simcc_maximum``) or, ``decode: soft``, the expectation
  of its softmax; coordinates come back in heatmap px;
* confidence: ``min`` over the two axes (mmpose's combination in ``get_simcc_maximum``) of the softmax
  maximum, divided by the maximum of the ideal label distribution (``label / Σ label``), so a
  prediction equal to the target scores 1 and the COCO rescoring threshold (0.2) means the same as
  for the heatmap methods (mmpose ranks by raw logit maxima, which have no fixed scale);
* flip test: the x vector reversed, joints swapped (mmpose ``flip_vectors``; exact here, see
  :mod:`.codec`);
* ``coarse_argmax``: the arg-max of the two vectors (equal to the final prediction for ``decode:
  argmax``), for the displacement statistics.

Ablation switches: ``split_ratio`` (k ∈ {1, 2, 3}), ``label_smoothing`` (false: one-hot labels),
``decode`` (argmax | soft).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from lrpose_bench.config import POSITIVE, bounded
from lrpose_bench.errors import ConfigError
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.methods.simcc.codec import (
    ORACLE_EPS,
    bin_counts,
    decode_vectors,
    encode_simcc,
    encode_simcc_torch,
    flip_vectors,
    kl_discrete_loss,
    label_peak_mass,
    scale_xy,
)
from lrpose_bench.registry import register_method


@dataclass
class SimccParams:
    """Constants and ablation switches of SimCC (``configs/methods/simcc.yaml``)."""

    #: k: bins per input pixel (mmpose ``simcc_split_ratio``)
    split_ratio: float = bounded(2.0, POSITIVE)
    #: Gaussian label σ in bins (mmpose ``sigma``); unused without label smoothing
    sigma: float = bounded(6.0, POSITIVE)
    #: Gaussian label smoothing (mmpose ``smoothing_type='gaussian'``); false: one-hot labels
    label_smoothing: bool = True
    #: divide Gaussian labels by σ·√(2π) (mmpose ``normalize``)
    normalize: bool = True
    #: argmax (mmpose ``SimCCLabel.decode``) or soft (softmax expectation)
    decode: Literal["argmax", "soft"] = "argmax"


class SimccHead(nn.Module):
    """mmpose ``SimCCHead`` after its final layer: flatten each joint's map, two shared linears."""

    def __init__(self, heatmap_size: tuple[int, int], x_bins: int, y_bins: int) -> None:
        super().__init__()
        height, width = heatmap_size
        self.heatmap_size = (height, width)
        self.mlp_head_x = nn.Linear(height * width, x_bins)
        self.mlp_head_y = nn.Linear(height * width, y_bins)
        for layer in (self.mlp_head_x, self.mlp_head_y):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, maps: Tensor) -> Tensor:
        if tuple(maps.shape[-2:]) != self.heatmap_size:
            raise ValueError(f"SimCC head built for {self.heatmap_size} maps, got {tuple(maps.shape[-2:])}")
        flat = maps.flatten(2)
        return torch.cat([self.mlp_head_x(flat), self.mlp_head_y(flat)], dim=-1)


@register_method
class SimccMethod(Method):
    """SimCC: 1-D classification of x and y per joint, KL loss on Gaussian-smoothed labels."""

    name = "simcc"
    description = "SimCC/SimDR (Li et al. 2022): 1-D x/y classification at k bins per px, KL loss, arg-max decode"
    codec_name = "simcc (1-D bins, Gaussian label smoothing)"
    loss_family = "KLDiscretLoss (mmpose)"
    Params = SimccParams
    outputs_are_maps = False  # vectors, not maps: unbiased coordinates only

    def __init__(self, params: Any, context: Any) -> None:
        super().__init__(params, context)
        height, width = context.input_size
        self.x_bins, self.y_bins = bin_counts(context.input_size, params.split_ratio)
        for name, bins, size in (("w", self.x_bins, width), ("h", self.y_bins, height)):
            if abs(bins - params.split_ratio * size) > 1e-6:
                raise ConfigError(
                    f"methods.simcc.split_ratio: k·{name} must be a whole number of bins "
                    f"(k = {params.split_ratio!r}, {name} = {size}); use e.g. 1, 2, 3 or 2.5"
                )
        self.scale = scale_xy(context.input_size, context.heatmap_size)
        self.peak_mass = label_peak_mass(params.sigma, params.label_smoothing)
        self.codec_name = (
            "simcc (1-D bins, Gaussian label smoothing)"
            if params.label_smoothing
            else "simcc (1-D bins, one-hot labels)"
        )
        # codec oracle bound (heatmap px per axis): arg-max of the rounded bin, ≤ 1/(2k) input px
        self.codec_bound_px = (
            0.5 / params.split_ratio * float(self.scale.max()) + 1e-5 if params.decode == "argmax" else None
        )

    # ----------------------------------------------------------------------------------- head
    def head_channels(self) -> int:
        return self.context.num_joints

    def build_head(self) -> nn.Module:
        return SimccHead(self.context.heatmap_size, self.x_bins, self.y_bins)

    # --------------------------------------------------------------------------------- encode
    def _codec_args(self) -> tuple[Any, ...]:
        p = self.params
        return (
            self.context.input_size,
            self.context.heatmap_size,
            p.split_ratio,
            p.sigma,
            p.label_smoothing,
            p.normalize,
        )

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        x, y, weight = encode_simcc(joints, visible, *self._codec_args())
        return {"simcc_x": x, "simcc_y": y, "weight": weight}

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` (fast input path; tested equal to it)."""
        x, y, weight = encode_simcc_torch(joints, visible, *self._codec_args())
        return {"simcc_x": x, "simcc_y": y, "weight": weight}

    # ----------------------------------------------------------------------------------- loss
    def split(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """(x logits (N, K, k·w), y logits (N, K, k·h)) of the packed output."""
        return outputs[..., : self.x_bins], outputs[..., self.x_bins :]

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        x, y = self.split(outputs.float())
        weight = batch["weight"]
        loss_x = kl_discrete_loss(x, batch["simcc_x"], weight)
        loss_y = kl_discrete_loss(y, batch["simcc_y"], weight)
        loss = (loss_x + loss_y) / outputs.shape[1]
        return {"loss": loss, "kl_x": loss_x.detach() / outputs.shape[1], "kl_y": loss_y.detach() / outputs.shape[1]}

    # --------------------------------------------------------------------------------- decode
    def _decode(self, outputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, y = self.split(outputs)  # decode_vectors casts (decode_float: float32, float64 kept)
        soft = self.params.decode == "soft"
        k = self.params.split_ratio
        fx, cx, px = decode_vectors(x, k, float(self.scale[0]), soft)
        fy, cy, py = decode_vectors(y, k, float(self.scale[1]), soft)
        scores = (torch.minimum(px, py) * self.peak_mass).clamp(max=1.0)
        return torch.stack([fx, fy], dim=-1), torch.stack([cx, cy], dim=-1), scores

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        coords, _, scores = self._decode(outputs)
        return coords, scores

    def coarse_argmax(self, outputs: Tensor) -> Tensor:
        """Arg-max of the two 1-D vectors (heatmap px): SimCC's coarse prediction."""
        return self._decode(outputs)[1]

    def heatmaps(self, outputs: Tensor) -> Tensor:
        """(N, K, k·h, k·w) outer product of the two softmax vectors (mmpose ``output_heatmaps``)."""
        x, y = self.split(outputs.float())
        return torch.softmax(y, dim=-1)[..., :, None] * torch.softmax(x, dim=-1)[..., None, :]

    # ----------------------------------------------------------------------------------- flip
    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return flip_vectors(outputs, self.x_bins, flip_index)

    # --------------------------------------------------------------------------------- oracle
    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        """Perfect output: logits whose softmax is the label distribution, ``log(label + 1e-12)``."""
        x = torch.log(targets["simcc_x"].float().clamp(min=0.0) + ORACLE_EPS)
        y = torch.log(targets["simcc_y"].float().clamp(min=0.0) + ORACLE_EPS)
        return torch.cat([x, y], dim=-1)

    def describe_params(self) -> dict[str, Any]:
        info = super().describe_params()
        info.update(x_bins=self.x_bins, y_bins=self.y_bins)
        return info
