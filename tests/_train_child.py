"""Helpers of the reliability tests: a COCO-layout fixture maker and a child entry point.

Run as a script, ``python tests/_train_child.py ARGS...`` is ``python -m lrpose_bench ARGS...`` with
one test hook installed from the environment, so the production code carries no test switches:

``LRPOSE_TEST_KILL_IN_WRITE=NAME:N``
    on the N-th ``os.replace`` onto a file called NAME, the process SIGKILLs itself: the temp file
    of ``store.atomic_write`` is written and fsynced, the rename has not happened. That is the
    worst moment for a crash; the previous NAME must survive intact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

KILL_ENV = "LRPOSE_TEST_KILL_IN_WRITE"


#: the smallest CPU training the end-to-end tests use: hrnet-w8, one epoch, batch 4, one thread
TINY_TRAINING = (
    "--backbone", "hrnet-w8", "--set", "train.epochs=1", "--set", "train.batch_size=4",
    "--set", "train.threads=1", "--set", "train.device=cpu", "--no-progress",
)  # fmt: skip


def coco_train_args(method: str, coco: Path, out: Path, *extra: str) -> list[str]:
    """``train`` of one 64×48 cell of ``method`` on a COCO-layout folder with :data:`TINY_TRAINING`."""
    return ["train", "--method", method, "--res", "64x48", "--data", "coco", "--coco-root", str(coco),
            "--out", str(out), *TINY_TRAINING, *extra]  # fmt: skip


def make_coco_layout(root: Path, train_images: int = 10, val_images: int = 3, persons_per_image: int = 2) -> Path:
    """A tiny COCO 2017 folder (``annotations/person_keypoints_{train,val}2017.json``, ``train2017/``,
    ``val2017/``) built with ``conftest.make_coco_fixture``; returns ``root``."""
    from conftest import make_coco_fixture

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train_images, 0), ("val", val_images, 1)):
        scratch = root / f"_{split}"
        make_coco_fixture(scratch, num_images=count, persons_per_image=persons_per_image, seed=seed)
        shutil.move(str(scratch / "images"), str(root / f"{split}2017"))
        shutil.move(str(scratch / "annotations.json"), str(annotation_path(root, split)))
        shutil.rmtree(scratch)
    return root


def poison_heatmap_loss(monkeypatch: Any, on_call: int = 8) -> None:
    """Make the ``hrnet`` method's loss NaN on its ``on_call``-th call (with 10 images × 2 persons
    and batch 4, call 8 is epoch 2, iteration 3): a diverging step for the NaN-handling tests."""
    from lrpose_bench.baselines.heatmap import GaussianHeatmapMethod

    real_loss = GaussianHeatmapMethod.loss
    calls = [0]

    def nan_on_call(self, outputs, batch, stage):
        losses = real_loss(self, outputs, batch, stage)
        calls[0] += 1
        if calls[0] == on_call:
            losses = {**losses, "loss": losses["loss"] * float("nan")}
        return losses

    monkeypatch.setattr(GaussianHeatmapMethod, "loss", nan_on_call)


def annotation_path(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"person_keypoints_{split}2017.json"


def load_doc(root: Path, split: str) -> dict[str, Any]:
    return json.loads(annotation_path(root, split).read_text())


def save_doc(root: Path, split: str, doc: Any) -> None:
    annotation_path(root, split).write_text(json.dumps(doc))


def _install_kill_hook(spec: str) -> None:
    name, _, nth = spec.rpartition(":")
    target, count = int(nth), [0]
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(os.fsdecode(dst)).name == name:
            count[0] += 1
            if count[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)

    os.replace = replace  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    spec = os.environ.get(KILL_ENV)
    if spec:
        _install_kill_hook(spec)
    from lrpose_bench.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
