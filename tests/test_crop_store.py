"""The crop store: coverage of every augmented crop (property tests), build, cache reuse, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_coco_fixture
from lrpose_bench.config import AugmentConfig
from lrpose_bench.data.coco import load_split
from lrpose_bench.data.crop_store import (
    CropStore,
    CropStoreConfig,
    build_crop_store,
    rotated_extent,
    store_geometry,
)
from lrpose_bench.data.dataset import ImageCache
from lrpose_bench.data.transforms import (
    CropParams,
    apply_affine,
    box_to_center_size,
    crop_matrix,
    invert_affine,
    warp_image,
)
from lrpose_bench.errors import DataError
from lrpose_bench.resolution import Resolution

R64, R128 = Resolution(64, 48), Resolution(128, 96)


@settings(max_examples=200, deadline=None)
@given(w=st.floats(1, 100), h=st.floats(1, 100), max_deg=st.floats(0, 180), frac=st.floats(-1, 1))
def test_rotated_extent_bounds_every_rotation(w, h, max_deg, frac):
    ex, ey = rotated_extent(w, h, max_deg)
    theta = math.radians(frac * max_deg)
    assert w * abs(math.cos(theta)) + h * abs(math.sin(theta)) <= ex + 1e-9 * (w + h)
    assert w * abs(math.sin(theta)) + h * abs(math.cos(theta)) <= ey + 1e-9 * (w + h)
    assert ex <= math.hypot(w, h) + 1e-9 and ey <= math.hypot(w, h) + 1e-9
    # tight: attained at the limit rotation or at the diagonal
    t = math.radians(max_deg)
    assert math.isclose(
        ex,
        max(w * abs(math.cos(t)) + h * abs(math.sin(t)), math.hypot(w, h) if t >= math.atan2(h, w) else 0),
        rel_tol=1e-9,
    )


@settings(max_examples=300, deadline=None)
@given(
    x=st.floats(-50, 300),
    y=st.floats(-50, 300),
    bw=st.floats(3, 300),
    bh=st.floats(3, 300),
    sf=st.floats(0, 0.5),
    rf=st.floats(0, 60),
    u=st.floats(-1, 1),
    v=st.floats(-1, 1),
    flip=st.booleans(),
    res=st.sampled_from([[R64], [R128], [R64, R128], [Resolution(256, 192)]]),
    oversample=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_store_crop_covers_every_augmented_crop(x, y, bw, bh, sf, rf, u, v, flip, res, oversample):
    """Every input pixel centre of any crop sample_augmentation can draw falls inside the store crop,
    at least ``margin_px`` - 1e-6 store pixels from its border."""
    augment = AugmentConfig(scale_factor=sf, rotation_factor=rf, rotation_prob=1.0)
    geo = store_geometry(res, augment, oversample=oversample, margin_px=2)
    big = max(res, key=lambda r: r.height)
    center, size = box_to_center_size(np.array([x, y, bw, bh]), geo.aspect, 1.25)
    store = crop_matrix(CropParams(center, geo.store_box(size)), geo.size)
    scale = 1.0 + u * sf
    params = CropParams(center, (size[0] * scale, size[1] * scale), v * 2.0 * rf, flip)
    for r in res:
        aug = crop_matrix(params, r.size)
        corners = np.array([[0, 0], [r.width - 1, 0], [0, r.height - 1], [r.width - 1, r.height - 1]], float)
        in_store = apply_affine(apply_affine(corners, invert_affine(aug)), store)
        sh, sw = geo.size
        assert in_store[:, 0].min() >= 2 - 1e-6 and in_store[:, 0].max() <= sw - 3 + 1e-6
        assert in_store[:, 1].min() >= 2 - 1e-6 and in_store[:, 1].max() <= sh - 3 + 1e-6
    # density: the store samples the un-augmented box at >= oversample x the largest input's density
    density = (geo.size[0] - 1) / geo.store_box(size)[1]
    assert density >= oversample * (big.height - 1) / size[1] - 1e-9


def test_store_geometry_refuses_mixed_aspects_and_bad_oversample():
    with pytest.raises(DataError, match="aspect"):
        store_geometry([R64, Resolution(64, 64)], AugmentConfig())
    with pytest.raises(DataError, match="oversample"):
        store_geometry([R64], AugmentConfig(), oversample=0)


@pytest.fixture()
def split(tmp_path: Path):
    make_coco_fixture(tmp_path / "data", num_images=3, persons_per_image=2)
    return load_split("fixture", tmp_path / "data" / "annotations.json", tmp_path / "data" / "images")


def test_build_writes_exact_store_crops_and_reuses_them(split, tmp_path):
    augment = AugmentConfig()
    store = build_crop_store(split, [R64, R128], augment, 1.25, tmp_path / "stores", config=CropStoreConfig(workers=2))
    assert len(store) == len(split.instances) == 6
    assert store.crops.dtype == np.uint8 and not store.crops.flags.writeable  # memory-mapped, read-only
    assert store.size == store_geometry([R128], augment).size
    cache = ImageCache()
    for i, inst in enumerate(split.instances):
        center, size = box_to_center_size(inst.bbox, 48 / 64, 1.25)
        matrix = crop_matrix(CropParams(center, store.geometry.store_box(size)), store.size)
        np.testing.assert_allclose(store.store_matrices[i], matrix)
        np.testing.assert_array_equal(store.crops[i], warp_image(cache.read(inst.image_path), matrix, store.size))
        np.testing.assert_array_equal(store.joints[i], inst.joints)
    assert hasattr(store, "build_seconds")
    again = build_crop_store(split, [R64, R128], augment, 1.25, tmp_path / "stores")
    assert again.path == store.path and not hasattr(again, "build_seconds")  # opened, not rebuilt
    assert store.covers(R64, augment, 1.25) and store.covers(R128, augment, 1.25)
    assert not store.covers(R64, AugmentConfig(scale_factor=0.5), 1.25)
    assert not store.covers(Resolution(64, 64), augment, 1.25)
    # another augmentation range is another store; nothing half-built is left behind
    other = build_crop_store(split, [R64], AugmentConfig(rotation_factor=10.0), 1.25, tmp_path / "stores")
    assert other.path != store.path
    assert sorted(p.name.startswith("cropstore-") for p in (tmp_path / "stores").iterdir()) == [True, True]
    np.testing.assert_array_equal(store.gather([3, 1]), np.stack([store.crops[3], store.crops[1]]))
    assert tuple(store.on_device("cpu").shape) == (6, *store.size, 3)


def test_unreadable_store_is_a_data_error(split, tmp_path):
    store = build_crop_store(split, [R64], AugmentConfig(), 1.25, tmp_path / "stores")
    (store.path / "meta.npz").write_bytes(b"broken")
    with pytest.raises(DataError, match="delete the folder"):
        CropStore(store.path)
