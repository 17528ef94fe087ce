"""COCO-format keypoint data (real COCO 2017 or SynthPose): loading with validation, instances.

Every problem a user can fix becomes one :class:`~lrpose_bench.errors.DataError` line naming the
file and the field: missing or corrupt JSON, a document that is not COCO keypoints, keypoint arrays
of the wrong length, duplicate annotation ids, missing image files. Zero-area boxes are skipped and
counted, not fatal (COCO has a few).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrpose_bench.errors import DataError
from lrpose_bench.keypoints import NUM_JOINTS


@dataclass
class Instance:
    """One person to crop: a box (from ground truth or a detector) and its ground-truth joints."""

    image_id: int
    image_path: Path
    bbox: np.ndarray  # (4,) x, y, w, h in image pixels
    joints: np.ndarray  # (K, 2) image coordinates
    visibility: np.ndarray  # (K,) COCO flags 0/1/2
    score: float = 1.0  # box score (1 for ground-truth boxes)
    ann_id: int = -1
    area: float = 0.0


@dataclass
class KeypointSplit:
    """A split: the COCO ground-truth document (for pycocotools) and the instances to crop."""

    name: str  # "SynthPose val", "COCO val2017", ...
    annotation_file: Path
    image_root: Path
    gt: dict[str, Any]
    instances: list[Instance]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[int]:
        return sorted({inst.image_id for inst in self.instances})


def read_json(path: Path, what: str = "annotation file") -> Any:
    """Read JSON with one clear line for a missing, unreadable or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} not found; check the path (for COCO: --coco-root DIR with annotations/)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {what} {path}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{what} {path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "the file may be truncated: download or regenerate it"
        ) from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_coco_keypoints(doc: Any, path: Path, num_joints: int = NUM_JOINTS) -> None:
    """Check that ``doc`` is a COCO person-keypoints document; raise :class:`DataError` otherwise."""
    if not isinstance(doc, dict):
        raise DataError(
            f"{path}: expected a COCO JSON object with 'images' and 'annotations', got {type(doc).__name__}"
        )
    for key in ("images", "annotations"):
        if key not in doc:
            raise DataError(f"{path}: not a COCO keypoints file: missing top-level key {key!r}")
        if not isinstance(doc[key], list):
            raise DataError(f"{path}: field {key!r} must be a list, got {type(doc[key]).__name__}")
    image_ids: set[Any] = set()
    for index, image in enumerate(doc["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{path}: images[{index}] needs 'id' and 'file_name'")
        if not isinstance(image["file_name"], str) or isinstance(image["id"], bool) or not isinstance(image["id"], int):
            raise DataError(f"{path}: images[{index}] has a non-integer 'id' or a non-string 'file_name'")
        if image["id"] in image_ids:
            raise DataError(f"{path}: duplicate image id {image['id']} in images[{index}]")
        image_ids.add(image["id"])
    ann_ids: set[Any] = set()
    expected = 3 * num_joints
    for index, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{index}]"
        if not isinstance(ann, dict):
            raise DataError(f"{where} is not an object")
        if "id" not in ann or isinstance(ann["id"], bool) or not isinstance(ann["id"], int):
            raise DataError(f"{where} has no integer 'id'")
        where = f"{path}: annotation id {ann['id']}"
        if ann["id"] in ann_ids:
            raise DataError(f"{where} is duplicated; annotation ids must be unique")
        ann_ids.add(ann["id"])
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{where} refers to image_id {ann.get('image_id')!r}, which is not in 'images'")
        keypoints = ann.get("keypoints")
        if not isinstance(keypoints, list):
            raise DataError(f"{where} has no 'keypoints' list: this is not a COCO keypoints file")
        if len(keypoints) != expected:
            raise DataError(
                f"{where} has {len(keypoints)} keypoint numbers, expected {expected} "
                f"({num_joints} joints × x,y,v in COCO order)"
            )
        if not all(_number(v) for v in keypoints):
            raise DataError(f"{where} has non-numeric keypoint values")
        if any(v not in (0, 1, 2) for v in keypoints[2::3]):
            raise DataError(f"{where} has visibility flags other than 0/1/2")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            raise DataError(f"{where} has no valid 'bbox' [x, y, w, h]")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1, True, False):
            raise DataError(f"{where} has an invalid 'iscrowd' value {ann['iscrowd']!r}")
        if "area" in ann and not _number(ann["area"]):
            raise DataError(f"{where} has a non-numeric 'area'")


def normalise_gt(doc: dict[str, Any]) -> dict[str, Any]:
    """A ground-truth document pycocotools accepts: person category, area and iscrowd filled in."""
    gt = {
        "images": doc["images"],
        "annotations": [],
        "categories": doc.get("categories") or [{"id": 1, "name": "person"}],
    }
    for ann in doc["annotations"]:
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("category_id", 1)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))
        gt["annotations"].append(ann)
    return gt


def coco_from_dict(gt: dict[str, Any]):  # -> pycocotools.coco.COCO
    """pycocotools ``COCO`` built in memory (its index-building chatter suppressed)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_instances(gt: dict[str, Any], image_root: Path, min_keypoints: int = 1) -> tuple[list[Instance], dict[str, int]]:
    """Instances from ground-truth boxes (non-crowd, ≥ ``min_keypoints`` labelled joints, area > 0)."""
    images = {image["id"]: image for image in gt["images"]}
    instances: list[Instance] = []
    skipped = {"zero_area_box": 0, "crowd": 0, "too_few_keypoints": 0}
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            skipped["zero_area_box"] += 1
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        if int((kps[:, 2] > 0).sum()) < min_keypoints:
            skipped["too_few_keypoints"] += 1
            continue
        image = images[ann["image_id"]]
        instances.append(
            Instance(
                image_id=int(ann["image_id"]),
                image_path=Path(image_root) / image["file_name"],
                bbox=np.array([x, y, w, h]),
                joints=kps[:, :2].copy(),
                visibility=kps[:, 2].copy(),
                score=1.0,
                ann_id=int(ann["id"]),
                area=float(ann.get("area", w * h)),
            )
        )
    return instances, skipped


def validate_detections(dets: Any, path: Path) -> None:
    """Check a COCO detection-results file entry by entry, as :func:`validate_coco_keypoints` checks
    annotations: one :class:`DataError` naming the file, the entry index and the field (a string
    score, a NaN box or a 3-number box would otherwise surface as a traceback, or as a complaint
    about the annotation file, far from the entry that is wrong)."""
    if not isinstance(dets, list):
        raise DataError(f"person-box file {path}: expected a list of COCO detection results, got {type(dets).__name__}")
    if not dets:
        raise DataError(
            f"person-box file {path} holds no detections (an empty list); pass the detection results of this split"
        )
    for index, det in enumerate(dets):
        where = f"person-box file {path}: entry {index}"
        if not isinstance(det, dict):
            raise DataError(f"{where} is {type(det).__name__}, not an object with image_id, bbox and score")
        missing = [key for key in ("image_id", "bbox", "score") if key not in det]
        if missing:
            raise DataError(f"{where} needs image_id, bbox and score (missing {', '.join(missing)})")
        if isinstance(det["image_id"], bool) or not isinstance(det["image_id"], int):
            raise DataError(f"{where}: 'image_id' must be an integer image id, got {det['image_id']!r}")
        bbox = det["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            raise DataError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {_short(bbox)}")
        if not _number(det["score"]):
            raise DataError(f"{where}: 'score' must be a finite number, got {_short(det['score'])}")
        category = det.get("category_id", 1)
        if isinstance(category, bool) or not isinstance(category, int):
            raise DataError(f"{where}: 'category_id' must be an integer (1 = person), got {category!r}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detection_instances(
    gt: dict[str, Any], image_root: Path, boxes_file: Path, score_threshold: float
) -> tuple[list[Instance], dict[str, int]]:
    """Instances from a COCO detection-results file (person boxes; HRNet/UDP use such a file)."""
    dets = read_json(boxes_file, "person-box file")
    validate_detections(dets, boxes_file)
    images = {image["id"]: image for image in gt["images"]}
    instances: list[Instance] = []
    skipped = {"zero_area_box": 0, "low_score": 0, "not_person": 0}
    matched = 0
    for det in dets:
        if det.get("category_id", 1) != 1:
            skipped["not_person"] += 1
            continue
        if det["image_id"] not in images:
            continue
        matched += 1
        if det["score"] < score_threshold:
            skipped["low_score"] += 1
            continue
        x, y, w, h = (float(v) for v in det["bbox"])
        if w <= 0 or h <= 0:
            skipped["zero_area_box"] += 1
            continue
        image = images[det["image_id"]]
        instances.append(
            Instance(
                image_id=int(det["image_id"]),
                image_path=Path(image_root) / image["file_name"],
                bbox=np.array([x, y, w, h]),
                joints=np.zeros((NUM_JOINTS, 2)),
                visibility=np.zeros(NUM_JOINTS),
                score=float(det["score"]),
            )
        )
    if matched == 0:
        raise DataError(
            f"person-box file {boxes_file} has no boxes for the images of this split "
            "(its image ids belong to another set): pass the detections for this split"
        )
    return instances, skipped


def check_images_exist(instances: Iterable[Instance], annotation_file: Path) -> None:
    """Name the first missing image file instead of failing later in a data-loader worker."""
    seen: set[Path] = set()
    missing: list[Path] = []
    for inst in instances:
        if inst.image_path in seen:
            continue
        seen.add(inst.image_path)
        if not inst.image_path.is_file():
            missing.append(inst.image_path)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(
            f"image file {missing[0]} (listed in {annotation_file}) is missing{more}; check the image folder"
        )


def load_split(
    name: str,
    annotation_file: Path,
    image_root: Path,
    *,
    min_keypoints: int = 1,
    person_boxes: Path | None = None,
    box_score_threshold: float = 0.0,
    max_instances: int | None = None,
) -> KeypointSplit:
    """Load and validate one split; instances from ground truth or from a person-box file."""
    annotation_file = Path(annotation_file)
    doc = read_json(annotation_file)
    validate_coco_keypoints(doc, annotation_file)
    gt = normalise_gt(doc)
    if person_boxes is not None:
        instances, skipped = detection_instances(gt, image_root, Path(person_boxes), box_score_threshold)
    else:
        instances, skipped = gt_instances(gt, image_root, min_keypoints)
    if max_instances is not None:
        gt, instances = whole_images(gt, instances, max_instances)
    if not instances and person_boxes is not None:  # the boxes were filtered away, not the annotations
        raise DataError(
            f"person-box file {person_boxes}: no usable person boxes for {annotation_file} after filtering "
            f"(skipped: {', '.join(f'{k}={v}' for k, v in skipped.items() if v) or 'none'}); "
            "lower data.box_score_threshold, or pass the detections of this split"
        )
    if not instances:
        raise DataError(
            f"{annotation_file}: no usable person instances after filtering "
            f"(skipped: {', '.join(f'{k}={v}' for k, v in skipped.items() if v) or 'none'}); "
            "check min_keypoints / box filters"
        )
    if skipped.get("zero_area_box"):
        warnings.warn(
            f"{annotation_file}: skipped {skipped['zero_area_box']} annotation(s) with zero-area boxes",
            stacklevel=2,
        )
    check_images_exist(instances, annotation_file)
    return KeypointSplit(name, annotation_file, Path(image_root), gt, instances, skipped)


def whole_images(
    gt: dict[str, Any], instances: list[Instance], max_instances: int
) -> tuple[dict[str, Any], list[Instance]]:
    """At most ``max_instances`` instances, as whole images, and the ground truth of those images only.

    Why: pycocotools scores every image of the ground-truth document, so a split cut at N instances
    but scored against the full document counts every person it left out as a miss (AP falls with
    the cut); and an image cut in half counts its other persons as misses. Images are taken in the
    order their first instance appears; the first image is kept whole even when it alone exceeds N.
    """
    per_image: dict[int, int] = {}
    for inst in instances:
        per_image[inst.image_id] = per_image.get(inst.image_id, 0) + 1
    kept: set[int] = set()
    total = 0
    for image_id, count in per_image.items():
        if kept and total + count > max_instances:
            break
        kept.add(image_id)
        total += count
    subset = {
        "images": [im for im in gt["images"] if im["id"] in kept],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in kept],
        "categories": gt["categories"],
    }
    return subset, [inst for inst in instances if inst.image_id in kept]


def hold_out_images(split: KeypointSplit, num_images: int, seed: int, name: str) -> tuple[KeypointSplit, KeypointSplit]:
    """``(rest, held_out)``: ``num_images`` images of ``split`` drawn with ``seed`` (the same on every
    machine: a permutation of the sorted image ids) become their own split with its own ground-truth
    document, and leave ``split``. Why: the COCO tune split is a fixed slice of train2017, and a
    constant chosen on images the model trained on would be chosen on the training set."""
    ids = split.image_ids
    if not 0 < num_images < len(ids):
        raise DataError(
            f"data.tune_images: {num_images} must lie in 1..{len(ids) - 1} ({split.name} has {len(ids)} images "
            "with usable instances)"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    chosen = {ids[i] for i in order[:num_images]}

    def part(keep: Callable[[int], bool], part_name: str) -> KeypointSplit:
        gt = {
            "images": [im for im in split.gt["images"] if keep(im["id"])],
            "annotations": [a for a in split.gt["annotations"] if keep(a["image_id"])],
            "categories": split.gt["categories"],
        }
        instances = [inst for inst in split.instances if keep(inst.image_id)]
        return KeypointSplit(part_name, split.annotation_file, split.image_root, gt, instances, dict(split.skipped))

    return part(lambda i: i not in chosen, split.name), part(lambda i: i in chosen, name)
