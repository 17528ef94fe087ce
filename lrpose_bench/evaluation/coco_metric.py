"""COCO OKS AP through pycocotools (Eq. 16), with the HRNet reference's rescoring and OKS-NMS.

Never re-implements AP: predictions become a COCO results list and ``COCOeval(iouType='keypoints')``
scores them. Rescoring and OKS-NMS follow HRNet ``lib/dataset/coco.py::evaluate`` (instance score =
box score × mean confidence of the joints above ``kpt_score_threshold``; per-image OKS-NMS).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrpose_bench.data.coco import coco_from_dict
from lrpose_bench.keypoints import OKS_SIGMAS

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")


def oks_iou(
    reference: np.ndarray, others: np.ndarray, ref_area: float, other_areas: np.ndarray, sigmas: np.ndarray = OKS_SIGMAS
) -> np.ndarray:
    """OKS between one pose (K,3) and others (M,K,3), as HRNet ``nms.oks_iou`` (all joints count)."""
    variances = (sigmas * 2) ** 2
    dx = others[:, :, 0] - reference[None, :, 0]
    dy = others[:, :, 1] - reference[None, :, 1]
    areas = (ref_area + other_areas)[:, None] / 2.0 + np.spacing(1)
    e = (dx**2 + dy**2) / variances[None, :] / areas / 2.0
    return np.exp(-e).mean(axis=1)


def oks_nms(poses: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float) -> list[int]:
    """Greedy OKS non-maximum suppression; indices kept, highest score first, equal scores in input
    order (a stable sort: numpy's default argsort may order ties differently on AVX-512 and AVX2)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        current = order[0]
        keep.append(int(current))
        if order.size == 1:
            break
        overlaps = oks_iou(poses[current], poses[order[1:]], areas[current], areas[order[1:]])
        order = order[1:][overlaps <= threshold]
    return keep


def build_results(
    image_ids: Sequence[int],
    keypoints: np.ndarray,  # (N, K, 2) image coordinates
    confidences: np.ndarray,  # (N, K)
    box_scores: np.ndarray,  # (N,)
    box_areas: np.ndarray,  # (N,) area used for OKS-NMS (box w*h)
    kpt_score_threshold: float = 0.2,
    nms_threshold: float | None = 0.9,
) -> list[dict[str, Any]]:
    """COCO keypoint results with HRNet rescoring and per-image OKS-NMS."""
    per_image: dict[int, list[int]] = defaultdict(list)
    for index, image_id in enumerate(image_ids):
        per_image[int(image_id)].append(index)
    results: list[dict[str, Any]] = []
    for image_id, indices in per_image.items():
        idx = np.asarray(indices)
        conf = confidences[idx]
        above = conf > kpt_score_threshold
        counts = above.sum(axis=1)
        kpt_score = np.where(counts > 0, (conf * above).sum(axis=1) / np.maximum(counts, 1), 0.0)
        scores = kpt_score * box_scores[idx]
        poses = np.concatenate([keypoints[idx], conf[..., None]], axis=-1)
        keep = list(range(len(idx)))
        if nms_threshold is not None and len(idx) > 1:
            keep = oks_nms(poses, scores, box_areas[idx], nms_threshold)
        for k in keep:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "keypoints": [float(v) for v in poses[k].reshape(-1)],
                    "score": float(scores[k]),
                }
            )
    return results


def evaluate_keypoints(
    gt: dict[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """COCO OKS AP/AR of ``results`` against ground truth ``gt`` (pycocotools ``COCOeval``).

    ``image_ids`` restricts the evaluation (used by the paired bootstrap, which passes resampled
    ids). An empty result list scores 0.
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in METRIC_NAMES}
    coco_gt = coco_from_dict(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where a metric is undefined (e.g. no large persons): keep it missing
    stats = [float(v) if v >= 0 else float("nan") for v in evaluator.stats]
    return dict(zip(METRIC_NAMES, stats))


def ground_truth_as_results(gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Ground truth written as predictions (score 1): the evaluation path's AP = 1 check."""
    results = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) == 0:
            continue
        results.append(
            {"image_id": ann["image_id"], "category_id": 1, "keypoints": list(ann["keypoints"]), "score": 1.0}
        )
    return results
