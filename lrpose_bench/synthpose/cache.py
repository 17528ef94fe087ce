"""SynthPose on disk: the folder layout, generation into a folder, and the cache keyed on the config.

:func:`ensure_synthpose` is what the suite calls (``lrpose-bench data synth``, the ``synth`` data
source): a complete folder for the same settings is reused, otherwise the data set is generated with
:func:`generate_synthpose` into a temporary folder and renamed into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrpose_bench.config import SynthConfig, check_rules
from lrpose_bench.errors import DataError
from lrpose_bench.synthpose.coco_writer import FORMAT_VERSION, _coco_document
from lrpose_bench.synthpose.pool import _default_workers, _run_tasks
from lrpose_bench.synthpose.sampling import _SPLITS

#: written last into a finished folder; its presence means "complete"
MARKER_NAME = "SYNTHPOSE_COMPLETE.json"


# ------------------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class SynthPosePaths:
    """Where a generated SynthPose folder keeps its parts."""

    root: Path
    train_annotations: Path  # root/annotations/person_keypoints_train.json
    val_annotations: Path  # root/annotations/person_keypoints_val.json
    train_images: Path  # root/train/
    val_images: Path  # root/val/
    tune_annotations: Path  # root/annotations/person_keypoints_tune.json (constants are chosen here)
    tune_images: Path  # root/tune/

    @classmethod
    def under(cls, root: Path | str) -> SynthPosePaths:
        root = Path(root)
        return cls(
            root=root,
            train_annotations=root / "annotations" / "person_keypoints_train.json",
            val_annotations=root / "annotations" / "person_keypoints_val.json",
            train_images=root / "train",
            val_images=root / "val",
            tune_annotations=root / "annotations" / "person_keypoints_tune.json",
            tune_images=root / "tune",
        )

    def annotations(self, split: str) -> Path:
        return {"train": self.train_annotations, "val": self.val_annotations, "tune": self.tune_annotations}[split]

    def images(self, split: str) -> Path:
        return {"train": self.train_images, "val": self.val_images, "tune": self.tune_images}[split]

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    def is_complete(self) -> bool:
        """True when the completion marker (written last) is present."""
        return self.marker.is_file()


def validate_synth_config(cfg: SynthConfig) -> None:
    """Reject settings that cannot make a data set, naming the key (``data.synth.<field>``); the
    ranges live in the schema (:class:`lrpose_bench.config.SynthConfig`)."""
    check_rules(cfg, "data.synth")


def generate_synthpose(
    out_dir: Path, cfg: SynthConfig, progress: bool = True, *, workers: int | None = None
) -> SynthPosePaths:
    """Write the data set into ``out_dir`` (images + COCO JSON); the completion marker is written last.

    ``workers``: processes for rendering (``None``: 2 when there are at least 2 CPUs and enough
    images, else in-process). The output does not depend on it: each image has its own seed stream.
    """
    validate_synth_config(cfg)
    paths = SynthPosePaths.under(out_dir)
    try:
        for folder in (paths.root / "annotations", *(paths.images(split) for split in _SPLITS)):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the SynthPose folder {paths.root}: {error.strerror}; choose another data.cache_dir"
        ) from None
    if paths.marker.exists():
        paths.marker.unlink()
    cfg_dict = dataclasses.asdict(cfg)
    counts = {"train": cfg.num_train_images, "val": cfg.num_val_images, "tune": cfg.num_tune_images}
    tasks = [(cfg_dict, split, index, str(paths.images(split))) for split in _SPLITS for index in range(counts[split])]
    results: dict[str, list[list[dict[str, Any]]]] = {split: [[] for _ in range(counts[split])] for split in _SPLITS}
    n_workers = _default_workers(len(tasks)) if workers is None else max(0, int(workers))

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="SynthPose", unit="img", disable=not progress)
    try:
        for split, index, annotations in _run_tasks(tasks, n_workers):
            results[split][index] = annotations
            bar.update(1)
    finally:
        bar.close()

    for split in _SPLITS:
        doc = _coco_document(cfg, split, results[split])
        text = json.dumps(doc, separators=(",", ":"))
        paths.annotations(split).write_text(text)
    marker = {"format_version": FORMAT_VERSION, "config": cfg_dict, "counts": {s: len(results[s]) for s in _SPLITS}}
    paths.marker.write_text(json.dumps(marker, indent=1, sort_keys=True))
    return paths


# ------------------------------------------------------------------------------------ cache
def cache_key(cfg: SynthConfig) -> str:
    """Folder name for ``cfg``: a hash of all its fields and :data:`FORMAT_VERSION`."""
    text = json.dumps({"format_version": FORMAT_VERSION, "config": dataclasses.asdict(cfg)}, sort_keys=True)
    return f"synthpose-v{FORMAT_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def ensure_synthpose(cache_dir: Path | str, cfg: SynthConfig, progress: bool = True) -> SynthPosePaths:
    """Cached generation under ``cache_dir`` (``~`` expanded), safe against interruption and races.

    A complete folder (marker present) is reused. Otherwise the data set is generated into a
    temporary folder next to the target and renamed into place atomically, so no interrupted run
    leaves a folder that looks complete; a stale incomplete target is moved aside first. If the rename
    loses a race against another process that finished first, that process's folder is used.
    """
    validate_synth_config(cfg)
    base = Path(cache_dir).expanduser()
    target = SynthPosePaths.under(base / cache_key(cfg))
    if target.is_complete():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.root.name}.tmp-", dir=base))
    except OSError as error:
        raise DataError(
            f"cannot write to the cache folder {base} ({error.strerror}); set data.cache_dir to a writable folder"
        ) from None
    try:
        generate_synthpose(tmp, cfg, progress=progress)
        if target.root.exists() and not target.is_complete():
            _discard(target.root, base)  # stale, incomplete (e.g. written by hand or an old version)
        try:
            os.rename(tmp, target.root)
        except OSError:
            if target.is_complete():  # another process won the race: use its folder
                return target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _discard(folder: Path, base: Path) -> None:
    """Move ``folder`` aside atomically, then delete it (a concurrent reader never sees half of it)."""
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=base))
    try:
        os.rename(folder, trash / "x")
    except OSError:
        pass  # someone else moved or replaced it
    shutil.rmtree(trash, ignore_errors=True)
