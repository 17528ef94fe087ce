"""The SPSR generator (Ma et al., CVPR 2020), matched to Maclory/SPSR
``code/models/modules/architecture.py::SPSRNet`` with ``upsample_mode='upconv'``, no norm, leaky
ReLU 0.2, and basicsr's RRDB blocks (:mod:`._basicsr`).

Structure (``nf`` features, ``nb`` trunk RRDBs, growth ``gc``, ×``scale``):

* **SR branch**: ``fea_conv`` → ``nb`` RRDB → ``LR_conv`` (+ skip from ``fea_conv``) →
  log2(scale) × [nearest ×2, 3×3 conv, lrelu] → ``HR_conv0_new`` (lrelu) → ``HR_conv1_new``.
* **Gradient branch**: input = gradient map of the LR image (``Get_gradient_nopadding``) →
  ``b_fea_conv``; four stages, stage i = concat(branch features, trunk features after ``taps[i]``
  RRDBs) → RRDB(2·nf) → 3×3 conv 2·nf→nf; ``b_LR_conv`` (+ skip from ``b_fea_conv``); upsampling as
  the SR branch + ``b_HR_conv0`` (lrelu) + ``b_HR_conv1``; ``conv_w`` (1×1 → 3) gives the SR
  gradient map.
* **Fusion**: concat(gradient-branch HR features, SR-branch HR features) → ``f_block`` RRDB(2·nf)
  → ``f_concat`` (2·nf→nf) → ``f_HR_conv0`` (lrelu) → ``f_HR_conv1`` (→ 3) = the SR image.

The reference taps the trunk after blocks 5/10/15/20 of 23; for another depth :func:`default_taps`
places them at a quarter, half, three quarters and the full depth. The reference hard-codes the
growth channels of every RRDB to 32 whatever ``gc`` says; here every RRDB uses ``gc``
(identical at the paper size, gc = 32).

``bicubic_skip`` (off in the paper profile, on in the quick CPU profile) is *our* deviation: the
SR output becomes bicubic(LR) + the network's output (which the ×0.1 initialisation keeps near
zero), so a generator trained for only a few hundred CPU iterations starts from the bicubic image
and learns a residual. The reference has no such skip; it starts from a pre-trained RRDB_PSNR
network instead, which cannot be downloaded here. ``forward`` returns ``(grad_branch_out, sr, lr_grad)`` as
the reference. Parameter names keep the reference's ``f_`` prefix for the fusion block (its
``Branch_init_iters`` schedule trains only those first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrpose_bench.baselines.spsr import _basicsr
from lrpose_bench.baselines.spsr.gradient import GradientMap
from lrpose_bench.errors import ConfigError
from lrpose_bench.models.complexity import count_parameters  # noqa: F401  (re-exported for the SR code)

#: SPSR / ESRGAN leaky-ReLU slope
LRELU_SLOPE = 0.2
#: the reference's trunk taps for nb = 23
REFERENCE_TAPS = (5, 10, 15, 20)


def default_taps(num_blocks: int) -> tuple[int, int, int, int]:
    """Trunk depths whose features feed the gradient branch: the reference's 5/10/15/20 at
    23 blocks, else a quarter, half, three quarters and the full depth (rounded, at least 1)."""
    if num_blocks == 23:
        return REFERENCE_TAPS
    taps = tuple(max(1, round(num_blocks * k / 4)) for k in (1, 2, 3, 4))
    return taps  # type: ignore[return-value]


def check_taps(taps: Sequence[int], num_blocks: int) -> tuple[int, ...]:
    """Four non-decreasing trunk depths within 1..nb, or a :class:`ConfigError` naming the key."""
    taps = tuple(int(t) for t in taps)
    if len(taps) != 4 or any(t < 1 or t > num_blocks for t in taps) or list(taps) != sorted(taps):
        raise ConfigError(
            f"methods.spsr taps {list(taps)}: give 4 non-decreasing trunk depths between 1 and nb={num_blocks}"
        )
    return taps


class UpConv(nn.Sequential):
    """SPSR ``upconv_blcok``: nearest ×2, 3×3 conv, leaky ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
        )


def _conv(cin: int, cout: int, act: bool, kernel: int = 3) -> nn.Module:
    conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2)
    return nn.Sequential(conv, nn.LeakyReLU(LRELU_SLOPE, inplace=True)) if act else conv


class SPSRGenerator(nn.Module):
    """SPSRNet: RRDB SR branch + gradient branch + fusion (see the module docstring)."""

    def __init__(
        self,
        nf: int = 64,
        nb: int = 23,
        gc: int = 32,
        scale: int = 4,
        in_nc: int = 3,
        out_nc: int = 3,
        taps: Sequence[int] | None = None,
        bicubic_skip: bool = False,
    ) -> None:
        super().__init__()
        n_up = int(round(math.log2(scale)))
        if scale < 2 or 2**n_up != scale:
            raise ConfigError(
                f"methods.spsr scale {scale}: SPSR's upconv upsampler needs a power of 2 (4 in the paper)"
            )
        if nf < 1 or nb < 1 or gc < 1:
            raise ConfigError(f"methods.spsr generator size nf={nf}, nb={nb}, gc={gc}: all must be >= 1")
        self.nf, self.nb, self.gc, self.scale = nf, nb, gc, scale
        self.taps = check_taps(taps, nb) if taps is not None else default_taps(nb)

        # SR branch
        self.fea_conv = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.trunk = nn.ModuleList([_basicsr.rrdb_block(nf, gc) for _ in range(nb)])
        self.LR_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upsampler = nn.Sequential(*[UpConv(nf) for _ in range(n_up)])
        self.HR_conv0_new = _conv(nf, nf, act=True)
        self.HR_conv1_new = _conv(nf, nf, act=False)

        # gradient branch
        self.get_g_nopadding = GradientMap(padding=1)
        self.b_fea_conv = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.b_blocks = nn.ModuleList([_basicsr.rrdb_block(2 * nf, gc) for _ in range(4)])
        self.b_concats = nn.ModuleList([nn.Conv2d(2 * nf, nf, 3, 1, 1) for _ in range(4)])
        self.b_LR_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.b_module = nn.Sequential(
            *[UpConv(nf) for _ in range(n_up)], _conv(nf, nf, act=True), _conv(nf, nf, act=False)
        )
        self.conv_w = nn.Conv2d(nf, out_nc, 1, 1, 0)

        # fusion
        self.f_block = _basicsr.rrdb_block(2 * nf, gc)
        self.f_concat = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.f_HR_conv0 = _conv(nf, nf, act=True)
        self.f_HR_conv1 = _conv(nf, out_nc, act=False)
        self.bicubic_skip = bicubic_skip
        self.reset_parameters()

    def reset_parameters(self, scale: float = 0.1) -> None:
        """Kaiming-normal (fan-in) weights × 0.1 and zero biases for every conv: SPSR
        ``networks.init_weights(init_type='kaiming', scale=0.1)`` and basicsr's
        ``default_init_weights(..., 0.1)`` inside RRDB (the ESRGAN residual-scaling init)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
                module.weight.data.mul_(scale)
                if module.bias is not None:
                    module.bias.data.zero_()

    def forward(self, lr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``lr`` (N, 3, h, w) in [0, 1] → (gradient-branch map, SR image, LR gradient map);
        the first two are (N, 3, scale·h, scale·w)."""
        lr_grad = self.get_g_nopadding(lr)
        feat = self.fea_conv(lr)
        x = feat
        tapped: list[Tensor] = []
        taps = list(self.taps)
        for depth, block in enumerate(self.trunk, start=1):
            x = block(x)
            while taps and taps[0] == depth:
                tapped.append(x)
                taps.pop(0)
        x = feat + self.LR_conv(x)
        x = self.HR_conv1_new(self.HR_conv0_new(self.upsampler(x)))

        b_feat = self.b_fea_conv(lr_grad)
        b = b_feat
        for block, concat, trunk_feat in zip(self.b_blocks, self.b_concats, tapped):
            b = concat(block(torch.cat([b, trunk_feat], dim=1)))
        b = self.b_LR_conv(b) + b_feat
        branch = self.b_module(b)
        grad_out = self.conv_w(branch)

        fused = self.f_concat(self.f_block(torch.cat([branch, x], dim=1)))
        sr = self.f_HR_conv1(self.f_HR_conv0(fused))
        if self.bicubic_skip:
            sr = sr + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return grad_out, sr, lr_grad


def build_generator(
    nf: int, nb: int, gc: int, scale: int = 4, taps: Sequence[int] | None = None, bicubic_skip: bool = False
) -> SPSRGenerator:
    """The generator at a configured size (``configs/methods/spsr.yaml``)."""
    return SPSRGenerator(nf=nf, nb=nb, gc=gc, scale=scale, taps=taps, bicubic_skip=bicubic_skip)


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """The control's upsampler: bicubic ×scale (half-pixel centres, as ``imresize``/PIL), clamped
    to [0, 1] as an 8-bit image would be."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
