"""Every built-in method's batched torch ``encode_batch`` against the per-instance numpy reference.

The GPU input path calls ``method.encode_batch`` on device tensors; the base class's default
(``Method.encode_batch``) runs the numpy ``encode`` per instance on the host and is the reference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.baselines.heatmap import GaussianHeatmapMethod
from lrpose_bench.config import resolve_method_params
from lrpose_bench.method import Method, MethodContext
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution

R64, R128, R256 = Resolution(64, 48), Resolution(128, 96), Resolution(256, 192)

#: methods that train at their own resolution, at the resolutions and ablations covered
CASES: list[tuple[str, Resolution, dict[str, Any]]] = [
    ("hrnet", R64, {}),
    ("hrnet", R256, {}),
    ("dark", R64, {}),
    ("dark", R256, {}),
    *[("udp", res, {}) for res in (R64, R128, R256)],
    *[("cal", res, {}) for res in (R64, R128, R256)],
    *[("cal", res, {"heatmap": "binary"}) for res in (R64, R128, R256)],
    # SimCC (its ablation switches), RLE, integral regression (IPR and DSNT)
    *[("simcc", res, {}) for res in (R64, R128, R256)],
    ("simcc", R64, {"split_ratio": 3}),
    ("simcc", R64, {"split_ratio": 1, "label_smoothing": False}),
    *[("rle", res, {}) for res in (R64, R256)],
    *[("integral", res, {}) for res in (R64, R256)],
    *[("integral", res, {"dsnt_weight": 1.0}) for res in (R64, R128)],
]

#: SR+pose methods train at 256×192 through an inner method; they are built at the LR cell resolution
SR_METHODS = ("spsr+hrnet", "spsr+udp", "bicubic+hrnet", "bicubic+udp")

#: Tolerance on the continuous values: the twins compute Gaussians in float32 (or as a float32
#: product of float64 axis profiles) while the numpy references take exp in float64 and round once
#: to float32; the differences are a few float32 ulp of values in [0, 1] (~1e-7), so 1e-5 leaves
#: margin without hiding a wrong centre, σ or radius (those move values by ≫ 1e-3).
ATOL = 1e-5
#: keys holding discrete decisions (0/1), which must match exactly
EXACT_KEYS = ("disk", "weight", "heatmap_weight")


def build(name: str, res: Resolution, ablation: dict[str, Any] | None = None) -> Method:
    cls = METHODS.get(name)
    return cls(resolve_method_params(cls.Params, name, res, ablation or {}), MethodContext(res))


def edges(method: Method, length: int) -> list[float]:
    """Float32 coordinates on the boundaries where the encoders make discrete decisions along one
    axis: map edges ± the Gaussian window (3σ / truncate·σ) and ± the disk radius R, each with its
    float32 neighbours."""
    params = method.params
    reaches = [0.0]
    if hasattr(params, "sigma"):
        reaches.append(3.0 * params.sigma)
        reaches.append(getattr(params, "truncate", 3.0) * params.sigma)
    if hasattr(method, "radius"):
        reaches.append(float(method.radius))
    values = []
    for edge in (0.0, length - 1.0, float(length)):
        for reach in reaches:
            for sign in (-1.0, 1.0):
                centre = np.float32(edge + sign * reach)
                values += [
                    float(centre),
                    float(np.nextafter(centre, np.float32(-np.inf))),
                    float(np.nextafter(centre, np.float32(np.inf))),
                ]
    return values


def coordinate(method: Method, length: int) -> st.SearchStrategy[float]:
    """One joint coordinate (float32-representable) along an axis of ``length`` heatmap pixels."""
    return st.one_of(
        st.floats(-2.0 * length, 3.0 * length, width=32),  # anywhere on or around the map
        st.floats(-1e4, 1e4, width=32),  # far outside
        st.integers(-6, length + 6).map(float),  # pixel centres
        st.integers(-6, length + 6).map(lambda i: i + 0.5),  # half pixels: the rounding edge of floor(j + 0.5)
        st.sampled_from(edges(method, length)),  # window / disk / map borders
        st.sampled_from([math.nan, math.inf, -math.inf]),  # non-finite
    )


@st.composite
def joint_batches(draw: st.DrawFn, method: Method) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, 2) float32 joints in heatmap px and (B, K) visibility flags."""
    height, width = method.context.heatmap_size
    batch, joints_per = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    count = batch * joints_per
    xs = draw(st.lists(coordinate(method, width), min_size=count, max_size=count))
    ys = draw(st.lists(coordinate(method, height), min_size=count, max_size=count))
    flags = draw(st.lists(st.sampled_from([0.0, 1.0, 1.0, 0.5]), min_size=count, max_size=count))
    joints = torch.tensor(np.stack([xs, ys], axis=-1).astype(np.float32)).reshape(batch, joints_per, 2)
    visible = torch.tensor(flags, dtype=torch.float32).reshape(batch, joints_per)
    return joints, visible


def assert_equal_to_reference(method: Method, joints: torch.Tensor, visible: torch.Tensor) -> None:
    got = method.encode_batch(joints, visible)
    ref = Method.encode_batch(method, joints, visible)  # numpy encode per instance, stacked
    assert set(got) == set(ref)
    for key, expected in ref.items():
        value = got[key]
        assert value.dtype == torch.float32, key
        assert value.shape == expected.shape, (key, value.shape, expected.shape)
        assert value.device == joints.device, key
        if key in EXACT_KEYS:
            torch.testing.assert_close(value, expected, atol=0, rtol=0, msg=key)
        else:
            # equal_nan: hrnet's numpy reference itself yields NaN maps for NaN joints (weight 0)
            torch.testing.assert_close(value, expected, atol=ATOL, rtol=0, equal_nan=True, msg=key)
        if getattr(method, "inner", method).name != "hrnet":
            assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("name,res,ablation", CASES, ids=[f"{n}-{r}-{a}" for n, r, a in CASES])
def test_encode_batch_equals_numpy_reference(name: str, res: Resolution, ablation: dict[str, Any]) -> None:
    method = build(name, res, ablation)

    @settings(max_examples=25, deadline=None)
    @given(data=joint_batches(method))
    def check(data: tuple[torch.Tensor, torch.Tensor]) -> None:
        assert_equal_to_reference(method, *data)

    check()


@pytest.mark.parametrize("name,res,ablation", CASES, ids=[f"{n}-{r}-{a}" for n, r, a in CASES])
def test_encode_batch_equals_numpy_reference_on_every_boundary(
    name: str, res: Resolution, ablation: dict[str, Any]
) -> None:
    """Deterministic complement of the property test: every boundary coordinate (and its float32
    neighbours) on each axis, the other axis at the map centre, plus half pixels and non-finite."""
    method = build(name, res, ablation)
    height, width = method.context.heatmap_size
    special = [math.nan, math.inf, -math.inf, 2.5, -0.5, width - 0.5]
    along_x = [(x, height / 2.0) for x in edges(method, width) + special]
    along_y = [(width / 2.0, y) for y in edges(method, height) + special]
    joints = torch.tensor(along_x + along_y, dtype=torch.float32)[None]
    visible = torch.ones(joints.shape[:2])
    assert_equal_to_reference(method, joints, visible)


@pytest.mark.parametrize("name", SR_METHODS)
def test_sr_pose_methods_delegate_encode_batch_to_the_inner_twin(name: str) -> None:
    method = build(name, R64)
    assert type(method).encode_batch is not Method.encode_batch
    height, width = method.inner.context.heatmap_size
    joints = torch.tensor([[[3.3, 7.7], [width - 0.5, height + 1.0], [math.nan, 2.0], [20.5, 30.5]]])
    visible = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    got = method.encode_batch(joints, visible)
    inner = method.inner.encode_batch(joints, visible)
    assert set(got) == set(inner)
    for key in got:
        torch.testing.assert_close(got[key], inner[key], atol=0, rtol=0, equal_nan=True)
        assert got[key].shape[-2:] == (height, width) or key == "weight"
    assert_equal_to_reference(method, joints, visible)


def test_every_builtin_method_has_a_batched_twin() -> None:
    """Each registered built-in overrides ``Method.encode_batch`` (else the GPU path syncs per batch)."""
    builtins = [name for name in METHODS.names() if METHODS.get(name).__module__.startswith("lrpose_bench.")]
    assert {"hrnet", "dark", "udp", "cal", *SR_METHODS} <= set(builtins)
    for name in builtins:
        assert METHODS.get(name).encode_batch is not Method.encode_batch, name


@pytest.mark.parametrize(
    "name,res,ablation",
    [("hrnet", R64, {}), ("dark", R64, {}), ("udp", R128, {}), ("cal", R128, {}), ("cal", R64, {"heatmap": "binary"})],
)
def test_encode_batch_keeps_the_device_and_adds_no_keys(name: str, res: Resolution, ablation: dict[str, Any]) -> None:
    method = build(name, res, ablation)
    joints = torch.tensor([[[3.25, 4.75], [1.0, 2.0]], [[-40.0, 5.0], [6.5, 0.5]]], device="cpu")
    visible = torch.tensor([[1.0, 0.0], [1.0, 1.0]], device="cpu")
    got = method.encode_batch(joints, visible)
    single = method.encode(joints[0].numpy(), visible[0].numpy())
    assert set(got) == set(single)
    for key, value in got.items():
        assert value.device == joints.device and value.dtype == torch.float32
        assert tuple(value.shape) == (2, *np.shape(single[key])), key


@pytest.mark.parametrize("name", ["hrnet", "dark", "udp", "cal", *SR_METHODS, "simcc", "rle", "integral"])
def test_twins_never_read_tensor_data(name: str) -> None:
    """A CPU-only proxy for "no host sync": on the meta device (shapes, no data) any ``.item()``,
    ``.cpu()``, numpy call or data-dependent branch raises, as the numpy reference does."""
    method = build(name, R64)
    joints, visible = torch.empty(2, 17, 2, device="meta"), torch.empty(2, 17, device="meta")
    got = method.encode_batch(joints, visible)
    assert all(v.device.type == "meta" and v.dtype == torch.float32 for v in got.values())
    with pytest.raises(NotImplementedError):
        Method.encode_batch(method, joints, visible)


def test_dark_twin_is_unbiased_not_the_inherited_hrnet_twin() -> None:
    """DARK and HRNet share HeatmapMethod and compose their codecs: DARK's batched target is its
    own unbiased one, not HRNet's integer-centred one. A sub-pixel joint tells the two apart."""
    from lrpose_bench.baselines.dark import DarkCodec
    from lrpose_bench.baselines.heatmap import HeatmapCodec, IntegerGaussianCodec

    dark = build("dark", R64)
    hrnet = build("hrnet", R64, {"sigma": dark.params.sigma})
    assert not issubclass(type(dark), GaussianHeatmapMethod)
    assert isinstance(dark.codec, DarkCodec) and isinstance(hrnet.codec, IntegerGaussianCodec)
    assert HeatmapCodec.__abstractmethods__ == {"encode", "encode_torch", "decode"}  # a codec has all three
    joints = torch.tensor([[[5.3, 7.8]]])
    visible = torch.ones(1, 1)
    ours = dark.encode_batch(joints, visible)["heatmap"]
    integer_centred = hrnet.encode_batch(joints, visible)["heatmap"]
    assert (ours - integer_centred).abs().max() > 0.05
    torch.testing.assert_close(ours, Method.encode_batch(dark, joints, visible)["heatmap"], atol=ATOL, rtol=0)
