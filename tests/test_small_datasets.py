"""A COCO-format set smaller than one batch fine-tunes with the batch clamped (one warning line),
instead of being refused: the real-COCO path on 12 training instances with the default batch."""

from __future__ import annotations

import json

import pytest

from _train_child import make_coco_layout
from lrpose_bench.cli import main
from lrpose_bench.engine.trainer import effective_batch_size
from lrpose_bench.errors import TrainingDiverged


@pytest.mark.parametrize(
    "requested, instances, world, expected",
    [(32, 1000, 1, 32), (32, 32, 1, 32), (32, 12, 1, 12), (8, 12, 2, 6), (4, 12, 2, 4), (32, 3, 2, 1)],
)
def test_effective_batch_size(requested, instances, world, expected):
    if expected < requested:
        with pytest.warns(UserWarning, match="more than the training set holds"):
            assert effective_batch_size(requested, instances, world) == expected
    else:
        assert effective_batch_size(requested, instances, world) == expected


def test_fewer_instances_than_processes_is_refused():
    with pytest.raises(TrainingDiverged, match="fewer than the 4 processes"):
        effective_batch_size(32, 3, 4)


def test_twelve_instance_coco_set_trains_with_the_default_batch(tmp_path, capsys):
    coco = make_coco_layout(tmp_path / "coco", train_images=6, val_images=2, persons_per_image=2)
    out = tmp_path / "run"
    args = ["train", "--method", "hrnet", "--res", "64x48", "--data", "coco", "--coco-root", str(coco),
            "--out", str(out), "--backbone", "hrnet-w8", "--set", "train.epochs=1", "--set", "train.threads=1",
            "--no-progress"]  # fmt: skip
    with pytest.warns(UserWarning, match="training with batch 12 per process"):
        assert main(args) == 0
    assert "complete" in capsys.readouterr().out
    metrics = json.loads(next(out.glob("hrnet__*")).joinpath("metrics.json").read_text())
    assert metrics["timing"]["global_batch"] == 12
