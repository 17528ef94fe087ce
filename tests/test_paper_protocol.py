"""The ``paper`` profile follows the paper's COCO protocol: detected boxes, half-body 0.3, the
references' global batch; a relative box file is found under the COCO root."""

from __future__ import annotations

import json

import pytest

from _train_child import make_coco_layout
from lrpose_bench.config import load_config
from lrpose_bench.data.sources import load_data, person_box_file
from lrpose_bench.errors import DataError

HRNET_BOXES = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


def test_paper_profile_is_the_reference_protocol() -> None:
    cfg = load_config("paper")
    assert cfg.data.person_boxes == HRNET_BOXES and cfg.eval.use_gt_boxes is False
    assert cfg.augment.half_body_prob == 0.3 and cfg.augment.half_body_min_joints == 8
    assert cfg.train.batch_size == 128  # 32 per GPU x 4 GPUs (HRNet/UDP-Pose yaml)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.lr_milestones) == (210, 1.0e-3, [170, 200])


def test_paper_profile_scores_detected_boxes_under_the_coco_root(tmp_path) -> None:
    root = make_coco_layout(tmp_path / "coco", train_images=2, val_images=2)
    gt = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    dets = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9 - 0.1 * i}
        for i, a in enumerate(gt["annotations"])
    ]
    (root / HRNET_BOXES).parent.mkdir(parents=True)
    (root / HRNET_BOXES).write_text(json.dumps(dets))
    cfg = load_config("paper", overrides={"data.source": "coco", "data.coco_root": str(root)})
    bundle = load_data(cfg.data, progress=False)
    assert sorted(i.score for i in bundle.val.instances) == sorted(d["score"] for d in dets)


def test_missing_box_file_is_one_line_naming_the_key(tmp_path) -> None:
    with pytest.raises(DataError, match=r"data.person_boxes: .* not found .*--set data.person_boxes=null"):
        person_box_file("nowhere/boxes.json", tmp_path)
    assert person_box_file(None, tmp_path) is None


def test_oks_nms_uses_hrnet_s_padded_aspect_fixed_box_area() -> None:
    """HRNet ``coco.py``: ``area = prod(scale * 200)`` with scale from ``_xywh2cs`` (aspect fix to
    w/h = 0.75 at 256x192, then x1.25 padding): a 10x40 box has area 37.5 x 50, not 400."""
    import numpy as np

    from lrpose_bench.data.transforms import nms_box_area

    assert nms_box_area(np.array([5.0, 5.0, 10.0, 40.0]), 0.75, 1.25) == 37.5 * 50.0
    assert nms_box_area(np.array([0.0, 0.0, 60.0, 40.0]), 0.75, 1.25) == 75.0 * 100.0
