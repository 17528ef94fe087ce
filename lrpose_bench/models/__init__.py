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

from lrpose_bench.config import config_dir, read_yaml
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


def build_method_model(backbone: str, method: Any, pretrained: str | None = None) -> nn.Module:
    """The network of a cell: backbone with a ``method.head_channels()`` final layer and, when the
    method defines one (:meth:`~lrpose_bench.method.Method.build_head`), its output head after it.

    Methods without a head (every heatmap method) get exactly :func:`build_model`'s module, so their
    checkpoints and key names are unchanged.
    """
    net = build_model(backbone, method.head_channels(), pretrained)
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
    "init_config",
    "model_config",
    "model_config_section",
]
