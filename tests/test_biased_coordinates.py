"""``data.coordinates: biased`` reproduces HRNet's data processing, checked against a literal
rebuild of deep-high-resolution-net.pytorch (``lib/utils/transforms.py``, ``lib/dataset/
JointsDataset.py::generate_target``, ``lib/core/function.py::validate`` flip test with
``SHIFT_HEATMAP``, ``lib/core/inference.py::get_final_preds``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_codec_heatmap import hrnet_get_final_preds

from conftest import make_coco_fixture
from lrpose_bench.config import AugmentConfig, load_config
from lrpose_bench.data.coco import load_split
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.data.transforms import CropParams, box_to_center_size, crop_matrix
from lrpose_bench.engine.cell import CellSpec, build_method
from lrpose_bench.engine.evaluator import build_eval_dataset, predict
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import FLIP_PAIRS
from lrpose_bench.resolution import Resolution

RES = Resolution(64, 48)


# ---------------------------------------------------------------- HRNet, literally (numpy/cv2)
def get_dir(src_point, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]


def get_3rd_point(a, b):
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size, inv=0):
    scale_tmp = scale * 200.0
    src_w = scale_tmp[0]
    dst_w, dst_h = output_size
    rot_rad = np.pi * rot / 180
    src_dir = get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
    if inv:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def affine_transform(pt, t):
    return (t @ np.array([pt[0], pt[1], 1.0]).T)[:2]


def generate_target(joints, vis, image_size, heatmap_size, sigma):
    """``JointsDataset.generate_target`` (gaussian): feat_stride = image/heatmap, int(x + 0.5)."""
    num = joints.shape[0]
    target_weight = (vis > 0).astype(np.float32)
    target = np.zeros((num, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
    tmp_size = sigma * 3
    feat_stride = image_size / heatmap_size
    for k in range(num):
        mu_x = int(joints[k][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[k][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[k] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
        img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[k] > 0.5:
            target[k][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
    return target, target_weight


def flip_back(output_flipped, matched_parts):
    output_flipped = output_flipped[:, :, :, ::-1]
    for a, b in matched_parts:
        tmp = output_flipped[:, a, :, :].copy()
        output_flipped[:, a, :, :] = output_flipped[:, b, :, :]
        output_flipped[:, b, :, :] = tmp
    return output_flipped


def get_final_preds(batch_heatmaps, center, scale):
    """HRNet ``get_final_preds``: the arg-max + quarter refinement (rebuilt loop for loop in
    ``test_codec_heatmap.py``), then ``transform_preds`` through the inverse heatmap affine."""
    n, k, height, width = batch_heatmaps.shape
    coords = hrnet_get_final_preds(batch_heatmaps).astype(np.float32)
    preds = coords.copy()
    for i in range(n):
        trans = get_affine_transform(center[i], scale[i], 0, [width, height], inv=1)
        for p in range(k):
            preds[i, p] = affine_transform(coords[i, p], trans)
    return preds


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("biased")
    make_coco_fixture(root, num_images=3, persons_per_image=2, seed=4)
    return load_split("fixture", root / "annotations.json", root / "images")


def biased_cfg():
    return load_config(overrides={"data.coordinates": "biased"})


def centre_scale(inst, padding=1.25):
    center, size = box_to_center_size(inst.bbox, RES.width / RES.height, padding)
    return np.array(center, np.float32), np.array(size, np.float32) / 200.0


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("rotation", [0.0, 30.0, -45.0])
def test_crop_matrix_is_hrnet_get_affine_transform(rotation: float) -> None:
    center, size = (80.5, 61.25), (37.5, 50.0)
    ours = crop_matrix(CropParams(center, size, rotation), RES.size, "biased")
    ref = get_affine_transform(np.array(center), np.array(size) / 200.0, rotation, [RES.width, RES.height])
    np.testing.assert_allclose(ours, ref, atol=2e-4)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_training_target_is_hrnet_generate_target(split, sigma: float) -> None:
    """Crop (``get_affine_transform``), joints / feat_stride, ``int(x + 0.5)`` centre, 3σ patch.

    At σ with an integral 3σ: HRNet's patch arithmetic (``ul = int(mu - 3σ)``, centre ``size // 2``)
    puts the peak one pixel before ``mu`` when 3σ is fractional (σ 0.75: ``int(mu - 2.25) + 2``), a
    case its configs never reach; the next test checks our peak at the shipped 64×48 σ instead."""
    cfg = biased_cfg()
    method = build_method(CellSpec("hrnet", "hrnet-w8", RES, 0, (("sigma", sigma),)), cfg)
    still = AugmentConfig(scale_factor=0.0, rotation_factor=0.0, rotation_prob=0.0, flip_prob=0.0)
    dataset = PoseDataset(split, method, RES, train=True, augment=still, coordinates="biased")
    sigma = method.params.sigma
    for index, inst in enumerate(split.instances):
        center, scale = centre_scale(inst)
        trans = get_affine_transform(center, scale, 0, [RES.width, RES.height])
        joints = np.array([affine_transform(j, trans) for j in inst.joints])
        inside = (inst.visibility > 0).astype(np.float32)
        target, weight = generate_target(joints, inside, np.array([48, 64]), np.array([12, 16]), sigma)
        item = dataset[index]
        vis = item["weight"].numpy() > 0
        np.testing.assert_array_equal(vis, weight > 0)
        np.testing.assert_allclose(item["heatmap"].numpy()[vis], target[vis], atol=1e-6)


def test_training_target_peaks_at_the_rounded_joint_at_the_shipped_sigma(split) -> None:
    """Whatever σ the sweep chose (0.75 at 64×48, a fractional 3σ), the target's maximum sits on
    HRNet's centre ``int(j / stride + 0.5)`` and the map is symmetric about it."""
    cfg = biased_cfg()
    method = build_method(CellSpec("hrnet", "hrnet-w8", RES), cfg)
    still = AugmentConfig(scale_factor=0.0, rotation_factor=0.0, rotation_prob=0.0, flip_prob=0.0)
    dataset = PoseDataset(split, method, RES, train=True, augment=still, coordinates="biased")
    for index, inst in enumerate(split.instances):
        center, scale = centre_scale(inst)
        trans = get_affine_transform(center, scale, 0, [RES.width, RES.height])
        joints = np.array([affine_transform(j, trans) for j in inst.joints]) / 4.0
        item = dataset[index]
        heatmap, weight = item["heatmap"].numpy(), item["weight"].numpy()
        for k in np.flatnonzero(weight > 0):
            mu_x, mu_y = (int(v + 0.5) for v in joints[k])
            if not (1 <= mu_x < heatmap.shape[2] - 1 and 1 <= mu_y < heatmap.shape[1] - 1):
                continue  # the symmetry check needs both neighbours on the map
            assert np.unravel_index(heatmap[k].argmax(), heatmap[k].shape) == (mu_y, mu_x)
            assert heatmap[k, mu_y, mu_x - 1] == pytest.approx(heatmap[k, mu_y, mu_x + 1])
            assert heatmap[k, mu_y - 1, mu_x] == pytest.approx(heatmap[k, mu_y + 1, mu_x])


class StrideFourNet(torch.nn.Module):
    """A fixed, deterministic 'network': 4×4 average pooling and a 1×1 conv to 17 maps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 17, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.nn.functional.avg_pool2d(x, 4))


def test_flip_test_and_decode_are_hrnet_s(split) -> None:
    """Our ``predict`` in the biased system equals HRNet's validate(): flip, ``flip_back``, the
    1-px ``SHIFT_HEATMAP``, averaging, ``get_final_preds`` and ``transform_preds``."""
    cfg = biased_cfg()
    method = build_method(CellSpec("hrnet", "hrnet-w8", RES), cfg)
    dataset = build_eval_dataset(split, method, RES, cfg)
    net = StrideFourNet().eval()
    ours = predict(net, method, dataset, batch_size=4, flip_test=True, progress=False)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        output = net(images).numpy()
        flipped = flip_back(net(images.flip(3)).numpy(), [(a, b) for a, b in FLIP_PAIRS]).copy()
    flipped[:, :, :, 1:] = flipped.copy()[:, :, :, 0:-1]  # SHIFT_HEATMAP
    output = (output + flipped) * 0.5
    centres, scales = zip(*(centre_scale(inst) for inst in split.instances), strict=True)
    ref = get_final_preds(output, centres, scales)
    np.testing.assert_allclose(ours.keypoints, ref, atol=2e-3)


def test_vector_methods_are_refused_in_the_biased_system() -> None:
    with pytest.raises(ConfigError, match="data.coordinates: biased"):
        build_method(CellSpec("simcc", "hrnet-w8", RES), biased_cfg())


def test_unbiased_default_is_unchanged() -> None:
    params = CropParams((80.5, 61.25), (37.5, 50.0))
    assert load_config().data.coordinates == "unbiased"
    np.testing.assert_array_equal(crop_matrix(params, RES.size), crop_matrix(params, RES.size, "unbiased"))


def test_biased_flip_is_x_to_w_minus_x() -> None:
    params = CropParams((80.5, 61.25), (37.5, 50.0))
    plain = crop_matrix(params, RES.size, "biased")
    mirrored = crop_matrix(CropParams(params.center, params.size, flip=True), RES.size, "biased")
    point = np.array([70.0, 55.0, 1.0])
    assert (mirrored @ point)[0] == pytest.approx(RES.width - (plain @ point)[0])
