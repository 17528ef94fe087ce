"""CAL — Confidence-Aware Learning (the paper's method, Sec. 4), registered as ``cal``.

* target ``G = B·C`` (Eq. 10) + offsets (Eq. 7) → :mod:`.codec`;
* stage 1 (Eq. 14): L2 on G + α·G·L1 on offsets; stage 2 (Eq. 15): the offset weight is the MGM
  computed on every mini-batch from this forward pass's detached heatmaps (Algorithm 1,
  :mod:`.mgm`) → :mod:`.loss`;
* decode (Algorithm 2): ``ŷ = argmax Ĝ + R·Ô(argmax Ĝ)`` on the raw maps (``decode: argmax``, the
  default), the same arg-max whose displacements the MGM is fitted to (Alg. 1 step 1); flip test
  like UDP.

Ablation switches (Params fields, ``--ablation key=value``): ``offset_mask: mgm|binary`` (Table 3),
``gmm_components: 1|2|3`` (Table 4), ``heatmap: gaussian|binary`` (Table 5),
``offset_loss: l1|smoothl1|l2`` (Table 6), ``training: two_stage|one_stage`` (Table 7); and our
own: ``decode: blurred`` (UDP-Pose's Gaussian blur of both maps before the arg-max, kernels
``cls_blur_kernel``/``offset_blur_kernel``), ``mgm_support: disk`` (the mask cut to ``||p-y|| <= R``
instead of the paper's square grid Z, Eq. 13).

``smoothl1_beta_px`` is SmoothL1's β in heatmap pixels; the network regresses offsets in units of
R, so the loss uses β/R. (With β = 1 in units of R, SmoothL1 is ½·L2 everywhere inside the disk and
the Table 6 arm would compare L2 with L2.)

``training: one_stage`` returns one stage as long as both stages together. Which loss it uses is
``one_stage_loss``: ``mgm`` (default) follows the paper's Sec. 5.5.5 ("we adopt MGM (Eq. 15) to
guide the learning of offset fields from the beginning to the end"), ``gaussian`` uses Eq. 14 only
(stage 1 prolonged), the other possible reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch import Tensor

from lrpose_bench import comm
from lrpose_bench.codecs.offset import (
    argmax_offset_decode,
    flip_combined,
    interleave,
    offset_radius,
    split_combined,
)
from lrpose_bench.config import AT_LEAST_1, POSITIVE, OddSize, Range, bounded
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.methods.cal.codec import encode_cal, encode_cal_torch
from lrpose_bench.methods.cal.loss import cal_loss
from lrpose_bench.methods.cal.mgm import mgm_from_predictions
from lrpose_bench.registry import register_method

KERNEL = OddSize(allow_off=True)


@dataclass
class CalParams:
    """Constants and ablation switches of CAL (``configs/methods/cal.yaml``). Switches are
    ``Literal`` types and bounds sit in the fields' metadata: the config loader checks both once
    (``config.py::from_mapping``), naming the key."""

    sigma: float = bounded(2.0, POSITIVE)
    radius_factor: float = bounded(0.0546875, POSITIVE)
    alpha: float = bounded(1.0, POSITIVE)
    cls_blur_kernel: int = bounded(15, KERNEL)
    offset_blur_kernel: int = bounded(7, KERNEL)
    gmm_components: Literal[1, 2, 3] = 2
    em_iterations: int = bounded(20, AT_LEAST_1)
    reg_covar: float = bounded(1.0e-3, Range(low=0, low_open=True, why="it keeps the covariance invertible"))
    stage2_ratio: float = bounded(40.0 / 210.0, Range(0, 10))
    smoothl1_beta_px: float = bounded(1.0, POSITIVE)
    decode: Literal["argmax", "blurred"] = "argmax"
    mgm_support: Literal["square", "disk"] = "square"
    offset_mask: Literal["mgm", "binary"] = "mgm"
    heatmap: Literal["gaussian", "binary"] = "gaussian"
    offset_loss: Literal["l1", "smoothl1", "l2"] = "l1"
    training: Literal["two_stage", "one_stage"] = "two_stage"
    one_stage_loss: Literal["mgm", "gaussian"] = "mgm"


@register_method
class CalMethod(Method):
    """CAL: Gaussian-weighed disk heatmap + offsets, MGM-weighed offset loss in stage 2."""

    name = "cal"
    description = "CAL: G = B·C heatmap (Eq. 10), L1 offsets weighed by G then MGM (Eq. 14-15), two stages"
    codec_name = "cal (Gaussian-weighed disk + offset)"
    loss_family = "L2 + α·W·L1 (Eq. 14/15)"
    Params = CalParams
    codec_bound_px = 0.05

    def __init__(self, params: Any, context: Any) -> None:
        super().__init__(params, context)
        self.radius = offset_radius(params.radius_factor, context.heatmap_size)
        #: last fitted mixture (for logging / inspection; tensors stay on the device)
        self.last_gmm = None

    @property
    def loss_name(self) -> str:
        """Eq. 14/15 with the ablated offset loss ℓ and mask named."""
        loss_word = {"l1": "L1", "smoothl1": "SmoothL1", "l2": "L2"}[self.params.offset_loss]
        return f"L2 + α·W·{loss_word} (Eq. 14/15, W = G then {self.params.offset_mask})"

    # ------------------------------------------------------------------------------ head
    def head_channels(self) -> int:
        return 3 * self.context.num_joints

    # ---------------------------------------------------------------------------- encode
    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        return encode_cal(
            joints, visible, self.context.heatmap_size, self.radius, self.params.sigma, self.params.heatmap
        )

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` for the GPU input path (no host sync; tested equal):
        G = B·C (Eq. 10) or B, disk (Eq. 6), offsets (Eq. 7), weights for (B, K) joints."""
        return encode_cal_torch(
            joints, visible, self.context.heatmap_size, self.radius, self.params.sigma, self.params.heatmap
        )

    # ---------------------------------------------------------------------------- stages
    def stages(self, total_epochs: int) -> list[TrainingStage]:
        """Stage 1 of ``total_epochs`` then stage 2 of ``round(total_epochs · stage2_ratio)`` (≥ 1,
        so a short profile still trains with the MGM); ``one_stage``: one stage of the summed length."""
        stage2 = max(1, round(total_epochs * self.params.stage2_ratio)) if total_epochs > 0 else 0
        if self.params.training == "one_stage":
            return [TrainingStage("one_stage", total_epochs + stage2, 0)]
        return [TrainingStage("stage1", total_epochs, 0), TrainingStage("stage2", stage2, 1)]

    def uses_mgm(self, stage: TrainingStage) -> bool:
        """Whether ``stage`` uses Eq. 15 (MGM-type offset weight) rather than Eq. 14."""
        if self.params.training == "one_stage":
            return self.params.one_stage_loss == "mgm"
        return stage.name == "stage2"

    # ------------------------------------------------------------------------------ loss
    def offset_weight(self, heatmaps: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> Tensor:
        """Pixel weight W of the offset term: G (Eq. 14), or MGM m / disk B (Eq. 15, Table 3)."""
        if not self.uses_mgm(stage):
            return batch["heatmap"]
        if self.params.offset_mask == "binary":
            return batch["disk"]
        mask, gmm = mgm_from_predictions(
            heatmaps,
            batch["joints"],
            batch["visible"] * batch["weight"],
            self.radius,
            self.params.gmm_components,
            self.params.em_iterations,
            self.params.reg_covar,
            gather=comm.all_gather_cat if comm.world_size() > 1 else None,
            support=self.params.mgm_support,
        )
        self.last_gmm = gmm
        return mask

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        heatmaps, offsets = split_combined(outputs.float())
        weight = self.offset_weight(heatmaps, batch, stage)
        return cal_loss(
            heatmaps,
            offsets,
            batch["heatmap"],
            batch["offset"],
            batch["weight"],
            weight,
            self.params.alpha,
            self.params.offset_loss,
            self.params.smoothl1_beta_px / self.radius,
        )

    # ---------------------------------------------------------------------------- decode
    def heatmaps(self, outputs: Tensor) -> Tensor:
        return split_combined(outputs)[0]

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Algorithm 2 (``decode: argmax``): arg-max of Ĝ plus R times the offset read there; the
        ``blurred`` ablation blurs both maps first (UDP-Pose ``get_final_preds``)."""
        heatmaps, offsets = split_combined(outputs.float())
        if self.params.decode == "argmax":
            return argmax_offset_decode(heatmaps, offsets, self.radius, 0, 0)
        return argmax_offset_decode(
            heatmaps, offsets, self.radius, self.params.cls_blur_kernel, self.params.offset_blur_kernel
        )

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return flip_combined(outputs, flip_index)

    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        """Perfect network output: heatmap target and offset targets interleaved."""
        return interleave(targets["heatmap"].float(), targets["offset"].float())

    def describe_params(self) -> dict[str, Any]:
        info = super().describe_params()
        info["radius_px"] = self.radius
        info["loss_name"] = self.loss_name
        return info
