"""Backbones + heads: HRNet (``hrnet.py``), SimpleBaseline (``resnet_deconv.py``), their structural
configs (``configs/models.yaml``), pretrained-weights loading (``pretrained.py``) and measured
complexity (``complexity.py``).

Every backbone factory is registered with ``@register_backbone(name)`` and has the signature
``factory(out_channels: int, pretrained: str | None = None) -> nn.Module``; the model maps
``(N, 3, h, w)`` to ``(N, out_channels, h/4, w/4)``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch.nn as nn

from lrpose_bench.config import INIT_SCHEMES, config_dir, read_yaml
from lrpose_bench.errors import ConfigError

MODELS_YAML = "models.yaml"


@functools.lru_cache(maxsize=1)
def _models_yaml() -> dict[str, Any]:
    path = config_dir() / MODELS_YAML
    if not path.is_file():
        raise ConfigError(f"{path}: backbone structure file is missing; reinstall lrpose-bench")
    return read_yaml(path)


def model_config(family: str, name: str) -> dict[str, Any]:
    """The structural config of backbone ``name`` in section ``family`` of ``configs/models.yaml``."""
    data = _models_yaml()
    section = data.get(family)
    if not isinstance(section, dict) or name not in section:
        known = ", ".join(sorted(section)) if isinstance(section, dict) else "(none)"
        raise ConfigError(f"{config_dir() / MODELS_YAML}: no entry {family}.{name}; known {family} entries: {known}")
    return dict(section[name])


def model_config_section(section: str) -> dict[str, Any]:
    """A top-level section of ``configs/models.yaml`` (``init``, ``complexity``); empty if absent."""
    value = _models_yaml().get(section, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{config_dir() / MODELS_YAML}: section {section!r} must be a mapping")
    return dict(value)


def init_config() -> dict[str, Any]:
    """Initialisation constants (``init:`` in ``configs/models.yaml``)."""
    return model_config_section("init")


def build_model(backbone: str, out_channels: int, pretrained: str | None = None) -> nn.Module:
    """Build a registered backbone with an ``out_channels`` head (K for heatmaps, 3K for UDP/CAL).

    ``pretrained`` is a local checkpoint file (official, mmpose or torchvision key layout); nothing is
    downloaded.
    """
    from lrpose_bench.registry import BACKBONES

    if int(out_channels) <= 0:
        raise ConfigError(f"backbone {backbone!r}: out_channels must be positive, got {out_channels}")
    factory = BACKBONES.get(backbone)
    return factory(int(out_channels), pretrained=pretrained)


class MethodHeadModel(nn.Module):
    """A backbone followed by a method's own output head (:meth:`Method.build_head`).

    ``forward(x) = head(backbone(x))``; state-dict keys are ``backbone.…`` (the registered backbone's
    own names, so ``--pretrained`` files load into it as before) and ``head.…``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Any) -> Any:
        return self.head(self.backbone(x))


#: names of the output layers (every backbone ends with ``final_layer``; the ``-split`` HRNets add the
#: offset tower's ``final_layer_om``): they keep their official N(0, 0.001) under any scheme
OUTPUT_LAYERS: tuple[str, ...] = ("final_layer", "final_layer_om")


def apply_init(net: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise a from-scratch backbone by ``model.init`` ``scheme``; returns ``net``.

    ``official`` keeps each backbone's own init (HRNet: every conv ~ N(0, 0.001), the
    ``init_weights`` of pose_hrnet.py, written for a trunk that is then overwritten by ImageNet
    weights). ``kaiming`` draws every ``Conv2d`` but the output layer from He's normal with fan-out
    and ReLU gain (torchvision ResNet's init; mmpose's ResNet ``init_cfg=[Kaiming(Conv2d),
    Constant(1, _BatchNorm)]``). Why it matters without pretraining: behind batch norm a conv's
    output does not depend on its weights' scale, but Adam's step does not shrink with it, so
    weights of norm 0.001 take relative steps ~lr/0.001 ≈ 2.5 per update until their norm grows;
    He's scale gives the same lr a relative step of ~1 %.
    """
    if scheme == "official":
        return net
    if scheme != "kaiming":
        raise ConfigError(f"model.init: unknown scheme {scheme!r}; use one of {', '.join(INIT_SCHEMES)}")
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and name.split(".")[-1] not in OUTPUT_LAYERS:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


def build_method_model(backbone: str, method: Any, pretrained: str | None = None, init: str = "official") -> nn.Module:
    """The network of a cell: backbone with a ``method.head_channels()`` final layer and, when the
    method defines one (:meth:`~lrpose_bench.method.Method.build_head`), its output head after it.

    Methods without a head (every heatmap method) get exactly :func:`build_model`'s module, so their
    checkpoints and key names are unchanged.
    """
    net = build_model(backbone, method.head_channels(), pretrained)
    if pretrained is None:  # loaded weights replace any init; only a from-scratch net takes model.init
        apply_init(net, init)
    head = method.build_head()
    if head is None:
        return net
    model = MethodHeadModel(net, head)
    if hasattr(net, "pretrained_report"):
        model.pretrained_report = net.pretrained_report  # type: ignore[attr-defined]
    return model


__all__ = [
    "MethodHeadModel",
    "build_method_model",
    "build_model",
    "apply_init",
    "init_config",
    "model_config",
    "model_config_section",
]
