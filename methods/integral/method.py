"""Integral regression / soft-argmax (Sun, Xiao, Liang, Wei: "Integral Human Pose Regression", ECCV
2018) with the optional DSNT divergence regulariser (Nibali, He, Morgan, Prendergast: "Numerical
Coordinate Regression with Convolutional Neural Networks", 2018), registered as ``integral``.

Behaviour matched to mmpose ``IntegralRegressionHead`` / ``DSNTHead`` and ``IntegralRegressionLabel``:

* the head is the backbone's 1x1 ``final_layer``: K logit maps at heatmap resolution; no extra module;
* ``p = softmax(β · logits)`` over the H×W positions of each map (``_flat_softmax``), the prediction
  is its expectation over the pixel-centre grid ``x = 0 … W-1``, ``y = 0 … H-1`` (``_linear_expectation``;
  the benchmark's unbiased grid, so mirroring the map maps ``x̂`` to ``W - 1 - x̂`` exactly);
* loss: L1 between expected and true coordinates, both normalised by the map extent ``(W-1, H-1)``
  (mmpose regresses coordinates normalised by the input size; Sun et al. report L1 best), mean over
  labelled joints and axes; plus, when ``dsnt_weight > 0``, ``dsnt_weight ×`` the Jensen–Shannon
  divergence between ``p`` and a normalised Gaussian of σ (heatmap px) centred on the true sub-pixel
  joint (mmpose ``JSDiscretLoss``, eps 1e-24; DSNT's regulariser with λ = 1 in the paper), mean over
  labelled joints;
* decode: the expectation of the softmax. Confidence: the probability mass in the
  ``score_window × score_window`` patch around the mode (Sun et al. define none; a sharp
  distribution scores ≈ 1, a flat one ``window² / (H·W)``);
* flip test: logits mirrored like heatmaps (``flip_heatmaps``) and averaged before the softmax;
* ``coarse_argmax``: the arg-max of the logit map (the inherited default).

Ablation switches: ``dsnt_weight`` (0 = IPR, 1 = DSNT), ``beta``, ``sigma`` (DSNT target only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrpose_bench.codecs.heatmap_ops import flip_heatmaps
from lrpose_bench.codecs.precision import decode_float
from lrpose_bench.config import AT_LEAST_0, POSITIVE, OddSize, bounded
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.methods.simcc.codec import device_constants
from lrpose_bench.registry import register_method

#: mmpose ``JSDiscretLoss.kl`` epsilon
JS_EPS = 1e-24
#: floor under the codec oracle's probabilities before the log
ORACLE_EPS = 1e-12


@dataclass
class IntegralParams:
    """Constants and ablation switches of integral regression (``configs/methods/integral.yaml``)."""

    #: inverse temperature of the softmax (mmpose ``beta``; Sun et al.: plain softmax, 1)
    beta: float = bounded(1.0, POSITIVE)
    #: weight of the DSNT Jensen–Shannon regulariser; 0 = plain integral regression (IPR)
    dsnt_weight: float = bounded(0.0, AT_LEAST_0)
    #: σ (heatmap px) of the regulariser's Gaussian target
    sigma: float = bounded(2.0, POSITIVE)
    #: confidence = probability mass in this odd window around the mode
    score_window: int = bounded(5, OddSize())


def soft_argmax(logits: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Expected coordinate (N, K, 2) in heatmap px under ``softmax(beta · logits)``, and the
    probabilities (N, K, H, W); float32, or float64 for float64 logits (:func:`decode_float`)."""
    n, k, h, w = logits.shape
    probs = F.softmax(beta * decode_float(logits).reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs = torch.arange(w, dtype=probs.dtype, device=probs.device)
    ys = torch.arange(h, dtype=probs.dtype, device=probs.device)
    x = (probs.sum(dim=2) * xs).sum(dim=-1)
    y = (probs.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1), probs


def window_mass(probs: Tensor, window: int) -> Tensor:
    """Largest probability mass inside any ``window × window`` patch (N, K), in [0, 1]."""
    if window == 1:
        return probs.flatten(2).amax(dim=-1)
    summed = F.avg_pool2d(probs, window, stride=1, padding=window // 2, count_include_pad=True) * (window * window)
    return summed.flatten(2).amax(dim=-1).clamp(max=1.0)


def _gauss_1d_np(centre: np.ndarray, n: int, sigma: float) -> np.ndarray:
    d = np.arange(n, dtype=np.float32)[None, :] - centre[:, None]
    return np.exp(-(d * d) / np.float32(2.0 * sigma * sigma))


def dsnt_target(joints: np.ndarray, weight: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Normalised (sum 1) separable Gaussians (K, H, W) centred on the sub-pixel joints; zero where
    ``weight`` is 0."""
    height, width = size
    gx = _gauss_1d_np(joints[:, 0], width, sigma)
    gy = _gauss_1d_np(joints[:, 1], height, sigma)
    sx = np.maximum(gx.sum(axis=-1, keepdims=True), np.float32(1e-30))
    sy = np.maximum(gy.sum(axis=-1, keepdims=True), np.float32(1e-30))
    maps = (gy / sy)[:, :, None] * (gx / sx)[:, None, :]
    return (maps * weight[:, None, None]).astype(np.float32)


def dsnt_target_torch(joints: Tensor, weight: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """Torch twin of :func:`dsnt_target`, batched: (B, K, 2), (B, K) → (B, K, H, W)."""
    height, width = size
    two_sigma_sq = device_constants([np.float32(2.0 * sigma * sigma)], joints.device)[0]

    def gauss(centre: Tensor, n: int) -> Tensor:
        d = torch.arange(n, dtype=torch.float32, device=joints.device) - centre[..., None]
        return torch.exp(-(d * d) / two_sigma_sq)

    gx, gy = gauss(joints[..., 0], width), gauss(joints[..., 1], height)
    sx = gx.sum(dim=-1, keepdim=True).clamp(min=1e-30)
    sy = gy.sum(dim=-1, keepdim=True).clamp(min=1e-30)
    return (gy / sy)[..., :, None] * (gx / sx)[..., None, :] * weight[..., None, None]


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence of (N, K, H, W) distributions, summed over the map → (N, K)
    (mmpose ``JSDiscretLoss.js`` / ``DSNTLoss._js``)."""
    m = 0.5 * (p + q)

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return (a * ((a + JS_EPS).log() - (b + JS_EPS).log())).flatten(2).sum(dim=-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@register_method
class IntegralMethod(Method):
    """Integral regression: softmax over each map, expected coordinate, L1 (+ DSNT JS regulariser)."""

    name = "integral"
    description = "Integral regression (Sun et al. 2018): softmax expectation, L1 on coordinates, optional DSNT JS term"
    codec_name = "soft-argmax (expected coordinate)"
    loss_family = "L1 on coordinates"
    Params = IntegralParams
    #: codec oracle bound (heatmap px): the oracle map's expectation is the truth up to float32 round-off
    codec_bound_px = 1e-3

    def __init__(self, params: Any, context: Any) -> None:
        super().__init__(params, context)
        height, width = context.heatmap_size
        self.extent = np.array([max(width - 1.0, 1.0), max(height - 1.0, 1.0)], dtype=np.float32)

    @property
    def loss_name(self) -> str:
        """IPR's L1, plus DSNT's JS regulariser when ``dsnt_weight > 0``."""
        p = self.params
        if p.dsnt_weight > 0:
            return f"{self.loss_family} + {p.dsnt_weight:g}·JS to Gaussian σ={p.sigma:g} (DSNT)"
        return self.loss_family

    def head_channels(self) -> int:
        return self.context.num_joints

    # --------------------------------------------------------------------------------- encode
    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        joints = np.asarray(joints, dtype=np.float32).reshape(-1, 2)
        finite = np.isfinite(joints).all(axis=-1)
        coords = np.where(finite[:, None], joints, np.float32(0.0)).astype(np.float32)
        weight = (np.asarray(visible, dtype=np.float32).reshape(-1) > 0) & finite
        out = {"coords": coords, "weight": weight.astype(np.float32)}
        if self.params.dsnt_weight > 0:
            # the regulariser's target needs a Gaussian with mass on the map: its 3σ window must reach it
            height, width = self.context.heatmap_size
            reach = np.float32(3.0 * self.params.sigma)
            near = (
                (coords[:, 0] + reach >= 0)
                & (coords[:, 0] - reach <= width - 1)
                & (coords[:, 1] + reach >= 0)
                & (coords[:, 1] - reach <= height - 1)
            )
            map_weight = (weight & near).astype(np.float32)
            out["heatmap"] = dsnt_target(coords, map_weight, self.context.heatmap_size, self.params.sigma)
            out["heatmap_weight"] = map_weight
        return out

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Batched torch twin of :meth:`encode` (fast input path; tested equal to it)."""
        joints = joints.float()
        finite = torch.isfinite(joints).all(dim=-1)
        coords = torch.where(finite[..., None], joints, torch.zeros_like(joints))
        weight = (visible > 0) & finite
        out = {"coords": coords, "weight": weight.float()}
        if self.params.dsnt_weight > 0:
            height, width = self.context.heatmap_size
            reach = device_constants([np.float32(3.0 * self.params.sigma)], joints.device)[0]
            near = (
                (coords[..., 0] + reach >= 0)
                & (coords[..., 0] - reach <= width - 1)
                & (coords[..., 1] + reach >= 0)
                & (coords[..., 1] - reach <= height - 1)
            )
            map_weight = (weight & near).float()
            out["heatmap"] = dsnt_target_torch(coords, map_weight, self.context.heatmap_size, self.params.sigma)
            out["heatmap_weight"] = map_weight
        return out

    # ----------------------------------------------------------------------------------- loss
    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        coords, probs = soft_argmax(outputs, self.params.beta)
        extent = device_constants(self.extent, outputs.device)
        w = batch["weight"].float()
        l1 = ((coords - batch["coords"].float()).abs() / extent).sum(dim=-1)
        l1 = (w * l1).sum() / (2.0 * w.sum()).clamp(min=1.0)
        parts = {"l1": l1.detach()}
        total = l1
        if self.params.dsnt_weight > 0:
            hw = batch["heatmap_weight"].float()
            js = js_divergence(probs, batch["heatmap"].float())
            js = (hw * js).sum() / hw.sum().clamp(min=1.0)
            total = total + self.params.dsnt_weight * js
            parts["js"] = js.detach()
        return {"loss": total, **parts}

    # --------------------------------------------------------------------------------- decode
    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        coords, probs = soft_argmax(outputs, self.params.beta)
        return coords, window_mass(probs, self.params.score_window)

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return flip_heatmaps(outputs, flip_index)

    # --------------------------------------------------------------------------------- oracle
    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        """Perfect output: logits ``log(p)/β`` of the bilinear splat ``p`` of each joint onto its four
        neighbouring pixels, whose expectation is the joint exactly (inside ``[0, W-1] × [0, H-1]``;
        a joint outside is clamped onto the border). A Gaussian target would not do: truncated by the
        map border its mean is pulled inward."""
        coords = targets["coords"].float()
        n, k, _ = coords.shape
        height, width = self.context.heatmap_size
        x = coords[..., 0].clamp(0, width - 1)
        y = coords[..., 1].clamp(0, height - 1)
        x0 = x.floor().clamp(max=max(width - 2, 0))
        y0 = y.floor().clamp(max=max(height - 2, 0))
        fx, fy = x - x0, y - y0
        probs = torch.zeros(n, k, height * width, dtype=torch.float32, device=coords.device)
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi = (x0 + dx).clamp(max=width - 1).long()
            yi = (y0 + dy).clamp(max=height - 1).long()
            probs.scatter_add_(-1, (yi * width + xi)[..., None], wgt[..., None])
        return (torch.log(probs + ORACLE_EPS) / self.params.beta).reshape(n, k, height, width)
