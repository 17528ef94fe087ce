"""Shared fixtures: small COCO-format data sets written by code (no binary fixtures)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def make_coco_fixture(
    root: Path, num_images: int = 4, persons_per_image: int = 2, seed: int = 0, size: tuple[int, int] = (120, 160)
) -> dict[str, Any]:
    """Write a tiny COCO person-keypoints data set: images with stick figures drawn by cv2."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    height, width = size
    doc: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }
    ann_id = 1
    for image_id in range(1, num_images + 1):
        image = (rng.random((height, width, 3)) * 60).astype(np.uint8)
        for _ in range(persons_per_image):
            box_w, box_h = rng.uniform(25, 45), rng.uniform(60, 100)
            x0 = rng.uniform(0, width - box_w)
            y0 = rng.uniform(0, height - box_h)
            joints = np.stack([x0 + rng.uniform(0.1, 0.9, 17) * box_w, y0 + rng.uniform(0.05, 0.95, 17) * box_h], 1)
            vis = np.full(17, 2)
            vis[rng.random(17) < 0.1] = 1
            vis[rng.random(17) < 0.05] = 0
            for (x, y), v in zip(joints, vis):
                if v > 0:
                    cv2.circle(image, (int(x), int(y)), 2, (200, 180, 120), -1)
            kps = []
            for (x, y), v in zip(joints, vis):
                kps += [float(x), float(y), int(v)] if v > 0 else [0.0, 0.0, 0]
            doc["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [float(x0), float(y0), float(box_w), float(box_h)],
                    "area": float(box_w * box_h * 0.6),
                    "keypoints": kps,
                    "num_keypoints": int((vis > 0).sum()),
                }
            )
            ann_id += 1
        name = f"{image_id:06d}.png"
        cv2.imwrite(str(images_dir / name), image)
        doc["images"].append({"id": image_id, "file_name": name, "height": height, "width": width})
    (root / "annotations.json").write_text(json.dumps(doc))
    return doc


@pytest.fixture()
def coco_fixture(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(annotation file, image folder, document) of a tiny COCO-format data set."""
    doc = make_coco_fixture(tmp_path)
    return tmp_path / "annotations.json", tmp_path / "images", doc


@pytest.fixture(scope="session")
def split_and_store(tmp_path_factory):
    """8 images × 2 persons (16 instances) and their 64×48 crop store: the fast-path training tests'
    data (tests/test_fast_training.py, tests/test_gpu.py)."""
    from lrpose_bench.config import AugmentConfig, CropStoreConfig
    from lrpose_bench.data.coco import load_split
    from lrpose_bench.data.crop_store import build_crop_store
    from lrpose_bench.resolution import Resolution

    root = tmp_path_factory.mktemp("split_and_store")
    make_coco_fixture(root / "data", num_images=8, persons_per_image=2, seed=5)
    split = load_split("fixture", root / "data" / "annotations.json", root / "data" / "images")
    store = build_crop_store(
        split, [Resolution(64, 48)], AugmentConfig(), 1.25, root / "stores", config=CropStoreConfig(workers=1)
    )
    return split, store
