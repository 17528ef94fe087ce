"""Codec oracle: decoding the perfect network output of every registered method recovers the joints
within the codec's stated bound."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError, UserError
from lrpose_bench.method import MethodContext
from lrpose_bench.oracle import codec_bound, oracle_errors, oracle_outputs
from lrpose_bench.registry import BUILTIN_MODULES, METHODS
from lrpose_bench.resolution import Resolution

K = 17
RESOLUTIONS = ("64x48", "128x96", "256x192")
OURS = ("hrnet", "dark", "udp", "cal")


def registered_methods() -> dict[str, type]:
    """Method classes of the built-in method modules that import (others may be work in progress)."""
    for module in BUILTIN_MODULES:
        if ".baselines." in module or ".methods." in module:
            try:
                importlib.import_module(module)
            except Exception:  # pragma: no cover - another engineer's module not ready yet
                continue
    return dict(METHODS.items)


def build(cls, res: str):
    resolution = Resolution.parse(res)
    return cls(resolve_method_params(cls.Params, cls.name, resolution), MethodContext(resolution))


def codec_of(method):
    """The method that owns the codec (SR+pose methods delegate to an inner pose method)."""
    inner = getattr(method, "inner", None)
    return method if inner is None or inner is method else codec_of(inner)


def interior_joints(method, n: int, seed: int) -> np.ndarray:
    """Random sub-pixel joints away from the border (DARK needs 2σ + 2 px, the others 1 px)."""
    codec = codec_of(method)
    height, width = codec.context.heatmap_size
    margin = 2.0 * codec.params.sigma + 2.0 if codec.name == "dark" else 1.0
    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.uniform(margin, width - 1 - margin, (n, K)), rng.uniform(margin, height - 1 - margin, (n, K))], -1
    ).astype(np.float32)


def test_our_methods_are_registered() -> None:
    assert set(OURS) <= set(registered_methods())


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_every_registered_method_decodes_its_oracle_within_bound(res: str) -> None:
    checked = []
    for name, cls in sorted(registered_methods().items()):
        try:
            method = build(cls, res)
        except ConfigError:
            continue  # the method does not run at this resolution (e.g. SR+pose: 64x48 only)
        bound = codec_bound(method)
        if bound is None:
            continue  # no stated codec bound (e.g. a pipeline method that delegates its codec)
        for seed in range(3):
            joints = interior_joints(method, 8, seed)
            errors = oracle_errors(method, joints, np.ones((8, K), np.float32))
            assert torch.nanquantile(errors.flatten(), 1.0) <= bound + 1e-6, (name, res, seed)
        checked.append(name)
    assert set(OURS) <= set(checked)


@pytest.mark.parametrize("name", OURS)
def test_oracle_shape_and_invisible_joints(name: str) -> None:
    method = build(registered_methods()[name], "64x48")
    joints = interior_joints(method, 3, 0)
    visible = np.ones((3, K), np.float32)
    visible[1, 4] = 0
    outputs = oracle_outputs(method, torch.from_numpy(joints), torch.from_numpy(visible))
    assert outputs.shape == (3, method.head_channels(), 16, 12) and outputs.dtype == torch.float32
    errors = oracle_errors(method, joints, visible)
    assert torch.isnan(errors[1, 4]).all() and not torch.isnan(errors[0]).any()


def test_quantization_ceiling_orders_codecs_at_64x48() -> None:
    """The oracle shows the paper's point: arg-max quantization dominates at 64×48."""
    classes = registered_methods()
    mean_error = {}
    for name in OURS:
        method = build(classes[name], "64x48")
        joints = interior_joints(build(classes["dark"], "64x48"), 16, 7)
        mean_error[name] = torch.nanmean(oracle_errors(method, joints, np.ones((16, K), np.float32))).item()
    assert mean_error["hrnet"] > 0.15  # ≈ 0.25 px per axis for uniform sub-pixel positions
    assert max(mean_error["dark"], mean_error["udp"], mean_error["cal"]) < 0.02


def test_malformed_input_raises_user_error() -> None:
    method = build(registered_methods()["udp"], "64x48")
    with pytest.raises(UserError, match="joints must be"):
        oracle_outputs(method, np.zeros((K, 2)), np.ones(K))


def test_method_without_oracle_raises_user_error() -> None:
    """A method whose target is not a heatmap and that declares no ``oracle_outputs`` is named."""
    from lrpose_bench.baselines.heatmap import GaussianHeatmapMethod

    class Opaque(GaussianHeatmapMethod):
        name = "opaque"

        def encode(self, joints, visible):
            return {"blob": np.zeros((2, 2), np.float32)}

    res = Resolution(64, 48)
    opaque = Opaque(resolve_method_params(GaussianHeatmapMethod.Params, "hrnet", res), MethodContext(res))
    with pytest.raises(UserError, match="no codec oracle"):
        oracle_outputs(opaque, np.zeros((1, K, 2)), np.ones((1, K)))
