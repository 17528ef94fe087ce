"""The COCO loader accepts valid documents and turns every bad input into one clear DataError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrpose_bench.data.coco import load_split, read_json, validate_coco_keypoints
from lrpose_bench.errors import DataError


def test_loads_fixture(coco_fixture):
    ann_file, images, doc = coco_fixture
    split = load_split("fixture", ann_file, images)
    assert len(split.instances) == sum(1 for a in doc["annotations"] if a["num_keypoints"] > 0)
    assert split.instances[0].joints.shape == (17, 2)


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_split("x", tmp_path / "nope.json", tmp_path)


def test_truncated_json_names_file_and_position(coco_fixture):
    ann_file, images, _ = coco_fixture
    text = ann_file.read_text()
    ann_file.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"annotations.json is not valid JSON \(line 1"):
        load_split("x", ann_file, images)


def test_not_coco_keypoints(tmp_path):
    path = _write(tmp_path / "a.json", {"images": [], "foo": []})
    with pytest.raises(DataError, match="missing top-level key 'annotations'"):
        load_split("x", path, tmp_path)


def test_wrong_keypoint_count_names_annotation(coco_fixture, tmp_path):
    ann_file, images, doc = coco_fixture
    doc["annotations"][1]["keypoints"] = doc["annotations"][1]["keypoints"][:-3]
    _write(ann_file, doc)
    with pytest.raises(DataError, match=r"annotation id 2 has 48 keypoint numbers, expected 51"):
        load_split("x", ann_file, images)


def test_duplicate_annotation_ids(coco_fixture):
    ann_file, images, doc = coco_fixture
    doc["annotations"][1]["id"] = doc["annotations"][0]["id"]
    _write(ann_file, doc)
    with pytest.raises(DataError, match="duplicated"):
        load_split("x", ann_file, images)


def test_zero_area_boxes_are_skipped_and_counted(coco_fixture):
    ann_file, images, doc = coco_fixture
    doc["annotations"][0]["bbox"] = [10, 10, 0, 20]
    doc["annotations"][1]["bbox"] = [10, 10, -5, 20]
    _write(ann_file, doc)
    with pytest.warns(UserWarning, match="skipped 2 annotation"):
        split = load_split("x", ann_file, images)
    assert split.skipped["zero_area_box"] == 2


def test_missing_image_is_named(coco_fixture):
    ann_file, images, doc = coco_fixture
    (images / doc["images"][2]["file_name"]).unlink()
    with pytest.raises(DataError, match=doc["images"][2]["file_name"] + r".*is missing"):
        load_split("x", ann_file, images)


def test_empty_after_filtering(coco_fixture):
    ann_file, images, doc = coco_fixture
    with pytest.raises(DataError, match="no usable person instances"):
        load_split("x", ann_file, images, min_keypoints=18)


def test_detection_boxes_for_other_images(coco_fixture, tmp_path):
    ann_file, images, _ = coco_fixture
    boxes = _write(tmp_path / "dets.json", [{"image_id": 999, "bbox": [0, 0, 10, 10], "score": 0.9, "category_id": 1}])
    with pytest.raises(DataError, match="no boxes for the images of this split"):
        load_split("x", ann_file, images, person_boxes=boxes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 60) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)


def _annotation_like(draw_values):
    return st.fixed_dictionaries(
        {
            "id": draw_values,
            "image_id": draw_values,
            "keypoints": draw_values | st.lists(st.integers(0, 2), min_size=51, max_size=51),
            "bbox": draw_values | st.lists(st.floats(-10, 100), min_size=4, max_size=4),
        },
        optional={"iscrowd": draw_values, "area": draw_values},
    )


documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "images": st.lists(
                st.fixed_dictionaries(
                    {"id": st.integers(0, 3) | json_values, "file_name": st.text(max_size=4) | json_values}
                ),
                max_size=4,
            )
            | json_values,
            "annotations": st.lists(_annotation_like(json_values) | json_values, max_size=4) | json_values,
        }
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(doc=documents)
def test_fuzz_loader_loads_or_raises_dataerror(tmp_path, doc):
    """Random malformed documents either load or raise the suite's own error, never anything else."""
    path = tmp_path / "fuzz.json"
    try:
        path.write_text(json.dumps(doc))
    except ValueError:
        return
    try:
        load_split("fuzz", path, tmp_path)
    except DataError:
        pass


def test_read_json_on_directory(tmp_path):
    with pytest.raises(DataError):
        read_json(tmp_path)


def test_validate_rejects_non_object(tmp_path):
    with pytest.raises(DataError, match="expected a COCO JSON object"):
        validate_coco_keypoints([1, 2], tmp_path / "x.json")
