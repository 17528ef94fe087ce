"""COCO keypoint conventions, defined once: joint order, flip pairs, skeleton, OKS sigmas.

Values are those of the COCO keypoint task (pycocotools' ``COCOeval.kpt_oks_sigmas``).
"""

from __future__ import annotations

import numpy as np

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_JOINTS = len(COCO_KEYPOINT_NAMES)

#: pairs of (left, right) joint indices swapped by a horizontal flip
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
)

#: the name of each left/right pair of ``FLIP_PAIRS``, in the same order (report column labels)
FLIP_PAIR_NAMES: tuple[str, ...] = ("eyes", "ears", "shoulders", "elbows", "wrists", "hips", "knees", "ankles")

#: COCO skeleton (1-based joint ids, as in person_keypoints_*.json)
COCO_SKELETON: list[list[int]] = [
    [16, 14],
    [14, 12],
    [17, 15],
    [15, 13],
    [12, 13],
    [6, 12],
    [7, 13],
    [6, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [9, 11],
    [2, 3],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
]

#: per-keypoint OKS constants σ_i of Eq. 16 (pycocotools ``kpt_oks_sigmas``)
OKS_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
    / 10.0
)

#: joints of the upper body (nose … wrists) and of the lower body (hips … ankles), the two halves
#: half-body augmentation picks from (HRNet ``COCODataset.upper_body_ids`` / ``lower_body_ids``)
UPPER_BODY_JOINTS: tuple[int, ...] = tuple(range(11))
LOWER_BODY_JOINTS: tuple[int, ...] = tuple(range(11, 17))


def flip_index(num_joints: int = NUM_JOINTS) -> np.ndarray:
    """Permutation that maps each joint to its mirror partner (identity for unpaired joints)."""
    index = np.arange(num_joints)
    for left, right in FLIP_PAIRS:
        if left < num_joints and right < num_joints:
            index[left], index[right] = right, left
    return index


COCO_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO_KEYPOINT_NAMES),
    "skeleton": COCO_SKELETON,
}
