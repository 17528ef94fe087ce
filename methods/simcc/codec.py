"""The SimCC codec (Li et al., ECCV 2022; old name SimDR) as pure functions of numbers.

Behaviour matched to mmpose ``mmpose/codecs/simcc_label.py`` (``SimCCLabel``):

* ``k = split_ratio`` bins per input pixel, ``round(k·w)`` x-bins and ``round(k·h)`` y-bins;
* the label centre is the joint's bin *rounded* to an integer (``_map_coordinates``:
  ``np.around(keypoints * simcc_split_ratio)``), so arg-max decoding is exact to ``1/(2k)`` input px;
* Gaussian label smoothing ``exp(-(i - μ)² / 2σ²)`` with σ in bins, divided by ``σ·√(2π)`` when
  ``normalize`` (``_generate_gaussian``); a joint whose ±3σ window misses the vector gets weight 0;
  without smoothing a one-hot label (``_generate_standard`` with ``label_smooth_weight = 0``), weight 0
  when its bin is outside the vector;
* decoding by arg-max of each 1-D vector (``get_simcc_maximum``), or — the ``decode: soft`` switch —
  by the expectation of its softmax.

One deliberate difference, for the benchmark's unbiased coordinate system (UDP; input pixel centres
on integers, an input of width ``w`` spans ``[-0.5, w - 0.5]`` with pixel extents): bin ``j`` sits at
input ``x = (j + 0.5)/k - 0.5`` (the ``k`` sub-bins of each pixel centred inside it), where mmpose
puts it at ``x = j/k``. For ``k = 1`` the two are identical. With mmpose's grid a horizontal flip
``x → w - 1 - x`` is *not* a reversal of the vector (it is off by ``(k - 1)/k`` px, which
``flip_vectors`` ignores); with ours it is exactly the reversal, so the flip test needs no shift.

Joints arrive in heatmap pixels (as every method's ``encode``) and are mapped to input pixels with
the exact factor ``(w_in - 1)/(W_hm - 1)``; decoding returns heatmap pixels. The numpy encoder and its
batched torch twin do the same float32 operations in the same order, so they agree bit for bit on
every rounding decision (``tests/test_encode_batch.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.codecs.precision import decode_float
from lrpose_bench.data.transforms import input_to_heatmap_scale

#: additive floor under the label before the log in the codec oracle (softmax(log(label)) = label)
ORACLE_EPS = 1e-12


def device_constants(values, device) -> Tensor:
    """float32 constants on ``device`` made by fill kernels (``torch.full``), not by a host→device copy:
    safe inside CUDA-graph capture and free of host synchronisation; exact for float32 values."""
    return torch.stack([torch.full((), float(v), dtype=torch.float32, device=device) for v in values])


def bin_counts(input_size: tuple[int, int], split_ratio: float) -> tuple[int, int]:
    """(x-bins, y-bins) = (round(k·w), round(k·h)) for an (h, w) input (mmpose ``np.around``)."""
    height, width = input_size
    return round(width * split_ratio), round(height * split_ratio)


def scale_xy(input_size: tuple[int, int], heatmap_size: tuple[int, int]) -> np.ndarray:
    """Per-axis float32 factor input px → heatmap px, (W-1)/(w-1) and (H-1)/(h-1)."""
    return input_to_heatmap_scale(input_size, heatmap_size).astype(np.float32)


def label_peak_mass(sigma: float, smoothing: bool) -> float:
    """``1 / max`` of the ideal predicted distribution ``label / Σ label`` (untruncated): the factor
    that maps the softmax maximum of a perfect prediction to confidence 1 (``1`` for one-hot)."""
    if not smoothing:
        return 1.0
    reach = math.ceil(12.0 * sigma) + 1
    return float(sum(math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(-reach, reach + 1)))


def encode_simcc(
    joints: np.ndarray,
    visible: np.ndarray,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    split_ratio: float,
    sigma: float,
    smoothing: bool,
    normalize: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimCC labels of one instance: x labels (K, Bx), y labels (K, By) and weights (K,), float32.

    ``joints`` (K, 2) in heatmap px; non-finite joints and unlabelled ones (``visible <= 0``) get
    weight 0 and all-zero labels.
    """
    joints = np.asarray(joints, dtype=np.float32).reshape(-1, 2)
    visible = np.asarray(visible, dtype=np.float32).reshape(-1)
    nx, ny = bin_counts(input_size, split_ratio)
    scale = scale_xy(input_size, heatmap_size)
    k = np.float32(split_ratio)
    finite = np.isfinite(joints).all(axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        bins = (joints / scale + np.float32(0.5)) * k - np.float32(0.5)
    bins = np.where(finite[:, None], bins, np.float32(0.0)).astype(np.float32)
    mu = np.round(bins)  # half to even, like torch.round
    sizes = np.array([nx, ny], dtype=np.float32)
    if smoothing:
        radius = np.float32(3.0 * sigma)
        inside = ((mu - radius) < sizes) & ((mu + radius + np.float32(1.0)) >= 0)
    else:
        inside = (mu >= 0) & (mu < sizes)
    weight = (visible > 0) & finite & inside.all(axis=-1)
    labels = []
    for axis, n in ((0, nx), (1, ny)):
        grid = np.arange(n, dtype=np.float32)[None, :]
        if smoothing:
            d = grid - mu[:, axis, None]
            lab = np.exp(-(d * d) / np.float32(2.0 * sigma * sigma))
            if normalize:
                lab = lab / np.float32(sigma * math.sqrt(2.0 * math.pi))
        else:
            lab = (grid == mu[:, axis, None]).astype(np.float32)
        labels.append((lab * weight[:, None]).astype(np.float32))
    return labels[0], labels[1], weight.astype(np.float32)


def encode_simcc_torch(
    joints: Tensor,
    visible: Tensor,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    split_ratio: float,
    sigma: float,
    smoothing: bool,
    normalize: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Batched torch twin of :func:`encode_simcc`: (B, K, 2), (B, K) → (B, K, Bx), (B, K, By), (B, K).

    No host synchronisation (no ``.item()``, no data-dependent branch): runs on the ``meta`` device.
    """
    device = joints.device
    joints = joints.float()
    nx, ny = bin_counts(input_size, split_ratio)
    scale = device_constants(scale_xy(input_size, heatmap_size), device)
    k = device_constants([np.float32(split_ratio)], device)[0]
    finite = torch.isfinite(joints).all(dim=-1)
    bins = (joints / scale + 0.5) * k - 0.5
    bins = torch.where(finite[..., None], bins, torch.zeros_like(bins))
    mu = torch.round(bins)
    sizes = device_constants([nx, ny], device)
    if smoothing:
        radius = device_constants([np.float32(3.0 * sigma)], device)[0]
        inside = ((mu - radius) < sizes) & ((mu + radius + 1.0) >= 0)
    else:
        inside = (mu >= 0) & (mu < sizes)
    weight = (visible > 0) & finite & inside.all(dim=-1)
    labels = []
    two_sigma_sq = device_constants([np.float32(2.0 * sigma * sigma)], device)[0]
    norm = device_constants([np.float32(sigma * math.sqrt(2.0 * math.pi))], device)[0]
    for axis, n in ((0, nx), (1, ny)):
        grid = torch.arange(n, dtype=torch.float32, device=device)
        if smoothing:
            d = grid - mu[..., axis, None]
            lab = torch.exp(-(d * d) / two_sigma_sq)
            if normalize:
                lab = lab / norm
        else:
            lab = (grid == mu[..., axis, None]).float()
        labels.append(lab * weight[..., None].float())
    return labels[0], labels[1], weight.float()


def bins_to_heatmap(bins: Tensor, split_ratio: float, scale: float) -> Tensor:
    """Bin coordinate (any float) → heatmap px: input ``x = (b + 0.5)/k - 0.5``, times (W-1)/(w-1)."""
    return ((bins + 0.5) / split_ratio - 0.5) * scale


def decode_vectors(logits: Tensor, split_ratio: float, scale: float, soft: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One axis: (N, K, B) logits → coordinate (N, K) in heatmap px, its arg-max coordinate, and the
    softmax maximum (N, K); float32, or float64 for float64 logits (:func:`decode_float`)."""
    probs = torch.softmax(decode_float(logits), dim=-1)
    peak, index = probs.max(dim=-1)
    coarse = bins_to_heatmap(index.float(), split_ratio, scale)
    if soft:
        grid = torch.arange(logits.shape[-1], dtype=probs.dtype, device=probs.device)
        final = bins_to_heatmap((probs * grid).sum(dim=-1), split_ratio, scale)
    else:
        final = coarse
    return final, coarse, peak


def kl_discrete_loss(logits: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """mmpose ``KLDiscretLoss`` (use_target_weight) for one axis, summed over joints (not yet / K).

    Per joint: ``mean over bins of KLDivLoss(log_softmax(pred), label)`` (``criterion``), times the
    joint weight, summed over the batch (``.mul(weight).sum()``). The caller adds x and y and
    divides by the number of joints, as ``KLDiscretLoss.forward``.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    per_joint = torch.nn.functional.kl_div(logp, labels.float(), reduction="none").mean(dim=-1)
    return (per_joint * weight.float()).sum()


def flip_vectors(outputs: Tensor, nx: int, flip_index: Tensor) -> Tensor:
    """Mirror packed (N, K, Bx + By) SimCC logits: reverse the x vector, keep y, swap left/right
    (mmpose ``flip_vectors``). Exact under the centred bin grid (module docstring)."""
    x, y = outputs[..., :nx], outputs[..., nx:]
    return torch.cat([x.flip(-1), y], dim=-1)[:, flip_index]
