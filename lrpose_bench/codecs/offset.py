"""Offset codec shared by UDP and CAL: binary disk (Eq. 6) + offset field (Eq. 7), arg-max + offset
decode (Eq. 9), and the combined (3K, H, W) output layout.

Matched references (read, not copied):

* UDP-Pose ``lib/dataset/JointsDataset.py::generate_target`` (``TARGET_TYPE == 'offset'``) and
  mmpose ``codecs/utils/offset_heatmap.py::generate_offset_heatmap``: offsets are divided by the
  radius, ``o = (μ - p) / R``, so that they lie in [-1, 1] inside the disk; the disk is
  ``||p - μ|| <= R``. We write the offset field over the **whole** map like mmpose (the losses mask
  it by the disk or a weight anyway); this keeps a blurred offset field exact in the interior
  (blurring a linear field with a symmetric kernel leaves it unchanged), which UDP-Pose's offset
  blur relies on;
* decode: UDP-Pose ``lib/core/inference.py::get_final_preds`` — Gaussian-blur the class maps with
  OpenCV's default border (``BORDER_REFLECT_101``) and (optionally) the offset maps, take the
  arg-max of the class map and add ``R·o`` read at that pixel. mmpose's ``UDPHeatmap`` does the
  same without blurring the offsets. One deliberate difference: UDP-Pose blurs the offsets with the
  same mirror border, which bends the linear offset field within a kernel radius of the map edge
  (a perfect output then decodes up to 1.5 px wrong there at 384×288); we pad the offset maps by
  point reflection (``2·f(edge) - f(mirror)``), which keeps a linear field exact up to the border
  and is identical to UDP-Pose in the interior;
* layout: channels interleaved per joint ``[cls, x, y]`` (both references); flip test as UDP-Pose
  ``flip_back_offset`` / mmpose ``flip_heatmaps(.., 'udp_combined')``: mirror W, swap left/right
  joints, negate the x-offset channel, no pixel shift.

Radius: ``R = radius_factor · max(W, H)`` (mmpose ``UDPHeatmap``; UDP-Pose issue 31: the radius must
scale linearly with the heatmap, 3.5 px at 48×64).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.codecs.dark import gaussian_blur_maps
from lrpose_bench.errors import ConfigError


def offset_radius(radius_factor: float, heatmap_size: tuple[int, int]) -> float:
    """Disk radius R in heatmap pixels: ``radius_factor · max(W, H)``."""
    height, width = heatmap_size
    return float(radius_factor) * float(max(width, height))


def disk_and_offsets(
    joints: np.ndarray, visible: np.ndarray, size: tuple[int, int], radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Binary disks B (K, H, W) (Eq. 6), offsets (K, 2, H, W) = (μ - p)/R (Eq. 7, scaled),
    squared distances ||p - μ||² (K, H, W), and weights (K,).

    Joints that are unlabelled, non-finite, or whose disk holds no pixel (entirely off the map)
    get weight 0 and all-zero maps.
    """
    height, width = size
    joints = np.asarray(joints, dtype=np.float64)
    finite = np.isfinite(joints).all(axis=1)
    safe = np.where(finite[:, None], joints, 0.0)
    xs = np.arange(width, dtype=np.float64)[None, :]
    ys = np.arange(height, dtype=np.float64)[:, None]
    dx = safe[:, 0, None, None] - xs[None]  # μx - x
    dy = safe[:, 1, None, None] - ys[None]  # μy - y
    dist2 = np.broadcast_to(dx**2 + dy**2, (len(joints), height, width))
    disk = dist2 <= radius**2
    weight = (np.asarray(visible) > 0) & finite & disk.any(axis=(1, 2))
    disk = disk & weight[:, None, None]
    offsets = np.stack([np.broadcast_to(dx, dist2.shape), np.broadcast_to(dy, dist2.shape)], axis=1) / radius
    offsets = np.where(weight[:, None, None, None], offsets, 0.0)
    return (
        disk.astype(np.float32),
        offsets.astype(np.float32),
        dist2.astype(np.float32),
        weight.astype(np.float32),
    )


def disk_and_offsets_torch(
    joints: Tensor, visible: Tensor, size: tuple[int, int], radius: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched torch twin of :func:`disk_and_offsets`: (B, K, 2), (B, K) → disk B (B, K, H, W) (Eq. 6),
    offsets (B, K, 2, H, W) = (μ - p)/R over the whole map (Eq. 7, scaled), dist2 ||p - μ||²
    (B, K, H, W) and weight (B, K), all float32 on ``joints.device``.

    Why: the GPU input path (``Method.encode_batch``) encodes whole batches on the device with no
    host sync (no ``.item()``, no numpy, no data-dependent branches).

    Joints are rounded to float32 (what the reference receives) and the arithmetic is the
    reference's float64 arithmetic: the per-axis differences ``μ - x`` are exact, their squares
    and sum round as in numpy, so the disk test ``dist2 <= R²`` (a discrete decision a float32
    sum could flip at the boundary) and the weights are identical to the reference, and offsets
    and dist2 are its float64 values rounded to float32. Offsets are computed on the (B, K, W) /
    (B, K, H) axis profiles and broadcast. Unlabelled, non-finite or off-map joints get weight 0,
    zero disk and offsets; non-finite joints are placed at 0 for dist2 (safe zeros, no NaN).
    """
    height, width = size
    points = joints.float().double()
    finite = torch.isfinite(points).all(dim=-1)
    safe = torch.where(finite[..., None], points, torch.zeros_like(points))
    dx = safe[..., 0, None] - torch.arange(width, device=joints.device, dtype=torch.float64)  # (B, K, W): μx - x
    dy = safe[..., 1, None] - torch.arange(height, device=joints.device, dtype=torch.float64)  # (B, K, H): μy - y
    dist2 = (dx * dx)[..., None, :] + (dy * dy)[..., :, None]  # (B, K, H, W) float64
    disk = dist2 <= radius**2
    weight = (visible > 0) & finite & disk.flatten(-2).any(dim=-1)
    disk = disk & weight[..., None, None]
    ox = torch.where(weight[..., None], dx / radius, torch.zeros_like(dx)).float()  # (B, K, W)
    oy = torch.where(weight[..., None], dy / radius, torch.zeros_like(dy)).float()  # (B, K, H)
    full = dist2.shape
    offsets = torch.stack([ox[..., None, :].expand(full), oy[..., :, None].expand(full)], dim=-3)
    return disk.float(), offsets, dist2.float(), weight.float()


def interleave(cls: Tensor, offsets: Tensor) -> Tensor:
    """(N, K, H, W) class maps + (N, K, 2, H, W) offsets → (N, 3K, H, W) as ``[cls, x, y]`` per joint."""
    n, k, h, w = cls.shape
    return torch.cat([cls[:, :, None], offsets], dim=2).reshape(n, 3 * k, h, w)


def split_combined(outputs: Tensor) -> tuple[Tensor, Tensor]:
    """(N, 3K, H, W) → class maps (N, K, H, W) and offsets (N, K, 2, H, W) (views, no copy)."""
    n, c, h, w = outputs.shape
    if c % 3:
        raise ValueError(f"combined outputs need 3K channels, got {c}")
    view = outputs.reshape(n, c // 3, 3, h, w)
    return view[:, :, 0], view[:, :, 1:]


def flip_combined(outputs: Tensor, flip_index: Tensor) -> Tensor:
    """Map outputs of the mirrored input back: flip W, swap joints, negate the x offsets."""
    n, c, h, w = outputs.shape
    view = outputs.reshape(n, c // 3, 3, h, w).flip(-1)[:, flip_index]
    sign = torch.tensor([1.0, -1.0, 1.0], device=outputs.device, dtype=outputs.dtype).view(1, 1, 3, 1, 1)
    return (view * sign).reshape(n, c, h, w)


def argmax_offset_decode(
    cls: Tensor, offsets: Tensor, radius: float, cls_kernel: int = 0, offset_kernel: int = 0
) -> tuple[Tensor, Tensor]:
    """Eq. 9: ``ŷ = argmax_p blur(Ĝ)(p) + R · blur(Ô)(argmax)``.

    Args:
        cls: (N, K, H, W) class/heat maps (probabilities, not logits).
        offsets: (N, K, 2, H, W) offsets in units of R.
        radius: R in heatmap pixels.
        cls_kernel, offset_kernel: odd Gaussian kernel sizes (``<= 1``: no blur).
    Returns:
        coordinates (N, K, 2) in heatmap pixels and scores (N, K) = maxima of the blurred maps.
    """
    n, k, h, w = cls.shape
    smooth = gaussian_blur_maps(cls.float(), cls_kernel, padding="reflect")
    smooth_off = gaussian_blur_maps(offsets.float(), offset_kernel, padding="odd")
    scores, flat = smooth.reshape(n, k, h * w).max(dim=-1)
    xs = (flat % w).float()
    ys = torch.div(flat, w, rounding_mode="floor").float()
    picked = smooth_off.reshape(n, k, 2, h * w).gather(-1, flat[:, :, None, None].expand(n, k, 2, 1))[..., 0]
    coords = torch.stack([xs, ys], dim=-1) + radius * picked
    return coords, scores


def check_kernel(method: str, key: str, value: int) -> None:
    """Blur kernels (UDP and CAL decoding) are odd positive sizes, or 0/1 for "no blur"."""
    if value < 0 or (value > 1 and value % 2 == 0):
        raise ConfigError(f"methods.{method}.{key}: must be 0/1 (no blur) or an odd size like 3, 7, 15; got {value!r}")
