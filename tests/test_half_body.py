"""Half-body augmentation (HRNet ``JointsDataset.half_body_transform``) on the CPU and device paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_coco_fixture
from lrpose_bench.config import AugmentConfig, load_config, resolve_method_params
from lrpose_bench.data.coco import Instance, KeypointSplit, load_split
from lrpose_bench.data.crop_store import CropStoreConfig, build_crop_store, store_geometry
from lrpose_bench.data.dataset import MEAN, STD, PoseDataset
from lrpose_bench.data.gpu_augment import DeviceAugmentPipeline, augmentation_params, crop_matrices
from lrpose_bench.data.transforms import (
    CropParams,
    box_to_center_size,
    crop_matrix,
    half_body_box,
    sample_augmentation,
    sample_crop_params,
)
from lrpose_bench.errors import ConfigError, DataError
from lrpose_bench.keypoints import LOWER_BODY_JOINTS, UPPER_BODY_JOINTS
from lrpose_bench.method import MethodContext
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution

R64, R128 = Resolution(64, 48), Resolution(128, 96)
ASPECT = R64.width / R64.height
UPPER, LOWER = list(UPPER_BODY_JOINTS), list(LOWER_BODY_JOINTS)
#: augmentation without scale/rotation/flip randomness (the crop box is exactly the drawn box)
STILL = dict(scale_factor=0.0, rotation_factor=0.0, rotation_prob=0.0, flip_prob=0.0)


def make_method(name: str, res: Resolution):
    cls = METHODS.get(name)
    return cls(resolve_method_params(cls.Params, name, res), MethodContext(res))


def random_instances(n: int, seed: int = 0, drop: float = 0.1) -> list[Instance]:
    """Persons with joints inside their box, upper joints in the top half, some joints unlabelled."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x0, y0, w, h = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(20, 80), rng.uniform(40, 160)
        fy = np.concatenate([rng.uniform(0.0, 0.55, 11), rng.uniform(0.45, 1.0, 6)])
        joints = np.stack([x0 + rng.uniform(0, 1, 17) * w, y0 + fy * h], 1)
        vis = np.where(rng.random(17) < drop, 0, 2).astype(np.float64)
        joints[vis == 0] = 0.0  # COCO writes unlabelled joints as (0, 0)
        out.append(Instance(i, Path(f"/none/{i}.png"), np.array([x0, y0, w, h]), joints, vis))
    return out


def split_of(instances: list[Instance]) -> KeypointSplit:
    return KeypointSplit("half-body test", Path("/none/ann.json"), Path("/none"), {}, instances)


def expected_half_box(joints: np.ndarray, sel: list[int], aspect: float):
    """Independent restatement of HRNet's box: mean centre, bbox aspect-fixed (enlarge), × 1.5."""
    pts = joints[sel]
    w, h = pts[:, 0].max() - pts[:, 0].min(), pts[:, 1].max() - pts[:, 1].min()
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return pts.mean(axis=0), np.array([1.5 * w, 1.5 * h])


def which_half(params: CropParams, inst: Instance, aspect: float) -> str | None:
    """'upper'/'lower' if the crop is that half's box, None if it is the padded person box."""
    labelled = inst.visibility > 0
    for name, ids in (("upper", UPPER), ("lower", LOWER)):
        sel = [j for j in ids if labelled[j]]
        if len(sel) < 2:
            continue
        center, size = expected_half_box(inst.joints, sel, aspect)
        if np.allclose(params.center, center, rtol=0, atol=1e-9) and np.allclose(params.size, size, rtol=1e-12, atol=0):
            return name
    return None


# -------------------------------------------------------------------------- (a) off = as before
@pytest.mark.parametrize("augment", [AugmentConfig(), AugmentConfig(rotation_prob=0.9, half_body_min_joints=0)])
def test_prob_zero_draws_nothing_and_crops_are_as_before(augment):
    assert augment.half_body_prob == 0.0
    instances = random_instances(40, seed=1, drop=0.0)
    ds = PoseDataset(split_of(instances), make_method("hrnet", R64), R64, train=True, augment=augment, seed=5)
    for epoch in (0, 3):
        for i, inst in enumerate(instances):
            rng = np.random.default_rng([5, epoch, i])
            twin = np.random.default_rng([5, epoch, i])
            got = ds.crop_params(i, rng)
            # the pre-half-body logic: padded box, then sample_augmentation on the same generator
            center, size = box_to_center_size(inst.bbox, ASPECT, 1.25)
            scale, rotation, flip = sample_augmentation(twin, augment)
            assert got == CropParams(center, (size[0] * scale, size[1] * scale), rotation, flip)
            assert rng.bit_generator.state == twin.bit_generator.state  # not one extra draw
    # the device path's draws are the same 3-tuple stream, and need no joints when half-body is off
    scales, rotations, flips, hc, hs = augmentation_params(5, 3, range(40), augment)
    assert np.isnan(hc).all() and np.isnan(hs).all()
    for i in range(40):
        assert (scales[i], rotations[i], flips[i]) == sample_augmentation(np.random.default_rng([5, 3, i]), augment)


def test_prob_zero_dataset_items_are_bit_identical_to_the_old_crop(tmp_path):
    make_coco_fixture(tmp_path / "data", num_images=2, persons_per_image=2, seed=4)
    split = load_split("fixture", tmp_path / "data" / "annotations.json", tmp_path / "data" / "images")
    augment = AugmentConfig(rotation_prob=0.9)
    ds = PoseDataset(split, make_method("hrnet", R64), R64, train=True, augment=augment, seed=2)
    ds.set_epoch(1)

    class OldLogic(PoseDataset):
        def crop_params(self, index, rng):
            center, size = box_to_center_size(self.split.instances[index].bbox, ASPECT, self.box_padding)
            scale, rotation, flip = sample_augmentation(rng, self.augment)
            return CropParams(center, (size[0] * scale, size[1] * scale), rotation, flip)

    old = OldLogic(split, make_method("hrnet", R64), R64, train=True, augment=augment, seed=2)
    old.set_epoch(1)
    for i in range(len(ds)):
        a, b = ds[i], old[i]
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key


def test_ineligible_instances_draw_nothing_even_with_half_body_on():
    """HRNet tests the joint count before drawing (``sum(vis) > NUM_JOINTS_HALF_BODY and rand() < p``)."""
    augment = AugmentConfig(half_body_prob=0.7, half_body_min_joints=17)
    inst = random_instances(1, drop=0.0)[0]
    rng, twin = np.random.default_rng([0, 0, 0]), np.random.default_rng([0, 0, 0])
    sample_crop_params(rng, augment, (1.0, 2.0), (3.0, 4.0), inst.joints, inst.visibility, ASPECT)
    sample_augmentation(twin, augment)
    assert rng.bit_generator.state == twin.bit_generator.state


# ------------------------------------------------------------------------------ (b) the box
def test_prob_one_crops_to_a_half_body_box_before_scale():
    instances = random_instances(60, seed=2)
    ds = PoseDataset(
        split_of(instances),
        make_method("hrnet", R64),
        R64,
        train=True,
        augment=AugmentConfig(half_body_prob=1.0, **STILL),
        seed=0,
    )
    for i, inst in enumerate(instances):
        params = ds.crop_params(i, np.random.default_rng([0, 0, i]))
        eligible = int((inst.visibility > 0).sum()) > 8
        assert (which_half(params, inst, ASPECT) is not None) == eligible, i
        assert params.rotation == 0.0 and params.flip is False


def test_scale_applies_on_top_of_the_half_body_box_in_hrnets_draw_order():
    augment = AugmentConfig(half_body_prob=1.0, rotation_prob=0.9)
    inst = random_instances(1, seed=3, drop=0.0)[0]
    for k in range(20):
        params = sample_crop_params(
            np.random.default_rng([k]), augment, (0.0, 0.0), (1.0, 1.0), inst.joints, inst.visibility, ASPECT
        )
        rng = np.random.default_rng([k])
        assert rng.random() < 1.0  # rand() < half_body_prob
        sel = UPPER if rng.normal() < 0.5 else LOWER  # randn() < 0.5: upper (both halves have > 2 joints)
        scale, rotation, flip = sample_augmentation(rng, augment)
        center, size = expected_half_box(inst.joints, sel, ASPECT)
        np.testing.assert_allclose(params.center, center, rtol=0, atol=1e-9)
        np.testing.assert_allclose(params.size, size * scale, rtol=1e-12)
        assert (params.rotation, params.flip) == (rotation, flip)


def test_too_few_labelled_joints_never_get_a_half_body_crop():
    instances = random_instances(30, seed=4, drop=0.0)
    for inst in instances:
        inst.visibility[9:] = 0  # 9 labelled
    person = [box_to_center_size(inst.bbox, ASPECT, 1.25) for inst in instances]
    for min_joints, expect_half in ((9, False), (17, False), (8, True)):
        ds = PoseDataset(
            split_of(instances),
            make_method("hrnet", R64),
            R64,
            train=True,
            augment=AugmentConfig(half_body_prob=1.0, half_body_min_joints=min_joints, **STILL),
        )
        for i, inst in enumerate(instances):
            params = ds.crop_params(i, np.random.default_rng([0, 0, i]))
            assert ((params.center, params.size) != person[i]) == expect_half
            if expect_half:  # only upper joints are labelled: the upper half, whatever the draw
                assert which_half(params, inst, ASPECT) == "upper"


def test_fallbacks_of_the_reference():
    joints = np.arange(34, dtype=np.float64).reshape(17, 2) * [1.0, 3.0]
    vis = np.zeros(17)
    vis[[0, 1, 2, 11, 12, 13]] = 2  # 3 upper, 3 lower
    up, _ = expected_half_box(joints, [0, 1, 2], ASPECT)
    low, _ = expected_half_box(joints, [11, 12, 13], ASPECT)
    assert np.allclose(half_body_box(joints, vis, ASPECT, True)[0], up)
    assert np.allclose(half_body_box(joints, vis, ASPECT, False)[0], low)
    vis[13] = 0  # lower has 2 (not > 2): upper either way
    assert np.allclose(half_body_box(joints, vis, ASPECT, False)[0], up)
    vis[2] = 0  # upper has 2, lower 2: upper (HRNet's last resort), still >= 2 joints
    assert np.allclose(half_body_box(joints, vis, ASPECT, False)[0], expected_half_box(joints, [0, 1], ASPECT)[0])
    vis[:] = 0
    vis[[0, 11]] = 2  # one joint per half: no half-body box
    assert half_body_box(joints, vis, ASPECT, True) is None
    vis[:] = 0
    vis[[0, 1, 2]] = 2
    joints[[0, 1, 2]] = 5.0  # degenerate box
    assert half_body_box(joints, vis, ASPECT, True) is None


# ---------------------------------------------------------------------------- (c) both halves
def test_both_halves_occur_with_hrnets_odds():
    instances = random_instances(400, seed=5, drop=0.0)
    ds = PoseDataset(
        split_of(instances),
        make_method("hrnet", R64),
        R64,
        train=True,
        augment=AugmentConfig(half_body_prob=1.0, **STILL),
        seed=9,
    )
    halves = [
        which_half(ds.crop_params(i, np.random.default_rng([9, 0, i])), inst, ASPECT)
        for i, inst in enumerate(instances)
    ]
    upper = halves.count("upper") / len(halves)
    assert halves.count(None) == 0 and halves.count("lower") > 0
    assert 0.62 < upper < 0.76  # randn() < 0.5: P = Phi(0.5) = 0.69

    ds.augment = AugmentConfig(half_body_prob=0.3, **STILL)
    applied = sum(
        which_half(ds.crop_params(i, np.random.default_rng([9, 0, i])), inst, ASPECT) is not None
        for i, inst in enumerate(instances)
    ) / len(instances)
    assert 0.22 < applied < 0.38


# --------------------------------------------------------------- (e) both paths' geometry agree
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 300),
    prob=st.sampled_from([0.0, 0.3, 1.0]),
    min_joints=st.integers(0, 17),
    res=st.sampled_from([R64, R128, Resolution(64, 64)]),
)
def test_device_geometry_draws_the_cpu_crops(seed, epoch, prob, min_joints, res):
    instances = random_instances(12, seed=seed, drop=0.3)
    augment = AugmentConfig(rotation_prob=0.9, half_body_prob=prob, half_body_min_joints=min_joints)
    ds = PoseDataset(split_of(instances), make_method("hrnet", res), res, train=True, augment=augment, seed=seed)
    ds.set_epoch(epoch)
    aspect = res.width / res.height
    boxes = [box_to_center_size(inst.bbox, aspect, 1.25) for inst in instances]
    scales, rotations, flips, hc, hs = augmentation_params(
        seed,
        epoch,
        range(12),
        augment,
        joints=np.stack([i.joints for i in instances]),
        visibility=np.stack([i.visibility for i in instances]),
        aspect=aspect,
    )
    half = ~np.isnan(hc[:, 0])
    centers = np.where(half[:, None], hc, np.array([b[0] for b in boxes]))
    sizes = np.where(half[:, None], hs, np.array([b[1] for b in boxes])) * scales[:, None]
    fast = crop_matrices(centers, sizes, rotations, flips, res.size)
    for i in range(12):
        params = ds.crop_params(i, np.random.default_rng([seed, epoch, i]))
        assert tuple(centers[i]) == params.center and tuple(sizes[i]) == params.size
        np.testing.assert_allclose(fast[i], crop_matrix(params, res.size), rtol=1e-12, atol=1e-9)
        if prob == 0.0:
            assert not half[i]
        if half[i]:  # the half-body box is fixed to the input aspect
            assert params.size[0] / params.size[1] == pytest.approx(aspect, rel=1e-9)


def test_device_params_need_the_joints_when_half_body_is_on():
    with pytest.raises(DataError, match="half_body_prob"):
        augmentation_params(0, 0, [0], AugmentConfig(half_body_prob=0.5))


# ------------------------------------------------------------- (d) fast path against the CPU
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("halfbody")
    make_coco_fixture(root / "data", num_images=4, persons_per_image=2, seed=3)
    split = load_split("fixture", root / "data" / "annotations.json", root / "data" / "images")
    base = AugmentConfig(rotation_prob=0.9)  # the store covers the person box's augmentation range
    store = build_crop_store(split, [R64, R128], base, 1.25, root / "stores", config=CropStoreConfig(oversample=1.0))
    return split, base, store


def out_of_store_fraction(composed: np.ndarray, store_size: tuple[int, int], input_size: tuple[int, int]) -> float:
    """Fraction of input pixel centres whose source point lies outside the store crop (zero read there)."""
    (sh, sw), (h, w) = store_size, input_size
    ys, xs = np.mgrid[0:h, 0:w]
    inverse = np.linalg.inv(np.vstack([composed, [0.0, 0.0, 1.0]]))
    sx, sy, _ = inverse @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    return float(((sx < 0) | (sx > sw - 1) | (sy < 0) | (sy > sh - 1)).mean())


@pytest.mark.parametrize("method_name,res", [("hrnet", R64), ("cal", R128)])
def test_fast_path_matches_cpu_path_with_half_body(data, method_name, res):
    split, base, store = data
    augment = dataclasses.replace(base, half_body_prob=1.0)
    method = make_method(method_name, res)
    seed, epoch = 7, 3
    cpu = PoseDataset(split, method, res, train=True, augment=augment, seed=seed)
    cpu.set_epoch(epoch)
    indices = list(range(len(cpu)))
    items = [cpu[i] for i in indices]
    ref = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "index"}
    fast = DeviceAugmentPipeline(store, method, res, augment, seed=seed, device="cpu")
    fast.set_epoch(epoch)
    batch = fast.batch(indices)
    geo = fast.geometry(indices)
    eligible = [int((inst.visibility > 0).sum()) > augment.half_body_min_joints for inst in split.instances]
    assert geo["half_body"].tolist() == eligible and any(eligible)
    for i in indices:
        params = cpu.crop_params(i, np.random.default_rng([seed, epoch, i]))
        np.testing.assert_allclose(geo["aug"][i], crop_matrix(params, res.size), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(batch["joints"], ref["joints"], atol=1e-4, rtol=0)
    torch.testing.assert_close(batch["visible"], ref["visible"], atol=0, rtol=0)
    for key in ref:
        if key not in ("image", "joints", "visible"):
            torch.testing.assert_close(batch[key], ref[key], atol=1e-4, rtol=0, msg=key)
    # images: on this fixture every half-body crop stays inside the store crop (measured 0 of the
    # pixels outside), so they differ only by the store's resampling, the bound of test_gpu_augment
    outside = [out_of_store_fraction(geo["composed"][i], store.size, res.size) for i in indices]
    assert max(outside) == 0.0, outside
    grey = batch["image"].permute(0, 2, 3, 1).numpy() * STD + MEAN
    direct = ref["image"].permute(0, 2, 3, 1).numpy() * STD + MEAN
    diff = np.abs(grey - direct) * 255.0
    assert diff.mean() < 6.0 and np.median(diff) < 6.0, diff.mean()


def test_half_body_crops_rarely_leave_the_store_crop():
    """The documented bound (``gpu_augment`` docstring): the store covers the *person* box's range, a
    half-body box (up to 1.5/1.25 of the padded box, off-centre) can reach past it. Anatomical poses
    (upper joints on top, a third with arms stretched out, half lying at any angle), HRNet's ranges,
    half_body_prob = 1: measured 0.31 % of the input pixels outside on average, 6 % of the crops
    touching the border, 9.4 % of one crop at worst."""
    augment = AugmentConfig(half_body_prob=1.0)
    geometry = store_geometry([R64], augment)
    template = np.array(
        [
            [0, 0.06],
            [-0.03, 0.04],
            [0.03, 0.04],
            [-0.06, 0.06],
            [0.06, 0.06],
            [-0.12, 0.2],
            [0.12, 0.2],
            [-0.16, 0.35],
            [0.16, 0.35],
            [-0.18, 0.48],
            [0.18, 0.48],
            [-0.08, 0.52],
            [0.08, 0.52],
            [-0.09, 0.75],
            [0.09, 0.75],
            [-0.09, 0.97],
            [0.09, 0.97],
        ]
    )
    rng = np.random.default_rng(0)
    fractions = []
    for i in range(400):
        joints = template.copy()
        if rng.random() < 0.3:
            joints[[7, 9, 8, 10]] = [[-0.35, 0.22], [-0.55, 0.22], [0.35, 0.22], [0.55, 0.22]]
        joints = joints + rng.normal(0, 0.03, joints.shape)
        if rng.random() < 0.5:
            t = rng.uniform(-np.pi, np.pi)
            joints = joints @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        joints = joints * 100 + 300
        low, high = joints.min(0), joints.max(0)
        center, size = box_to_center_size(np.array([*low, *(high - low)]), ASPECT, 1.25)
        store = crop_matrix(CropParams(center, geometry.store_box(size)), geometry.size)
        params = sample_crop_params(
            np.random.default_rng([0, 0, i]), augment, center, size, joints, np.full(17, 2.0), ASPECT
        )
        composed = np.vstack([crop_matrix(params, R64.size), [0, 0, 1]]) @ np.linalg.inv(np.vstack([store, [0, 0, 1]]))
        fractions.append(out_of_store_fraction(composed[:2], geometry.size, R64.size))
    fractions = np.array(fractions)
    assert fractions.mean() < 0.005 and fractions.max() < 0.12 and (fractions > 0).mean() < 0.1


# ---------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "key,value",
    [("augment.half_body_prob", 1.5), ("augment.half_body_prob", -0.1), ("augment.half_body_min_joints", -1)],
)
def test_out_of_range_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("quick", overrides={key: value})


def test_in_range_settings_load():
    cfg = load_config("quick", overrides={"augment.half_body_prob": 0.3, "augment.half_body_min_joints": 0})
    assert cfg.augment.half_body_prob == 0.3 and cfg.augment.half_body_min_joints == 0
