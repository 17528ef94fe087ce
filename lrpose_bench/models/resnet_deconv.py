"""SimpleBaseline (Xiao et al., ECCV 2018): ResNet trunk + three deconvolutions + 1x1 output layer.

Matches leoxiaobin/deep-high-resolution-net.pytorch ``lib/models/pose_resnet.py``: the trunk is
torchvision's ResNet (``torchvision.models.resnet50(weights=None)`` etc., avgpool/fc dropped; its
Bottleneck has the stride on the 3x3 convolution, like pose_resnet's), then ``deconv_layers`` =
3 x [ConvTranspose2d(k=4, s=2, p=1, output_padding=0, bias=False), BN, ReLU] (keys
``deconv_layers.{0,1,3,4,6,7}``) and ``final_layer`` = Conv2d(filters → out_channels, 1x1).
Trunk keys are torchvision's and the official ones (``conv1``, ``bn1``, ``layer1..4``), so an official
COCO checkpoint, an mmpose one (renamed) or a torchvision ImageNet file (``fc.*`` skipped) loads
with ``model.pretrained``; with only a trunk file the head keeps its fresh initialisation (reported).

Initialisation: trunk as torchvision (Kaiming) when no file is given — the official code requires
ImageNet weights and nothing is downloaded here; head as the official ``init_weights``
(deconv and final conv N(0, 0.001), bias 0; BN 1/0).

Inputs that are not multiples of 32 (64x48) are handled by cropping the deconvolution output to
h/4 x w/4 (see ``PoseResNet.forward``); the official code would return 16x16 at 64x48.

``simplebaseline-r18`` (CPU variant): resnet18 trunk (512 channels out) with deconvolution width 128
(``configs/models.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torchvision

from lrpose_bench.errors import ConfigError
from lrpose_bench.models import init_config, model_config
from lrpose_bench.models.pretrained import with_pretrained
from lrpose_bench.registry import register_backbone
from lrpose_bench.resolution import HEATMAP_STRIDE

TRUNKS: dict[int, Callable[..., torchvision.models.ResNet]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
    152: torchvision.models.resnet152,
}
#: the head modules: loaded when a checkpoint has them with matching shapes, else fresh + reported
HEAD_PREFIXES: tuple[str, ...] = ("deconv_layers.", "final_layer.")
#: the classifier of a torchvision / official ImageNet ResNet file
IGNORABLE_KEYS: tuple[str, ...] = (r"fc\.",)
#: ConvTranspose2d padding/output_padding per kernel (pose_resnet.py ``_get_deconv_cfg``)
DECONV_PADDING: dict[int, tuple[int, int]] = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


class PoseResNet(nn.Module):
    """ResNet trunk (stride 32) + deconvolution head (stride 4)."""

    def __init__(self, cfg: dict[str, Any], out_channels: int, name: str = "simplebaseline"):
        super().__init__()
        depth = int(cfg["depth"])
        if depth not in TRUNKS:
            raise ConfigError(
                f"configs/models.yaml simplebaseline.{name}.depth: {depth} is not one of {sorted(TRUNKS)}"
            )
        trunk = TRUNKS[depth](weights=None)
        # the official module names at the top level (no "backbone." prefix)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2 = trunk.layer1, trunk.layer2
        self.layer3, self.layer4 = trunk.layer3, trunk.layer4
        inplanes = trunk.fc.in_features
        del trunk

        kernel = int(cfg.get("deconv_kernel", 4))
        if kernel not in DECONV_PADDING:
            raise ConfigError(
                f"configs/models.yaml simplebaseline.{name}.deconv_kernel: {kernel} is not one of "
                f"{sorted(DECONV_PADDING)}"
            )
        padding, output_padding = DECONV_PADDING[kernel]
        filters = int(cfg.get("deconv_filters", 256))
        momentum = float(init_config().get("bn_momentum", 0.1))
        layers: list[nn.Module] = []
        for _ in range(int(cfg.get("num_deconv_layers", 3))):
            layers += [
                nn.ConvTranspose2d(inplanes, filters, kernel, 2, padding, output_padding, bias=False),
                nn.BatchNorm2d(filters, momentum=momentum),
                nn.ReLU(inplace=True),
            ]
            inplanes = filters
        self.deconv_layers = nn.Sequential(*layers)
        final = int(cfg.get("final_conv_kernel", 1))
        self.final_layer = nn.Conv2d(inplanes, out_channels, final, 1, 1 if final == 3 else 0)
        self.init_head()

    def init_head(self) -> None:
        """Official ``init_weights`` for the head: N(0, 0.001) weights, zero bias, BN 1/0."""
        std = float(init_config().get("conv_std", 0.001))
        for m in list(self.deconv_layers.modules()) + [self.final_layer]:
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] // HEATMAP_STRIDE, x.shape[-1] // HEATMAP_STRIDE
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.deconv_layers(x)
        # An input that is not a multiple of 32 (64x48: 48/32 = 1.5) leaves the trunk ceil-rounded
        # (2x2), so three x2 deconvolutions give 16x16 instead of 16x12. Feature q of the output
        # sits at input pixel 4q for every size (stride-2 convs with padding k//2 align top-left),
        # so the heatmap is the top-left h/4 x w/4 block; a no-op for multiples of 32.
        return self.final_layer(x[..., :height, :width])


def build_simplebaseline(name: str, out_channels: int, pretrained: str | None = None) -> PoseResNet:
    """Build SimpleBaseline variant ``name`` of ``configs/models.yaml``; load ``pretrained`` if given."""
    return with_pretrained(
        PoseResNet(model_config("simplebaseline", name), out_channels, name=name),
        pretrained,
        head_prefixes=HEAD_PREFIXES,
        ignorable=IGNORABLE_KEYS,
    )


@register_backbone("simplebaseline-r18")
def simplebaseline_r18(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """CPU variant: resnet18 trunk, deconvolution width 128."""
    return build_simplebaseline("simplebaseline-r18", out_channels, pretrained)


@register_backbone("simplebaseline-r50")
def simplebaseline_r50(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """pose_resnet_50 (34.0M parameters with K=17, 8.9 GMACs at 256x192)."""
    return build_simplebaseline("simplebaseline-r50", out_channels, pretrained)


@register_backbone("simplebaseline-r101")
def simplebaseline_r101(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """pose_resnet_101 (53.0M parameters with K=17, 12.4 GMACs at 256x192)."""
    return build_simplebaseline("simplebaseline-r101", out_channels, pretrained)


@register_backbone("simplebaseline-r152")
def simplebaseline_r152(out_channels: int, pretrained: str | None = None) -> nn.Module:
    """pose_resnet_152 (68.6M parameters with K=17, 15.7 GMACs at 256x192)."""
    return build_simplebaseline("simplebaseline-r152", out_channels, pretrained)
