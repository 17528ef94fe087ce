"""RealNVP normalizing flow on the 2-D residual of RLE.

Architecture and initialisation as mmpose ``mmpose/models/utils/realnvp.py`` (itself from the RLE
authors' ``res-loglikelihood-regression``): six affine coupling layers with the alternating masks
``[[0, 1], [1, 0]] * 3``; the scale nets are ``Linear(2, 64) → LeakyReLU → Linear(64, 64) → LeakyReLU
→ Linear(64, 2) → Tanh``, the translation nets the same without the ``Tanh``; every ``Linear`` weight
``xavier_uniform_(gain=0.01)`` (biases keep PyTorch's default init); the prior is a standard 2-D normal.
``log_prob(x) = log N(z; 0, I) + log|det ∂z/∂x|`` with ``z`` from the data-to-latent pass
(``backward_p``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)


def _scale_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.LeakyReLU(), nn.Linear(64, 2), nn.Tanh()
    )


def _trans_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.LeakyReLU(), nn.Linear(64, 2))


class RealNVP(nn.Module):
    """RealNVP (Dinh et al. 2017) as used by RLE; ``log_prob`` of (M, 2) residuals → (M,)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 3))
        self.s = nn.ModuleList([_scale_net() for _ in range(len(self.mask))])
        self.t = nn.ModuleList([_trans_net() for _ in range(len(self.mask))])
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, gain=0.01)

    def backward_p(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data space → latent space, and the log-determinant of its Jacobian (mmpose ``backward_p``)."""
        log_det = x.new_zeros(x.shape[0])
        z = x
        for i in reversed(range(len(self.t))):
            mask = self.mask[i]
            z_ = mask * z
            s = self.s[i](z_) * (1 - mask)
            t = self.t[i](z_) * (1 - mask)
            z = (1 - mask) * (z - t) * torch.exp(-s) + z_
            log_det = log_det - s.sum(dim=1)
        return z, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` under the flow: standard-normal prior on ``z`` plus the log-determinant."""
        z, log_det = self.backward_p(x)
        prior = -0.5 * (z * z).sum(dim=1) - LOG_2PI  # log N(z; 0, I_2)
        return prior + log_det
