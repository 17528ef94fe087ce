"""The evaluation path scores ground truth as AP = 1 and agrees with pycocotools run directly."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lrpose_bench.data.coco import load_split
from lrpose_bench.evaluation.coco_metric import (
    build_results,
    evaluate_keypoints,
    ground_truth_as_results,
    oks_nms,
)


def _direct_ap(gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_ground_truth_scores_ap_one(coco_fixture):
    ann_file, images, _ = coco_fixture
    split = load_split("fixture", ann_file, images)
    metrics = evaluate_keypoints(split.gt, ground_truth_as_results(split.gt))
    assert abs(metrics["AP"] - 1.0) < 1e-9
    assert abs(metrics["AR"] - 1.0) < 1e-9


def test_ground_truth_through_build_results_scores_ap_one(coco_fixture):
    """GT joints fed through rescoring + OKS-NMS (the path predictions take) still give AP = 1."""
    ann_file, images, _ = coco_fixture
    split = load_split("fixture", ann_file, images)
    joints = np.stack([inst.joints for inst in split.instances])
    conf = np.ones(joints.shape[:2])
    results = build_results(
        [i.image_id for i in split.instances],
        joints,
        conf,
        np.ones(len(joints)),
        np.array([i.bbox[2] * i.bbox[3] for i in split.instances]),
    )
    assert abs(evaluate_keypoints(split.gt, results)["AP"] - 1.0) < 1e-9


def test_perturbed_predictions_match_pycocotools_directly(coco_fixture):
    ann_file, images, _ = coco_fixture
    split = load_split("fixture", ann_file, images)
    rng = np.random.default_rng(1)
    results = ground_truth_as_results(split.gt)
    for r in results:
        kps = np.asarray(r["keypoints"], dtype=float).reshape(-1, 3)
        kps[:, :2] += rng.normal(0, 3.0, (17, 2))
        r["keypoints"] = kps.reshape(-1).tolist()
        r["score"] = float(rng.uniform(0.3, 1.0))
    ours = evaluate_keypoints(split.gt, results)
    direct = _direct_ap(split.gt, results)
    assert 0.0 < ours["AP"] < 1.0
    expected = [direct[i] if direct[i] >= 0 else np.nan for i in range(6)]
    np.testing.assert_allclose([ours[k] for k in ("AP", "AP50", "AP75", "APM", "APL", "AR")], expected, atol=1e-12)


def test_oks_nms_suppresses_duplicates_only():
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.uniform(0, 100, (17, 2)), np.ones((17, 1))], 1)
    far = pose.copy()
    far[:, :2] += 200
    poses = np.stack([pose, pose + 0.01, far])
    keep = oks_nms(poses, np.array([0.9, 0.8, 0.7]), np.array([5000.0, 5000.0, 5000.0]), 0.9)
    assert keep == [0, 2]


def test_synthpose_ground_truth_scores_ap_one(tmp_path):
    """The same path on the embedded data set: SynthPose ground truth as predictions gives AP = 1,
    also after going through the crop, the heatmap frame and the inverse affine."""
    from lrpose_bench.config import SynthConfig
    from lrpose_bench.data.transforms import (
        CropParams,
        apply_affine,
        box_to_center_size,
        crop_matrix,
        input_to_heatmap_scale,
    )
    from lrpose_bench.engine.evaluator import heatmap_to_image
    from lrpose_bench.resolution import Resolution
    from lrpose_bench.synthpose import ensure_synthpose

    cfg = SynthConfig(num_train_images=2, num_val_images=6, num_tune_images=1, image_height=128, image_width=128)
    paths = ensure_synthpose(tmp_path, cfg, progress=False)
    split = load_split("SynthPose val", paths.val_annotations, paths.val_images)
    assert abs(evaluate_keypoints(split.gt, ground_truth_as_results(split.gt))["AP"] - 1.0) < 1e-9

    res = Resolution(64, 48)
    matrices, joints_hm = [], []
    for inst in split.instances:
        center, size = box_to_center_size(inst.bbox, res.width / res.height, 1.25)
        matrix = crop_matrix(CropParams(center, size), res.size)
        matrices.append(matrix)
        joints_hm.append(apply_affine(inst.joints, matrix) * input_to_heatmap_scale(res.size, res.heatmap))
    back = heatmap_to_image(np.stack(joints_hm), np.stack(matrices), res.size, res.heatmap)
    conf = np.stack([(inst.visibility > 0).astype(float) for inst in split.instances])
    results = build_results(
        [i.image_id for i in split.instances],
        back,
        conf,
        np.ones(len(back)),
        np.array([i.bbox[2] * i.bbox[3] for i in split.instances]),
    )
    assert abs(evaluate_keypoints(split.gt, results)["AP"] - 1.0) < 1e-9
