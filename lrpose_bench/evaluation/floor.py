"""The mean-pose floor: a predictor that ignores the image and puts the training set's average
pose (in box-normalised crop coordinates) into every box. Any method that has learned anything
must score far above it; every run reports it next to the methods."""

from __future__ import annotations

import numpy as np

from lrpose_bench.data.coco import KeypointSplit
from lrpose_bench.data.transforms import (
    CropParams,
    apply_affine,
    box_to_center_size,
    crop_matrix,
    invert_affine,
)
from lrpose_bench.resolution import Resolution


def mean_pose(split: KeypointSplit, resolution: Resolution, padding: float) -> np.ndarray:
    """Average visible joint position (K, 2) in input coordinates of the unaugmented crop."""
    aspect = resolution.width / resolution.height
    total = np.zeros((split.instances[0].joints.shape[0], 2))
    counts = np.zeros(total.shape[0])
    for inst in split.instances:
        center, size = box_to_center_size(inst.bbox, aspect, padding)
        matrix = crop_matrix(CropParams(center, size), resolution.size)
        joints = apply_affine(inst.joints, matrix)
        vis = inst.visibility > 0
        total[vis] += joints[vis]
        counts += vis
    counts = np.maximum(counts, 1)
    return total / counts[:, None]


def mean_pose_predictions(
    split: KeypointSplit, pose: np.ndarray, resolution: Resolution, padding: float
) -> tuple[np.ndarray, np.ndarray]:
    """Image-space keypoints (N, K, 2) and unit confidences (N, K) of the mean-pose predictor."""
    aspect = resolution.width / resolution.height
    keypoints = np.empty((len(split.instances), pose.shape[0], 2))
    for i, inst in enumerate(split.instances):
        center, size = box_to_center_size(inst.bbox, aspect, padding)
        inverse = invert_affine(crop_matrix(CropParams(center, size), resolution.size))
        keypoints[i] = apply_affine(pose, inverse)
    return keypoints, np.ones(keypoints.shape[:2])
