"""``model.init``: the official N(0, 0.001) init against He's fan-out init for nets trained from scratch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from lrpose_bench.config import load_config, resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.method import MethodContext
from lrpose_bench.models import apply_init, build_method_model, build_model
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution


def _backbone_convs(net: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and not n.endswith("final_layer")]


def test_official_is_the_reference_normal_0_001() -> None:
    torch.manual_seed(0)
    net = apply_init(build_model("hrnet-w8", 17), "official")
    weights = torch.cat([m.weight.flatten() for _, m in _backbone_convs(net)])
    assert abs(weights.std().item() - 0.001) < 5e-5


def test_kaiming_draws_he_fan_out_and_keeps_the_output_layer() -> None:
    torch.manual_seed(0)
    net = build_model("hrnet-w8", 17)
    head_before = net.final_layer.weight.detach().clone()
    apply_init(net, "kaiming")
    for name, conv in _backbone_convs(net):
        if conv.weight.numel() < 2000:  # too few draws for a tight std estimate
            continue
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = math.sqrt(2.0 / fan_out)
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.1), name
    assert torch.equal(net.final_layer.weight, head_before)  # the 1x1 output layer keeps N(0, 0.001)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.init"):
        apply_init(nn.Conv2d(1, 1, 1), "xavier")


def test_the_config_key_is_validated_and_reaches_the_cell_model() -> None:
    cfg = load_config("quick", overrides={"model.init": "kaiming"})
    assert cfg.model.init == "kaiming"
    with pytest.raises(ConfigError, match="model.init"):
        load_config("quick", overrides={"model.init": "xavier"})
    cls = METHODS.get("udp")
    resolution = Resolution.parse("64x48")
    method = cls(resolve_method_params(cls.Params, "udp", resolution), MethodContext(resolution))
    torch.manual_seed(0)
    net = build_method_model("hrnet-w8", method, None, cfg.model.init)
    assert net.conv1.weight.std().item() > 0.05  # He scale (~0.08 for 3x3x32 fan-out), not 0.001


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("2.5e-3", 2.5e-3), ("+1e2", 100.0)])
def test_exponent_floats_without_a_dot_are_floats(text: str, value: float) -> None:
    """``--set train.lr=1e-3`` (and ``lr: 1e-3`` in a user YAML, which PyYAML reads as a string) was
    refused with "expected float, got '1e-3'"; it is the float a user means."""
    assert load_config("quick", overrides={"train.lr": text}).train.lr == pytest.approx(value)


def test_a_word_is_still_not_a_float() -> None:
    with pytest.raises(ConfigError, match="train.lr: expected float"):
        load_config("quick", overrides={"train.lr": "1e-3x"})
