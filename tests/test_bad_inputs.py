"""Every bad input a user can hand us gives one clear line, exit status 2, no traceback.

Each case starts from a valid tiny COCO 2017 folder (``_train_child.make_coco_layout``), breaks one
thing, and runs ``lrpose_bench.cli.main`` in-process. Cases already in ``test_cli_errors.py``
(unknown method/backbone/profile/ablation, malformed or non-multiple-of-4 resolution, ``--set``
with an unknown key or wrong type, corrupt YAML, unwritable ``--out``) are not repeated; this file
covers the data, checkpoint, disk and config-file inputs. Joints outside the image are *accepted*:
see :func:`test_joints_outside_the_image_are_accepted_and_ignored_in_targets`.
"""

from __future__ import annotations

import errno
import io
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from _train_child import annotation_path, load_doc, make_coco_layout, save_doc
from lrpose_bench.cli import main
from lrpose_bench.engine.cell import CellSpec
from lrpose_bench.engine.train_state import save_checkpoint
from lrpose_bench.errors import DataError
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import read_status

CELL = CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0).cell_id
FAST = [
    "--backbone",
    "hrnet-w8",
    "--set",
    "train.epochs=1",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.threads=1",
    "--set",
    "train.device=cpu",
    "--no-progress",
]


@dataclass
class World:
    """A valid COCO folder, an output folder and the files a case may break."""

    tmp: Path
    coco: Path
    out: Path

    @property
    def cell(self) -> Path:
        return self.out / CELL

    def train_args(self, *extra: str) -> list[str]:
        return [
            "train",
            "--method",
            "hrnet",
            "--res",
            "64x48",
            "--data",
            "coco",
            "--coco-root",
            str(self.coco),
            "--out",
            str(self.out),
            *FAST,
            *extra,
        ]

    def edit(self, split: str, change: Callable[[dict], object]) -> None:
        doc = load_doc(self.coco, split)
        result = change(doc)
        save_doc(self.coco, split, doc if result is None else result)

    def checkpoint(self, **fields) -> Path:
        """A checkpoint in this cell's folder (the trainer resumes from it)."""
        payload = {
            "model": {},
            "optimizer": {"state": {}, "param_groups": []},
            "rng": {},
            "epoch": 0,
            "iteration": 0,
            "meta": {"method": "hrnet", "backbone": "hrnet-w8", "resolution": "64x48"},
        }
        payload.update(fields)
        save_checkpoint(self.cell / "checkpoint.pt", payload)
        return self.cell / "checkpoint.pt"


@pytest.fixture()
def world(tmp_path) -> World:
    coco = make_coco_layout(tmp_path / "coco", train_images=3, val_images=2)
    return World(tmp_path, coco, tmp_path / "out")


# --------------------------------------------------------------------------------- the cases
def truncated_json(w: World):
    path = annotation_path(w.coco, "train")
    text = path.read_text()
    path.write_text(text[: len(text) // 3])
    return w.train_args()


def instances_file_not_keypoints(w: World):
    def strip(doc):
        for ann in doc["annotations"]:
            del ann["keypoints"], ann["num_keypoints"]

    w.edit("val", strip)
    return w.train_args()


def json_list_not_object(w: World):
    w.edit("train", lambda doc: [doc])
    return w.train_args()


def not_utf8(w: World):
    annotation_path(w.coco, "train").write_bytes(b'{"images": "\xff\xfe"}')
    return w.train_args()


def missing_image(w: World):
    (w.coco / "train2017" / "000002.png").unlink()
    return w.train_args()


def missing_image_folder(w: World):
    for image in (w.coco / "val2017").iterdir():
        image.unlink()
    (w.coco / "val2017").rmdir()
    return w.train_args()


def undecodable_image(w: World):
    (w.coco / "train2017" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image needs")
    return w.train_args()


def undecodable_image_in_worker(w: World):
    (w.coco / "train2017" / "000001.png").write_bytes(b"GIF89a truncated")
    return w.train_args("--set", "train.num_workers=1")


def keypoints_wrong_length(w: World):
    w.edit("train", lambda doc: doc["annotations"][1].__setitem__("keypoints", doc["annotations"][1]["keypoints"][:-3]))
    return w.train_args()


def keypoints_not_numbers(w: World):
    w.edit("train", lambda doc: doc["annotations"][0]["keypoints"].__setitem__(4, "12"))
    return w.train_args()


def visibility_flag_3(w: World):
    w.edit("val", lambda doc: doc["annotations"][0]["keypoints"].__setitem__(2, 3))
    return w.train_args()


def zero_and_negative_boxes(w: World):
    def flatten(doc):
        for i, ann in enumerate(doc["annotations"]):
            ann["bbox"][2 + i % 2] = 0.0 if i % 3 else -4.0

    w.edit("train", flatten)
    return w.train_args()


def bbox_three_numbers(w: World):
    w.edit("train", lambda doc: doc["annotations"][2].__setitem__("bbox", [1, 2, 3]))
    return w.train_args()


def duplicate_annotation_ids(w: World):
    w.edit("train", lambda doc: doc["annotations"][3].__setitem__("id", doc["annotations"][0]["id"]))
    return w.train_args()


def duplicate_image_ids(w: World):
    w.edit("val", lambda doc: doc["images"][1].__setitem__("id", doc["images"][0]["id"]))
    return w.train_args()


def annotation_for_unknown_image(w: World):
    w.edit("train", lambda doc: doc["annotations"][0].__setitem__("image_id", 4242))
    return w.train_args()


def empty_after_filtering(w: World):
    return w.train_args("--set", "data.min_keypoints=18")


def person_boxes_for_other_images(w: World):
    boxes = w.tmp / "dets.json"
    boxes.write_text(
        json.dumps([{"image_id": 9000 + i, "category_id": 1, "bbox": [1, 2, 30, 60], "score": 0.9} for i in range(3)])
    )
    return w.train_args("--person-boxes", str(boxes))


def person_boxes_not_a_list(w: World):
    boxes = w.tmp / "dets.json"
    boxes.write_text(json.dumps({"annotations": []}))
    return w.train_args("--person-boxes", str(boxes))


def person_boxes_missing_file(w: World):
    return w.train_args("--person-boxes", str(w.tmp / "nope.json"))


def coco_root_missing(w: World):
    args = w.train_args()
    args[args.index("--coco-root") + 1] = str(w.tmp / "no-coco-here")
    return args


def truncated_checkpoint(w: World):
    path = w.checkpoint()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return w.train_args()


def foreign_checkpoint(w: World):
    w.cell.mkdir(parents=True)
    torch.save(OrderedDict(weight=torch.zeros(3)), w.cell / "checkpoint.pt")  # someone else's state dict
    return w.train_args()


def pickled_object_checkpoint(w: World):
    w.cell.mkdir(parents=True)
    buffer = io.BytesIO()
    torch.save({"model": {}, "array": np.zeros(3)}, buffer)  # a numpy object: needs unpickling code
    (w.cell / "checkpoint.pt").write_bytes(buffer.getvalue())
    return w.train_args()


def checkpoint_of_other_backbone(w: World):
    w.checkpoint(meta={"method": "hrnet", "backbone": "hrnet-w16", "resolution": "64x48"})
    return w.train_args()


def checkpoint_of_other_method(w: World):
    w.checkpoint(meta={"method": "udp", "backbone": "hrnet-w8", "resolution": "64x48"})
    return w.train_args()


def checkpoint_missing_states(w: World):
    w.cell.mkdir(parents=True)
    save_checkpoint(
        w.cell / "checkpoint.pt",
        {"model": {}, "meta": {"method": "hrnet", "backbone": "hrnet-w8", "resolution": "64x48"}},
    )
    return w.train_args()


def checkpoint_of_other_shapes(w: World):
    w.checkpoint(model={"conv1.weight": torch.zeros(2, 2)})
    return w.train_args()


def checkpoint_mid_epoch_other_batch_size(w: World):
    w.checkpoint(iteration=1, sampler={"seed": 0, "size": 6, "batch_size": 2, "epoch": 0, "position": 2})
    return w.train_args()


def evaluate_not_a_cell(w: World):
    w.out.mkdir()
    return ["evaluate", "--checkpoint", str(w.out), "--no-progress"]


def evaluate_unfinished(w: World):
    w.cell.mkdir(parents=True)
    spec = CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0)
    import yaml

    from lrpose_bench.config import load_config

    cfg = load_config("quick", overrides={"model.backbone": "hrnet-w8"})
    (w.cell / "config.yaml").write_text(yaml.safe_dump({"cell": spec.describe(), "config": cfg.to_dict()}))
    w.checkpoint(meta={"method": "hrnet", "backbone": "hrnet-w8", "resolution": "64x48", "complete": False})
    return ["evaluate", "--checkpoint", str(w.cell / "checkpoint.pt"), "--no-progress"]


def config_unknown_key(w: World):
    path = w.tmp / "my.yaml"
    path.write_text("data:\n  coco_rot: /data/coco\n")
    return w.train_args("--config", str(path))


def config_wrong_type_in_list(w: World):
    path = w.tmp / "my.yaml"
    path.write_text("train:\n  lr_milestones: [170, late]\n")
    return w.train_args("--config", str(path))


def config_not_a_mapping(w: World):
    path = w.tmp / "my.yaml"
    path.write_text("- train\n- eval\n")
    return w.train_args("--config", str(path))


def config_file_missing(w: World):
    return w.train_args("--config", str(w.tmp / "absent.yaml"))


def override_without_equals(w: World):
    return w.train_args("--set", "train.epochs")


def pretrained_file_missing(w: World):
    return w.train_args("--set", f"model.pretrained={w.tmp / 'hrnet_w8.pth'}")


def empty_resolution(w: World):
    args = w.train_args()
    args[args.index("--res") + 1] = ","
    return args


#: (id, setup, the line's expected text, whether the cell folder must say "failed")
CASES = [
    ("truncated-annotation-json", truncated_json, "person_keypoints_train2017.json is not valid JSON (line 1", False),
    (
        "instances-json-not-keypoints",
        instances_file_not_keypoints,
        "has no 'keypoints' list: this is not a COCO keypoints file",
        False,
    ),
    (
        "json-not-an-object",
        json_list_not_object,
        "expected a COCO JSON object with 'images' and 'annotations', got list",
        False,
    ),
    ("annotation-not-utf8", not_utf8, "cannot read annotation file", False),
    ("missing-image-named", missing_image, "train2017/000002.png (listed in", False),
    ("missing-image-folder", missing_image_folder, "val2017/000001.png (listed in", False),
    ("undecodable-image", undecodable_image, "train2017/000002.png cannot be decoded (corrupt or not an image)", True),
    ("undecodable-image-in-loader-worker", undecodable_image_in_worker, "train2017/000001.png cannot be decoded", True),
    ("keypoints-wrong-length", keypoints_wrong_length, "annotation id 2 has 48 keypoint numbers, expected 51", False),
    ("keypoints-not-numbers", keypoints_not_numbers, "annotation id 1 has non-numeric keypoint values", False),
    ("visibility-flag-3", visibility_flag_3, "has visibility flags other than 0/1/2", False),
    (
        "zero-or-negative-boxes",
        zero_and_negative_boxes,
        "no usable person instances after filtering (skipped: zero_area_box=6)",
        False,
    ),
    ("bbox-wrong-length", bbox_three_numbers, "annotation id 3 has no valid 'bbox' [x, y, w, h]", False),
    (
        "duplicate-annotation-ids",
        duplicate_annotation_ids,
        "annotation id 1 is duplicated; annotation ids must be unique",
        False,
    ),
    ("duplicate-image-ids", duplicate_image_ids, "duplicate image id 1 in images[1]", False),
    (
        "annotation-unknown-image",
        annotation_for_unknown_image,
        "refers to image_id 4242, which is not in 'images'",
        False,
    ),
    (
        "empty-after-filtering",
        empty_after_filtering,
        "no usable person instances after filtering (skipped: too_few_keypoints=",
        False,
    ),
    ("person-boxes-other-images", person_boxes_for_other_images, "has no boxes for the images of this split", False),
    ("person-boxes-not-a-list", person_boxes_not_a_list, "expected a list of COCO detection results", False),
    ("person-boxes-missing", person_boxes_missing_file, "person-box file", False),
    ("coco-root-missing", coco_root_missing, "no-coco-here does not exist", False),
    (
        "truncated-checkpoint",
        truncated_checkpoint,
        "cannot be read (truncated or corrupt: not a complete torch zip archive)",
        True,
    ),
    ("foreign-checkpoint", foreign_checkpoint, "is not an lrpose-bench training checkpoint", True),
    (
        "pickled-object-checkpoint",
        pickled_object_checkpoint,
        "holds pickled Python objects, which are never loaded",
        True,
    ),
    ("checkpoint-other-backbone", checkpoint_of_other_backbone, "is for backbone 'hrnet-w16', not 'hrnet-w8'", True),
    ("checkpoint-other-method", checkpoint_of_other_method, "is for method 'udp', not 'hrnet'", True),
    ("checkpoint-missing-states", checkpoint_missing_states, "lacks optimizer, rng, epoch, iteration", True),
    ("checkpoint-other-shapes", checkpoint_of_other_shapes, "does not fit this model/optimizer", True),
    (
        "checkpoint-mid-epoch-other-batch",
        checkpoint_mid_epoch_other_batch_size,
        "stopped mid-epoch with batch size 2, this run has 4",
        True,
    ),
    ("evaluate-not-a-cell", evaluate_not_a_cell, "is not a cell folder (no config.yaml)", False),
    ("evaluate-unfinished", evaluate_unfinished, "is from an unfinished training", False),
    ("config-unknown-key", config_unknown_key, "unknown config key 'data.coco_rot'", False),
    (
        "config-wrong-type-in-list",
        config_wrong_type_in_list,
        "config key train.lr_milestones[1]: expected int, got 'late'",
        False,
    ),
    ("config-not-a-mapping", config_not_a_mapping, "must hold a mapping of keys, not list", False),
    ("config-file-missing", config_file_missing, "absent.yaml not found", False),
    ("override-without-equals", override_without_equals, "override 'train.epochs' must look like key=value", False),
    ("pretrained-missing", pretrained_file_missing, "hrnet_w8.pth not found", False),
    ("empty-resolution", empty_resolution, "no resolution given", False),
]


@pytest.mark.parametrize("setup, expected, marks_failed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(world, capsys, setup, expected, marks_failed):
    args = setup(world)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("lrpose-bench: error: "), err
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if marks_failed:  # the problem surfaced inside the cell: its folder says so, the lock is gone
        status = read_status(world.cell)
        assert status["state"] == "failed" and expected.split(" (")[0][:40] in status["reason"]
        assert not (world.cell / ".lock").exists()


def test_at_least_twenty_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 20
    assert len({c[2] for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(world):
    duplicate_annotation_ids(world)
    with pytest.raises(DataError, match="is duplicated"):
        main([*world.train_args(), "--debug"])


def test_debug_before_the_subcommand_shows_the_traceback(world):
    duplicate_annotation_ids(world)
    with pytest.raises(DataError, match="is duplicated"):
        main(["--debug", *world.train_args()])


def test_malformed_seeds_give_one_line(world, capsys):
    code = main(["run", "--methods", "hrnet", "--seeds", "0,one", "--out", str(world.tmp / "o")])
    assert code == 2
    assert "--seeds '0,one' must be comma-separated integers" in capsys.readouterr().err


def _fail_checkpoint_fsync(monkeypatch) -> None:
    """Simulate a full disk: fsync of a checkpoint's temp file fails with ENOSPC."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fd belongs to")
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_during_checkpoint_save(world, capsys, monkeypatch):
    _fail_checkpoint_fsync(monkeypatch)
    code = main(world.train_args())
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"disk full while writing {world.cell / 'checkpoint.pt'}; the previous version of the file is kept" in err
    status = read_status(world.cell)
    assert status["state"] == "failed" and "disk full" in status["reason"]
    assert not (world.cell / "checkpoint.pt").exists()
    assert [p for p in world.cell.iterdir() if p.name.endswith(".tmp")] == []
    # space freed: the same command finishes the cell
    monkeypatch.undo()
    assert main(world.train_args()) == 0
    assert read_status(world.cell)["state"] == "complete"


# ------------------------------------------------------------------- joints outside the image
def test_joints_outside_the_image_are_accepted_and_ignored_in_targets(world):
    """COCO labels some joints slightly outside the image. Decision: accept them. A joint that lands
    inside the (padded) crop is trained on like any other; one outside the heatmap gets weight 0 and
    an empty target, never a clipped (wrong) position. Every method's targets stay finite."""
    from lrpose_bench.config import load_config
    from lrpose_bench.data.coco import load_split
    from lrpose_bench.data.dataset import PoseDataset
    from lrpose_bench.data.transforms import apply_affine, input_to_heatmap_scale
    from lrpose_bench.engine.cell import build_method
    from lrpose_bench.evaluation.coco_metric import evaluate_keypoints, ground_truth_as_results
    from lrpose_bench.registry import METHODS

    far = (1.0e5, -3.0e4)

    def push_out(doc):
        ann = doc["annotations"][0]
        width = next(im["width"] for im in doc["images"] if im["id"] == ann["image_id"])
        ann["bbox"][0] = 0.0  # the box touches the left border, so its padded crop reaches past it
        ann["keypoints"][0:3] = [far[0], far[1], 2]  # nose: far away
        ann["keypoints"][3:6] = [-2.0, ann["keypoints"][4] or 50.0, 2]  # left eye: 2 px left of the image
        ann["keypoints"][6:9] = [width + 1.5, 40.0, 1]  # right eye: just right of the image

    world.edit("train", push_out)
    split = load_split("train", annotation_path(world.coco, "train"), world.coco / "train2017")
    inst = next(i for i in split.instances if i.ann_id == 1)
    assert tuple(inst.joints[0]) == far  # stored as given: nothing clipped or dropped at load time

    cfg = load_config("quick", overrides={"model.backbone": "hrnet-w8", "augment.flip_prob": 0.0})
    index = split.instances.index(inst)
    for name in METHODS.names():
        spec = CellSpec(name, "hrnet-w8", Resolution(64, 48), 0)
        method = build_method(spec, cfg)
        res = method.train_resolution()
        inner = method if res == spec.resolution else build_method(spec, cfg, res)
        dataset = PoseDataset(split, inner, res, train=True, augment=cfg.augment, seed=0)
        for epoch in range(3):
            dataset.set_epoch(epoch)
            item = dataset[index]
            for key, value in item.items():
                if torch.is_tensor(value) and value.is_floating_point():
                    assert bool(torch.isfinite(value).all()), f"{name}: non-finite {key}"
            assert item["visible"][0] == 0, f"{name}: a joint 10^5 px away must not be a target"
            assert float(item["weight"][0]) == 0.0, name
            maps = [key for key in ("heatmap", "disk", "simcc_x", "simcc_y") if key in item]
            # coordinate targets (rle, integral) have no map: weight 0 is what drops the joint (checked above)
            assert maps or any(key in item for key in ("coords", "rle_coords")), f"{name}: no target to check"
            for key in maps:  # nothing clipped onto the border of the map
                assert float(item[key][0].abs().max()) == 0.0, f"{name}: {key} of the far joint"

    # the joint 2 px left of the image, inside the padded box crop: kept as labelled, not clipped
    method = build_method(CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0), cfg)
    item = PoseDataset(split, method, Resolution(64, 48), train=False)[index]
    expected = apply_affine(inst.joints[1:2], item["matrix"].numpy()) * input_to_heatmap_scale((64, 48), (16, 12))
    np.testing.assert_allclose(item["joints"][1].numpy(), expected[0], atol=1e-4)
    assert item["visible"][1] == 1 and item["visible"][0] == 0

    # evaluation against such ground truth: perfect predictions still score AP 1
    metrics = evaluate_keypoints(split.gt, ground_truth_as_results(split.gt))
    assert metrics["AP"] == pytest.approx(1.0)
