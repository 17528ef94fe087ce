"""HRNet for pose (Sun et al., CVPR 2019), structure driven by ``configs/models.yaml``.

Matches leoxiaobin/deep-high-resolution-net.pytorch ``lib/models/pose_hrnet.py``: a stem of two
3x3 stride-2 convolutions (``conv1``/``bn1``/``conv2``/``bn2``), a Bottleneck ``layer1``, then stages
2–4 of 2/3/4 parallel branches of basic blocks joined by exchange units (``fuse_layers``), new
branches made by ``transition1..3``; the last stage-4 module outputs only the highest-resolution
branch, and ``final_layer`` is a 1x1 convolution on it. Parameter names are the official
state-dict keys, so an official (or, renamed, an mmpose) checkpoint loads with ``model.pretrained``.

One deliberate difference: the official exchange unit upsamples with
``nn.Upsample(scale_factor=2**(j-i))``, which fails when a branch has a fractional size (at 64x48
the 1/32 branch is 2x2 after ceil-rounding, and 2x2 * 8 = 16x16 ≠ 16x12). We upsample with
``F.interpolate(size=target.shape[-2:], mode="nearest")`` instead; for exact power-of-two sizes it
is the same operation. ``Upsample`` has no parameters, so ``fuse_layers.i.j.0/1`` keys are unchanged.

Head size vs the paper (Table 1, 128x96): with a K=17 head HRNet-W32/W48 have 28.54M/63.60M
parameters (published 28.5M/63.6M) and 1.78/3.65 GMACs (published 1.8/3.7). A 3K=51-channel head
(UDP, CAL) adds only the wider 1x1 ``final_layer``: 34*C+34 parameters (+1,122 for W32 → 28.54M,
+1,666 for W48 → 63.60M; the paper prints 28.6M/63.7M for UDP) and <0.001 GMACs at 128x96. The paper's
CAL counts, 49.3M / 2.5 GFLOPs (W32) and 110.3M / 5.3 (W48), are ~20.8M / ~46.7M parameters above
that. The paper does not describe the difference; CAL's reference implementation does (below). By
default our CAL and UDP models are this backbone with a 3K 1x1 head, one network for every offset
method (say so beside any parameter comparison with the paper).

The ``-split`` variants (``hrnet-w32-split`` …) are the network of CAL's reference implementation
(ilovepose/Low-resolution-human-pose, ``lib/models/pose_hrnet.py``): after stage 3 the net forks into
two towers, each with its own ``transition3`` and stage 4, one ending in the heatmap head
(``head_hm``: two BasicBlocks + 1x1 conv to K maps) and one in the offset head (``head_om``: the same
to 2K maps). That accounts for the paper's Table 1 exactly: a second transition3 + stage 4 + the two
heads' blocks add 20.8M parameters and 0.7 GMACs at 128x96 to HRNet-W32 (paper: 49.3M, 2.5 against
28.5M, 1.8) and 46.7M, 1.6 to W48 (110.3M, 5.3 against 63.6M, 3.7). Why it matters at low resolution:
with one stage 4 the offset loss and the heatmap loss pull on the same features
(docs/speed.md: the offset term costs CAL's heatmap its left/right identity); with two, only stages
1–3 are shared. The forward output stays the combined ``(N, 3K, H, W)`` layout, ``[cls, x, y]`` per
joint (``codecs.offset.interleave``), so UDP and CAL run on either network unchanged; a method with
K heatmaps only cannot use it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lrpose_bench.codecs.offset import interleave
from lrpose_bench.errors import ConfigError
from lrpose_bench.models import init_config, model_config
from lrpose_bench.models.pretrained import with_pretrained
from lrpose_bench.registry import register_backbone

#: module-name prefixes of the head (re-initialised when a checkpoint's head has another size); the
#: ``-split`` variants' second stage 4 and heads are head too (no published pose file has them)
HEAD_PREFIXES: tuple[str, ...] = (
    "final_layer.",
    "final_layer_om.",
    "head_hm.",
    "head_om.",
    "transition3_om.",
    "stage4_om.",
)
#: suffix of the backbone names with separate heatmap and offset towers (CAL's reference network)
SPLIT_SUFFIX = "-split"
#: key families of official ImageNet HRNet files (hrnet_w32-36af842e.pth) that the pose net lacks;
#: stage4 of the classifier keeps all fuse outputs, the pose net only the highest-resolution one
IGNORABLE_KEYS: tuple[str, ...] = (
    r"incre_modules\.",
    r"downsamp_modules\.",
    r"classifier\.",
    r"stage4\.\d+\.fuse_layers\.[1-9]",
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=float(init_config().get("bn_momentum", 0.1)))


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with identity shortcut (pose_hrnet.py ``BasicBlock``)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 → 3x3 → 1x1 (x4) with shortcut (pose_hrnet.py ``Bottleneck``)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _make_blocks(block: type[nn.Module], inplanes: int, planes: int, num_blocks: int) -> nn.Sequential:
    """A run of blocks; the first gets a 1x1 conv+BN shortcut when channels change (``downsample.0/1``)."""
    expansion = block.expansion  # type: ignore[attr-defined]
    downsample = None
    if inplanes != planes * expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * expansion, kernel_size=1, bias=False), _bn(planes * expansion)
        )
    layers = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches + exchange unit (pose_hrnet.py ``HighResolutionModule``, fuse method SUM)."""

    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: list[int],
        in_channels: list[int],
        num_channels: list[int],
        multi_scale_output: bool = True,
    ):
        super().__init__()
        expansion = block.expansion  # type: ignore[attr-defined]
        self.num_branches = len(num_channels)
        self.multi_scale_output = multi_scale_output
        self.branches = nn.ModuleList(
            _make_blocks(block, in_channels[b], num_channels[b], num_blocks[b]) for b in range(self.num_branches)
        )
        self.in_channels = [c * expansion for c in num_channels]
        self.fuse_layers = self._make_fuse_layers() if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self) -> nn.ModuleList:
        """fuse_layers[i][j] maps branch j to branch i's channels and (for j<i) resolution.

        j>i: 1x1 conv + BN (index 0/1; the official index-2 Upsample is done in ``forward`` by size);
        j<i: (i-j) 3x3 stride-2 conv+BN, ReLU after all but the last (``fuse_layers.i.j.k.0/1``).
        """
        ch = self.in_channels
        outputs = self.num_branches if self.multi_scale_output else 1
        fuse_layers = nn.ModuleList()
        for i in range(outputs):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False), _bn(ch[i])))
                elif j == i:
                    row.append(None)
                else:
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            steps.append(nn.Sequential(_conv3x3(ch[j], ch[i], 2), _bn(ch[i])))
                        else:
                            steps.append(nn.Sequential(_conv3x3(ch[j], ch[j], 2), _bn(ch[j]), nn.ReLU(inplace=False)))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return fuse_layers

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [branch(xb) for branch, xb in zip(self.branches, x)]
        if self.fuse_layers is None:
            return x
        fused = []
        for i, row in enumerate(self.fuse_layers):
            size = x[i].shape[-2:]
            y = x[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(x[j])  # type: ignore[misc]
                if j > i:
                    z = F.interpolate(z, size=size, mode="nearest")
                y = y + z
            fused.append(self.relu(y))
        return fused


def _stage_cfg(cfg: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    stage = cfg.get(name)
    if not isinstance(stage, dict):
        raise ConfigError(f"configs/models.yaml {where}.{name}: missing stage config")
    try:
        out = {
            "num_modules": int(stage["num_modules"]),
            "block": BLOCKS[str(stage["block"]).lower()],
            "num_blocks": [int(v) for v in stage["num_blocks"]],
            "num_channels": [int(v) for v in stage["num_channels"]],
        }
    except KeyError as error:
        raise ConfigError(
            f"configs/models.yaml {where}.{name}: missing or unknown value {error}; "
            "give num_modules, block (basic|bottleneck), num_blocks, num_channels"
        ) from None
    if len(out["num_blocks"]) != len(out["num_channels"]):
        raise ConfigError(f"configs/models.yaml {where}.{name}: num_blocks and num_channels differ in length")
    return out


class PoseHighResolutionNet(nn.Module):
    """HRNet backbone + 1x1 ``final_layer`` on the highest-resolution branch (stride 4)."""

    def __init__(self, cfg: dict[str, Any], out_channels: int, name: str = "hrnet", offset_tower: bool = False):
        super().__init__()
        if offset_tower and out_channels % 3:
            raise ConfigError(
                f"backbone {name}{SPLIT_SUFFIX}: its separate heatmap and offset towers need a method with "
                f"offset fields (3K output channels: udp, cal), not {out_channels} channels; use {name}"
            )
        self.offset_tower = offset_tower
        stem = int(cfg.get("stem_channels", 64))
        s1, s2, s3, s4 = (_stage_cfg(cfg, f"stage{k}", name) for k in (1, 2, 3, 4))
        for k, stage in ((2, s2), (3, s3), (4, s4)):
            if len(stage["num_channels"]) != k:
                raise ConfigError(f"configs/models.yaml {name}.stage{k}: needs {k} branches (num_channels)")
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(stem)
        self.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(stem)
        self.relu = nn.ReLU(inplace=True)
        block1 = s1["block"]
        self.layer1 = _make_blocks(block1, stem, s1["num_channels"][0], s1["num_blocks"][0])
        pre = [s1["num_channels"][0] * block1.expansion]

        self.transition1, self.stage2, pre = self._stage(pre, s2, multi_scale_output=True)
        self.transition2, self.stage3, pre = self._stage(pre, s3, multi_scale_output=True)
        after_stage3 = pre
        self.transition3, self.stage4, pre = self._stage(after_stage3, s4, multi_scale_output=False)
        kernel = int(cfg.get("final_conv_kernel", 1))
        padding = 1 if kernel == 3 else 0
        if offset_tower:  # CAL reference pose_hrnet.py: transition3_om/stage4_om, HeadHeatMap/HeadOffsetMap
            self.transition3_om, self.stage4_om, _ = self._stage(after_stage3, s4, multi_scale_output=False)
            self.head_hm = _make_blocks(BasicBlock, pre[0], pre[0], 2)
            self.head_om = _make_blocks(BasicBlock, pre[0], pre[0], 2)
            self.final_layer = nn.Conv2d(pre[0], out_channels // 3, kernel, 1, padding)
            self.final_layer_om = nn.Conv2d(pre[0], 2 * (out_channels // 3), kernel, 1, padding)
        else:
            self.final_layer = nn.Conv2d(pre[0], out_channels, kernel, 1, padding)
        self.init_weights()

    @staticmethod
    def _transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
        """pose_hrnet.py ``_make_transition_layer``: adapt existing branches, add new stride-2 ones."""
        layers: list[nn.Module | None] = []
        for i, c in enumerate(cur):
            if i < len(pre):
                layers.append(
                    None if c == pre[i] else nn.Sequential(_conv3x3(pre[i], c), _bn(c), nn.ReLU(inplace=True))
                )
            else:
                steps = []
                for j in range(i + 1 - len(pre)):
                    cin = pre[-1]
                    cout = c if j == i - len(pre) else cin
                    steps.append(nn.Sequential(_conv3x3(cin, cout, 2), _bn(cout), nn.ReLU(inplace=True)))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def _stage(
        self, pre: list[int], stage: dict[str, Any], multi_scale_output: bool
    ) -> tuple[nn.ModuleList, nn.Sequential, list[int]]:
        block = stage["block"]
        cur = [c * block.expansion for c in stage["num_channels"]]
        transition = self._transition(pre, cur)
        modules = []
        in_channels = cur
        for m in range(stage["num_modules"]):
            last = m == stage["num_modules"] - 1
            module = HighResolutionModule(
                block,
                stage["num_blocks"],
                in_channels,
                stage["num_channels"],
                multi_scale_output=multi_scale_output or not last,
            )
            in_channels = module.in_channels
            modules.append(module)
        return transition, nn.Sequential(*modules), in_channels

    @staticmethod
    def _branch_inputs(transition: nn.ModuleList, previous: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(transition):
            source = previous[i] if i < len(previous) else previous[-1]
            out.append(source if layer is None else layer(source))
        return out

    def init_weights(self) -> None:
        """Official ``init_weights``: conv/deconv ~ N(0, 0.001), bias 0; BN weight 1, bias 0."""
        std = float(init_config().get("conv_std", 0.001))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        ys = self.stage2(self._branch_inputs(self.transition1, [x]))
        ys = self.stage3(self._branch_inputs(self.transition2, ys))
        if not self.offset_tower:
            return self.final_layer(self.stage4(self._branch_inputs(self.transition3, ys))[0])
        heat = self.final_layer(self.head_hm(self.stage4(self._branch_inputs(self.transition3, ys))[0]))
        offsets = self.final_layer_om(self.head_om(self.stage4_om(self._branch_inputs(self.transition3_om, ys))[0]))
        n, k, h, w = heat.shape  # the offset methods' combined layout, [cls, x, y] per joint
        return interleave(heat, offsets.reshape(n, k, 2, h, w))


def build_hrnet(
    name: str, out_channels: int, pretrained: str | None = None, offset_tower: bool = False
) -> PoseHighResolutionNet:
    """Build HRNet variant ``name`` of ``configs/models.yaml`` (with separate heatmap and offset towers
    when ``offset_tower``: the ``-split`` backbones); load ``pretrained`` if given."""
    return with_pretrained(
        PoseHighResolutionNet(model_config("hrnet", name), out_channels, name=name, offset_tower=offset_tower),
        pretrained,
        head_prefixes=HEAD_PREFIXES,
        ignorable=IGNORABLE_KEYS,
    )


# hrnet-w8 first: the small CPU variant the end-to-end pipeline uses.
@register_backbone("hrnet-w8")
def hrnet_w8(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """Narrow (8) and shallow (1 module per stage, 2 blocks) 4-stage HRNet for CPU runs and tests."""
    return build_hrnet("hrnet-w8", out_channels, pretrained)


@register_backbone("hrnet-w16")
def hrnet_w16(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """Official HRNet depth (modules 1/4/3, 4 blocks) at width 16."""
    return build_hrnet("hrnet-w16", out_channels, pretrained)


@register_backbone("hrnet-w16-slim")
def hrnet_w16_slim(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """hrnet-w8's depth and stem with the branch widths doubled (16/32/64/128): the width step of the
    CPU accuracy-per-minute comparison (docs/speed.md)."""
    return build_hrnet("hrnet-w16-slim", out_channels, pretrained)


@register_backbone("hrnet-w32-slim")
def hrnet_w32_slim(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """hrnet-w8's depth and stem with hrnet-w32's branch widths (32/64/128/256)."""
    return build_hrnet("hrnet-w32-slim", out_channels, pretrained)


@register_backbone("hrnet-w32")
def hrnet_w32(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """pose_hrnet_w32 (28.5M parameters with K=17, 7.1 GMACs at 256x192)."""
    return build_hrnet("hrnet-w32", out_channels, pretrained)


@register_backbone("hrnet-w48")
def hrnet_w48(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """pose_hrnet_w48 (63.6M parameters with K=17, 14.6 GMACs at 256x192)."""
    return build_hrnet("hrnet-w48", out_channels, pretrained)


def _register_split(name: str) -> Any:
    """Register ``name + SPLIT_SUFFIX``: HRNet ``name`` with CAL's separate offset tower."""

    def factory(out_channels: int, pretrained: str | None = None) -> nn.Module:
        return build_hrnet(name, out_channels, pretrained, offset_tower=True)

    factory.__name__ = factory.__qualname__ = name.replace("-", "_") + "_split"
    factory.__doc__ = (
        f"{name} forked after stage 3 into a heatmap tower and an offset tower (CAL's reference network; "
        "3K output channels only)."
    )
    factory.offset_tower = True  # type: ignore[attr-defined]
    return register_backbone(name + SPLIT_SUFFIX)(factory)


SPLIT_FACTORIES: dict[str, Any] = {
    name + SPLIT_SUFFIX: _register_split(name)
    for name in ("hrnet-w8", "hrnet-w16", "hrnet-w16-slim", "hrnet-w32-slim", "hrnet-w32", "hrnet-w48")
}
