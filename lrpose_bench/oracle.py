"""Codec oracle (beyond the paper): the *perfect network output* of each method.

``oracle_outputs(method, joints, visible)`` encodes ground truth and converts the targets into what a
network that fitted them exactly would output (the heatmap for ``hrnet``/``dark``, the interleaved
[cls, x, y] channels for ``udp``/``cal``). ``method.decode`` of that tensor is the codec's
quantization ceiling: the error no training can remove (arg-max quantization of ``hrnet`` at 64×48,
≈ 0 for the sub-pixel codecs). A method can define ``oracle_outputs(targets)`` itself; otherwise a
target named ``heatmap`` with ``head_channels()`` channels is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.errors import UserError
from lrpose_bench.method import Method


def codec_bound(method: Method) -> float | None:
    """The codec's stated round-trip bound in heatmap px per axis (away from borders), if known
    (:attr:`Method.codec_bound_px`; pipeline methods report their pose codec's)."""
    return None if method.codec_bound_px is None else float(method.codec_bound_px)


def encode_batch(method: Any, joints: np.ndarray, visible: np.ndarray) -> dict[str, Tensor]:
    """Encode N instances and stack each target like the default collate: (N, ...) float32 tensors."""
    joints = np.asarray(joints, dtype=np.float32)
    visible = np.asarray(visible, dtype=np.float32)
    if joints.ndim != 3 or joints.shape[-1] != 2 or visible.shape != joints.shape[:2]:
        raise UserError(f"oracle: joints must be (N, K, 2) and visible (N, K); got {joints.shape} and {visible.shape}")
    encoded = [method.encode(joints[i], visible[i]) for i in range(joints.shape[0])]
    if not encoded:
        raise UserError("oracle: no instances to encode (N = 0)")
    batch = {key: torch.from_numpy(np.stack([e[key] for e in encoded])).float() for key in encoded[0]}
    batch["joints"] = torch.from_numpy(joints)
    batch["visible"] = torch.from_numpy(visible)
    return batch


def oracle_from_targets(method: Method, targets: Mapping[str, Tensor]) -> Tensor:
    """Convert stacked targets into the perfect output (:meth:`Method.oracle_outputs`)."""
    return method.oracle_outputs(targets)


def oracle_outputs(method: Any, joints: np.ndarray | Tensor, visible: np.ndarray | Tensor) -> Tensor:
    """Perfect network output for ground-truth ``joints`` (N, K, 2, heatmap px) and ``visible`` (N, K)."""
    if isinstance(joints, Tensor):
        joints = joints.detach().cpu().numpy()
    if isinstance(visible, Tensor):
        visible = visible.detach().cpu().numpy()
    return oracle_from_targets(method, encode_batch(method, joints, visible))


def oracle_errors(method: Any, joints: np.ndarray | Tensor, visible: np.ndarray | Tensor) -> Tensor:
    """Per-axis absolute decode error (N, K, 2) of the oracle, in heatmap px (NaN where invisible)."""
    joints_t = torch.as_tensor(np.asarray(joints, dtype=np.float32))
    visible_t = torch.as_tensor(np.asarray(visible, dtype=np.float32))
    coords, _ = method.decode(oracle_outputs(method, joints_t, visible_t))
    error = (coords.float() - joints_t).abs()
    return torch.where(visible_t[..., None] > 0, error, torch.full_like(error, float("nan")))
