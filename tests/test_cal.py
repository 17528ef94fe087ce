"""CAL method: targets (Eq. 10), stages, losses (Eq. 14/15), ablation switches, decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.codecs.offset import interleave, split_combined
from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import MethodContext, TrainingStage
from lrpose_bench.methods.cal.codec import encode_cal
from lrpose_bench.methods.cal.loss import weighted_offset_loss
from lrpose_bench.methods.cal.method import CalMethod
from lrpose_bench.oracle import encode_batch, oracle_outputs
from lrpose_bench.resolution import Resolution

K = 17
STAGE1 = TrainingStage("stage1", 210, 0)
STAGE2 = TrainingStage("stage2", 40, 1)


def build(res: str = "128x96", **ablation) -> CalMethod:
    resolution = Resolution.parse(res)
    params = resolve_method_params(CalMethod.Params, "cal", resolution, ablation or None)
    return CalMethod(params, MethodContext(resolution))


def random_batch(method: CalMethod, n: int = 4, seed: int = 0):
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(0, width - 1, (n, K)), rng.uniform(0, height - 1, (n, K))], -1)
    visible = (rng.random((n, K)) > 0.2).astype(np.float32)
    return encode_batch(method, joints, visible)


def noisy_outputs(method: CalMethod, batch, seed: int = 0, noise: float = 0.3) -> torch.Tensor:
    """A plausible network output: the oracle plus noise (heatmap peaks near the joints)."""
    gen = torch.Generator().manual_seed(seed)
    oracle = interleave(batch["heatmap"], batch["offset"])
    return (oracle + noise * torch.randn(oracle.shape, generator=gen)).requires_grad_(True)


# ---------------------------------------------------------------------------------- config
def test_per_resolution_constants() -> None:
    assert build("64x48").params.gmm_components == 1
    assert build("128x96").params.gmm_components == 1
    assert build("256x192").params.gmm_components == 2  # paper Table 4
    assert build("384x288").params.gmm_components == 2
    assert build("256x192").radius == pytest.approx(3.5)
    assert build("128x96").params.stage2_ratio == pytest.approx(40 / 210)


@pytest.mark.parametrize(
    "key,value",
    [
        ("offset_mask", "gaussian"),
        ("gmm_components", 4),
        ("heatmap", "disk"),
        ("offset_loss", "huber"),
        ("training", "three_stage"),
        ("one_stage_loss", "x"),
        ("decode", "taylor"),
        ("mgm_support", "circle"),
        ("sigma", -1.0),
        ("cls_blur_kernel", 4),
        ("reg_covar", 0.0),
        ("em_iterations", 0),
        ("gmm_components", True),
    ],
)
def test_invalid_ablation_values_raise_config_error(key: str, value) -> None:
    with pytest.raises(ConfigError, match=f"methods.cal.{key}"):
        build("128x96", **{key: value})


def test_unknown_ablation_key_is_reported() -> None:
    with pytest.raises(ConfigError, match="unknown ablation key"):
        build("128x96", mgm=True)


# ---------------------------------------------------------------------------------- stages
def test_two_stages_and_one_stage() -> None:
    stages = build().stages(210)
    assert [(s.name, s.epochs, s.index) for s in stages] == [("stage1", 210, 0), ("stage2", 40, 1)]
    assert [s.epochs for s in build().stages(21)] == [21, 4]
    assert [s.epochs for s in build().stages(2)] == [2, 1]  # a short profile still has a stage 2
    one = build(training="one_stage").stages(210)
    assert [(s.name, s.epochs) for s in one] == [("one_stage", 250)]


# --------------------------------------------------------------------------------- targets
def test_target_is_disk_times_gaussian() -> None:
    joints = np.array([[5.3, 7.6], [2.0, 2.0]])
    out = encode_cal(joints, np.array([1.0, 0.0]), (16, 12), radius=1.75, sigma=1.0)
    ys, xs = np.mgrid[0:16, 0:12]
    d2 = (xs - 5.3) ** 2 + (ys - 7.6) ** 2
    expected = (d2 <= 1.75**2) * np.exp(-d2 / 2.0)  # Eq. 10
    np.testing.assert_allclose(out["heatmap"][0], expected, rtol=1e-5, atol=1e-7)
    assert out["heatmap"][1].max() == 0 and out["weight"].tolist() == [1.0, 0.0]
    binary = encode_cal(joints, np.array([1.0, 0.0]), (16, 12), radius=1.75, sigma=1.0, heatmap="binary")
    np.testing.assert_array_equal(binary["heatmap"], binary["disk"])  # Table 5 ablation: G = B


# ----------------------------------------------------------------------------------- losses
def test_stage1_loss_is_eq14() -> None:
    method = build()
    batch = random_batch(method)
    outputs = noisy_outputs(method, batch)
    heat, off = split_combined(outputs.detach())
    w = batch["weight"][..., None, None]
    l2 = ((heat - batch["heatmap"]) * w).pow(2).mean()
    l1 = (batch["heatmap"] * (off - batch["offset"]).abs().sum(2)).mean()
    parts = method.loss(outputs, batch, STAGE1)
    assert parts["loss"].item() == pytest.approx((l2 + method.params.alpha * l1).item(), rel=1e-5)
    assert parts["heatmap"].item() == pytest.approx(l2.item(), rel=1e-5)


def test_stage2_uses_mgm_from_this_forward_pass() -> None:
    method = build()
    batch = random_batch(method, seed=1)
    outputs = noisy_outputs(method, batch, seed=1)
    s1 = method.loss(outputs, batch, STAGE1)["offset"]
    s2 = method.loss(outputs, batch, STAGE2)["offset"]
    assert method.last_gmm is not None and not torch.isclose(s1, s2)
    # the mask is a weight only: no gradient reaches the heatmap channels through it
    heat_only = outputs.detach().clone().requires_grad_(True)
    batch_zero = dict(batch, heatmap=split_combined(heat_only.detach())[0].clone())  # L2 term = 0
    method.loss(heat_only, batch_zero, STAGE2)["loss"].backward()
    grad_heat, _ = split_combined(heat_only.grad)
    assert torch.all(grad_heat == 0)


@pytest.mark.parametrize(
    "stage,ablation",
    [
        (STAGE1, {}),
        (STAGE2, {}),
        (STAGE2, {"offset_mask": "binary"}),
        (STAGE1, {"heatmap": "binary"}),
        (STAGE2, {"offset_loss": "smoothl1"}),
        (STAGE2, {"offset_loss": "l2"}),
        (TrainingStage("one_stage", 250), {"training": "one_stage"}),
    ],
)
def test_offset_gradient_zero_outside_the_disk(stage, ablation) -> None:
    method = build("128x96", mgm_support="disk", **ablation)
    batch = random_batch(method, seed=2)
    outputs = noisy_outputs(method, batch, seed=2)
    method.loss(outputs, batch, stage)["loss"].backward()
    _, grad_off = split_combined(outputs.grad)
    outside = (batch["disk"] == 0)[:, :, None].expand_as(grad_off)
    assert torch.all(grad_off[outside] == 0)
    assert grad_off[~outside].abs().sum() > 0


@pytest.mark.parametrize("stage,ablation", [(STAGE2, {}), (TrainingStage("one_stage", 250), {"training": "one_stage"})])
def test_default_mgm_trains_offsets_on_the_square_grid(stage, ablation) -> None:
    """The paper's Z = {-R..R}² (Eq. 13): offsets are trained where |p - y|_∞ <= ⌈R⌉, so at
    128×96 (R = 1.75) a pixel 2 px from the joint along an axis, outside the disk, gets a gradient."""
    method = build("128x96", **ablation)
    assert method.params.mgm_support == "square"
    batch = random_batch(method, seed=2)
    outputs = noisy_outputs(method, batch, seed=2)
    method.loss(outputs, batch, stage)["loss"].backward()
    _, grad_off = split_combined(outputs.grad)
    height, width = method.context.heatmap_size
    ys, xs = torch.meshgrid(torch.arange(height * 1.0), torch.arange(width * 1.0), indexing="ij")
    joints = batch["joints"][..., None, None]
    cheb = torch.maximum((xs - joints[:, :, 0]).abs(), (ys - joints[:, :, 1]).abs())  # (N, K, H, W)
    outside = (cheb > 2)[:, :, None].expand_as(grad_off)
    assert torch.all(grad_off[outside] == 0)
    beyond_disk = ((batch["disk"] == 0) & (cheb <= 2))[:, :, None].expand_as(grad_off)
    assert grad_off[beyond_disk].abs().sum() > 0


def test_default_decode_is_algorithm2_exactly() -> None:
    """Algorithm 2: ŷ = argmax Ĝ + Ô(argmax Ĝ) on the raw maps — a hand-built output whose arg-max
    is a lone pixel next to a higher-mass blob decodes to that pixel + R·offset exactly (a blurred
    decode would move to the blob)."""
    method = build("64x48")
    assert method.params.decode == "argmax"
    heat = torch.zeros(1, K, 16, 12)
    offsets = torch.zeros(1, K, 2, 16, 12)
    heat[0, :, 4, 3] = 0.9  # the arg-max: a single sharp pixel
    heat[0, :, 10:13, 7:10] = 0.8  # a broad blob with more mass (wins after a blur)
    offsets[0, :, 0, 4, 3] = 0.25  # x offset in units of R
    offsets[0, :, 1, 4, 3] = -0.5
    offsets[0, :, :, 11, 8] = 0.9  # offsets elsewhere must not leak in
    coords, scores = method.decode(interleave(heat, offsets))
    radius = method.radius
    expected = torch.tensor([3 + 0.25 * radius, 4 - 0.5 * radius])
    assert torch.equal(coords[0], expected.expand(K, 2))
    assert torch.allclose(scores, torch.full((1, K), 0.9))
    blurred = build("64x48", decode="blurred", cls_blur_kernel=7)
    moved, _ = blurred.decode(interleave(heat, offsets))
    assert (moved[0, :, 1] > 9).all()  # the ablation decodes the blob


def test_smoothl1_beta_acts_in_pixels() -> None:
    """Offsets are regressed in units of R, so β_px = 1 means β = 1/R in those units: an offset
    error of 1.5 px (> β) sits on SmoothL1's linear branch, not on its ½·L2 branch."""
    method = build("128x96", offset_loss="smoothl1", offset_mask="binary")
    radius = method.radius
    batch = random_batch(method, n=1, seed=3)
    heat, offs = batch["heatmap"], batch["offset"]
    pred = interleave(heat, offs + 1.5 / radius)  # every offset 1.5 px off, heatmap exact
    parts = method.loss(pred, batch, STAGE2)
    beta = 1.0 / radius
    per_elem = 1.5 / radius - 0.5 * beta  # |d| - β/2, linear branch
    expected = (batch["disk"] * 2 * per_elem).mean()
    assert parts["offset"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_weighted_offset_loss_kinds_and_zero_weight() -> None:
    pred = torch.tensor([[[[[0.5]], [[-2.0]]]]], requires_grad=True)  # (1,1,2,1,1)
    target = torch.zeros(1, 1, 2, 1, 1)
    weight = torch.ones(1, 1, 1, 1)
    assert weighted_offset_loss(pred, target, weight, "l1").item() == pytest.approx(2.5)
    assert weighted_offset_loss(pred, target, weight, "l2").item() == pytest.approx(4.25)
    assert weighted_offset_loss(pred, target, weight, "smoothl1").item() == pytest.approx(0.125 + 1.5)
    weighted_offset_loss(pred, target, torch.zeros_like(weight), "l1").backward()
    assert torch.all(pred.grad == 0)


def test_loss_names_follow_switches() -> None:
    assert "L1" in build().loss_name and "mgm" in build().loss_name
    assert "SmoothL1" in build(offset_loss="smoothl1").loss_name
    assert build(offset_mask="binary").describe_params()["offset_mask"] == "binary"


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("res", ["64x48", "128x96", "256x192"])
@pytest.mark.parametrize("heatmap", ["gaussian", "binary"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_round_trip_within_005(res: str, heatmap: str, seed: int) -> None:
    method = build(res, heatmap=heatmap)
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(1, width - 2, (2, K)), rng.uniform(1, height - 2, (2, K))], -1).astype(np.float32)
    coords, scores = method.decode(oracle_outputs(method, joints, np.ones((2, K), np.float32)))
    assert (coords - torch.tensor(joints)).abs().max() <= 0.05
    assert torch.all(scores > 0)


@pytest.mark.parametrize("res", ["64x48", "128x96", "256x192"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_flip_test_consistency(res: str, seed: int) -> None:
    method = build(res)
    height, width = method.context.heatmap_size
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(0, width - 1, (2, K)), rng.uniform(0, height - 1, (2, K))], -1).astype(np.float32)
    flipped = joints[:, flip_index(K)].copy()
    flipped[..., 0] = width - 1 - flipped[..., 0]
    visible = np.ones((2, K), np.float32)
    original = oracle_outputs(method, joints, visible)
    back = method.flip_outputs(oracle_outputs(method, flipped, visible), torch.as_tensor(flip_index(K)))
    assert torch.allclose(back, original, atol=1e-5)
    coords, _ = method.decode(original)
    averaged, _ = method.decode(0.5 * (original + back))
    assert torch.allclose(averaged, coords, atol=1e-4)


def test_contract() -> None:
    method = build("64x48")
    assert method.head_channels() == 3 * K
    targets = method.encode(np.full((K, 2), 5.0, np.float32), np.ones(K, np.float32))
    assert {k: v.shape for k, v in targets.items()} == {
        "heatmap": (K, 16, 12),
        "disk": (K, 16, 12),
        "offset": (K, 2, 16, 12),
        "weight": (K,),
    }
    assert all(v.dtype == np.float32 for v in targets.values())
    outputs = torch.rand(2, 3 * K, 16, 12)
    assert torch.equal(method.heatmaps(outputs), split_combined(outputs)[0])


def test_tiny_net_learns_in_both_stages() -> None:
    """Smoke test: a small conv net fitting one batch lowers Eq. 14, then Eq. 15 (MGM from its own
    predictions) stays finite and keeps falling."""
    torch.manual_seed(0)
    method = build("64x48")
    batch = random_batch(method, n=4, seed=5)
    images = torch.randn(4, 3, 64, 48)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, 2, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, 2, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, method.head_channels(), 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    history = {"stage1": [], "stage2": []}
    for stage, steps in ((STAGE1, 100), (STAGE2, 40)):
        for _ in range(steps):
            loss = method.loss(net(images), batch, stage)["loss"]
            assert torch.isfinite(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history[stage.name].append(loss.item())
    assert history["stage1"][-1] < 0.5 * history["stage1"][0]
    assert history["stage2"][-1] < history["stage2"][0]


def test_switch_types_name_what_the_codec_and_loss_implement() -> None:
    """The ``Literal`` types of the switches are the values the code dispatches on."""
    from typing import get_args, get_type_hints

    from lrpose_bench.methods.cal.codec import HEATMAP_KINDS
    from lrpose_bench.methods.cal.loss import OFFSET_LOSSES
    from lrpose_bench.methods.cal.mgm import MGM_SUPPORTS

    hints = get_type_hints(CalMethod.Params)
    assert get_args(hints["heatmap"]) == HEATMAP_KINDS
    assert get_args(hints["offset_loss"]) == OFFSET_LOSSES
    assert get_args(hints["mgm_support"]) == MGM_SUPPORTS
