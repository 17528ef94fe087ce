"""SynthPose labels and files: COCO keypoint annotations from the label map, and the JSON documents.

Labels follow the COCO keypoint format, pixel centres at integer coordinates: pixel (i, j) covers
[i-0.5, i+0.5]; OpenCV's ``shift`` drawing uses the same convention, so a joint at (x, y) is exactly
where the renderer put it.

* v=2 — inside the image and the pixel under the joint shows one of the joint's own body parts
  (e.g. the elbow shows the upper arm or forearm) and, for face points, the point faces the camera;
* v=1 — inside the image but covered (occluder, another person, another part of the same person,
  or the back of the head);
* v=0 with x=y=0 — outside the image (truncation), COCO's convention.

``bbox`` is tight around the person's visible rendered pixels as a pixel-coverage box
``[xmin-0.5, ymin-0.5, xmax-xmin+1, ymax-ymin+1]`` (its centre is the mask's centre in the suite's
convention), ``area`` the visible pixel count (COCO's segment area; it drives the APM/APL split).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lrpose_bench.config import SynthConfig
from lrpose_bench.keypoints import COCO_CATEGORY
from lrpose_bench.synthpose.body import _JOINT_PARTS, _PARTS_PER_PERSON, Figure

#: bump when the rendering (body, sampling, render) or the format changes: it is written into each
#: document's ``info`` and the completion marker, and it is part of the cache key
FORMAT_VERSION: int = 2

_VAL_ID_OFFSET = 1_000_000  # val image ids are distinct from train ids (easier debugging)
_TUNE_ID_OFFSET = 2_000_000  # and tune ids from both
_MIN_BOX_SIDE = 4.0  # px; smaller visible boxes are not annotated
_MIN_AREA = 24.0  # px²


# ------------------------------------------------------------------------------- annotations
def _annotate(person: Figure, index: int, label: np.ndarray) -> dict[str, Any]:
    """COCO annotation for one figure from its joints and the final label map (visible pixels)."""
    height, width = label.shape
    base = index * _PARTS_PER_PERSON + 1
    keypoints: list[float] = []
    for j, (x, y) in enumerate(person.joints):
        if not (0.0 <= x <= width - 1 and 0.0 <= y <= height - 1):
            keypoints += [0.0, 0.0, 0]
            continue
        col, row = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        value = int(label[row, col]) - base
        own = value in _JOINT_PARTS[j]
        visible = 2 if own and person.face_visible[j] else 1
        keypoints += [round(float(x), 3), round(float(y), 3), visible]
    mask = (label >= base) & (label < base + _PARTS_PER_PERSON)
    area = int(mask.sum())
    if area:
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        bbox = [
            float(cols[0]) - 0.5,
            float(rows[0]) - 0.5,
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        ]
    else:
        bbox = [0.0, 0.0, 0.0, 0.0]
    return {
        "keypoints": keypoints,
        "num_keypoints": int(sum(1 for v in keypoints[2::3] if v > 0)),
        "bbox": bbox,
        "area": float(area),
    }


def _keep(annotation: dict[str, Any]) -> bool:
    _, _, w, h = annotation["bbox"]
    return annotation["num_keypoints"] >= 1 and min(w, h) >= _MIN_BOX_SIDE and annotation["area"] >= _MIN_AREA


# --------------------------------------------------------------------------------- documents
def _image_id(split: str, index: int) -> int:
    return index + 1 + {"train": 0, "val": _VAL_ID_OFFSET, "tune": _TUNE_ID_OFFSET}[split]


def _coco_document(cfg: SynthConfig, split: str, per_image: list[list[dict[str, Any]]]) -> dict[str, Any]:
    images = []
    annotations = []
    ann_id = _image_id(split, 0) * 100  # unique across splits too
    for index, anns in enumerate(per_image):
        image_id = _image_id(split, index)
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.png", "height": cfg.image_height, "width": cfg.image_width}
        )
        for ann in anns:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": ann["keypoints"],
                    "num_keypoints": ann["num_keypoints"],
                    "bbox": ann["bbox"],
                    "area": ann["area"],
                }
            )
            ann_id += 1
    return {
        "info": {
            "description": f"SynthPose {split} (lrpose-bench procedural data set)",
            "version": str(FORMAT_VERSION),
            "seed": cfg.seed,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [COCO_CATEGORY],
    }
