"""The device augmentation path against the CPU reference path (same augmentation parameters)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_coco_fixture
from lrpose_bench.config import AugmentConfig, resolve_method_params
from lrpose_bench.data.coco import load_split
from lrpose_bench.data.crop_store import CropStoreConfig, build_crop_store
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.data.gpu_augment import (
    DeviceAugmentPipeline,
    affine_grid_theta,
    crop_matrices,
    encode_targets,
    store_to_input,
    warp_crops,
)
from lrpose_bench.data.transforms import CropParams, crop_matrix
from lrpose_bench.method import Method, MethodContext
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution

R64, R128 = Resolution(64, 48), Resolution(128, 96)


def make_method(name: str, res: Resolution):
    cls = METHODS.get(name)
    return cls(resolve_method_params(cls.Params, name, res), MethodContext(res))


@settings(max_examples=100, deadline=None)
@given(
    cx=st.floats(-50, 300),
    cy=st.floats(-50, 300),
    bw=st.floats(3, 300),
    bh=st.floats(3, 300),
    rot=st.floats(-90, 90),
    flip=st.booleans(),
    size=st.sampled_from([(64, 48), (128, 96), (30, 20)]),
)
def test_vectorised_crop_matrices_equal_crop_matrix(cx, cy, bw, bh, rot, flip, size):
    ref = crop_matrix(CropParams((cx, cy), (bw, bh), rot, flip), size)
    got = crop_matrices(np.array([[cx, cy]]), np.array([[bw, bh]]), np.array([rot]), np.array([flip]), size)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9 * max(1.0, abs(cx), abs(cy)))


def test_grid_sample_equals_cv2_warp_of_the_same_image():
    """``affine_grid(align_corners=True)`` + bilinear ``grid_sample`` is cv2's unit-length bilinear warp:
    the only differences are OpenCV's 1/32-px fixed-point weights and its rounding to uint8."""
    rng = np.random.default_rng(0)
    src = cv2.GaussianBlur((rng.random((90, 70, 3)) * 255).astype(np.uint8), (5, 5), 1.5)
    matrices = np.stack(
        [
            crop_matrix(CropParams((35 + rng.normal(), 45 + rng.normal()), (40 * s, 53 * s), r, f), (64, 48))
            for s, r, f in [(1.0, 0.0, False), (0.8, 30.0, True), (1.3, -75.0, False), (1.1, 90.0, True)]
        ]
    )
    theta = torch.from_numpy(affine_grid_theta(matrices, (90, 70), (64, 48)).astype(np.float32))
    fast = warp_crops(torch.from_numpy(np.stack([src] * 4)), theta, (64, 48)).permute(0, 2, 3, 1).numpy()
    for i, matrix in enumerate(matrices):
        ref = cv2.warpAffine(src, matrix, (48, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        diff = np.abs(fast[i] - ref.astype(np.float32))
        assert diff.max() <= 2.0 and diff.mean() < 0.5, (i, diff.max(), diff.mean())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpuaug")
    make_coco_fixture(root / "data", num_images=4, persons_per_image=2, seed=3)
    split = load_split("fixture", root / "data" / "annotations.json", root / "data" / "images")
    augment = AugmentConfig(rotation_prob=0.9)
    stores = {
        ov: build_crop_store(split, [R64, R128], augment, 1.25, root / "stores", config=CropStoreConfig(oversample=ov))
        for ov in (1.0, 2.0)
    }
    return split, augment, stores


@pytest.mark.parametrize("method_name", ["hrnet", "udp", "cal"])
@pytest.mark.parametrize("res", [R64, R128])
def test_fast_path_matches_cpu_path(data, method_name, res):
    split, augment, stores = data
    method = make_method(method_name, res)
    seed, epoch = 7, 3
    cpu = PoseDataset(split, method, res, train=True, augment=augment, seed=seed)
    cpu.set_epoch(epoch)
    indices = list(range(len(cpu)))
    items = [cpu[i] for i in indices]
    ref = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "index"}
    for oversample, store in stores.items():
        fast = DeviceAugmentPipeline(store, method, res, augment, seed=seed, device="cpu")
        fast.set_epoch(epoch)
        batch = fast.batch(indices)
        # same augmentation parameters: joints, visibility and every target agree to float32 precision
        torch.testing.assert_close(batch["joints"], ref["joints"], atol=1e-4, rtol=0)
        torch.testing.assert_close(batch["visible"], ref["visible"], atol=0, rtol=0)
        for key in ref:
            if key not in ("image", "joints", "visible"):
                torch.testing.assert_close(batch[key], ref[key], atol=1e-4, rtol=0, msg=key)
        # exact reference of the fast path: cv2 warp of the *store crop* with the composed matrix
        geo = fast.geometry(indices)
        grey = batch["image"].permute(0, 2, 3, 1).numpy() * cpu_std() + cpu_mean()
        for i in indices:
            warped = cv2.warpAffine(
                store.crops[i],
                geo["composed"][i],
                (res.width, res.height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
            ).astype(np.float32)
            diff = np.abs(grey[i] * 255.0 - warped)
            assert diff.max() <= 2.01 and diff.mean() < 0.5
        # looser bound against the CPU path's direct warp of the image: the store is a resampled image
        direct = ref["image"].permute(0, 2, 3, 1).numpy() * cpu_std() + cpu_mean()
        diff = np.abs(grey - direct) * 255.0
        bound = {1.0: 6.0, 2.0: 4.0}[oversample]
        assert diff.mean() < bound, (oversample, diff.mean())
        assert np.median(diff) < bound


def cpu_mean():
    from lrpose_bench.data.dataset import MEAN

    return MEAN


def cpu_std():
    from lrpose_bench.data.dataset import STD

    return STD


def test_epoch_and_seed_change_the_augmentation(data):
    split, augment, stores = data
    fast = DeviceAugmentPipeline(stores[1.0], make_method("hrnet", R64), R64, augment, seed=0)
    a = fast.geometry([0, 1, 2])["aug"]
    fast.set_epoch(1)
    b = fast.geometry([0, 1, 2])["aug"]
    assert not np.allclose(a, b)
    fast.set_epoch(0)
    np.testing.assert_array_equal(fast.geometry([0, 1, 2])["aug"], a)


def test_composed_matrix_is_store_then_augmentation():
    rng = np.random.default_rng(1)
    aug = crop_matrices(
        rng.uniform(0, 100, (3, 2)),
        rng.uniform(20, 60, (3, 2)),
        rng.uniform(-90, 90, 3),
        np.array([True, False, True]),
        (64, 48),
    )
    store = crop_matrices(
        rng.uniform(0, 100, (3, 2)), rng.uniform(60, 120, (3, 2)), np.zeros(3), np.zeros(3, bool), (100, 80)
    )
    composed = store_to_input(aug, store)
    p = rng.uniform(0, 100, (3, 2))
    in_store = np.einsum("bij,bj->bi", store[:, :, :2], p) + store[:, :, 2]
    via = np.einsum("bij,bj->bi", composed[:, :, :2], in_store) + composed[:, :, 2]
    direct = np.einsum("bij,bj->bi", aug[:, :, :2], p) + aug[:, :, 2]
    np.testing.assert_allclose(via, direct, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), res=st.sampled_from([R64, R128]))
def test_gaussian_heatmap_torch_equals_the_numpy_encoder(seed, res):
    from lrpose_bench.baselines.heatmap import encode_gaussian_heatmap
    from lrpose_bench.baselines.heatmap import gaussian_heatmap_torch as heatmap_twin

    rng = np.random.default_rng(seed)
    h, w = res.heatmap
    joints = np.stack([rng.uniform(-8, w + 8, (3, 17)), rng.uniform(-8, h + 8, (3, 17))], -1).astype(np.float32)
    visible = (rng.random((3, 17)) > 0.3).astype(np.float32)
    maps, weight = heatmap_twin(torch.from_numpy(joints), torch.from_numpy(visible), (h, w), 2.0, 3.0)
    for i in range(3):
        ref_maps, ref_weight = encode_gaussian_heatmap(joints[i], visible[i], (h, w), 2.0, 3.0)
        np.testing.assert_allclose(maps[i].numpy(), ref_maps, atol=1e-6)
        np.testing.assert_array_equal(weight[i].numpy(), ref_weight)


def test_encode_targets_uses_the_methods_batched_twin_and_it_equals_the_reference():
    method = make_method("hrnet", R64)
    joints = torch.tensor([[[3.2, 4.7]] * 17])
    visible = torch.ones(1, 17)
    reference = Method.encode_batch(method, joints, visible)  # the per-instance numpy path
    calls = []
    twin = method.encode_batch

    def spy(j, v):
        calls.append(j.shape)
        return twin(j, v)

    method.encode_batch = spy
    dev = encode_targets(method, joints, visible)
    assert calls == [joints.shape]
    for key in reference:
        torch.testing.assert_close(dev[key], reference[key], atol=1e-6, rtol=0)
