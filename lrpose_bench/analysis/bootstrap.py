"""Paired bootstrap over images for COCO OKS AP differences.

For two methods scored on the same ground truth we resample image ids with replacement, recompute
both methods' AP on the *same* resample and take the difference; the 2.5 and 97.5 percentiles of the
differences are the 95 % interval (percentile bootstrap; Efron & Tibshirani 1993, ch. 13).

Fast path, and why it is exact. ``COCOeval.evaluate()`` matches detections to ground truth per image
(``evaluateImg``); nothing in a per-image result depends on other images. ``accumulate()`` then only
concatenates the per-image records of the evaluated images in ``params.imgIds`` order, sorts all
detections by score (stable mergesort) and reads precision at 101 recall thresholds. So AP on a
resampled image list equals ``accumulate()`` over the per-image records *repeated as often as the
image is drawn*. We run ``evaluate()`` once per method, keep the records of area range "all" at
``maxDets=20``, and per resample repeat the image records, then replay ``accumulate`` and the AP line
of ``summarize`` (``pycocotools/cocoeval.py``) in vectorised numpy. A duplicated image therefore
counts twice, as it must; passing duplicated ids to ``COCOeval.params.imgIds`` would not (``evaluate``
de-duplicates them). The slow reference, :func:`resampled_documents`, renames the drawn images
``1..n`` in draw order (so pycocotools' sorted order is the draw order, and score ties break the same
way) and scores them with :func:`lrpose_bench.evaluation.coco_metric.evaluate_keypoints`; the tests
check the two agree to round-off.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: pycocotools' recall thresholds for AP (``Params.setKpParams``: 0:.01:1)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class ImageEvaluation:
    """Per-image COCOeval matching of one method, flattened for fast re-accumulation."""

    image_ids: np.ndarray  # (I,) evaluated image ids (sorted, as pycocotools)
    scores: np.ndarray  # (D,) detection scores, per image in evaluateImg order
    tp: np.ndarray  # (T, D) bool: matched and not ignored, per OKS threshold
    fp: np.ndarray  # (T, D) bool: unmatched and not ignored
    start: np.ndarray  # (I,) first detection of each image
    count: np.ndarray  # (I,) detections of each image (≤ maxDets)
    positives: np.ndarray  # (I,) non-ignored ground truths of each image

    def ap(self, sample: np.ndarray | None = None) -> float:
        """COCO AP (area all, maxDets 20) over the images at positions ``sample`` (repeats count)."""
        if sample is None:
            sample = np.arange(self.image_ids.size)
        sample = np.asarray(sample, dtype=np.int64)
        counts = self.count[sample]
        total = int(counts.sum())
        npig = int(self.positives[sample].sum())
        if npig == 0:
            return 0.0  # pycocotools leaves precision at -1; evaluate_keypoints clamps to 0
        if total == 0:
            return 0.0
        offsets = np.cumsum(counts) - counts
        det = np.repeat(self.start[sample] - offsets, counts) + np.arange(total)
        return _average_precision(self.scores[det], self.tp[:, det], self.fp[:, det], npig)


def _average_precision(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, npig: int) -> float:
    """``COCOeval.accumulate`` for one category/area/maxDet, then ``summarize``'s AP mean."""
    order = np.argsort(-scores, kind="mergesort")
    tp_sum = np.cumsum(tp[:, order], axis=1).astype(float)
    fp_sum = np.cumsum(fp[:, order], axis=1).astype(float)
    recall = tp_sum / npig
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    # pycocotools' backward loop "if pr[i] > pr[i-1]: pr[i-1] = pr[i]" is a reversed running max
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    nd = precision.shape[1]
    q = np.zeros((precision.shape[0], REC_THRS.size))
    for t in range(precision.shape[0]):
        inds = np.searchsorted(recall[t], REC_THRS, side="left")
        valid = inds < nd
        q[t, valid] = precision[t, inds[valid]]
    return float(q.mean())


def evaluate_images(gt: Mapping[str, Any] | Any, results: list[dict[str, Any]]) -> ImageEvaluation:
    """Run ``COCOeval.evaluate()`` once and keep the per-image records (area "all", maxDets 20).

    ``gt`` is a COCO ground-truth document or an already indexed ``pycocotools.coco.COCO``.
    """
    from pycocotools.cocoeval import COCOeval

    from lrpose_bench.data.coco import coco_from_dict

    coco_gt = gt if hasattr(gt, "loadRes") else coco_from_dict(dict(gt))
    image_ids = np.asarray(sorted(coco_gt.getImgIds()), dtype=np.int64)
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes edits dicts
            evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
            evaluator.evaluate()
    if not results:
        return _empty_evaluation(coco_gt, image_ids)
    params = evaluator.params
    num_images = len(params.imgIds)
    max_det = params.maxDets[-1]
    num_thr = len(params.iouThrs)
    area_all = 0  # params.areaRng[0] is "all"
    records = evaluator.evalImgs[area_all * num_images : (area_all + 1) * num_images]  # catIds == [1]
    scores, tps, fps = [], [], []
    start = np.zeros(num_images, dtype=np.int64)
    count = np.zeros(num_images, dtype=np.int64)
    positives = np.zeros(num_images, dtype=np.int64)
    cursor = 0
    for i, record in enumerate(records):
        start[i] = cursor
        if record is None:
            continue
        s = np.asarray(record["dtScores"][:max_det], dtype=float)
        matches = np.asarray(record["dtMatches"])[:, :max_det].astype(bool)
        ignore = np.asarray(record["dtIgnore"])[:, :max_det].astype(bool)
        scores.append(s)
        tps.append(matches & ~ignore)
        fps.append(~matches & ~ignore)
        count[i] = s.size
        positives[i] = int(np.count_nonzero(np.asarray(record["gtIgnore"]) == 0))
        cursor += s.size
    return ImageEvaluation(
        image_ids=np.asarray(params.imgIds, dtype=np.int64),
        scores=np.concatenate(scores) if scores else np.zeros(0),
        tp=np.concatenate(tps, axis=1) if tps else np.zeros((num_thr, 0), dtype=bool),
        fp=np.concatenate(fps, axis=1) if fps else np.zeros((num_thr, 0), dtype=bool),
        start=start,
        count=count,
        positives=positives,
    )


def _empty_evaluation(coco_gt: Any, image_ids: np.ndarray) -> ImageEvaluation:
    """No detections: AP 0 on every resample (evaluate_keypoints scores an empty list 0)."""
    n = image_ids.size
    return ImageEvaluation(
        image_ids,
        np.zeros(0),
        np.zeros((10, 0), dtype=bool),
        np.zeros((10, 0), dtype=bool),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )


@dataclass(frozen=True)
class PairedDifference:
    """AP(a) − AP(b) on the full set and its percentile interval over image resamples."""

    a: str
    b: str
    ap_a: float
    ap_b: float
    difference: float
    low: float
    high: float
    samples: int
    level: float
    #: training seeds the difference is pooled over (1: a single seed's image bootstrap)
    seeds: int = 1

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def resample_indices(num_images: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` × ``num_images`` positions drawn with replacement (seeded, reproducible)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_images, size=(samples, num_images))


def bootstrap_aps(evaluations: Mapping[str, ImageEvaluation], samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """AP of every method on each of the same ``samples`` image resamples (paired)."""
    names = list(evaluations)
    if not names:
        return {}
    reference = evaluations[names[0]].image_ids
    for name in names[1:]:
        if not np.array_equal(evaluations[name].image_ids, reference):
            raise ValueError(
                f"{name} was evaluated on other images than {names[0]}; a paired bootstrap needs the same ground truth"
            )
    draws = resample_indices(reference.size, samples, seed)
    return {name: np.array([evaluations[name].ap(row) for row in draws]) for name in names}


def paired_differences(
    evaluations: Mapping[str, ImageEvaluation],
    samples: int,
    seed: int = 0,
    level: float = 0.95,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[PairedDifference]:
    """Paired bootstrap for every pair (or the given ``pairs``) of methods on the same images."""
    aps = bootstrap_aps(evaluations, samples, seed)
    full = {name: ev.ap() for name, ev in evaluations.items()}
    tail = 100.0 * (1.0 - level) / 2.0
    out = []
    for a, b in pairs if pairs is not None else itertools.combinations(list(evaluations), 2):
        diffs = aps[a] - aps[b]
        low, high = np.percentile(diffs, [tail, 100.0 - tail]) if diffs.size else (np.nan, np.nan)
        out.append(PairedDifference(a, b, full[a], full[b], full[a] - full[b], float(low), float(high), samples, level))
    return out


def pooled_differences(
    per_seed: Mapping[int, Mapping[str, ImageEvaluation]],
    samples: int,
    seed: int = 0,
    level: float = 0.95,
) -> list[PairedDifference]:
    """Two-level paired bootstrap pooled over training seeds, for every pair of methods over the
    seeds both were run with (``seeds`` on each result; a pair sharing < 2 seeds is left out): each
    replicate draws the seeds with replacement *and* the images with replacement (one image draw for
    all seeds: they are scored on the same ground truth), and its difference is the mean over the
    drawn seeds of ``AP_a − AP_b`` on that image resample. The interval thus holds
    both sources of chance a reader's rerun would meet: which images, and which seed (the
    hierarchical bootstrap of Davison & Hinkley 1997, sec. 3.8). The point estimate is the mean
    over seeds of the full-set difference. Seeds are reported as ``n``; with 2-3 seeds the seed
    level is coarse, which widens, never narrows, the interval."""
    seeds = sorted(per_seed)
    names = list(dict.fromkeys(n for s in seeds for n in per_seed[s]))
    aps = {s: bootstrap_aps(per_seed[s], samples, seed) for s in seeds}  # one image draw for all seeds
    full = {s: {n: per_seed[s][n].ap() for n in per_seed[s]} for s in seeds}
    tail = 100.0 * (1.0 - level) / 2.0
    out = []
    for a, b in itertools.combinations(names, 2):
        shared = [s for s in seeds if a in per_seed[s] and b in per_seed[s]]
        if len(shared) < 2:
            continue
        # Why per pair: a method run with extra seeds must not drop the others out of the table; a
        # pair pools exactly the seeds both ran (the same draw of seed picks for every pair of size n).
        picks = np.random.default_rng(seed + 1).integers(0, len(shared), size=(samples, len(shared)))
        per = np.stack([aps[s][a] - aps[s][b] for s in shared])  # (S, samples)
        diffs = per[picks.T, np.arange(samples)].mean(axis=0)
        low, high = np.percentile(diffs, [tail, 100.0 - tail]) if diffs.size else (np.nan, np.nan)
        ap_a = float(np.mean([full[s][a] for s in shared]))
        ap_b = float(np.mean([full[s][b] for s in shared]))
        out.append(
            PairedDifference(a, b, ap_a, ap_b, ap_a - ap_b, float(low), float(high), samples, level, len(shared))
        )
    return out


def resampled_documents(
    gt: Mapping[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Slow reference: GT and results for a drawn id list, each draw renamed ``1..n`` in draw order.

    A duplicated draw becomes a separate image with copies of its annotations and results, so it
    counts twice in ``evaluate_keypoints`` (which would otherwise de-duplicate ids).
    """
    images = {img["id"]: img for img in gt["images"]}
    anns: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    dets: dict[int, list[dict[str, Any]]] = {}
    for det in results:
        dets.setdefault(det["image_id"], []).append(det)
    new_images, new_anns, new_results = [], [], []
    for new_id, old_id in enumerate(image_ids, start=1):
        new_images.append({**images[int(old_id)], "id": new_id})
        for ann in anns.get(int(old_id), []):
            new_anns.append({**ann, "id": len(new_anns) + 1, "image_id": new_id})
        for det in dets.get(int(old_id), []):
            new_results.append({k: v for k, v in det.items() if k not in ("id", "area", "bbox")} | {"image_id": new_id})
    doc = {k: v for k, v in gt.items() if k not in ("images", "annotations")}
    doc.update(images=new_images, annotations=new_anns)
    return doc, new_results


def seed_summary(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; 0 for one seed) and count."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size)
