"""The float type decoders compute in."""

from __future__ import annotations

import torch
from torch import Tensor


def decode_float(values: Tensor) -> Tensor:
    """``values`` in float32, or unchanged when already float64.

    Why: the network's outputs may be bf16/fp16 (autocast) and are decoded in float32, but the exact
    regression tier (``regression/exact.py``) decodes in float64. Softmax-based decoders (integral
    soft-argmax, SimCC) otherwise carry the last-ulp difference between the scalar and the SIMD
    ``exp`` kernels (``ATEN_CPU_CAPABILITY=default`` vs ``avx2``) into coordinates (~3e-6 px) and
    near-1 scores, which reorder detections and moved the exact tier's AP on a scalar-kernel CPU.
    """
    return values if values.dtype == torch.float64 else values.float()
