"""UDP's unbiased data processing, shared by every method (Huang et al., CVPR 2020), and HRNet's
biased one for reproducing the paper's baseline rows (``data.coordinates: biased``).

Coordinates are measured in *unit length*: pixel centres sit on integer coordinates and an image of
width ``w`` spans ``[0, w-1]``. A person box of width ``bw`` (image pixels) maps onto the input
span ``w_in - 1`` (UDP-Pose ``get_warpmatrix(theta, c*2, image_size-1, s)``; mmpose
``get_udp_warp_matrix``), and input → heatmap is scaled by ``(W-1)/(w_in-1)`` per axis. With this
system a horizontal flip is exactly ``x → w-1-x`` at every scale, crop-then-inverse is the identity,
and no flip-test pixel shift is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from lrpose_bench.config import AugmentConfig
from lrpose_bench.keypoints import LOWER_BODY_JOINTS, UPPER_BODY_JOINTS


@dataclass(frozen=True)
class CropParams:
    """Everything that defines one crop: the box centre/size and the augmentation applied."""

    center: tuple[float, float]  # box centre (image px)
    size: tuple[float, float]  # box (width, height) in image px after aspect fix and padding
    rotation: float = 0.0  # degrees, counter-clockwise in the image
    flip: bool = False


def box_to_center_size(
    bbox: np.ndarray, aspect: float, padding: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """COCO box → centre and padded size with the input's aspect ratio (w/h), as HRNet's ``_xywh2cs``."""
    x, y, w, h = (float(v) for v in bbox)
    center = (x + 0.5 * w, y + 0.5 * h)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, (w * padding, h * padding)


def nms_box_area(bbox: np.ndarray, aspect: float, padding: float) -> float:
    """The box area OKS-NMS uses: the padded, aspect-fixed box (HRNet ``coco.py``: ``area =
    prod(scale * 200)`` of ``_xywh2cs``), not the raw ``w·h``."""
    width, height = box_to_center_size(bbox, aspect, padding)[1]
    return width * height


#: ``data.coordinates``: UDP's unbiased system (every method's default) or HRNet's biased one
COORDINATE_SYSTEMS = ("unbiased", "biased")


def crop_matrix(params: CropParams, input_size: tuple[int, int], coordinates: str = "unbiased") -> np.ndarray:
    """2×3 affine matrix mapping image coordinates to input coordinates (with flip).

    ``unbiased`` (UDP): the box spans ``w_in - 1`` px, its centre lands on ``(w_in-1)/2``, a flip is
    ``x → w_in - 1 - x``. ``biased`` (HRNet ``get_affine_transform(c, s, r, image_size)``): the box
    spans ``w_in`` px (isotropic scale ``w_in/bw``), its centre lands on ``w_in/2``, and a flip
    (``fliplr_joints`` + the flipped centre ``W - c - 1``) is ``x → w_in - x`` in input px.
    """
    if coordinates not in COORDINATE_SYSTEMS:
        raise ValueError(f"coordinates must be one of {COORDINATE_SYSTEMS}, got {coordinates!r}")
    in_h, in_w = input_size
    cx, cy = params.center
    bw, bh = params.size
    span = 1.0 if coordinates == "unbiased" else 0.0
    sx = (in_w - span) / bw
    sy = (in_h - span) / bh if coordinates == "unbiased" else sx  # HRNet: one scale, w/bw
    theta = math.radians(params.rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    # translate the box centre to the origin, rotate, scale, move to the input centre
    rot = np.array([[cos, sin], [-sin, cos]])
    linear = np.diag([sx, sy]) @ rot
    offset = np.array([(in_w - span) / 2.0, (in_h - span) / 2.0]) - linear @ np.array([cx, cy])
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    if params.flip:
        flip = np.array([[-1.0, 0.0, in_w - span], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = (flip @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 matrix to (..., 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def input_to_heatmap_scale(
    input_size: tuple[int, int], heatmap_size: tuple[int, int], coordinates: str = "unbiased"
) -> np.ndarray:
    """Per-axis (x, y) factor from input to heatmap coordinates: ``(W-1)/(w-1)`` (unbiased, UDP) or
    ``W/w = 1/feat_stride`` (biased, HRNet ``JointsDataset``: ``joints / feat_stride``)."""
    (in_h, in_w), (hm_h, hm_w) = input_size, heatmap_size
    if coordinates == "biased":
        return np.array([hm_w / in_w, hm_h / in_h])
    return np.array([(hm_w - 1.0) / (in_w - 1.0), (hm_h - 1.0) / (in_h - 1.0)])


def warp_image(image: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Bilinear affine warp of an (H, W, 3) image into the (h, w) input (zero border, as HRNet)."""
    in_h, in_w = input_size
    return cv2.warpAffine(image, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> tuple[float, float, bool]:
    """(scale multiplier, rotation degrees, flip) as HRNet's ``JointsDataset``: scale
    ``clip(N(1, sf), 1-sf, 1+sf)``, rotation ``clip(N(0, rf), -2rf, 2rf)`` with probability
    ``rotation_prob``, horizontal flip with ``flip_prob``."""
    sf, rf = cfg.scale_factor, cfg.rotation_factor
    scale = float(np.clip(rng.normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    rotation = float(np.clip(rng.normal() * rf, -2.0 * rf, 2.0 * rf)) if rng.random() < cfg.rotation_prob else 0.0
    flip = bool(rng.random() < cfg.flip_prob)
    return scale, rotation, flip


#: half-body box = bounding box of the selected joints, aspect-fixed, times this (HRNet ``scale * 1.5``)
HALF_BODY_BOX_FACTOR = 1.5


def half_body_box(
    joints: np.ndarray,
    visibility: np.ndarray,
    aspect: float,
    choose_upper: bool,
    upper: tuple[int, ...] = UPPER_BODY_JOINTS,
    lower: tuple[int, ...] = LOWER_BODY_JOINTS,
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Centre and size of the half-body box, HRNet's ``JointsDataset.half_body_transform`` (no randomness).

    The half is the upper body if ``choose_upper`` and it has more than 2 labelled joints (v > 0),
    else the lower body if it has more than 2, else the upper body; fewer than 2 selected joints
    gives ``None`` (HRNet keeps the person box). The centre is the *mean* of the selected joints
    (not the middle of their box); the size is their bounding box fixed to the input ``aspect``
    (w/h, enlarged only, as ``box_to_center_size``) times :data:`HALF_BODY_BOX_FACTOR`, with no
    ``box_padding`` (HRNet's ``pixel_std`` scale is our box size in pixels). A degenerate box (all
    selected joints on one point) also gives ``None``: it has no extent to crop.
    """
    labelled = np.asarray(visibility) > 0
    num = len(labelled)
    upper_sel = [j for j in upper if j < num and labelled[j]]
    lower_sel = [j for j in lower if j < num and labelled[j]]
    if choose_upper and len(upper_sel) > 2:
        selected = upper_sel
    else:
        selected = lower_sel if len(lower_sel) > 2 else upper_sel
    if len(selected) < 2:
        return None
    points = np.asarray(joints, dtype=np.float64)[selected]
    cx, cy = (float(v) for v in points.mean(axis=0))
    w, h = (float(v) for v in points.max(axis=0) - points.min(axis=0))
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    if not (w > 0.0 and h > 0.0):
        return None
    return (cx, cy), (w * HALF_BODY_BOX_FACTOR, h * HALF_BODY_BOX_FACTOR)


def sample_half_body(
    rng: np.random.Generator, cfg: AugmentConfig, joints: np.ndarray, visibility: np.ndarray, aspect: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Half-body augmentation draw (HRNet ``JointsDataset.__getitem__`` → ``half_body_transform``).

    Why: it teaches the model crops of a half person (occlusion, truncation at the image border).
    Randomness, in HRNet's order and *before* :func:`sample_augmentation`: nothing at all unless
    ``half_body_prob > 0`` (so the stream, and every baseline, is unchanged with it off) and the
    instance has more than ``half_body_min_joints`` labelled joints; then ``u = rng.random()``, and
    if ``u < half_body_prob`` one ``rng.normal()`` picks the half: upper first when it is ``< 0.5``,
    HRNet's ``np.random.randn() < 0.5`` (so P(upper first) = Φ(0.5) ≈ 0.69, not 1/2; kept as in the
    reference). Returns the half-body (centre, size) or ``None`` (person box kept).
    """
    if cfg.half_body_prob <= 0.0:
        return None
    if int(np.count_nonzero(np.asarray(visibility) > 0)) <= cfg.half_body_min_joints:
        return None
    if not rng.random() < cfg.half_body_prob:
        return None
    choose_upper = bool(rng.normal() < 0.5)
    return half_body_box(joints, visibility, aspect, choose_upper)


def sample_crop_params(
    rng: np.random.Generator,
    cfg: AugmentConfig,
    center: tuple[float, float],
    size: tuple[float, float],
    joints: np.ndarray,
    visibility: np.ndarray,
    aspect: float,
) -> CropParams:
    """The augmented crop of one instance: half-body box (maybe), then scale, rotation and flip.

    Shared by the CPU path (``PoseDataset.crop_params``) and the device path
    (``gpu_augment.augmentation_params``) so both draw the same numbers in the same order.
    """
    box = sample_half_body(rng, cfg, joints, visibility, aspect)
    if box is not None:
        center, size = box
    scale, rotation, flip = sample_augmentation(rng, cfg)
    return CropParams(center, (size[0] * scale, size[1] * scale), rotation, flip)


def flip_joints(joints: np.ndarray, visible: np.ndarray, flip_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap left/right joint identities after a horizontal flip (coordinates are already mirrored)."""
    return joints[flip_index].copy(), visible[flip_index].copy()
