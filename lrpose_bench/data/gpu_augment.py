"""Batched augmentation on the training device: the fast path of the input pipeline (issue 9).

The CPU path (:class:`~lrpose_bench.data.dataset.PoseDataset`) warps the decoded image with
``A = crop_matrix(params)`` (image → input, UDP-unbiased). The fast path samples the *store crop*
(:mod:`lrpose_bench.data.crop_store`, image → store matrix ``S``) with the composed matrix
``A·S⁻¹`` (store → input), for a whole batch in one ``grid_sample`` on the training device:

* the augmentation parameters come from the same per-(seed, epoch, index) generator as
  ``PoseDataset`` (``sample_augmentation``), so both paths see the same rotation, scale and flip;
* ``affine_grid``/``grid_sample`` with ``align_corners=True`` put the normalised coordinates ±1 on
  the centres of the corner pixels, which is exactly the unit-length convention (pixel centres on
  integers, an image of width w spans [0, w-1]); ``theta = N_store · S·A⁻¹ · N_input⁻¹`` with
  ``N_w: x ↦ 2x/(w-1) - 1``;
* bilinear interpolation with zero padding, as ``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT)``.

Agreement (tested in ``tests/test_gpu_augment.py``): against ``cv2.warpAffine`` of the store crop
with ``A·S⁻¹`` the fast path differs only by OpenCV's fixed-point interpolation weights (1/32 px)
and its rounding to uint8 (≤ 2 grey levels, mean < 0.5); against the CPU path's direct warp of the
image it differs by the store's resampling (a bilinear image of a bilinear image), a looser bound.
Joints and targets are computed from the same matrices and agree to float32 precision.

Targets: a method may define ``encode_batch_torch(joints, visible) -> dict[str, Tensor]`` (joints
(B, K, 2) heatmap px, visible (B, K), on the device); otherwise each instance is encoded on the CPU
with ``method.encode`` (the reference) and the stacked targets are moved to the device.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrpose_bench.config import AugmentConfig
from lrpose_bench.data.crop_store import CropStore
from lrpose_bench.data.dataset import MEAN, STD
from lrpose_bench.data.transforms import input_to_heatmap_scale, sample_augmentation
from lrpose_bench.errors import DataError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method
from lrpose_bench.resolution import Resolution


# ------------------------------------------------------------------------------ parameters
def augmentation_params(seed: int, epoch: int, indices: Sequence[int], augment: AugmentConfig
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, rotation°, flip) per index from the generator ``PoseDataset`` uses: ``[seed, epoch, index]``."""
    scales = np.empty(len(indices))
    rotations = np.empty(len(indices))
    flips = np.empty(len(indices), dtype=bool)
    for i, index in enumerate(indices):
        scales[i], rotations[i], flips[i] = sample_augmentation(np.random.default_rng([seed, epoch, int(index)]), augment)
    return scales, rotations, flips


def crop_matrices(centers: np.ndarray, sizes: np.ndarray, rotations: np.ndarray, flips: np.ndarray,
                  input_size: tuple[int, int]) -> np.ndarray:
    """Vectorised :func:`~lrpose_bench.data.transforms.crop_matrix` for B crops → (B, 2, 3) float64."""
    in_h, in_w = input_size
    sx = (in_w - 1.0) / sizes[:, 0]
    sy = (in_h - 1.0) / sizes[:, 1]
    theta = np.radians(rotations)
    cos, sin = np.cos(theta), np.sin(theta)
    linear = np.empty((len(centers), 2, 2))
    linear[:, 0, 0], linear[:, 0, 1] = sx * cos, sx * sin
    linear[:, 1, 0], linear[:, 1, 1] = -sy * sin, sy * cos
    offset = np.array([(in_w - 1.0) / 2.0, (in_h - 1.0) / 2.0]) - np.einsum("bij,bj->bi", linear, centers)
    matrix = np.concatenate([linear, offset[:, :, None]], axis=2)
    flip = np.asarray(flips, dtype=bool)
    matrix[flip, 0, :] = -matrix[flip, 0, :]
    matrix[flip, 0, 2] += in_w - 1.0
    return matrix


def _homogeneous(matrices: np.ndarray) -> np.ndarray:
    full = np.zeros((matrices.shape[0], 3, 3))
    full[:, :2] = matrices
    full[:, 2, 2] = 1.0
    return full


def store_to_input(aug_matrices: np.ndarray, store_matrices: np.ndarray) -> np.ndarray:
    """Composed (B, 2, 3) matrices store crop → input: ``A · S⁻¹`` (the CPU reference warp of the store)."""
    return (_homogeneous(aug_matrices) @ np.linalg.inv(_homogeneous(store_matrices)))[:, :2]


def _normaliser(size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y) → ``align_corners=True`` normalised coordinates for an (h, w) image."""
    h, w = size
    return np.array([[2.0 / (w - 1.0), 0.0, -1.0], [0.0, 2.0 / (h - 1.0), -1.0], [0.0, 0.0, 1.0]])


def affine_grid_theta(store_to_input_matrices: np.ndarray, store_size: tuple[int, int],
                      input_size: tuple[int, int]) -> np.ndarray:
    """``affine_grid`` matrices (B, 2, 3): normalised input coords → normalised store coords."""
    inverse = np.linalg.inv(_homogeneous(store_to_input_matrices))  # input px -> store px
    theta = _normaliser(store_size) @ inverse @ np.linalg.inv(_normaliser(input_size))
    return theta[:, :2]


# ----------------------------------------------------------------------------------- images
def warp_crops(crops: Tensor, theta: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Bilinear warp of uint8 store crops (B, Sh, Sw, 3) → float (B, 3, h, w) in grey levels [0, 255]."""
    batch = crops.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta.to(batch.dtype), [batch.shape[0], 3, input_size[0], input_size[1]], align_corners=True)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def normalise_batch(images: Tensor) -> Tensor:
    """Grey levels (B, 3, h, w) → ImageNet-normalised, as ``dataset.normalise`` per crop."""
    mean = torch.as_tensor(MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.as_tensor(STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images / 255.0 - mean) / std


# ----------------------------------------------------------------------------------- joints
def joints_in_heatmap_batch(joints: np.ndarray, visibility: np.ndarray, aug_matrices: np.ndarray, flips: np.ndarray,
                            hm_scale: np.ndarray, heatmap_size: tuple[int, int], flip_idx: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``PoseDataset.joints_in_heatmap``: (B, K, 2) heatmap px and (B, K) visibility inside the map."""
    out = (np.einsum("bkj,bij->bki", joints, aug_matrices[:, :, :2]) + aug_matrices[:, None, :, 2]) * hm_scale
    vis = (visibility > 0).astype(np.float32)
    flips = np.asarray(flips, dtype=bool)
    out[flips] = out[flips][:, flip_idx]
    vis[flips] = vis[flips][:, flip_idx]
    hm_h, hm_w = heatmap_size
    inside = (out[..., 0] >= -0.5) & (out[..., 0] <= hm_w - 0.5) & (out[..., 1] >= -0.5) & (out[..., 1] <= hm_h - 0.5)
    return out.astype(np.float32), (vis * inside).astype(np.float32)


# ---------------------------------------------------------------------------------- targets
def encode_targets(method: Method, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
    """Targets on the joints' device: the method's ``encode_batch_torch`` hook, else CPU ``encode``."""
    hook = getattr(method, "encode_batch_torch", None)
    if callable(hook):
        return dict(hook(joints, visible))
    joints_np = joints.detach().cpu().numpy()
    visible_np = visible.detach().cpu().numpy()
    encoded = [method.encode(joints_np[i], visible_np[i]) for i in range(joints_np.shape[0])]
    return {key: torch.from_numpy(np.stack([e[key] for e in encoded])).to(joints.device, non_blocking=True)
            for key in encoded[0]}


def gaussian_heatmap_torch(joints: Tensor, visible: Tensor, size: tuple[int, int], sigma: float, truncate: float
                           ) -> tuple[Tensor, Tensor]:
    """Torch twin of ``baselines.heatmap.encode_gaussian_heatmap`` (HRNet ``generate_target``), batched.

    The proposed ``encode_batch_torch`` hook of the ``hrnet`` method: integer-centred
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
    inside = ((centres[..., 0] + radius >= 0) & (centres[..., 0] - radius <= width - 1)
              & (centres[..., 1] + radius >= 0) & (centres[..., 1] - radius <= height - 1))
    weight = ((visible > 0) & inside).float()
    return maps * window * weight[..., None, None], weight


# --------------------------------------------------------------------------------- pipeline
class DeviceAugmentPipeline:
    """Training batches from a :class:`CropStore`, augmented on ``device``.

    ``batch(indices)`` returns what the default collate of ``PoseDataset(train=True)`` items gives:
    ``image`` (B, 3, h, w) normalised, ``joints`` (B, K, 2), ``visible`` (B, K), ``index`` (B,), and
    the method's targets, all on ``device``. ``set_epoch`` mirrors ``PoseDataset.set_epoch``.
    ``store_on_device``: load the whole uint8 store on the device once (the issue's 2.5M img/s
    path); otherwise each batch's crops are gathered from the memory map and copied over.
    """

    def __init__(self, store: CropStore, method: Method, resolution: Resolution, augment: AugmentConfig, *,
                 seed: int = 0, device: torch.device | str = "cpu", store_on_device: bool | None = None,
                 box_padding: float | None = None) -> None:
        padding = store.box_padding if box_padding is None else box_padding
        if not store.covers(resolution, augment, padding):
            raise DataError(
                f"crop store {store.path} does not cover {resolution} with this augmentation range/padding; "
                "rebuild it for the run's resolutions and augment settings"
            )
        self.store = store
        self.method = method
        self.resolution = resolution
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.device = torch.device(device)
        self.flip_idx = flip_index(method.context.num_joints)
        self.hm_scale = input_to_heatmap_scale(resolution.size, resolution.heatmap)
        if store_on_device is None:
            store_on_device = self.device.type == "cuda"
        self.store_tensor = store.on_device(self.device) if store_on_device else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.store)

    def geometry(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Augmentation matrices (image → input), composed store → input matrices and flips."""
        idx = np.asarray(indices, dtype=np.int64)
        scales, rotations, flips = augmentation_params(self.seed, self.epoch, idx, self.augment)
        sizes = self.store.box_sizes[idx] * scales[:, None]
        aug = crop_matrices(self.store.centers[idx], sizes, rotations, flips, self.resolution.size)
        composed = store_to_input(aug, self.store.store_matrices[idx])
        return {"aug": aug, "composed": composed, "flips": flips}

    def crops(self, indices: Sequence[int]) -> Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        if self.store_tensor is not None:
            return self.store_tensor[torch.as_tensor(idx, device=self.device)]
        host = torch.from_numpy(self.store.gather(idx))
        if self.device.type == "cuda":
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True)

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = np.asarray(indices, dtype=np.int64)
        geo = self.geometry(idx)
        theta = torch.from_numpy(affine_grid_theta(geo["composed"], self.store.size, self.resolution.size).astype(np.float32))
        images = normalise_batch(warp_crops(self.crops(idx), theta.to(self.device, non_blocking=True), self.resolution.size))
        joints, visible = joints_in_heatmap_batch(self.store.joints[idx], self.store.visibility[idx], geo["aug"],
                                                  geo["flips"], self.hm_scale, self.resolution.heatmap, self.flip_idx)
        joints_t = torch.from_numpy(joints).to(self.device, non_blocking=True)
        visible_t = torch.from_numpy(visible).to(self.device, non_blocking=True)
        out: dict[str, Any] = {"image": images, "joints": joints_t, "visible": visible_t, "index": torch.from_numpy(idx)}
        out.update(encode_targets(self.method, joints_t, visible_t))
        return out

    def batches(self, order: Sequence[int], batch_size: int):
        """Batches of ``order`` (e.g. a ``ShardedEpochSampler`` permutation), dropping the last partial one."""
        order = list(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield self.batch(order[start:start + batch_size])
