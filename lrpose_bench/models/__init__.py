"""Backbones + heads: HRNet (``hrnet.py``), SimpleBaseline (``resnet_deconv.py``), their structural
configs (``configs/models.yaml``), local-checkpoint loading (``checkpoint.py``) and measured
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
        raise ConfigError(
            f"{config_dir() / MODELS_YAML}: no entry {family}.{name}; known {family} entries: {known}"
        )
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


__all__ = ["build_model", "init_config", "model_config", "model_config_section"]
