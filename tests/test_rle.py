"""RLE (``methods/rle``): the loss against a direct computation of the flow log-likelihood, the
RealNVP density, normalisation, flip, decode and the head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method, MethodContext, TrainingStage
from lrpose_bench.methods.rle.flow import RealNVP
from lrpose_bench.methods.rle.method import RleMethod, rle_loss
from lrpose_bench.models import build_method_model
from lrpose_bench.oracle import oracle_errors, oracle_outputs
from lrpose_bench.resolution import Resolution

K = 17
TRAIN = TrainingStage("train", 1)


def build(res: str = "64x48", **ablation) -> RleMethod:
    resolution = Resolution.parse(res)
    return RleMethod(
        resolve_method_params(RleMethod.Params, "rle", resolution, ablation or None), MethodContext(resolution)
    )


def fixed_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outputs = torch.randn(3, K, 4, generator=g) * 0.3
    target = torch.rand(3, K, 2, generator=g) - 0.5
    weight = (torch.rand(3, K, generator=g) > 0.25).float()
    return outputs, target, weight


def flow_log_prob_by_jacobian(flow: RealNVP, x: torch.Tensor) -> torch.Tensor:
    """log p(x) by the change of variables computed independently: z(x) from the coupling layers
    written out, log|det ∂z/∂x| from autograd's full Jacobian, log N(z; 0, I) from torch.distributions."""
    prior = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=x.dtype), torch.eye(2, dtype=x.dtype))

    def to_latent(point: torch.Tensor) -> torch.Tensor:
        z = point
        for i in reversed(range(len(flow.t))):
            keep = flow.mask[i].to(x.dtype)
            frozen = keep * z
            s = flow.s[i](frozen) * (1 - keep)
            t = flow.t[i](frozen) * (1 - keep)
            z = frozen + (1 - keep) * (z - t) / torch.exp(s)
        return z

    values = []
    for point in x:
        jac = torch.autograd.functional.jacobian(to_latent, point)
        values.append(prior.log_prob(to_latent(point)) + torch.linalg.slogdet(jac)[1])
    return torch.stack(values)


def test_flow_log_prob_is_the_change_of_variables() -> None:
    torch.manual_seed(0)
    flow = RealNVP().double()
    with torch.no_grad():  # move the near-identity init away from identity so the test means something
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(6, 2, dtype=torch.float64) * 1.5
    torch.testing.assert_close(flow.log_prob(x), flow_log_prob_by_jacobian(flow, x))


@pytest.mark.parametrize("q_dis", ["laplace", "gaussian"])
def test_rle_loss_equals_a_direct_computation_of_the_flow_likelihood(q_dis: str) -> None:
    """mmpose RLELoss on fixed tensors: Σ_{n,k,axis} w·[log σ − log φ(ē) + log Q(ē)] / N, with
    ē = (μ − y)/(σ + 1e-9), σ = sigmoid, φ the flow density (counted once per axis, as mmpose)."""
    torch.manual_seed(1)
    flow = RealNVP().double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    outputs, target, weight = (t.double() for t in fixed_case())
    got = rle_loss(outputs, target, weight, flow, residual=True, q_dis=q_dis)

    total = 0.0
    for n in range(3):
        for k in range(K):
            if weight[n, k] == 0:
                continue
            mu, sigma = outputs[n, k, :2], torch.sigmoid(outputs[n, k, 2:])
            error = (mu - target[n, k]) / (sigma + 1e-9)
            log_phi = flow_log_prob_by_jacobian(flow, error[None])[0]
            for axis in range(2):
                s, e = sigma[axis], error[axis]
                log_q = (
                    (math.log(2) + torch.log(s) + e.abs())
                    if q_dis == "laplace"
                    else (torch.log(s * math.sqrt(2 * math.pi)) + 0.5 * e * e)
                )
                total += float((torch.log(s) - log_phi + log_q).detach())
    assert got["loss"].item() == pytest.approx(total / 3, rel=1e-9)
    assert (got["flow_nll"] + got["q_nll"]).item() == pytest.approx(got["loss"].item(), rel=1e-12)


def test_without_flow_the_loss_is_the_plain_laplace_likelihood() -> None:
    outputs, target, weight = fixed_case(2)
    got = rle_loss(outputs, target, weight, None, residual=True, q_dis="laplace")["loss"]
    sigma = outputs[..., 2:].sigmoid()
    nll = -torch.distributions.Laplace(outputs[..., :2], sigma + 1e-9).log_prob(target)
    expected = (nll * weight[..., None]).sum() / 3
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    m = build(flow=False)
    assert m.build_head().flow is None and "no flow" in m.loss_name
    with pytest.raises(ConfigError, match="residual"):
        build(flow=False, residual=False)


def test_unweighted_joints_contribute_exactly_zero_even_when_they_overflow() -> None:
    flow = RealNVP()
    outputs, target, weight = fixed_case(3)
    outputs[0, 0, :2] = 1e30  # a residual that overflows in the flow
    outputs[0, 0, 2:] = -200.0  # σ → 0
    weight[0, 0] = 0
    loss = rle_loss(outputs, target, weight, flow)["loss"]
    assert torch.isfinite(loss)
    outputs[0, 0] = 0.0
    assert rle_loss(outputs, target, weight, flow)["loss"].item() == pytest.approx(loss.item(), rel=1e-6)


# ------------------------------------------------------------------------ codec and decode
@pytest.mark.parametrize("res", ["64x48", "128x96", "256x192"])
def test_round_trip_and_normalisation(res: str) -> None:
    m = build(res)
    height, width = m.context.heatmap_size

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.tuples(st.floats(-3.0, width + 2.0), st.floats(-3.0, height + 2.0)), min_size=K, max_size=K))
    def check(points: list[tuple[float, float]]) -> None:
        joints = np.array(points, np.float32)[None]
        enc = m.encode(joints[0], np.ones(K, np.float32))
        np.testing.assert_allclose(enc["rle_coords"], joints[0] / [width - 1, height - 1] - 0.5, rtol=1e-6, atol=1e-6)
        errors = oracle_errors(m, joints, np.ones((1, K), np.float32))
        assert float(errors.max()) <= m.codec_bound_px

    check()
    _, scores = m.decode(oracle_outputs(m, np.full((1, K, 2), 3.0, np.float32), np.ones((1, K), np.float32)))
    np.testing.assert_allclose(scores.numpy(), 1.0, atol=1e-4)


def test_confidence_is_one_minus_mean_sigma() -> None:
    m = build()
    outputs = torch.randn(2, K, 4)
    _, scores = m.decode(outputs)
    torch.testing.assert_close(scores, 1 - outputs[..., 2:].sigmoid().mean(-1))


def test_flip_maps_the_mirrored_prediction_back_exactly() -> None:
    m = build("128x96")
    height, width = m.context.heatmap_size
    rng = np.random.default_rng(4)
    joints = np.stack([rng.uniform(0, width - 1, K), rng.uniform(0, height - 1, K)], -1).astype(np.float32)
    fi = flip_index(K)
    mirrored = joints[fi].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    out_mirrored = oracle_outputs(m, mirrored[None], np.ones((1, K), np.float32))
    back, _ = m.decode(m.flip_outputs(out_mirrored, torch.as_tensor(fi)))
    np.testing.assert_allclose(back[0].numpy(), joints, atol=1e-4)


def test_coarse_argmax_is_the_regressed_coordinate() -> None:
    m = build()
    outputs = torch.randn(2, K, 4)
    torch.testing.assert_close(m.coarse_argmax(outputs), m.decode(outputs)[0])
    with pytest.raises(NotImplementedError):
        m.heatmaps(outputs)


def test_encode_batch_equals_stacked_encode() -> None:
    m = build()
    joints = torch.tensor([[[3.3, 7.7], [-40.0, 2.0], [float("nan"), 1.0], [11.0, 15.0]]])
    visible = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    got, ref = m.encode_batch(joints, visible), Method.encode_batch(m, joints, visible)
    assert set(got) == set(ref) == {"rle_coords", "weight"}
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], atol=0, rtol=0)
    assert ref["weight"].tolist() == [[1.0, 1.0, 0.0, 0.0]]


# ---------------------------------------------------------------------------------- head
@pytest.mark.parametrize("pool", ["gap", "flatten"])
def test_head_outputs_four_numbers_per_joint_and_trains_the_flow(pool: str) -> None:
    torch.manual_seed(0)
    m = build("64x48", pool=pool, feature_channels=64)
    model = build_method_model("hrnet-w8", m)
    assert m.head_channels() == (64 if pool == "gap" else K)
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("head.flow.") for n in names)  # the optimiser and checkpoint see the flow
    out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, K, 4)
    batch = m.encode_batch(torch.rand(2, K, 2) * 10, torch.ones(2, K))
    loss = m.loss(out, batch, TRAIN)["loss"]
    loss.backward()
    flow_grad = sum(float(p.grad.abs().sum()) for n, p in model.named_parameters() if n.startswith("head.flow."))
    assert math.isfinite(loss.item()) and flow_grad > 0
    assert model.head.fc.weight.grad is not None
