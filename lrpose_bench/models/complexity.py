"""Measured model complexity: parameters and multiply-adds (the "GFLOPs" of the HRNet papers).

Multiply-adds are measured with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts one
multiply-add as 2 FLOPs (``2 * prod(out) * prod(weight)`` per convolution); we divide by 2. Only
convolutions and matrix products are counted (BN, ReLU, interpolation are not), like the reference.

Convention (``complexity:`` in ``configs/models.yaml``), chosen so that the published numbers are
reproduced and verified in ``tests/test_models.py``: the HRNet / SimpleBaseline tables ("GFLOPs",
HRNet README; CAL paper Table 1) come from ``get_model_summary`` in leoxiaobin/
deep-high-resolution-net.pytorch ``lib/utils/utils.py``, which

* counts every ``*Conv*`` module as ``prod(weight.shape) * H_out * W_out`` — for a stride-2
  ConvTranspose2d that is 4x its true multiply-adds (FlopCounterMode counts per *input* pixel);
  ``deconv_per_output_pixel: true`` reproduces it (SimpleBaseline R-50: 9.0 vs 5.1 otherwise);
* prints ``total / 1024**3`` as "GFLOPs" — ``giga: 1073741824``. In decimal units HRNet-W32 at
  256x192 is 7.65e9 multiply-adds, printed as 7.12.

The model is measured on the ``meta`` device when it is built there (no memory, no arithmetic), so
even HRNet-W48 / ResNet-152 at 384x288 take well under a second.
"""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from lrpose_bench.models import model_config_section
from lrpose_bench.resolution import Resolution

#: FlopCounterMode counts a multiply-add as two floating-point operations
FLOPS_PER_MAC = 2

_aten = torch.ops.aten
_CONV_OPS = (_aten.convolution, _aten._convolution, _aten.convolution_overrideable)


def complexity_config() -> dict[str, Any]:
    """``complexity:`` of ``configs/models.yaml`` (unit and deconvolution convention)."""
    cfg = model_config_section("complexity")
    return {
        "giga": float(cfg.get("giga", 1e9)),
        "deconv_per_output_pixel": bool(cfg.get("deconv_per_output_pixel", False)),
    }


def _conv_per_output_pixel(
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    *args: Any,
    out_shape: list[int] | None = None,
    **kwargs: Any,
) -> int:
    """Convolution FLOPs counted over the output pixels also for transposed convolutions (utils.py)."""
    assert out_shape is not None
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def measure_macs(model: nn.Module, resolution: Resolution, *, deconv_per_output_pixel: bool | None = None) -> float:
    """Multiply-adds of one forward pass of a 1x3xHxW input (FlopCounterMode FLOPs / 2).

    ``deconv_per_output_pixel`` defaults to the ``complexity:`` config (the official convention, see
    the module docstring); pass ``False`` for the true multiply-adds of transposed convolutions.
    """
    if deconv_per_output_pixel is None:
        deconv_per_output_pixel = complexity_config()["deconv_per_output_pixel"]
    mapping = {op: _conv_per_output_pixel for op in _CONV_OPS} if deconv_per_output_pixel else None
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros(1, 3, resolution.height, resolution.width, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / FLOPS_PER_MAC


@functools.cache
def _meta_model(backbone: str, out_channels: int) -> nn.Module:
    """The backbone built on the ``meta`` device (shapes only: no memory, no arithmetic)."""
    from lrpose_bench.models import build_model

    with torch.device("meta"):
        return build_model(backbone, out_channels)


@functools.cache
def _complexity(backbone: str, resolution: Resolution | None, out_channels: int) -> float:
    """Cached per (backbone, resolution, out_channels); ``resolution=None`` gives the parameters."""
    model = _meta_model(backbone, out_channels)
    if resolution is None:
        return float(count_parameters(model))
    return measure_macs(model, resolution)


def backbone_parameters(backbone: str, out_channels: int = 17) -> int:
    """Parameters of a registered backbone with an ``out_channels`` head (cached)."""
    return int(_complexity(backbone, None, int(out_channels)))


def backbone_macs(backbone: str, resolution: Resolution, out_channels: int = 17) -> float:
    """Multiply-adds of a registered backbone at ``resolution`` (cached)."""
    return _complexity(backbone, resolution, int(out_channels))


def macs_column(resolution: Resolution) -> str:
    """Column name of the multiply-adds at ``resolution`` in :func:`models_table`."""
    return f"GMACs@{resolution}"


def models_table(resolutions: list[Resolution], names: list[str] | None = None, out_channels: int = 17) -> pd.DataFrame:
    """One row per backbone: ``backbone``, ``out_channels`` (the head counted, :func:`head_channels_of`),
    ``params_M`` and ``GMACs@HxW`` for each resolution.

    ``names`` defaults to every registered backbone. GMACs use the ``complexity.giga`` unit
    (2**30, as the HRNet tables); ``params_M`` is in millions (1e6, as the tables).
    """
    from lrpose_bench.registry import BACKBONES

    giga = complexity_config()["giga"]
    rows = []
    for name in names if names is not None else BACKBONES.names():
        channels = head_channels_of(name, out_channels)
        row: dict[str, Any] = {
            "backbone": name,
            "out_channels": channels,
            "params_M": backbone_parameters(name, channels) / 1e6,
        }
        for res in resolutions:
            row[macs_column(res)] = backbone_macs(name, res, channels) / giga
        rows.append(row)
    columns = ["backbone", "out_channels", "params_M"] + [macs_column(r) for r in resolutions]
    return pd.DataFrame(rows, columns=columns)


def head_channels_of(backbone: str, out_channels: int) -> int:
    """The head size :func:`models_table` counts ``backbone`` with: ``out_channels``, except that a
    backbone with a separate offset tower (``factory.offset_tower``: the ``-split`` HRNets), asked
    for K heatmap channels, is counted with the 3K of the offset methods it serves."""
    from lrpose_bench.registry import BACKBONES

    if getattr(BACKBONES.get(backbone), "offset_tower", False) and out_channels % 3:
        return 3 * out_channels
    return out_channels


__all__ = [
    "FLOPS_PER_MAC",
    "backbone_macs",
    "backbone_parameters",
    "complexity_config",
    "head_channels_of",
    "count_parameters",
    "macs_column",
    "measure_macs",
    "models_table",
]
