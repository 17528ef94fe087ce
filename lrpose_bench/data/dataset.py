"""Torch datasets: instance → unbiased affine crop (+ augmentation) → method targets.

Randomness is a pure function of (seed, epoch, index), so a run is reproducible with any number of
loader workers and resumes mid-run with identical augmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lrpose_bench.config import AugmentConfig
from lrpose_bench.data.coco import Instance, KeypointSplit
from lrpose_bench.data.transforms import (
    CropParams,
    apply_affine,
    box_to_center_size,
    crop_matrix,
    flip_joints,
    input_to_heatmap_scale,
    nms_box_area,
    sample_crop_params,
    warp_image,
)
from lrpose_bench.errors import DataError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method
from lrpose_bench.resolution import Resolution

#: ImageNet normalisation (RGB), as HRNet/mmpose
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ImageCache:
    """Decoded images kept in memory up to a budget (SynthPose fits; COCO streams)."""

    def __init__(self, budget_mb: int = 1024) -> None:
        self.budget = budget_mb * 1024 * 1024
        self.used = 0
        self.images: dict[Path, np.ndarray] = {}

    def read(self, path: Path) -> np.ndarray:
        image = self.images.get(path)
        if image is not None:
            return image
        data = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if data is None:
            if not Path(path).is_file():
                raise DataError(f"image file {path} is missing")
            raise DataError(f"image file {path} cannot be decoded (corrupt or not an image)")
        image = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
        if self.used + image.nbytes <= self.budget:
            self.images[path] = image
            self.used += image.nbytes
        return image


def normalise(crop: np.ndarray) -> torch.Tensor:
    """uint8 (h, w, 3) RGB → float (3, h, w), ImageNet-normalised."""
    array = (crop.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def lift_matrix(matrix: np.ndarray, low: Resolution, high: Resolution, coordinates: str = "unbiased") -> np.ndarray:
    """The crop matrix of a ``low``-resolution crop, expressed in the frame of its ×s upsampling to
    ``high`` (SR+pose): an upsampler's output pixel ``X`` sits at ``(X + ½)/s − ½`` of the input
    (pixel-centre alignment, bicubic/SR convention), so ``X = s·x + (s − 1)/2`` in the unbiased
    system (``X = s·x`` in the biased one, whose pixels are cells). Back-projection through the
    lifted matrix is exact for what the upsampler produces."""
    scale = high.width / low.width
    if high.height / low.height != scale or scale < 1:
        raise ValueError(f"lift_matrix: {high} is not an integer up-scaling of {low}")
    shift = (scale - 1.0) / 2.0 if coordinates == "unbiased" else 0.0
    lift = np.array([[scale, 0.0, shift], [0.0, scale, shift], [0.0, 0.0, 1.0]])
    return (lift @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


class PoseDataset(Dataset):
    """Crops of a split's instances for one method at one resolution.

    ``train=True`` samples augmentation and encodes targets; ``train=False`` gives the plain crop,
    its affine matrix (image → input) for back-projection, and the ground-truth joints in heatmap
    coordinates (for displacement statistics).
    """

    def __init__(
        self,
        split: KeypointSplit,
        method: Method,
        resolution: Resolution,
        *,
        train: bool,
        augment: AugmentConfig | None = None,
        box_padding: float = 1.25,
        seed: int = 0,
        image_cache: ImageCache | None = None,
        source_transform: Callable[..., np.ndarray] | None = None,
        coordinates: str = "unbiased",
        crop_resolution: Resolution | None = None,
    ) -> None:
        self.split = split
        #: the size the crop is cut at, when it differs from ``resolution`` (evaluation of SR+pose:
        #: the native low-resolution crop; its matrix is lifted into ``resolution``'s frame)
        self.crop_resolution = crop_resolution or resolution
        #: ``unbiased`` (UDP, the default) or ``biased`` (HRNet: box onto w px, joints / feat_stride)
        self.coordinates = coordinates
        self.method = method
        self.resolution = resolution
        self.train = train
        self.augment = augment or AugmentConfig()
        self.box_padding = box_padding
        self.seed = seed
        self.epoch = 0
        self.cache = image_cache or ImageCache()
        self.source_transform = source_transform
        self.flip_index = flip_index(method.context.num_joints)
        self.hm_scale = input_to_heatmap_scale(resolution.size, resolution.heatmap, coordinates)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split.instances)

    def nms_box_areas(self) -> np.ndarray:
        """(N,) the box area OKS-NMS uses: the padded, aspect-fixed box the crop is cut from (HRNet
        ``coco.py`` evaluates with ``area = prod(scale * 200)``, the ``_xywh2cs`` box), not w·h."""
        aspect = self.resolution.width / self.resolution.height
        return np.array([nms_box_area(inst.bbox, aspect, self.box_padding) for inst in self.split.instances])

    def crop_params(self, index: int, rng: np.random.Generator | None) -> CropParams:
        inst = self.split.instances[index]
        aspect = self.resolution.width / self.resolution.height
        center, size = box_to_center_size(inst.bbox, aspect, self.box_padding)
        if rng is None:
            return CropParams(center, size)
        # half-body box (HRNet half_body_transform, only when augment.half_body_prob > 0), then
        # scale/rotation/flip: the draws the device path repeats (gpu_augment.augmentation_params)
        return sample_crop_params(rng, self.augment, center, size, inst.joints, inst.visibility, aspect)

    def joints_in_heatmap(self, inst: Instance, matrix: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth joints (K,2) in heatmap coordinates and visibility (K,) inside the map."""
        joints = apply_affine(inst.joints, matrix) * self.hm_scale
        visible = (inst.visibility > 0).astype(np.float32)
        if flip:
            joints, visible = flip_joints(joints, visible, self.flip_index)
        hm_h, hm_w = self.resolution.heatmap
        inside = (
            (joints[:, 0] >= -0.5)
            & (joints[:, 0] <= hm_w - 0.5)
            & (joints[:, 1] >= -0.5)
            & (joints[:, 1] <= hm_h - 0.5)
        )
        return joints.astype(np.float32), (visible * inside).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        inst = self.split.instances[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        params = self.crop_params(index, rng)
        matrix = crop_matrix(params, self.crop_resolution.size, self.coordinates)
        image = self.cache.read(inst.image_path)
        if self.source_transform is not None:
            image = self.source_transform(image, index, epoch=self.epoch if self.train else None)
        crop = warp_image(image, matrix, self.crop_resolution.size)
        if self.crop_resolution != self.resolution:
            matrix = lift_matrix(matrix, self.crop_resolution, self.resolution, self.coordinates)
        joints, visible = self.joints_in_heatmap(inst, matrix, params.flip)
        item: dict[str, Any] = {
            "image": normalise(crop),
            "joints": torch.from_numpy(joints),
            "visible": torch.from_numpy(visible),
            "index": index,
        }
        if self.train:
            for key, value in self.method.encode(joints, visible).items():
                item[key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            item["matrix"] = torch.from_numpy(matrix.astype(np.float64))
        return item
