"""Property tests of UDP's unbiased data processing (crop, flip, inverse)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.data.transforms import (
    CropParams,
    apply_affine,
    box_to_center_size,
    crop_matrix,
    flip_joints,
    input_to_heatmap_scale,
    invert_affine,
)
from lrpose_bench.keypoints import FLIP_PAIRS, flip_index

sizes = st.sampled_from([(64, 48), (128, 96), (256, 192), (384, 288), (32, 32)])
coords = st.floats(-50, 500, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    cx=coords,
    cy=coords,
    bw=st.floats(5, 400),
    bh=st.floats(5, 400),
    rot=st.floats(-90, 90),
    flip=st.booleans(),
    size=sizes,
    px=coords,
    py=coords,
)
def test_crop_then_inverse_is_identity(cx, cy, bw, bh, rot, flip, size, px, py):
    matrix = crop_matrix(CropParams((cx, cy), (bw, bh), rot, flip), size)
    point = np.array([[px, py]])
    back = apply_affine(apply_affine(point, matrix), invert_affine(matrix))
    np.testing.assert_allclose(back, point, atol=1e-6 * max(1.0, abs(px), abs(py)))


@settings(max_examples=100, deadline=None)
@given(
    cx=coords,
    cy=coords,
    bw=st.floats(5, 400),
    bh=st.floats(5, 400),
    rot=st.floats(-90, 90),
    size=sizes,
    px=coords,
    py=coords,
)
def test_flip_is_exact_mirror_in_unit_length(cx, cy, bw, bh, rot, size, px, py):
    """With the unbiased system, the flipped crop maps x to (w_in - 1) - x exactly (no pixel shift)."""
    plain = crop_matrix(CropParams((cx, cy), (bw, bh), rot, False), size)
    flipped = crop_matrix(CropParams((cx, cy), (bw, bh), rot, True), size)
    p = np.array([[px, py]])
    a, b = apply_affine(p, plain), apply_affine(p, flipped)
    assert np.isclose(b[0, 0], (size[1] - 1) - a[0, 0], atol=1e-6 * max(1, abs(a[0, 0])))
    assert np.isclose(b[0, 1], a[0, 1], atol=1e-9 * max(1, abs(a[0, 1])))


def test_flipping_twice_is_identity():
    rng = np.random.default_rng(0)
    joints = rng.random((17, 2))
    vis = rng.integers(0, 3, 17).astype(float)
    index = flip_index()
    j1, v1 = flip_joints(joints, vis, index)
    j2, v2 = flip_joints(j1, v1, index)
    np.testing.assert_array_equal(j2, joints)
    np.testing.assert_array_equal(v2, vis)
    for left, right in FLIP_PAIRS:
        assert index[left] == right and index[right] == left


def test_box_centre_maps_to_input_centre_and_box_edges_to_input_edges():
    center, size = box_to_center_size(np.array([10.0, 20.0, 30.0, 80.0]), aspect=48 / 64, padding=1.0)
    assert center == (25.0, 60.0)
    assert np.isclose(size[0] / size[1], 48 / 64)
    matrix = crop_matrix(CropParams(center, size), (64, 48))
    mapped = apply_affine(
        np.array([[center[0], center[1]], [center[0] - size[0] / 2, center[1] - size[1] / 2]]), matrix
    )
    np.testing.assert_allclose(mapped[0], [23.5, 31.5])  # ((48-1)/2, (64-1)/2)
    np.testing.assert_allclose(mapped[1], [0.0, 0.0], atol=1e-9)


def test_heatmap_scale_is_unbiased():
    scale = input_to_heatmap_scale((64, 48), (16, 12))
    np.testing.assert_allclose(scale, [11 / 47, 15 / 63])
