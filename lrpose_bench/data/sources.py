"""Data sources: SynthPose (embedded default) and COCO 2017 (``--data coco --coco-root DIR``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lrpose_bench.config import DataConfig
from lrpose_bench.data.coco import KeypointSplit, load_split
from lrpose_bench.errors import DataError
from lrpose_bench.registry import DATASETS, register_dataset


@dataclass
class DataBundle:
    """The training and evaluation splits of one run, and the label tables print next to numbers."""

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
    from lrpose_bench.data.synthetic import ensure_synthpose

    paths = ensure_synthpose(Path(cfg.cache_dir).expanduser(), cfg.synth, progress=progress)
    train = load_split(
        "SynthPose train",
        paths.train_annotations,
        paths.train_images,
        min_keypoints=cfg.min_keypoints,
        max_instances=cfg.max_train_instances,
    )
    val = load_split(
        "SynthPose val",
        paths.val_annotations,
        paths.val_images,
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
    boxes = Path(cfg.person_boxes).expanduser() if cfg.person_boxes else None
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


def load_data(cfg: DataConfig, progress: bool = True) -> DataBundle:
    """The data bundle for ``cfg.source`` (built-in or registered by a plugin)."""
    factory = DATASETS.get(cfg.source)
    return factory(cfg, progress=progress)
