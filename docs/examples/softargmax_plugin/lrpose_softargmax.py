"""Soft-argmax / integral regression as an lrpose-bench method plugin (the add-a-method tutorial).

Sun, Xiao, Liang, Wei: *Integral Human Pose Regression* (ECCV 2018). The network still outputs one
map per joint, but the map is read as logits of a probability distribution over the heatmap pixels:
``p = softmax(beta * logits)`` over the H×W positions, and the joint is the *expected* position
``(Σ p·x, Σ p·y)`` (their Eq. 3, "integral" = expectation). The loss is an L1 distance between that
expected coordinate and the ground truth (their best variant), so no target heatmap and no σ exist,
and the decode is differentiable and sub-pixel by construction: nothing is quantised to the grid,
which is why it is an interesting baseline at 64×48.

Conventions follow ``lrpose_bench.method``: coordinates are heatmap pixels with pixel centres on
integers (so the expectation over ``x = 0..W-1`` is directly in the benchmark's frame and a flip is
exactly ``x -> W-1-x``).

Constants: this package ships no YAML in lrpose-bench's ``configs/methods/``, so the defaults of
:class:`SoftArgmaxParams` are the method's constants at every resolution; ``--ablation beta=2``
overrides one for a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrpose_bench.codecs.heatmap_ops import flip_heatmaps
from lrpose_bench.errors import ConfigError
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.registry import register_method


@dataclass
class SoftArgmaxParams:
    """Constants of the soft-argmax method (its defaults are its constants: no YAML ships)."""

    #: inverse temperature of the softmax; Sun et al. use a plain softmax (beta = 1)
    beta: float = 1.0
    #: confidence = probability mass in a (score_window × score_window) window around the mode
    score_window: int = 3

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"methods.softargmax.beta: must be > 0, got {self.beta!r}")
        if self.score_window < 1 or self.score_window % 2 == 0:
            raise ConfigError(f"methods.softargmax.score_window: must be a positive odd number, got {self.score_window!r}")


def soft_argmax(logits: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Expected coordinate under ``softmax(beta * logits)`` (Sun et al. 2018, Eq. 3).

    Args:
        logits: (N, K, H, W) network outputs.
        beta: inverse temperature.
    Returns:
        coordinates (N, K, 2) as (x, y) in heatmap pixels and the probabilities (N, K, H, W).
    """
    n, k, h, w = logits.shape
    probs = F.softmax(beta * logits.reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs = torch.arange(w, dtype=probs.dtype, device=probs.device)
    ys = torch.arange(h, dtype=probs.dtype, device=probs.device)
    x = (probs.sum(dim=2) * xs).sum(dim=-1)  # marginal over rows, then E[x]
    y = (probs.sum(dim=3) * ys).sum(dim=-1)  # marginal over columns, then E[y]
    return torch.stack([x, y], dim=-1), probs


def window_mass(probs: Tensor, window: int) -> Tensor:
    """Largest probability mass inside any ``window × window`` patch: a confidence in [0, 1].

    Sun et al. give no confidence; COCO rescoring needs one (instance score = box score × mean
    confidence of the joints above 0.2). A sharp, single-mode distribution scores near 1, a flat
    one near ``window² / (H·W)``.
    """
    if window == 1:
        return probs.flatten(2).amax(dim=-1)
    pad = window // 2
    summed = F.avg_pool2d(probs, window, stride=1, padding=pad, count_include_pad=True) * (window * window)
    return summed.flatten(2).amax(dim=-1).clamp(max=1.0)


def l1_coordinate_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean L1 distance in heatmap pixels over labelled joints (Sun et al.'s L1 variant)."""
    w = weight.float()[..., None]
    return (w * (pred - target).abs()).sum() / (2.0 * w.sum()).clamp(min=1.0)


@register_method
class SoftArgmaxMethod(Method):
    """Integral regression: softmax over each joint map, expected coordinate, L1 on coordinates."""

    name = "softargmax"
    description = "Integral regression (Sun et al. 2018): softmax over the heatmap, expected coordinate, L1 loss"
    codec_name = "soft-argmax (expected coordinate)"
    loss_name = "L1 on coordinates"
    Params = SoftArgmaxParams

    def head_channels(self) -> int:
        return self.context.num_joints  # one logit map per joint

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        # the target is the coordinate itself (already in heatmap pixels); no map is rendered
        return {"coords": joints.astype(np.float32), "coord_weight": visible.astype(np.float32)}

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        coords, _ = soft_argmax(outputs.float(), self.params.beta)
        loss = l1_coordinate_loss(coords, batch["coords"], batch["coord_weight"])
        return {"loss": loss, "l1": loss.detach()}

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        coords, probs = soft_argmax(outputs.float(), self.params.beta)
        return coords, window_mass(probs, self.params.score_window)

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        # logits mirror like heatmaps: x -> W-1-x exactly, left/right joints swapped
        return flip_heatmaps(outputs, flip_index)
