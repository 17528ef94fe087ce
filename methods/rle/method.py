"""RLE — Human Pose Regression with Residual Log-likelihood Estimation (Li, Bian, Liu, Zhang, Cheng,
Lu; ICCV 2021), registered as ``rle``.

Direct regression of a location ``μ`` and a scale ``σ`` per joint, trained by the negative
log-likelihood of the ground truth under a learned residual density:

* coordinates are regressed normalised and centred, ``u = x / (W_hm - 1) - 0.5`` (the RLE authors'
  ``joints / size - 0.5``, with the benchmark's unbiased extent ``W - 1`` so that a horizontal flip
  is exactly ``u → -u``); ``decode`` returns heatmap px as every method;
* head (mmpose ``RLEHead``: global average pooling neck + ``fc: C → 4K``, init N(0, 0.01), bias 0):
  the backbone's 1x1 ``final_layer`` widens the stride-4 map to ``feature_channels`` (mmpose's RLE
  fc reads the 2048 pooled channels of ResNet-50), a ReLU, global average pooling, then the linear
  layer gives ``(μx, μy, σx, σy)`` per joint, σ through a sigmoid. The ReLU is ours: without a
  non-linearity, pooling a 1x1 convolution equals the convolution of the pooled backbone features, so
  the head would see only as many numbers as the last branch has channels (8 for hrnet-w8).
  ``pool: flatten`` (this suite's default, ``configs/methods/rle.yaml`` says why) replaces pooling by
  SimCC's flatten + linear: one ``Linear(H·W → 4)`` shared by the joints reads each joint's map
  (``head_channels = K``): every backbone here ends in a stride-4 map, whose position pooling discards;
* loss (mmpose ``RLELoss``, ``use_target_weight``, ``size_average``, ``residual``, ``q_dis``):
  ``ē = (μ - y)/σ``; ``nf = log σ - log φ(ē)`` with ``φ`` the RealNVP density (:mod:`.flow`; the
  flow's ``log φ`` of the 2-D residual is subtracted on each axis, as the broadcast in mmpose and in
  the authors' code does); ``residual`` adds ``log Q``: Laplace ``log 2σ + |ē|`` or Gaussian
  ``log(σ√(2π)) + ē²/2``; times the joint weight, summed, divided by the batch size. The flow is a
  module of the head (its parameters are trained and checkpointed with the network) but is not used
  by ``forward``: inference needs only ``μ`` and ``σ``;
* ablation ``flow: false``: no flow, the plain Laplace (or Gaussian) residual log-likelihood ``log Q``
  (RLE paper Table 1, "direct likelihood" baseline);
* confidence: ``1 - mean(σx, σy)`` (mmpose ``RegressionLabel.decode`` with sigmas);
* flip test: ``μx → -μx``, joints swapped; the σ logits are averaged unchanged;
* ``coarse_argmax``: RLE has no arg-max stage. It returns the regressed ``μ`` itself, so the
  displacement statistics show coarse = final and "removed" = 0 for this method (a NaN coarse value
  would make ``analysis/displacement.py`` drop the joints' final errors too and put NaN into
  ``metrics.json``'s ``errors``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from lrpose_bench.config import AT_LEAST_1, bounded
from lrpose_bench.errors import ConfigError
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.methods.rle.flow import RealNVP
from lrpose_bench.methods.simcc.codec import device_constants
from lrpose_bench.registry import register_method

#: σ logit of the codec oracle: sigmoid(-10) ≈ 4.5e-5, confidence ≈ 1
ORACLE_SIGMA_LOGIT = -10.0


@dataclass
class RleParams:
    """Constants and ablation switches of RLE (``configs/methods/rle.yaml``)."""

    #: RealNVP prior on the normalised residual; false: plain ``q_dis`` log-likelihood
    flow: bool = True
    #: add log Q(ē) (mmpose ``residual``)
    residual: bool = True
    #: Q: laplace (mmpose default) or gaussian
    q_dis: Literal["laplace", "gaussian"] = "laplace"
    #: gap (mmpose RLEHead on a pooled feature vector) or flatten (per-joint linear read-out)
    pool: Literal["gap", "flatten"] = "flatten"
    #: width of the backbone's final 1x1 layer feeding the pooled head (pool: gap)
    feature_channels: int = bounded(2048, AT_LEAST_1)

    def __post_init__(self) -> None:
        # a rule across two fields, which no per-field type or range can state
        if not (self.flow or self.residual):
            raise ConfigError("methods.rle: flow: false needs residual: true (otherwise there is no loss)")


def normalise(joints: np.ndarray | Tensor, extent: np.ndarray | Tensor) -> Any:
    """Heatmap px → centred normalised coordinates ``x / (W - 1) - 0.5``."""
    return joints / extent - 0.5


def rle_loss(
    outputs: Tensor,
    target: Tensor,
    weight: Tensor,
    flow: RealNVP | None,
    *,
    residual: bool = True,
    q_dis: str = "laplace",
) -> dict[str, Tensor]:
    """mmpose ``RLELoss.forward`` (use_target_weight, size_average) on (N, K, 4) outputs.

    ``target`` (N, K, 2) normalised coordinates, ``weight`` (N, K). Unweighted joints contribute
    exactly 0 (also where their residual overflows). Returns the total and its flow / Q parts.
    """
    dtype = torch.float64 if outputs.dtype == torch.float64 else torch.float32  # float32 at least
    pred = outputs[..., :2].to(dtype)
    sigma = outputs[..., 2:4].to(dtype).sigmoid()
    error = (pred - target.to(dtype)) / (sigma + 1e-9)
    n, k = target.shape[:2]
    zero = torch.zeros_like(sigma)
    nf = zero
    if flow is not None:
        log_phi = flow.log_prob(error.reshape(-1, 2)).reshape(n, k, 1)
        nf = torch.log(sigma) - log_phi
    q = zero
    if residual:
        if q_dis == "laplace":
            q = torch.log(sigma * 2) + error.abs()
        else:
            q = torch.log(sigma * math.sqrt(2 * math.pi)) + 0.5 * error**2
    w = weight.to(dtype)[..., None].expand_as(sigma)
    use = w > 0
    nf = torch.where(use, nf * w, zero).sum() / n
    q = torch.where(use, q * w, zero).sum() / n
    return {"loss": nf + q, "flow_nll": nf.detach(), "q_nll": q.detach()}


class RleHead(nn.Module):
    """mmpose ``RLEHead`` (+ ``GlobalAveragePooling`` neck) after the backbone's final layer; holds
    the loss's RealNVP so that it trains and checkpoints with the network."""

    def __init__(self, in_channels: int, num_joints: int, heatmap_size: tuple[int, int], pool: str, flow: bool) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.pool = pool
        height, width = heatmap_size
        self.fc = nn.Linear(in_channels, num_joints * 4) if pool == "gap" else nn.Linear(height * width, 4)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.constant_(self.fc.bias, 0.0)
        self.flow = RealNVP() if flow else None

    def forward(self, maps: Tensor) -> Tensor:
        if self.pool == "gap":
            pooled = torch.relu(maps).mean(dim=(2, 3))
            return self.fc(pooled).reshape(maps.shape[0], self.num_joints, 4)
        return self.fc(maps.flatten(2))


@register_method
class RleMethod(Method):
    """RLE: (μ, σ) regression with a RealNVP residual likelihood."""

    name = "rle"
    description = "RLE (Li et al. 2021): direct (μ, σ) regression, residual log-likelihood with a RealNVP flow"
    codec_name = "regression (normalised coordinates + σ)"
    loss_family = "RLELoss (mmpose, RealNVP + Laplace)"
    Params = RleParams
    #: codec oracle bound (heatmap px): μ = truth up to float32 round-off of the normalisation
    codec_bound_px = 1e-4
    outputs_are_maps = False  # vectors, not maps: unbiased coordinates only

    def __init__(self, params: Any, context: Any) -> None:
        super().__init__(params, context)
        height, width = context.heatmap_size
        self.extent = np.array([width - 1.0, height - 1.0], dtype=np.float32)
        self.flow: RealNVP | None = None

    @property
    def loss_name(self) -> str:
        """mmpose's RLELoss with the chosen base density, or its no-flow ablation."""
        q = "Laplace" if self.params.q_dis == "laplace" else "Gaussian"
        return f"RLELoss (mmpose, RealNVP + {q})" if self.params.flow else f"{q} residual NLL (no flow)"

    # ----------------------------------------------------------------------------------- head
    def head_channels(self) -> int:
        return self.params.feature_channels if self.params.pool == "gap" else self.context.num_joints

    def build_head(self) -> nn.Module:
        head = RleHead(
            self.head_channels(), self.context.num_joints, self.context.heatmap_size, self.params.pool, self.params.flow
        )
        self.flow = head.flow  # the loss's flow lives in the model (optimiser, checkpoint)
        return head

    # --------------------------------------------------------------------------------- encode
    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        joints = np.asarray(joints, dtype=np.float32).reshape(-1, 2)
        finite = np.isfinite(joints).all(axis=-1)
        with np.errstate(invalid="ignore", over="ignore"):
            coords = normalise(joints, self.extent)
        coords = np.where(finite[:, None], coords, np.float32(0.0)).astype(np.float32)
        weight = ((np.asarray(visible, dtype=np.float32).reshape(-1) > 0) & finite).astype(np.float32)
        return {"rle_coords": coords, "weight": weight}

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` (fast input path; tested equal to it)."""
        joints = joints.float()
        finite = torch.isfinite(joints).all(dim=-1)
        coords = normalise(joints, device_constants(self.extent, joints.device))
        coords = torch.where(finite[..., None], coords, torch.zeros_like(coords))
        return {"rle_coords": coords, "weight": ((visible > 0) & finite).float()}

    # ----------------------------------------------------------------------------------- loss
    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        if self.params.flow and self.flow is None:
            raise RuntimeError("rle: build the model with build_head() (models.build_method_model) before the loss")
        flow = self.flow if self.params.flow else None
        return rle_loss(
            outputs, batch["rle_coords"], batch["weight"], flow, residual=self.params.residual, q_dis=self.params.q_dis
        )

    # --------------------------------------------------------------------------------- decode
    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        outputs = outputs.float()
        extent = device_constants(self.extent, outputs.device)
        coords = (outputs[..., :2] + 0.5) * extent
        scores = 1.0 - outputs[..., 2:4].sigmoid().mean(dim=-1)
        return coords, scores

    def coarse_argmax(self, outputs: Tensor) -> Tensor:
        """No arg-max in a regression method: the regressed μ (coarse = final; module docstring)."""
        return self.decode(outputs)[0]

    def heatmaps(self, outputs: Tensor) -> Tensor:
        raise NotImplementedError("rle regresses coordinates directly and has no confidence maps")

    # ----------------------------------------------------------------------------------- flip
    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return torch.cat([-outputs[..., :1], outputs[..., 1:]], dim=-1)[:, flip_index]

    # --------------------------------------------------------------------------------- oracle
    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        """Perfect output: μ = the normalised truth, σ → 0 (logit -10)."""
        coords = targets["rle_coords"].float()
        return torch.cat([coords, torch.full_like(coords, ORACLE_SIGMA_LOGIT)], dim=-1)
