"""What a run scores: a capped split is whole images with their ground truth only (a cut split
scored against the full document counted every left-out person as a miss), and ``data.eval_split:
train`` scores the training images as a fitting diagnostic."""

from __future__ import annotations

import pytest

from _train_child import make_coco_layout
from lrpose_bench.config import load_config
from lrpose_bench.data.coco import load_split, whole_images
from lrpose_bench.data.sources import load_data
from lrpose_bench.evaluation.coco_metric import evaluate_keypoints, ground_truth_as_results


def test_capped_split_scores_perfect_predictions_as_ap_one(coco_fixture) -> None:
    """4 images x 2 persons cut at 3 instances: the first image whole (2 instances), and the ground
    truth of that image only. Before the fix the full document stayed, and ground truth written as
    predictions for the first 3 instances scored AP 0.38 instead of 1."""
    annotations, images, _ = coco_fixture
    split = load_split("fixture", annotations, images, max_instances=3)
    assert len(split.instances) == 2 and {i.image_id for i in split.instances} == {1}
    assert [im["id"] for im in split.gt["images"]] == [1]
    kept = {i.ann_id for i in split.instances}
    predictions = [r for r, a in zip(ground_truth_as_results(split.gt), split.gt["annotations"]) if a["id"] in kept]
    assert evaluate_keypoints(split.gt, predictions)["AP"] == pytest.approx(1.0)


def test_whole_images_keeps_the_first_image_even_when_it_exceeds_the_cap(coco_fixture) -> None:
    annotations, images, _ = coco_fixture
    split = load_split("fixture", annotations, images)
    gt, instances = whole_images(split.gt, split.instances, 1)
    assert len(instances) == 2 and {i.image_id for i in instances} == {1}
    assert all(a["image_id"] == 1 for a in gt["annotations"]) and gt["categories"] == split.gt["categories"]
    gt, instances = whole_images(split.gt, split.instances, 100)
    assert len(instances) == len(split.instances) and len(gt["images"]) == len(split.gt["images"])


def test_synthpose_train_split_is_scored_as_a_diagnostic(tmp_path) -> None:
    sizes = {"data.cache_dir": str(tmp_path), "data.synth.num_train_images": 3,
             "data.synth.num_val_images": 1, "data.synth.num_tune_images": 1}  # fmt: skip
    bundle = load_data(load_config(overrides={**sizes, "data.eval_split": "train"}).data, progress=False)
    assert bundle.eval_label == "SynthPose train"
    assert [i.ann_id for i in bundle.val.instances] == [i.ann_id for i in bundle.train.instances]
    assert bundle.val.gt["annotations"] == bundle.train.gt["annotations"]


def test_coco_train_split_excludes_the_tune_slice_and_honours_the_cap(tmp_path) -> None:
    root = make_coco_layout(tmp_path / "coco", train_images=6, val_images=2)
    base = {"data.source": "coco", "data.coco_root": str(root), "data.tune_images": 2}
    scored = load_data(load_config(overrides={**base, "data.eval_split": "train"}).data, progress=False)
    tune = load_data(load_config(overrides={**base, "data.eval_split": "tune"}).data, progress=False)
    assert scored.eval_label == "COCO train2017"
    assert set(scored.val.image_ids) == set(scored.train.image_ids)
    assert not set(scored.val.image_ids) & set(tune.val.image_ids)
    capped = load_data(
        load_config(overrides={**base, "data.eval_split": "train", "data.max_val_instances": 3}).data, progress=False
    )
    assert len(capped.val.image_ids) == 1 and len(capped.train.image_ids) == 4
    assert {im["id"] for im in capped.val.gt["images"]} == set(capped.val.image_ids)
