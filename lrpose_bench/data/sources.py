"""Data sources: SynthPose (embedded default) and COCO 2017 (``--data coco --coco-root DIR``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lrpose_bench.config import DataConfig
from lrpose_bench.data.coco import KeypointSplit, hold_out_images, load_split, whole_images
from lrpose_bench.errors import DataError
from lrpose_bench.registry import DATASETS, register_dataset


@dataclass
class DataBundle:
    """The training split and the scored split of one run (``val``, the tune split while choosing
    constants, or the training images as a fitting diagnostic: ``data.eval_split``), and the label
    tables print next to numbers."""

    name: str  # "SynthPose", "COCO"
    train: KeypointSplit
    val: KeypointSplit

    @property
    def eval_label(self) -> str:
        """Data-set label of every number measured on ``val`` ("SynthPose val", "COCO val2017")."""
        return self.val.name


@register_dataset("synth")
def synth_source(cfg: DataConfig, progress: bool = True) -> DataBundle:
    """SynthPose, generated once into the cache folder and reused."""
    from lrpose_bench.synthpose import ensure_synthpose

    paths = ensure_synthpose(Path(cfg.cache_dir).expanduser(), cfg.synth, progress=progress)
    train = load_split(
        "SynthPose train",
        paths.train_annotations,
        paths.train_images,
        min_keypoints=cfg.min_keypoints,
        max_instances=cfg.max_train_instances,
    )
    split = cfg.eval_split  # "val" (reported numbers), "tune" (choosing constants), "train" (diagnostic)
    val = load_split(
        f"SynthPose {split}",
        paths.annotations(split),
        paths.images(split),
        min_keypoints=cfg.min_keypoints,
        max_instances=cfg.max_val_instances,
    )
    return DataBundle("SynthPose", train, val)


@register_dataset("coco")
def coco_source(cfg: DataConfig, progress: bool = True) -> DataBundle:
    """COCO 2017 keypoints in the standard layout under ``coco_root``."""
    if not cfg.coco_root:
        raise DataError("--data coco needs --coco-root DIR (the folder with annotations/, train2017/, val2017/)")
    root = Path(cfg.coco_root).expanduser()
    if not root.is_dir():
        raise DataError(f"COCO root {root} does not exist; pass the folder with annotations/, train2017/, val2017/")
    train = load_split(
        "COCO train2017",
        root / cfg.train_annotations,
        root / cfg.train_images,
        min_keypoints=cfg.min_keypoints,
        max_instances=cfg.max_train_instances,
    )
    tune = None
    if cfg.tune_images > 0:
        train, tune = hold_out_images(train, cfg.tune_images, cfg.tune_seed, "COCO tune (train2017 slice)")
    if cfg.eval_split == "tune":
        if tune is None:
            raise DataError(
                "data.eval_split: tune needs a COCO tune split; pass --tune-split N (N train2017 images held out)"
            )
        return DataBundle("COCO", train, tune)
    if cfg.eval_split == "train":
        # the fitting diagnostic scores the training images (tune slice already removed) on their
        # ground-truth boxes; data.max_val_instances caps it, since train2017 holds ~150k people
        return DataBundle("COCO", train, capped(train, cfg.max_val_instances))
    boxes = person_box_file(cfg.person_boxes, root)
    val = load_split(
        "COCO val2017",
        root / cfg.val_annotations,
        root / cfg.val_images,
        min_keypoints=cfg.min_keypoints,
        person_boxes=boxes,
        box_score_threshold=cfg.box_score_threshold,
        max_instances=cfg.max_val_instances,
    )
    return DataBundle("COCO", train, val)


def capped(split: KeypointSplit, max_instances: int | None) -> KeypointSplit:
    """``split`` cut to at most ``max_instances`` instances, as whole images with their ground
    truth only (:func:`~lrpose_bench.data.coco.whole_images`)."""
    if max_instances is None:
        return split
    gt, instances = whole_images(split.gt, split.instances, max_instances)
    return replace(split, gt=gt, instances=instances)


def person_box_file(person_boxes: str | None, coco_root: Path) -> Path | None:
    """The detection-results file: absolute or ``~`` paths as given; a relative path is looked up
    under the COCO root first (the ``paper`` profile names HRNet's file relative to it), then the
    working directory. ``None`` scores ground-truth boxes."""
    if not person_boxes:
        return None
    path = Path(person_boxes).expanduser()
    if path.is_absolute() or path.exists():
        return path
    under_root = coco_root / path
    if under_root.exists():
        return under_root
    raise DataError(
        f"data.person_boxes: {person_boxes} not found under {coco_root} or the working directory; pass "
        "--person-boxes FILE (a COCO detection-results JSON) or --set data.person_boxes=null for ground-truth boxes"
    )


def load_data(cfg: DataConfig, progress: bool = True) -> DataBundle:
    """The data bundle for ``cfg.source`` (built-in or registered by a plugin)."""
    factory = DATASETS.get(cfg.source)
    return factory(cfg, progress=progress)
