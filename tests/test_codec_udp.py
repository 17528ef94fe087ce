"""UDP combined codec: disk/offset targets, layout, decode, flip test, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.baselines.udp import UdpMethod
from lrpose_bench.codecs.dark import gaussian_blur_maps
from lrpose_bench.codecs.offset import (
    argmax_offset_decode,
    disk_and_offsets,
    flip_combined,
    interleave,
    offset_radius,
    split_combined,
)
from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import MethodContext, TrainingStage
from lrpose_bench.oracle import encode_batch, oracle_outputs
from lrpose_bench.resolution import Resolution

RESOLUTIONS = ("64x48", "128x96", "256x192")
K = 17
TRAIN = TrainingStage("train", 1)


def build(res: str, **ablation) -> UdpMethod:
    resolution = Resolution.parse(res)
    params = resolve_method_params(UdpMethod.Params, "udp", resolution, ablation or None)
    return UdpMethod(params, MethodContext(resolution))


# --------------------------------------------------------------------------------- targets
def test_radius_scales_with_heatmap() -> None:
    assert offset_radius(0.0546875, (64, 48)) == pytest.approx(3.5)  # UDP-Pose issue 31
    assert offset_radius(0.0546875, (32, 24)) == pytest.approx(1.75)
    # 64x48 departs from the linear rule (0.875 px would be a 1-4 pixel disk): configs/methods/udp.yaml
    assert build("64x48").radius == pytest.approx(1.5)  # R from the tune-split sweep (reports/sweep/sweep.md)


def test_disk_and_offsets_match_equations() -> None:
    joints = np.array([[5.3, 7.6], [0.1, 0.2], [40.0, 40.0], [6.0, 6.0]])
    visible = np.array([1, 1, 1, 0])
    disk, offsets, dist2, weight = disk_and_offsets(joints, visible, (16, 12), radius=1.75)
    ys, xs = np.mgrid[0:16, 0:12]
    d2 = (xs - 5.3) ** 2 + (ys - 7.6) ** 2
    np.testing.assert_array_equal(disk[0], (d2 <= 1.75**2).astype(np.float32))  # Eq. 6
    np.testing.assert_allclose(offsets[0, 0], (5.3 - xs) / 1.75, rtol=1e-6)  # Eq. 7 / R
    np.testing.assert_allclose(offsets[0, 1], (7.6 - ys) / 1.75, rtol=1e-6)
    np.testing.assert_allclose(dist2[0], d2, rtol=1e-5)
    assert np.abs(offsets[0][:, disk[0] > 0]).max() <= 1.0 + 1e-6  # within [-1, 1] inside the disk
    np.testing.assert_array_equal(weight, [1, 1, 0, 0])  # off-map disk and invisible → 0
    assert disk[2].sum() == 0 and disk[3].sum() == 0 and np.abs(offsets[3]).max() == 0


def test_layout_interleaved_and_split_inverse() -> None:
    cls = torch.rand(2, K, 4, 3)
    off = torch.rand(2, K, 2, 4, 3)
    combined = interleave(cls, off)
    assert combined.shape == (2, 3 * K, 4, 3)
    assert torch.equal(combined[:, 3], cls[:, 1]) and torch.equal(combined[:, 4], off[:, 1, 0])
    assert torch.equal(combined[:, 5], off[:, 1, 1])
    back_cls, back_off = split_combined(combined)
    assert torch.equal(back_cls, cls) and torch.equal(back_off, off)


def test_flip_combined_negates_x_offsets_only() -> None:
    outputs = torch.rand(1, 3 * K, 5, 4)
    index = torch.as_tensor(flip_index(K))
    flipped = flip_combined(outputs, index)
    view, src = flipped.reshape(1, K, 3, 5, 4), outputs.reshape(1, K, 3, 5, 4)
    assert torch.equal(view[:, 1, 0], src[:, 2, 0].flip(-1))  # left_eye ← mirrored right_eye cls
    assert torch.equal(view[:, 1, 1], -src[:, 2, 1].flip(-1))  # x offset negated
    assert torch.equal(view[:, 1, 2], src[:, 2, 2].flip(-1))  # y offset kept
    assert torch.equal(flip_combined(flipped, index), outputs)  # an involution


def test_offset_blur_keeps_linear_field_up_to_the_border() -> None:
    axis_y, axis_x = torch.arange(16, dtype=torch.float64), torch.arange(12, dtype=torch.float64)
    ys, xs = torch.meshgrid(axis_y, axis_x, indexing="ij")
    field = (0.3 * xs - 0.7 * ys + 2.0)[None, None]
    for kernel in (3, 7, 11):
        assert torch.allclose(gaussian_blur_maps(field, kernel, padding="odd"), field, atol=1e-9)


def test_decode_reads_offset_at_blurred_argmax() -> None:
    cls = torch.zeros(1, 1, 9, 9)
    cls[0, 0, 4, 3] = 1.0
    cls[0, 0, 4, 4] = 0.6  # lower than its neighbours, but the blurred maximum
    cls[0, 0, 4, 5] = 1.0
    cls[0, 0, 2, 7] = 1.0  # isolated spike: loses after blurring
    offsets = torch.zeros(1, 1, 2, 9, 9)
    offsets[0, 0, 0, 4, 4] = 0.5
    offsets[0, 0, 1, 4, 4] = -0.25
    coords, scores = argmax_offset_decode(cls, offsets, radius=2.0, cls_kernel=3, offset_kernel=0)
    assert torch.allclose(coords[0, 0], torch.tensor([4.0 + 1.0, 4.0 - 0.5]))
    assert scores.shape == (1, 1)


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("loss", ["mse", "paper"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_round_trip_within_005(res: str, loss: str, seed: int) -> None:
    method = build(res, loss=loss)
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    margin = 1.0  # the disk must hold pixels; the odd-reflection offset blur is exact to the border
    joints = np.stack(
        [rng.uniform(margin, width - 1 - margin, (2, K)), rng.uniform(margin, height - 1 - margin, (2, K))], -1
    ).astype(np.float32)
    coords, _ = method.decode(oracle_outputs(method, joints, np.ones((2, K), np.float32)))
    assert (coords - torch.tensor(joints)).abs().max() <= 0.05


@pytest.mark.parametrize("res", RESOLUTIONS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_flip_test_consistency(res: str, seed: int) -> None:
    method = build(res)
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(0, width - 1, (2, K)), rng.uniform(0, height - 1, (2, K))], -1).astype(np.float32)
    flipped = joints[:, flip_index(K)].copy()
    flipped[..., 0] = width - 1 - flipped[..., 0]
    visible = np.ones((2, K), np.float32)
    index = torch.as_tensor(flip_index(K))
    original = oracle_outputs(method, joints, visible)
    back = method.flip_outputs(oracle_outputs(method, flipped, visible), index)
    assert torch.allclose(back, original, atol=1e-5)
    coords, _ = method.decode(original)
    averaged, _ = method.decode(0.5 * (original + back))
    assert torch.allclose(averaged, coords, atol=1e-4)


# ---------------------------------------------------------------------------------- losses
def reference_udp_loss(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """UDP-Pose JointsMSELoss_offset, written as its per-joint loop (loss_hm + loss_offset)."""
    n, c, h, w = output.shape
    mse = torch.nn.MSELoss()
    loss_hm = loss_os = 0.0
    pred, gt = output.reshape(n, c, -1), target.reshape(n, c, -1)
    for k in range(c // 3):
        tw = weight[:, k, None]
        loss_hm = loss_hm + 0.5 * mse(pred[:, 3 * k] * tw, gt[:, 3 * k] * tw)
        loss_os = loss_os + 0.5 * mse(gt[:, 3 * k] * pred[:, 3 * k + 1], gt[:, 3 * k] * gt[:, 3 * k + 1])
        loss_os = loss_os + 0.5 * mse(gt[:, 3 * k] * pred[:, 3 * k + 2], gt[:, 3 * k] * gt[:, 3 * k + 2])
    return (loss_hm + loss_os) / (c // 3)


def random_batch(method: UdpMethod, n: int = 3, seed: int = 0):
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(0, width - 1, (n, K)), rng.uniform(0, height - 1, (n, K))], -1)
    visible = (rng.random((n, K)) > 0.2).astype(np.float32)
    return encode_batch(method, joints, visible)


def test_mse_loss_matches_udp_pose_reference() -> None:
    method = build("128x96")
    batch = random_batch(method)
    outputs = torch.randn(3, 3 * K, 32, 24)
    target = interleave(batch["disk"], batch["offset"])
    expected = reference_udp_loss(outputs, target, batch["weight"])
    parts = method.loss(outputs, batch, TRAIN)
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) >= {"loss", "heatmap", "offset"}


def test_mse_loss_alpha_weighs_only_the_offset_term() -> None:
    """alpha scales UDP-Pose's offset terms and nothing else; 1.0 is the reference loss."""
    batch = random_batch(build("128x96"), seed=3)
    outputs = torch.randn(3, 3 * K, 32, 24)
    ref = build("128x96").loss(outputs, batch, TRAIN)
    half = build("128x96", alpha=0.5).loss(outputs, batch, TRAIN)
    assert half["heatmap"].item() == pytest.approx(ref["heatmap"].item(), rel=1e-6)
    assert half["offset"].item() == pytest.approx(ref["offset"].item(), rel=1e-6)
    expected = ref["heatmap"] + 0.5 * ref["offset"]
    assert half["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert half["loss"].item() < ref["loss"].item()


@pytest.mark.parametrize("loss", ["mse", "paper"])
def test_offset_gradient_is_zero_outside_the_disk(loss: str) -> None:
    method = build("128x96", loss=loss)
    batch = random_batch(method, seed=1)
    outputs = torch.randn(3, 3 * K, 32, 24, requires_grad=True)
    method.loss(outputs, batch, TRAIN)["loss"].backward()
    _, grad_off = split_combined(outputs.grad)
    outside = (batch["disk"] == 0)[:, :, None].expand_as(grad_off)
    assert torch.all(grad_off[outside] == 0)
    assert grad_off[~outside].abs().sum() > 0


def test_paper_loss_is_bce_plus_smoothl1_in_disk() -> None:
    method = build("64x48", loss="paper", alpha=0.5)
    assert "BCE" in method.loss_name and method.describe_params()["loss"] == "paper"
    batch = random_batch(method, seed=2)
    outputs = torch.randn(3, 3 * K, 16, 12)
    cls, off = split_combined(outputs)
    w = batch["weight"][..., None, None].expand_as(cls)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(cls, batch["disk"], weight=w)
    sl1 = (torch.nn.functional.smooth_l1_loss(off, batch["offset"], reduction="none").sum(2) * batch["disk"]).mean()
    assert method.loss(outputs, batch, TRAIN)["loss"].item() == pytest.approx((bce + 0.5 * sl1).item(), rel=1e-5)
    # class channel is a logit: heatmaps() and decode scores are probabilities
    assert torch.all((method.heatmaps(outputs) > 0) & (method.heatmaps(outputs) < 1))


def test_contract_and_validation() -> None:
    method = build("256x192")
    assert method.head_channels() == 3 * K
    assert method.describe_params()["radius_px"] == pytest.approx(3.5)
    assert "JointsMSELoss_offset" in method.loss_name
    outputs = torch.rand(2, 3 * K, 64, 48)
    assert torch.equal(method.heatmaps(outputs), outputs.reshape(2, K, 3, 64, 48)[:, :, 0])
    assert method.coarse_argmax(outputs).shape == (2, K, 2)
    with pytest.raises(ConfigError, match="methods.udp.loss"):
        build("64x48", loss="ce")
    with pytest.raises(ConfigError, match="cls_blur_kernel"):
        build("64x48", cls_blur_kernel=4)
