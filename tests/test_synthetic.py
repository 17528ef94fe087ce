"""SynthPose: determinism, COCO validity, label geometry, sub-pixel rendering and the cache."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.config import SynthConfig
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import COCO_CATEGORY, COCO_KEYPOINT_NAMES
from lrpose_bench.synthpose import (
    FORMAT_VERSION,
    SynthPosePaths,
    body,
    build_person,
    cache,
    ensure_synthpose,
    generate_synthpose,
    image_rng,
    pool,
    render,
    render_image,
)

J = {name: i for i, name in enumerate(COCO_KEYPOINT_NAMES)}

TINY = SynthConfig(
    seed=3,
    num_train_images=6,
    num_val_images=3,
    num_tune_images=2,
    image_height=96,
    image_width=96,
    max_persons=3,
    multi_person_prob=0.5,
    occlusion_prob=0.5,
    truncation_prob=0.5,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SynthPosePaths:
    return generate_synthpose(tmp_path_factory.mktemp("synth") / "a", TINY, progress=False, workers=0)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _annotations(paths: SynthPosePaths) -> list[tuple[dict, dict]]:
    """(image, annotation) pairs of both splits."""
    pairs = []
    for split in ("train", "val"):
        doc = _load(paths.annotations(split))
        images = {im["id"]: im for im in doc["images"]}
        pairs += [(images[a["image_id"]], a) for a in doc["annotations"]]
    return pairs


# ----------------------------------------------------------------------------- determinism
def test_same_config_gives_identical_files_whatever_the_worker_count(tiny, tmp_path):
    again = generate_synthpose(tmp_path / "b", TINY, progress=False, workers=2)
    counts = {"train": TINY.num_train_images, "val": TINY.num_val_images, "tune": TINY.num_tune_images}
    for split in ("train", "val", "tune"):
        assert tiny.annotations(split).read_bytes() == again.annotations(split).read_bytes()
        names = sorted(p.name for p in tiny.images(split).iterdir())
        assert names == sorted(p.name for p in again.images(split).iterdir())
        assert len(names) == counts[split]
        for name in names:
            assert (tiny.images(split) / name).read_bytes() == (again.images(split) / name).read_bytes()


def test_train_and_val_use_different_streams_and_seeds_matter(tiny):
    train_img, _ = render_image(TINY, image_rng(TINY.seed, "train", 0))
    val_img, _ = render_image(TINY, image_rng(TINY.seed, "val", 0))
    other_seed, _ = render_image(TINY, image_rng(TINY.seed + 1, "train", 0))
    assert not np.array_equal(train_img, val_img)
    assert not np.array_equal(train_img, other_seed)
    stored = cv2.imread(str(tiny.train_images / "000000000001.png"))
    assert np.array_equal(stored, train_img)  # PNG is lossless: the file is the rendering
    train, val = _load(tiny.train_annotations), _load(tiny.val_annotations)
    assert {im["id"] for im in train["images"]}.isdisjoint(im["id"] for im in val["images"])
    assert [a["keypoints"] for a in train["annotations"][:3]] != [a["keypoints"] for a in val["annotations"][:3]]


# ---------------------------------------------------------------------------- COCO format
def test_json_loads_in_pycocotools_and_fields_are_consistent(tiny):
    from pycocotools.coco import COCO

    ann_ids = []
    for split in ("train", "val"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(tiny.annotations(split)))
        doc = coco.dataset
        assert doc["categories"] == [COCO_CATEGORY]
        assert len(doc["annotations"]) >= len(doc["images"]) // 2
        for image in doc["images"]:
            assert (image["height"], image["width"]) == (TINY.image_height, TINY.image_width)
            pixels = cv2.imread(str(tiny.images(split) / image["file_name"]))
            assert pixels.shape == (TINY.image_height, TINY.image_width, 3)
        for ann in doc["annotations"]:
            ann_ids.append(ann["id"])
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert len(ann["keypoints"]) == 51
            flags = ann["keypoints"][2::3]
            assert set(flags) <= {0, 1, 2}
            assert ann["num_keypoints"] == sum(v > 0 for v in flags) >= 1
            x, y, w, h = ann["bbox"]
            assert w >= 4 and h >= 4
            assert x >= -0.5 and y >= -0.5  # pixel-coverage box: pixel i spans [i-0.5, i+0.5]
            assert x + w <= TINY.image_width - 0.5 + 1e-9 and y + h <= TINY.image_height - 0.5 + 1e-9
            assert 0 < ann["area"] <= w * h  # visible-pixel area of the figure, within its box
    assert len(ann_ids) == len(set(ann_ids))


def test_all_visibility_flags_occur_and_unlabelled_joints_are_zeroed(tiny):
    kps = np.array([a["keypoints"] for _, a in _annotations(tiny)]).reshape(-1, 17, 3)
    assert set(np.unique(kps[..., 2]).tolist()) == {0, 1, 2}
    assert np.all(kps[kps[..., 2] == 0][:, :2] == 0)
    labelled = kps[kps[..., 2] > 0]
    assert np.any(labelled[:, :2] % 1 != 0)  # sub-pixel coordinates, not whole pixels


# ------------------------------------------------------------------------------- geometry
def test_visible_joints_lie_inside_their_box_and_the_image(tiny):
    for image, ann in _annotations(tiny):
        x, y, w, h = ann["bbox"]
        kps = np.array(ann["keypoints"]).reshape(17, 3)
        for px, py, v in kps:
            if v == 0:
                continue
            assert 0 <= px <= image["width"] - 1 and 0 <= py <= image["height"] - 1
            if v == 2:
                assert x - 1 <= px <= x + w + 1 and y - 1 <= py <= y + h + 1


def test_occluders_only_hide_joints_they_cover():
    """Same seed with and without occluders: same joints, flags only drop from 2 to 1, smaller areas."""
    hidden = 0
    for index in range(12):
        clear_cfg = dataclasses.replace(TINY, occlusion_prob=0.0)
        occluded_cfg = dataclasses.replace(TINY, occlusion_prob=1.0)
        _, clear = render_image(clear_cfg, image_rng(7, "train", index))
        _, occluded = render_image(occluded_cfg, image_rng(7, "train", index))
        assert len(clear) == len(occluded)
        for a, b in zip(clear, occluded):
            ka, kb = np.array(a["keypoints"]).reshape(17, 3), np.array(b["keypoints"]).reshape(17, 3)
            assert np.array_equal(ka[:, :2], kb[:, :2])
            assert np.all(kb[:, 2] <= ka[:, 2]) and np.all((kb[:, 2] > 0) == (ka[:, 2] > 0))
            assert b["area"] <= a["area"]
            hidden += int(((ka[:, 2] == 2) & (kb[:, 2] == 1)).sum())
    assert hidden > 0


def _figures(count: int, seed: int = 5) -> list:
    rng = np.random.default_rng(seed)
    return [build_person(rng, 120.0) for _ in range(count)]


def test_limb_proportions_are_anthropometric_and_projection_only_shortens():
    figures = _figures(300)
    ratios_2d = []
    for fig in figures:
        j3, j2 = fig.joints3d, fig.joints
        for side in ("left", "right"):
            upper = np.linalg.norm(j3[J[f"{side}_shoulder"]] - j3[J[f"{side}_elbow"]])
            fore = np.linalg.norm(j3[J[f"{side}_elbow"]] - j3[J[f"{side}_wrist"]])
            thigh = np.linalg.norm(j3[J[f"{side}_hip"]] - j3[J[f"{side}_knee"]])
            shank = np.linalg.norm(j3[J[f"{side}_knee"]] - j3[J[f"{side}_ankle"]])
            assert 1.15 < upper / fore < 1.4  # Drillis & Contini: 0.186 / 0.146
            assert 0.85 < thigh / shank < 1.15
            assert 0.15 < upper < 0.23 and 0.2 < thigh < 0.3  # fractions of stature
            # orthographic projection, then aspect ≤ 1.15 and rotation: never longer than 1.15 × 3-D
            for a, b, length in ((f"{side}_shoulder", f"{side}_elbow", upper), (f"{side}_hip", f"{side}_knee", thigh)):
                assert np.linalg.norm(j2[J[a]] - j2[J[b]]) <= 1.15 * length * fig.stature + 1e-6
            up2 = np.linalg.norm(j2[J[f"{side}_shoulder"]] - j2[J[f"{side}_elbow"]])
            fo2 = np.linalg.norm(j2[J[f"{side}_elbow"]] - j2[J[f"{side}_wrist"]])
            if fo2 > 1.0:
                ratios_2d.append(up2 / fo2)
        # left and right limbs of one person have the same length
        assert np.isclose(
            np.linalg.norm(j3[J["left_hip"]] - j3[J["left_knee"]]),
            np.linalg.norm(j3[J["right_hip"]] - j3[J["right_knee"]]),
        )
    assert 1.0 < float(np.median(ratios_2d)) < 1.6


def test_left_and_right_are_on_opposite_sides_for_front_and_back_views():
    front = back = 0
    for fig in _figures(600, seed=9):
        yaw, roll = math.degrees(fig.view["yaw"]), math.degrees(fig.view["roll"])
        if abs(roll) > 20:
            continue
        x = fig.joints[:, 0]
        if abs(yaw) < 30:  # facing the camera: the person's left is on the image right
            front += 1
            assert x[J["left_shoulder"]] > x[J["right_shoulder"]]
            assert x[J["left_hip"]] > x[J["right_hip"]]
            assert fig.face_visible[J["nose"]]
        elif abs(yaw) > 150:  # seen from the back: mirrored, and the face is turned away
            back += 1
            assert x[J["left_shoulder"]] < x[J["right_shoulder"]]
            assert x[J["left_hip"]] < x[J["right_hip"]]
            assert not fig.face_visible[J["left_eye"]] and not fig.face_visible[J["right_eye"]]
    assert front >= 20 and back >= 5


def test_person_sizes_span_small_to_large():
    cfg = SynthConfig(num_train_images=40, num_val_images=0)
    heights = []
    for index in range(40):
        _, anns = render_image(cfg, image_rng(1, "train", index))
        heights += [a["bbox"][3] for a in anns]
    assert min(heights) < 90 and max(heights) > 120


# ----------------------------------------------------------------------- sub-pixel drawing
@settings(max_examples=40, deadline=None)
@given(st.floats(20.0, 40.0), st.floats(20.0, 40.0), st.floats(3.0, 8.0))
def test_subpixel_disc_is_centred_where_asked(x, y, radius):
    """cv2 drawing with ``shift`` uses pixel centres at integers, the suite's convention."""
    canvas = np.zeros((64, 64), np.uint8)
    render._ellipse(canvas, np.array([x, y]), (radius, radius), 0.0, 255, cv2.LINE_AA)
    weights = canvas.astype(np.float64)
    ys, xs = np.mgrid[0:64, 0:64]
    cx, cy = (weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()
    assert abs(cx - x) < 0.1 and abs(cy - y) < 0.1


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.0, math.pi),
    st.floats(-math.pi, math.pi),
    st.floats(0.0, 2.6),
    st.floats(-1.0, 1.0),
    st.sampled_from([1.0, -1.0]),
)
def test_limb_bending_keeps_unit_length_and_the_requested_angle(abduction, flexion, angle, twist, side):
    upper = body._limb_dir(abduction, flexion, side)
    toward = body._limb_dir(abduction, flexion + math.pi / 2, side)
    lower = body._bend(upper, toward, angle, twist)
    assert np.isclose(np.linalg.norm(upper), 1.0) and np.isclose(np.linalg.norm(lower), 1.0)
    assert np.isclose(math.acos(np.clip(upper @ lower, -1, 1)), angle, atol=1e-6)


# ----------------------------------------------------------------------------------- cache
class _Counter:
    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def test_cache_reuses_a_complete_folder_and_keys_on_the_config(tmp_path, monkeypatch):
    counter = _Counter(cache.generate_synthpose)
    monkeypatch.setattr(cache, "generate_synthpose", counter)
    cfg = dataclasses.replace(TINY, num_train_images=2, num_val_images=1)
    first = ensure_synthpose(tmp_path, cfg, progress=False)
    mtime = first.train_annotations.stat().st_mtime_ns
    second = ensure_synthpose(str(tmp_path), cfg, progress=False)
    assert first == second and counter.calls == 1
    assert second.train_annotations.stat().st_mtime_ns == mtime
    assert first.is_complete() and json.loads(first.marker.read_text())["format_version"] == FORMAT_VERSION
    other = ensure_synthpose(tmp_path, dataclasses.replace(cfg, seed=cfg.seed + 1), progress=False)
    assert other.root != first.root and counter.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.root.name, other.root.name])


def test_cache_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = dataclasses.replace(TINY, num_train_images=1, num_val_images=1)
    paths = ensure_synthpose("~/cache", cfg, progress=False)
    assert paths.root.parent == tmp_path / "cache" and paths.is_complete()


def test_cache_regenerates_a_folder_without_the_marker(tmp_path):
    cfg = dataclasses.replace(TINY, num_train_images=2, num_val_images=1)
    stale = SynthPosePaths.under(tmp_path / cache.cache_key(cfg))
    stale.train_images.mkdir(parents=True)
    (stale.train_images / "half-written.png").write_bytes(b"")
    paths = ensure_synthpose(tmp_path, cfg, progress=False)
    assert paths.root == stale.root and paths.is_complete()
    assert not (paths.train_images / "half-written.png").exists()
    assert len(list(paths.train_images.iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == [paths.root.name]  # temp folders cleaned up


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, num_train_images=3, num_val_images=1)
    real = pool._render_task
    seen = []

    def failing(task):
        seen.append(task)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(pool, "_render_task", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthpose(tmp_path, cfg, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(pool, "_render_task", real)
    assert ensure_synthpose(tmp_path, cfg, progress=False).is_complete()


def test_losing_the_rename_race_uses_the_winners_folder(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, num_train_images=1, num_val_images=1)
    target = tmp_path / cache.cache_key(cfg)
    real = cache.generate_synthpose

    def racing(out_dir, cfg, progress=True, **kwargs):
        result = real(out_dir, cfg, progress=progress, **kwargs)
        if not target.exists():  # another process finishes first, while we were rendering
            real(target, cfg, progress=False)
            (target / "winner").write_text("1")
        return result

    monkeypatch.setattr(cache, "generate_synthpose", racing)
    paths = ensure_synthpose(tmp_path, cfg, progress=False)
    assert paths.root == target and (target / "winner").exists() and paths.is_complete()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.synth.image_height"):
        cache.validate_synth_config(dataclasses.replace(TINY, image_height=8))
    with pytest.raises(ConfigError, match="data.synth.occlusion_prob"):
        cache.validate_synth_config(dataclasses.replace(TINY, occlusion_prob=1.5))


def test_tune_split_is_disjoint_and_leaves_train_and_val_unchanged(tiny, tmp_path):
    """The tune split has its own seed stream (spawn key 2) and image ids: train and val are the
    same whatever the tune split's size, so adding it moved no reported number."""
    more = generate_synthpose(tmp_path / "more", dataclasses.replace(TINY, num_tune_images=4), progress=False)
    for split in ("train", "val"):
        assert tiny.annotations(split).read_bytes() == more.annotations(split).read_bytes()
    ids = {
        s: {im["id"] for im in json.loads(tiny.annotations(s).read_text())["images"]} for s in ("train", "val", "tune")
    }
    assert not (ids["tune"] & ids["train"]) and not (ids["tune"] & ids["val"])
    tune = json.loads(tiny.annotations("tune").read_text())
    val = json.loads(tiny.annotations("val").read_text())
    assert [a["keypoints"] for a in tune["annotations"]] != [a["keypoints"] for a in val["annotations"]][
        : len(tune["annotations"])
    ]


def test_a_larger_val_split_extends_the_smaller_one_image_for_image(tiny, tmp_path):
    """The standard profile scores 4x quick's val images (configs/profiles/standard.yaml); it may call
    quick's val split its first part only if every image keeps its pixels and labels when the split
    grows, and train and tune do not move."""
    more = generate_synthpose(tmp_path / "more", dataclasses.replace(TINY, num_val_images=6), progress=False)
    for split in ("train", "tune"):
        assert tiny.annotations(split).read_bytes() == more.annotations(split).read_bytes()
    small, large = (json.loads(p.annotations("val").read_text()) for p in (tiny, more))
    assert len(large["images"]) == 2 * len(small["images"])
    assert large["images"][: len(small["images"])] == small["images"]
    small_ids = {im["id"] for im in small["images"]}
    assert [a for a in large["annotations"] if a["image_id"] in small_ids] == small["annotations"]
    for image in small["images"]:
        name = image["file_name"]
        assert (tiny.images("val") / name).read_bytes() == (more.images("val") / name).read_bytes()
