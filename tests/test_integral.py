"""Integral regression (``methods/integral``): decode = expectation of the softmax, the exact codec
oracle, flip, the L1 loss and the DSNT Jensen–Shannon regulariser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.config import resolve_method_params
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method, MethodContext, TrainingStage
from lrpose_bench.methods.integral.method import IntegralMethod, dsnt_target, js_divergence
from lrpose_bench.models import build_method_model
from lrpose_bench.oracle import oracle_errors
from lrpose_bench.resolution import Resolution

K = 17
TRAIN = TrainingStage("train", 1)


def build(res: str = "64x48", **ablation) -> IntegralMethod:
    resolution = Resolution.parse(res)
    return IntegralMethod(
        resolve_method_params(IntegralMethod.Params, "integral", resolution, ablation or None),
        MethodContext(resolution),
    )


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_decode_is_the_expectation_of_the_softmax(beta: float) -> None:
    m = build("64x48", beta=beta)
    logits = torch.randn(2, K, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    coords, scores = m.decode(logits)
    z = logits.numpy().reshape(2, K, -1) * beta
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ys, xs = np.mgrid[0:16, 0:12]
    np.testing.assert_allclose(coords[..., 0].numpy(), (p * xs.reshape(-1)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(coords[..., 1].numpy(), (p * ys.reshape(-1)).sum(-1), rtol=1e-5)
    # confidence: mass of the best 3x3 window (score_window 3 at 64x48)
    maps = p.reshape(2, K, 16, 12)
    padded = np.pad(maps, ((0, 0), (0, 0), (1, 1), (1, 1)))
    window = sum(padded[..., i : i + 16, j : j + 12] for i in range(3) for j in range(3))
    np.testing.assert_allclose(scores.numpy(), window.reshape(2, K, -1).max(-1), rtol=1e-5)


@pytest.mark.parametrize("res", ["64x48", "128x96", "256x192"])
def test_oracle_map_decodes_to_the_joint_exactly(res: str) -> None:
    """The oracle (logits of a bilinear splat) has the joint as its softmax expectation (hypothesis)."""
    m = build(res)
    height, width = m.context.heatmap_size

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.tuples(st.floats(0.0, width - 1.0), st.floats(0.0, height - 1.0)), min_size=K, max_size=K))
    def check(points: list[tuple[float, float]]) -> None:
        joints = np.array(points, np.float32)[None]
        assert float(oracle_errors(m, joints, np.ones((1, K), np.float32)).max()) <= m.codec_bound_px

    check()


def test_flip_mirrors_the_expectation_exactly() -> None:
    m = build("128x96")
    width = m.context.heatmap_size[1]
    logits = torch.randn(2, K, 32, 24)
    fi = torch.as_tensor(flip_index(K))
    coords, scores = m.decode(logits)
    flipped, flipped_scores = m.decode(m.flip_outputs(logits, fi))
    torch.testing.assert_close(flipped[:, fi, 0], width - 1 - coords[..., 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(flipped[:, fi, 1], coords[..., 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(flipped_scores[:, fi], scores, atol=1e-6, rtol=0)


def test_coarse_argmax_is_the_arg_max_of_the_map() -> None:
    m = build()
    logits = torch.full((1, K, 16, 12), -5.0)
    logits[0, :, 7, 3] = 5.0
    assert m.coarse_argmax(logits)[0].tolist() == [[3.0, 7.0]] * K


def test_l1_loss_counts_labelled_joints_in_normalised_units() -> None:
    m = build()
    logits = torch.randn(2, K, 16, 12)
    joints = torch.rand(2, K, 2) * torch.tensor([11.0, 15.0])
    visible = (torch.rand(2, K) > 0.3).float()
    batch = m.encode_batch(joints, visible)
    coords, _ = m.decode(logits)
    per = ((coords - joints).abs() / torch.tensor([11.0, 15.0])).sum(-1)
    expected = (per * visible).sum() / (2 * visible.sum())
    got = m.loss(logits, batch, TRAIN)
    torch.testing.assert_close(got["loss"], expected)
    assert "js" not in got


def test_dsnt_regulariser_is_the_js_divergence_to_a_normalised_gaussian() -> None:
    m = build("64x48", dsnt_weight=1.0)
    joints = np.array([[4.3, 7.2], [0.0, 0.0], [100.0, 3.0]], np.float32)
    enc = m.encode(joints, np.ones(3, np.float32))
    np.testing.assert_allclose(enc["heatmap"][:2].reshape(2, -1).sum(-1), 1.0, rtol=1e-5)
    assert enc["heatmap_weight"].tolist() == [1.0, 1.0, 0.0] and enc["heatmap"][2].sum() == 0
    ys, xs = np.mgrid[0:16, 0:12]
    g = np.exp(-((xs - 4.3) ** 2 + (ys - 7.2) ** 2) / 2.0)
    np.testing.assert_allclose(enc["heatmap"][0], g / g.sum(), rtol=1e-4, atol=1e-8)
    target = torch.from_numpy(enc["heatmap"][:1])[None]
    assert js_divergence(target, target).abs().max() < 1e-6
    uniform = torch.full_like(target, 1.0 / (16 * 12))
    p, q = uniform.double(), target.double()
    mix = 0.5 * (p + q)
    direct = 0.5 * (p * (p / mix).log()).sum() + 0.5 * (q * ((q + 1e-300) / mix).log()).nan_to_num().sum()
    assert js_divergence(uniform, target).item() == pytest.approx(direct.item(), rel=1e-4)
    # in the loss: logits log(target) give zero JS, a flat map a positive one
    logits = torch.log(torch.from_numpy(enc["heatmap"][:1]) + 1e-12)[None].expand(1, 1, 16, 12)
    batch = {k: torch.from_numpy(v[:1])[None] for k, v in enc.items()}
    assert m.loss(logits, batch, TRAIN)["js"].item() < 1e-5
    assert m.loss(torch.zeros(1, 1, 16, 12), batch, TRAIN)["js"].item() > 0.1
    assert dsnt_target(joints, np.zeros(3, np.float32), (16, 12), 1.0).sum() == 0


def test_encode_batch_equals_stacked_encode_with_and_without_dsnt() -> None:
    joints = torch.tensor(
        [
            [[3.3, 7.7], [-40.0, 2.0], [float("nan"), 1.0], [11.0, 15.0]],
            [[0.5, 0.5], [10.9, 14.9], [-2.0, 3.0], [5.0, 5.0]],
        ]
    )
    visible = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    for m in (build(), build(dsnt_weight=1.0)):
        got, ref = m.encode_batch(joints, visible), Method.encode_batch(m, joints, visible)
        assert set(got) == set(ref)
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], atol=1e-6, rtol=0)


def test_training_on_the_backbone_moves_the_expectation_to_the_target() -> None:
    torch.manual_seed(0)
    m = build()
    model = build_method_model("hrnet-w8", m)
    assert isinstance(model, torch.nn.Module) and not hasattr(model, "head")  # no extra head: the 1x1 layer
    logits = torch.zeros(1, K, 16, 12, requires_grad=True)
    batch = m.encode_batch(torch.tensor([[[2.7, 11.2]] * K]), torch.ones(1, K))
    opt = torch.optim.Adam([logits], lr=0.3)
    for _ in range(200):
        opt.zero_grad()
        m.loss(logits, batch, TRAIN)["loss"].backward()
        opt.step()
    coords, _ = m.decode(logits.detach())
    assert (coords - torch.tensor([2.7, 11.2])).abs().max() < 0.05
