"""Keypoint error taxonomy of Ronchi & Perona (ICCV 2017, "Benchmarking and Error Diagnosis in
Multi-Instance Pose Estimation"), computed as their coco-analyze does
(``pycocotools/cocoanalyze.py``: ``_find_dt_matches`` and ``_find_kpt_errors``).

Why a suite about codecs needs it: AP mixes two kinds of error. A codec (arg-max, DARK, offsets,
CAL's weighed offsets) moves a prediction by a fraction of a heatmap pixel: it turns *jitter* into
*good*. It cannot repair a prediction placed on the person's other wrist (*inversion*), on another
person (*swap*) or nowhere near (*miss*): those come from the backbone and the data. Where
inversions dominate, two codecs can differ clearly in localisation and still not separate in AP.
This module says which errors a method makes, and what its AP would be with one kind fixed.

The taxonomy counts a left/right confusion as an *inversion* only when the prediction lands within
``t_low`` of the mirror joint; a looser method's confusions fall under *miss*. So a more precise
codec shows more inversions for the same confusion rate. :func:`nearer_mirror` is the
threshold-free count next to it: lateral joints whose prediction is nearer the mirror joint than its
own (measurements in ``docs/reading-reports.md``). :func:`collapsed_partners` counts the failure
behind the worst of those confusions: a network whose left and right channels of a pair have learnt
the same map puts both predictions on one point (one of the two is then nearer its mirror, a coin
toss which), so the pair's predicted separation is a small fraction of the true one.

Per matched detection and labelled joint ``j`` (``v > 0``) the keypoint similarity to a ground
truth keypoint is ``ks = exp(-d² / (2 · area · (2σ_j)²))`` (Eq. 16's term; pycocotools' ``vars =
(2σ)²``). It is taken against every person of the image, as labelled and with left and right
swapped (their ``flip_index`` view), the matched person first. With ``ks*`` the largest of these and
``t_low``, ``t_high`` the thresholds (coco-analyze ``jitterKsThrs = [0.5, 0.85]``):

* **good**: ``ks* > t_high`` on the matched person's own joint;
* **jitter**: ``t_low ≤ ks* ≤ t_high`` on the matched person's own joint;
* **inversion**: ``ks* ≥ t_low`` on the matched person's mirror joint;
* **swap**: ``ks* ≥ t_low`` on another person (either view);
* **miss**: ``ks* < t_low``.

Detections are matched to ground truth by ``COCOeval.evaluate`` at the single OKS threshold
``match_oks`` (coco-analyze ``oksLocThrs = 0.1``); unmatched detections and unmatched ground truths
are background errors, not keypoint errors, and are not classified here.

*Fixing* a kind of error moves each such keypoint onto its own ground truth joint at the distance
that keeps the similarity it had with the joint it actually hit (a miss: at ``t_low``, a jitter: at
``t_high``), along x, as coco-analyze's ``correct_kpts_x``. Two deliberate differences: the distance
here is the one that gives exactly that similarity, ``sqrt(-ln ks · 2 · area · (2σ)²)`` (coco-analyze
writes ``σ²`` for ``(2σ)²`` there, half the distance, so its fixed joints score better than they
hit); and coco-analyze then reads AP at its lowest OKS threshold, we read the suite's COCO AP
(0.50:0.95), the number every other table reports.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrpose_bench.keypoints import OKS_SIGMAS, flip_index

ERROR_TYPES: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
GOOD, JITTER, INVERSION, SWAP, MISS = range(len(ERROR_TYPES))
UNLABELLED = -1


@dataclass(frozen=True)
class Thresholds:
    """``low``/``high``: the keypoint-similarity bounds of jitter (coco-analyze ``jitterKsThrs``);
    ``match_oks``: the OKS at which a detection counts as matched (``oksLocThrs``);
    ``collapse_ratio``: a left/right pair counts as collapsed when its two predictions lie closer
    together than this fraction of its two ground-truth joints (:func:`collapsed_partners`)."""

    low: float = 0.5
    high: float = 0.85
    match_oks: float = 0.1
    collapse_ratio: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.low < self.high < 1.0:
            raise ValueError(f"keypoint-error thresholds need 0 < low < high < 1, got low={self.low}, high={self.high}")
        if not 0.0 < self.match_oks < 1.0:
            raise ValueError(f"keypoint-error match_oks must lie in (0, 1), got {self.match_oks}")
        if not 0.0 < self.collapse_ratio < 1.0:
            raise ValueError(f"keypoint-error collapse_ratio must lie in (0, 1), got {self.collapse_ratio}")


def keypoint_similarity(pred: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray = OKS_SIGMAS) -> np.ndarray:
    """Per-joint ``ks = exp(-d²/(2·area·(2σ)²))`` of predictions (K, 2) against joints (K, 2)."""
    d2 = np.sum((np.asarray(pred, float) - np.asarray(gt, float)) ** 2, axis=-1)
    return np.exp(-d2 / ((2.0 * sigmas) ** 2) / (area + np.spacing(1)) / 2.0)


def classify_detection(
    pred: np.ndarray,
    people: Sequence[tuple[np.ndarray, float]],
    thresholds: Thresholds = Thresholds(),
    sigmas: np.ndarray = OKS_SIGMAS,
    mirror: np.ndarray | None = None,
) -> np.ndarray:
    """Error type per joint (``ERROR_TYPES`` index, ``UNLABELLED`` where the matched person's joint
    has ``v = 0``) of one detection ``pred`` (K, 2); ``people`` lists ``(keypoints (K, 3), area)``
    of every ground truth person of the image, the matched one first."""
    pred = np.asarray(pred, float)
    mirror = flip_index(pred.shape[0]) if mirror is None else mirror
    n = len(people)
    ks = np.full((2 * n, pred.shape[0]), -1.0)
    for i, (kpts, area) in enumerate(people):
        kpts = np.asarray(kpts, float).reshape(-1, 3)
        for row, view in ((i, kpts), (n + i, kpts[mirror])):
            labelled = view[:, 2] > 0
            sim = keypoint_similarity(pred, view[:, :2], area, sigmas)
            ks[row] = np.where(labelled, sim, -1.0)
    best = ks.max(axis=0)
    which = ks.argmax(axis=0)
    own_labelled = np.asarray(people[0][0], float).reshape(-1, 3)[:, 2] > 0
    labels = np.full(pred.shape[0], MISS)
    hit = best >= thresholds.low
    labels[hit & (which == 0) & (best > thresholds.high)] = GOOD
    labels[hit & (which == 0) & (best <= thresholds.high)] = JITTER
    labels[hit & (which == n)] = INVERSION
    labels[hit & (which != 0) & (which != n)] = SWAP
    labels[~own_labelled] = UNLABELLED
    return labels


def nearer_mirror(
    pred: np.ndarray, keypoints: np.ndarray, mirror: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, confused) per joint of one detection ``pred`` (K, 2) on its matched person
    ``keypoints`` (K, 3): *eligible* joints have a left/right partner and both are labelled;
    *confused* ones are eligible and nearer the partner's ground truth than their own, whatever the
    distance (the threshold-free left/right confusion; partners share σ, so pixels compare fairly)."""
    pred = np.asarray(pred, float)
    gt = np.asarray(keypoints, float).reshape(-1, 3)
    mirror = np.asarray(flip_index(pred.shape[0]) if mirror is None else mirror)
    eligible = (mirror != np.arange(pred.shape[0])) & (gt[:, 2] > 0) & (gt[mirror, 2] > 0)
    own = np.sum((pred - gt[:, :2]) ** 2, axis=-1)
    other = np.sum((pred - gt[mirror, :2]) ** 2, axis=-1)
    return eligible, eligible & (other < own)


def collapsed_partners(
    pred: np.ndarray, keypoints: np.ndarray, ratio: float, mirror: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(eligible, collapsed) per joint of one detection ``pred`` (K, 2) on its matched person
    ``keypoints`` (K, 3): *eligible* joints have a left/right partner, both labelled at distinct
    points; *collapsed* ones are eligible and predicted closer to their partner's prediction than
    ``ratio`` × the distance between the two ground-truth joints.

    Why: a left/right confusion has two causes that the nearer-mirror share cannot tell apart. A
    network can see both sides and pick the wrong one (the two predictions stay apart, swapped), or
    have learnt the same map for both channels of a pair (each channel peaks on whichever side is
    stronger, so both predictions land on one point: a collapse). Measured on SynthPose at 64×48
    (standard profile, hrnet-w16-slim): CAL's two ankle predictions lie at a median 0.04 of their
    true separation, UDP's at 0.73, DARK's at 0.92; ``ratio`` 0.25 sits between (docs/reading-reports.md)."""
    pred = np.asarray(pred, float)
    gt = np.asarray(keypoints, float).reshape(-1, 3)
    mirror = np.asarray(flip_index(pred.shape[0]) if mirror is None else mirror)
    true_gap = np.linalg.norm(gt[:, :2] - gt[mirror, :2], axis=-1)
    eligible = (mirror != np.arange(pred.shape[0])) & (gt[:, 2] > 0) & (gt[mirror, 2] > 0) & (true_gap > 0)
    predicted_gap = np.linalg.norm(pred - pred[mirror], axis=-1)
    return eligible, eligible & (predicted_gap < ratio * true_gap)


def corrected_keypoints(
    pred: np.ndarray,
    labels: np.ndarray,
    people: Sequence[tuple[np.ndarray, float]],
    fix: Sequence[str],
    thresholds: Thresholds = Thresholds(),
    sigmas: np.ndarray = OKS_SIGMAS,
    mirror: np.ndarray | None = None,
) -> np.ndarray:
    """``pred`` (K, 2) with the joints of the error types in ``fix`` moved onto the matched person's
    joint, offset along x by the distance at which ks equals what the joint had (coco-analyze
    ``correct_kpts_x``): its best ks for inversions and swaps, ``low`` for misses, ``high`` for
    jitter. Other joints are left where they were."""
    unknown = sorted(set(fix) - set(ERROR_TYPES[1:]))
    if unknown:
        raise ValueError(f"cannot fix keypoint errors of type {unknown}; choose from {list(ERROR_TYPES[1:])}")
    pred = np.asarray(pred, float).copy()
    kpts, area = people[0]
    gt = np.asarray(kpts, float).reshape(-1, 3)
    mirror = flip_index(pred.shape[0]) if mirror is None else mirror
    best = np.zeros(pred.shape[0])
    for other, other_area in people:
        view = np.asarray(other, float).reshape(-1, 3)
        for v in (view, view[mirror]):
            # the distance is read at the matched person's scale, as coco-analyze does for swaps
            sim = np.where(v[:, 2] > 0, keypoint_similarity(pred, v[:, :2], other_area, sigmas), 0.0)
            best = np.maximum(best, sim)
    target_ks = {
        JITTER: np.full_like(best, thresholds.high),
        MISS: np.full_like(best, thresholds.low),
        INVERSION: best,
        SWAP: best,
    }
    for name in fix:
        code = ERROR_TYPES.index(name)
        chosen = labels == code
        ks = np.clip(target_ks[code][chosen], np.spacing(1), 1.0 - np.spacing(1))
        distance = np.sqrt(-np.log(ks) * 2.0 * area * (2.0 * sigmas[chosen]) ** 2)
        pred[chosen, 0] = gt[chosen, 0] + distance
        pred[chosen, 1] = gt[chosen, 1]
    return pred


@dataclass(frozen=True)
class ErrorBreakdown:
    """Keypoint error counts of one set of predictions, and the AP with each kind fixed."""

    counts: dict[str, int]
    matched: int  # detections matched at ``match_oks``
    detections: int
    ap: float
    ap_fixed: dict[str, float]  # error type → AP with that type fixed
    thresholds: Thresholds = Thresholds()
    #: per joint (index = joint id; 0 for joints without a partner): lateral joints with both partners
    #: labelled, and those predicted nearer the partner (:func:`nearer_mirror`)
    lateral_by_joint: tuple[int, ...] = ()
    nearer_mirror_by_joint: tuple[int, ...] = ()
    #: per joint: lateral joints with both partners labelled apart, and those whose pair's
    #: predictions collapsed onto one point (:func:`collapsed_partners`)
    separable_by_joint: tuple[int, ...] = ()
    collapsed_by_joint: tuple[int, ...] = ()
    #: the COCO results with each kind fixed (for a bootstrap of the fixed AP); not compared or printed
    fixed_results: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def labelled(self) -> int:
        return int(sum(self.counts.values()))

    def share(self, name: str) -> float:
        """Fraction of the matched detections' labelled joints with error type ``name``."""
        return self.counts[name] / self.labelled if self.labelled else float("nan")

    @property
    def lateral(self) -> int:
        return sum(self.lateral_by_joint)

    @property
    def nearer_mirror(self) -> int:
        return sum(self.nearer_mirror_by_joint)

    @property
    def nearer_mirror_share(self) -> float:
        """Fraction of the lateral joints (both partners labelled) predicted nearer the partner."""
        return self.nearer_mirror / self.lateral if self.lateral else float("nan")

    def nearer_mirror_share_of(self, joints: Sequence[int]) -> float:
        """:attr:`nearer_mirror_share` restricted to ``joints`` (e.g. a left/right pair: which body
        part a method confuses, not only how often). Joints the predictions do not have (a skeleton
        with fewer than COCO's 17) count as unlabelled."""
        return _share_of(self.nearer_mirror_by_joint, self.lateral_by_joint, joints)

    @property
    def collapsed_share(self) -> float:
        """Fraction of the lateral joints (both partners labelled apart) whose pair collapsed."""
        return self.collapsed_share_of(range(len(self.separable_by_joint)))

    def collapsed_share_of(self, joints: Sequence[int]) -> float:
        """:attr:`collapsed_share` restricted to ``joints`` (a left/right pair: which body part)."""
        return _share_of(self.collapsed_by_joint, self.separable_by_joint, joints)


def _share_of(counted: Sequence[int], eligible: Sequence[int], joints: Iterable[int]) -> float:
    """Σ counted / Σ eligible over ``joints`` (per-joint counts; joints beyond them count as
    unlabelled); NaN when none is eligible."""
    present = [j for j in joints if 0 <= j < len(eligible)]
    total = sum(eligible[j] for j in present)
    return sum(counted[j] for j in present) / total if total else float("nan")


def match_detections(coco_gt: Any, results: list[dict[str, Any]], match_oks: float) -> dict[int, int]:
    """Detection index in ``results`` → matched ground-truth annotation id, by ``COCOeval.evaluate``
    at the single OKS threshold ``match_oks`` (area "all", greedy by score, as every AP)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {}
    with contextlib.redirect_stdout(io.StringIO()):
        dets = [dict(r, _index=i) for i, r in enumerate(results)]
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.iouThrs = np.array([match_oks])
        evaluator.evaluate()
    index_of = {ann["id"]: ann["_index"] for ann in coco_dt.dataset["annotations"]}
    num_images = len(evaluator.params.imgIds)
    matches: dict[int, int] = {}
    for record in evaluator.evalImgs[:num_images]:  # area range "all"
        if record is None:
            continue
        for det_id, gt_id in zip(record["dtIds"], record["dtMatches"][0], strict=True):
            if gt_id:
                matches[index_of[det_id]] = int(gt_id)
    return matches


def error_breakdown(
    gt: Mapping[str, Any] | Any,
    results: list[dict[str, Any]],
    thresholds: Thresholds = Thresholds(),
    fix: Sequence[str] = ("jitter", "inversion", "swap", "miss"),
    sigmas: np.ndarray = OKS_SIGMAS,
) -> ErrorBreakdown:
    """Classify every labelled joint of every matched detection and score AP with each kind fixed.

    ``gt``: a COCO keypoint ground-truth document or an indexed ``pycocotools.coco.COCO``;
    ``results``: COCO keypoint results (``image_id``, ``keypoints``, ``score``)."""
    from lrpose_bench.data.coco import coco_from_dict
    from lrpose_bench.evaluation.coco_metric import evaluate_keypoints

    coco_gt = gt if hasattr(gt, "loadRes") else coco_from_dict(dict(gt))
    matches = match_detections(coco_gt, results, thresholds.match_oks)
    counts = dict.fromkeys(ERROR_TYPES, 0)
    lateral: list[np.ndarray] = []
    confused: list[np.ndarray] = []
    separable: list[np.ndarray] = []
    collapsed: list[np.ndarray] = []
    fixed = {name: [dict(r) for r in results] for name in fix}
    for index, gt_id in matches.items():
        result = results[index]
        own = coco_gt.anns[gt_id]
        others = [a for a in coco_gt.imgToAnns[own["image_id"]] if a["id"] != gt_id and a.get("num_keypoints", 1) > 0]
        people = [(np.asarray(a["keypoints"], float), float(a["area"])) for a in (own, *others)]
        triples = np.asarray(result["keypoints"], float).reshape(-1, 3)
        labels = classify_detection(triples[:, :2], people, thresholds, sigmas)
        for code, name in enumerate(ERROR_TYPES):
            counts[name] += int(np.count_nonzero(labels == code))
        eligible, nearer = nearer_mirror(triples[:, :2], people[0][0])
        lateral.append(eligible)
        confused.append(nearer)
        apart, together = collapsed_partners(triples[:, :2], people[0][0], thresholds.collapse_ratio)
        separable.append(apart)
        collapsed.append(together)
        for name in fix:
            moved = corrected_keypoints(triples[:, :2], labels, people, (name,), thresholds, sigmas)
            fixed[name][index]["keypoints"] = np.column_stack([moved, triples[:, 2]]).reshape(-1).tolist()
    document = coco_gt.dataset
    ap = evaluate_keypoints(document, [dict(r) for r in results])["AP"] if results else 0.0
    ap_fixed = {name: evaluate_keypoints(document, rs)["AP"] if rs else 0.0 for name, rs in fixed.items()}
    return ErrorBreakdown(
        counts=counts,
        matched=len(matches),
        detections=len(results),
        ap=ap,
        ap_fixed=ap_fixed,
        thresholds=thresholds,
        lateral_by_joint=tuple(int(v) for v in np.sum(lateral, axis=0)) if lateral else (),
        nearer_mirror_by_joint=tuple(int(v) for v in np.sum(confused, axis=0)) if confused else (),
        separable_by_joint=tuple(int(v) for v in np.sum(separable, axis=0)) if separable else (),
        collapsed_by_joint=tuple(int(v) for v in np.sum(collapsed, axis=0)) if collapsed else (),
        fixed_results=fixed,
    )
