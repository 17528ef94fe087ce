"""Batched augmentation on the training device: the fast path of the input pipeline.

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
* bilinear interpolation with zero padding, as ``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT)``;
* half-body augmentation (``augment.half_body_prob > 0``, HRNet ``JointsDataset.half_body_transform``,
  :func:`~lrpose_bench.data.transforms.sample_half_body`) is drawn from the store's joints in the
  same order as the CPU path, so the crop *box* is the half-body box where the CPU path's is.

Half-body and the store crop: the store covers the augmentation range of the padded *person* box
(``crop_store.store_geometry``); a half-body box is up to 1.5/1.25 times that box per axis (joints
inside the annotated box) and centred on its half's joints, so a scaled, rotated half-body crop can
reach past the store crop, where the fast path reads zeros and the CPU path image pixels (zeros
too beyond the image). Measured, half_body_prob = 1, HRNet's ranges: on the test fixture no pixel
(8 instances × 2 resolutions × 5 epochs, oversample 1 and 2); on anatomical poses
(``tests/test_half_body.py::test_half_body_crops_rarely_leave_the_store_crop``; upper joints on
top, a third with arms stretched out, half lying at any angle) 0.2-0.3 % of the input pixels on
average, 6-7 % of half-body crops touch the store border and the worst loses 9.4 % of its pixels,
a strip along one edge of the crop. Small, so the store is not enlarged for it (covering the worst
case would take ~1.5× per axis, ~2.4× the disk, estimated) and ``CropStore.covers`` does not refuse
it; joints, targets and matrices are exact either way.

Agreement (tested in ``tests/test_gpu_augment.py``): against ``cv2.warpAffine`` of the store crop
with ``A·S⁻¹`` the fast path differs only by OpenCV's fixed-point interpolation weights (1/32 px)
and its rounding to uint8 (≤ 2 grey levels, mean < 0.5); against the CPU path's direct warp of the
image it differs by the store's resampling (a bilinear image of a bilinear image), a looser bound.
Joints and targets are computed from the same matrices and agree to float32 precision.

Targets: ``Method.encode_batch(joints, visible)`` (joints (B, K, 2) heatmap px, visible (B, K), on
the device): the built-in methods implement it in torch (tested equal to their numpy ``encode``);
a method without a twin falls back to ``encode`` per instance on the host.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrpose_bench.config import AugmentConfig
from lrpose_bench.data.crop_store import CropStore
from lrpose_bench.data.dataset import MEAN, STD
from lrpose_bench.data.transforms import input_to_heatmap_scale, sample_augmentation, sample_half_body
from lrpose_bench.errors import DataError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method
from lrpose_bench.resolution import Resolution


# ------------------------------------------------------------------------------ parameters
def augmentation_params(
    seed: int,
    epoch: int,
    indices: Sequence[int],
    augment: AugmentConfig,
    *,
    joints: np.ndarray | None = None,
    visibility: np.ndarray | None = None,
    aspect: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-index augmentation from the generator ``PoseDataset`` uses (``[seed, epoch, index]``), drawn
    in the same order as ``PoseDataset.crop_params``: the half-body draw first (HRNet
    ``half_body_transform``, :func:`~lrpose_bench.data.transforms.sample_half_body`; no draw at all
    when ``half_body_prob == 0``), then :func:`~lrpose_bench.data.transforms.sample_augmentation`.

    Returns ``(scales, rotations°, flips, half_centers, half_sizes)``: ``half_*`` are (B, 2), NaN
    where the instance keeps its person box. With ``half_body_prob > 0`` the joints (B, K, 2) and
    visibility (B, K) of the ``indices`` (image px, COCO flags) and the input ``aspect`` (w/h) are
    required: the draw depends on them.
    """
    n = len(indices)
    scales = np.empty(n)
    rotations = np.empty(n)
    flips = np.empty(n, dtype=bool)
    half_centers = np.full((n, 2), np.nan)
    half_sizes = np.full((n, 2), np.nan)
    half_body = augment.half_body_prob > 0
    if half_body and (joints is None or visibility is None or aspect is None):
        raise DataError(
            "augmentation_params: augment.half_body_prob > 0 needs the instances' joints, visibility "
            "and the input aspect (the half-body draw depends on them)"
        )
    for i, index in enumerate(indices):
        rng = np.random.default_rng([seed, epoch, int(index)])
        if half_body:
            box = sample_half_body(rng, augment, joints[i], visibility[i], aspect)
            if box is not None:
                half_centers[i], half_sizes[i] = box
        scales[i], rotations[i], flips[i] = sample_augmentation(rng, augment)
    return scales, rotations, flips, half_centers, half_sizes


def crop_matrices(
    centers: np.ndarray, sizes: np.ndarray, rotations: np.ndarray, flips: np.ndarray, input_size: tuple[int, int]
) -> np.ndarray:
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


def affine_grid_theta(
    store_to_input_matrices: np.ndarray, store_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
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
def joints_in_heatmap_batch(
    joints: np.ndarray,
    visibility: np.ndarray,
    aug_matrices: np.ndarray,
    flips: np.ndarray,
    hm_scale: np.ndarray,
    heatmap_size: tuple[int, int],
    flip_idx: np.ndarray,
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
    """Targets on the joints' device: ``method.encode_batch`` (batched torch twin of ``encode``
    where the method has one, else the per-instance numpy reference, see :meth:`Method.encode_batch`)."""
    return dict(method.encode_batch(joints, visible))


# --------------------------------------------------------------------------------- pipeline
@dataclass
class EpochPlan:
    """What one pass over ``order`` needs besides pixels, on the device: the store indices, the
    ``affine_grid`` matrices and the joints/visibility in heatmap coordinates, per position.

    Why a plan per epoch: the random draws (one numpy generator per (seed, epoch, index), as the CPU
    path) and the matrix algebra are host work; done per batch they cost ~20 µs an instance and,
    worse, each batch's small host→device copies from pageable memory wait for the stream to drain,
    which serialises the host with the GPU. Planned once per epoch (in a background thread for the
    next epoch, :meth:`DeviceAugmentPipeline.prefetch`) and uploaded in one pinned copy, a training
    batch is then built from device slices with no host synchronisation and no transfer at all when
    the store lives on the device.
    """

    epoch: int
    order: np.ndarray  # (N,) store indices, host
    indices: Tensor  # (N,) int64, device
    theta: Tensor  # (N, 2, 3) float32, device
    joints: Tensor  # (N, K, 2) float32 heatmap px, device
    visible: Tensor  # (N, K) float32, device

    def __len__(self) -> int:
        return int(self.order.shape[0])


def _store_fits_on_device(store: CropStore, device: torch.device, share: float = 0.25) -> bool:
    """Keep the uint8 store on a CUDA device when it takes at most ``share`` of the free memory
    (64×48 COCO train ≈ 5 GB fits an H100; a 256×192 store is gathered from the host per batch)."""
    if device.type != "cuda":
        return False
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except (RuntimeError, AssertionError):
        return False
    return store.nbytes <= share * free


def _to_device(array: np.ndarray, device: torch.device) -> Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class DeviceAugmentPipeline:
    """Training batches from a :class:`CropStore`, augmented on ``device``.

    ``batch(indices)`` returns what the default collate of ``PoseDataset(train=True)`` items gives:
    ``image`` (B, 3, h, w) normalised, ``joints`` (B, K, 2), ``visible`` (B, K), ``index`` (B,), and
    the method's targets, all on ``device`` (``index`` stays on the host). ``set_epoch`` mirrors
    ``PoseDataset.set_epoch``; ``batches(order, batch_size)`` is one epoch (see :class:`EpochPlan`).
    ``store_on_device``: load the whole uint8 store on the device once (the issue's 2.5M img/s
    path; default: on CUDA when it fits, see :func:`_store_fits_on_device`); otherwise each
    batch's crops are gathered from the memory map and copied over (pinned, asynchronous).
    """

    def __init__(
        self,
        store: CropStore,
        method: Method,
        resolution: Resolution,
        augment: AugmentConfig,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        store_on_device: bool | None = None,
        box_padding: float | None = None,
    ) -> None:
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
            store_on_device = _store_fits_on_device(store, self.device)
        self.store_tensor = store.on_device(self.device) if store_on_device else None
        self._pool: ThreadPoolExecutor | None = None
        self._prefetched: dict[tuple[int, bytes], Future] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.store)

    def geometry(self, indices: Sequence[int], epoch: int | None = None) -> dict[str, np.ndarray]:
        """Augmentation matrices (image → input), composed store → input matrices and flips.

        The crop box is the store's padded person box, or the half-body box where one was drawn
        (``half_body`` (B,) bool); either is then scaled, rotated and flipped, as ``PoseDataset``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        scales, rotations, flips, half_centers, half_sizes = augmentation_params(
            self.seed,
            self.epoch if epoch is None else epoch,
            idx,
            self.augment,
            joints=self.store.joints[idx],
            visibility=self.store.visibility[idx],
            aspect=self.resolution.width / self.resolution.height,
        )
        half = ~np.isnan(half_centers[:, 0])
        centers = np.where(half[:, None], half_centers, self.store.centers[idx])
        sizes = np.where(half[:, None], half_sizes, self.store.box_sizes[idx]) * scales[:, None]
        aug = crop_matrices(centers, sizes, rotations, flips, self.resolution.size)
        composed = store_to_input(aug, self.store.store_matrices[idx])
        return {"aug": aug, "composed": composed, "flips": flips, "half_body": half}

    # ------------------------------------------------------------------------------ plans
    def _host_plan(self, epoch: int, order: np.ndarray) -> dict[str, np.ndarray]:
        """The host half of a plan (numpy only: safe in a worker thread)."""
        geo = self.geometry(order, epoch)
        theta = affine_grid_theta(geo["composed"], self.store.size, self.resolution.size).astype(np.float32)
        joints, visible = joints_in_heatmap_batch(
            self.store.joints[order],
            self.store.visibility[order],
            geo["aug"],
            geo["flips"],
            self.hm_scale,
            self.resolution.heatmap,
            self.flip_idx,
        )
        return {"theta": theta, "joints": joints, "visible": visible}

    def prefetch(self, epoch: int, order: Sequence[int]) -> None:
        """Start planning ``(epoch, order)`` in a background thread (the trainer asks for the next
        epoch while this one trains); :meth:`plan` picks the result up."""
        idx = np.asarray(order, dtype=np.int64)
        key = (epoch, idx.tobytes())
        if key in self._prefetched:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrpose-plan")
        self._prefetched[key] = self._pool.submit(self._host_plan, epoch, idx)
        while len(self._prefetched) > 2:  # never hold more than this epoch's and the next one's plans
            self._prefetched.pop(next(iter(self._prefetched)))

    def plan(self, order: Sequence[int], epoch: int | None = None) -> EpochPlan:
        """Plan a pass over ``order`` at ``epoch`` (default: the current one) and upload it."""
        epoch = self.epoch if epoch is None else epoch
        idx = np.asarray(order, dtype=np.int64)
        future = self._prefetched.pop((epoch, idx.tobytes()), None)
        host = future.result() if future is not None else self._host_plan(epoch, idx)
        return EpochPlan(
            epoch,
            idx,
            _to_device(idx, self.device),
            _to_device(host["theta"], self.device),
            _to_device(host["joints"], self.device),
            _to_device(host["visible"], self.device),
        )

    def crops(self, indices: np.ndarray, device_indices: Tensor | None = None) -> Tensor:
        if self.store_tensor is not None:
            if device_indices is None:
                device_indices = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
            return self.store_tensor[device_indices]
        return _to_device(self.store.gather(indices), self.device)

    def batch_of(self, plan: EpochPlan, start: int, stop: int) -> dict[str, Any]:
        """Positions ``start:stop`` of ``plan`` as a training batch, built on the device."""
        crops = self.crops(plan.order[start:stop], plan.indices[start:stop])
        images = normalise_batch(warp_crops(crops, plan.theta[start:stop], self.resolution.size))
        joints, visible = plan.joints[start:stop], plan.visible[start:stop]
        out: dict[str, Any] = {
            "image": images,
            "joints": joints,
            "visible": visible,
            "index": torch.from_numpy(plan.order[start:stop]),
        }
        out.update(encode_targets(self.method, joints, visible))
        return out

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        plan = self.plan(indices)
        return self.batch_of(plan, 0, len(plan))

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches of ``order`` (e.g. a ``ShardedEpochSampler`` permutation), dropping the last partial one."""
        plan = self.plan(order)
        for start in range(0, len(plan) - batch_size + 1, batch_size):
            yield self.batch_of(plan, start, start + batch_size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
