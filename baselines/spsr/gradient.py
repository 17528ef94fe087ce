"""Gradient maps of SPSR (Ma et al., CVPR 2020, Sec. 3.1): ``M(I) = ||∇I||₂`` per colour channel.

Matches Maclory/SPSR ``code/models/SPSR_model.py``: ``Get_gradient_nopadding`` (3×3 kernels with
zero padding 1: same size as the input; the gradient branch's input and its L1 target) and
``Get_gradient`` (same kernels with zero padding 2: output 2 pixels larger on each axis; used for the
gradient-map MSE between SR and HR). Kernels (cross-correlation, as ``F.conv2d``)::

    v = [[0, -1, 0], [0, 0, 0], [0, 1, 0]]   ->  dv(y, x) = I(y+1, x) - I(y-1, x)
    h = [[0, 0, 0], [-1, 0, 1], [0, 0, 0]]   ->  dh(y, x) = I(y, x+1) - I(y, x-1)

and ``M = sqrt(dv² + dh² + 1e-6)`` (the 1e-6 keeps the square root differentiable at 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: SPSR's epsilon inside the square root
GRADIENT_EPS = 1e-6


def _kernels(dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2, 1, 3, 3): vertical then horizontal central-difference kernels of SPSR."""
    kernel_v = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype, device=device)
    kernel_h = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=dtype, device=device)
    return torch.stack([kernel_v, kernel_h])[:, None]


def gradient_map(image: Tensor, padding: int = 1, eps: float = GRADIENT_EPS) -> Tensor:
    """Per-channel gradient magnitude of ``image`` (N, C, H, W) → (N, C, H+2p-2, W+2p-2).

    ``padding=1`` is ``Get_gradient_nopadding`` (same size); ``padding=2`` is ``Get_gradient``.
    Every channel is treated alike (the reference loops over channels; here they are folded into
    the batch for one convolution).
    """
    if image.dim() != 4:
        raise ValueError(f"gradient_map expects (N, C, H, W), got shape {tuple(image.shape)}")
    n, c, h, w = image.shape
    flat = image.reshape(n * c, 1, h, w)
    d = F.conv2d(flat, _kernels(image.dtype, image.device), padding=padding)
    magnitude = torch.sqrt(d[:, 0:1].pow(2) + d[:, 1:2].pow(2) + eps)
    return magnitude.reshape(n, c, magnitude.shape[-2], magnitude.shape[-1])


class GradientMap(nn.Module):
    """Module form of :func:`gradient_map` (no parameters: nothing to save in a state dict)."""

    def __init__(self, padding: int = 1, eps: float = GRADIENT_EPS) -> None:
        super().__init__()
        self.padding = padding
        self.eps = eps

    def forward(self, image: Tensor) -> Tensor:
        return gradient_map(image, self.padding, self.eps)
