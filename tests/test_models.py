"""Backbones: structure, official key layout, measured complexity, local checkpoints.

Published numbers checked here: HRNet README (deep-high-resolution-net.pytorch) and DarkPose README
(see /work/shared/REFERENCES.md §1c, §2); CAL paper Table 1 (HRNet at 128x96).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench import registry
from lrpose_bench.errors import CheckpointError, ConfigError
from lrpose_bench.models import build_model, complexity, hrnet, resnet_deconv
from lrpose_bench.models.complexity import (
    backbone_macs,
    backbone_parameters,
    count_parameters,
    measure_macs,
    models_table,
)
from lrpose_bench.models.pretrained import load_pretrained, read_state_dict
from lrpose_bench.resolution import Resolution

RESOLUTIONS = [Resolution(64, 48), Resolution(128, 96), Resolution(256, 192), Resolution(384, 288)]
FACTORIES = {
    "hrnet-w8": hrnet.hrnet_w8,
    "hrnet-w16": hrnet.hrnet_w16,
    "hrnet-w16-slim": hrnet.hrnet_w16_slim,
    "hrnet-w32-slim": hrnet.hrnet_w32_slim,
    "hrnet-w32": hrnet.hrnet_w32,
    "hrnet-w48": hrnet.hrnet_w48,
    "simplebaseline-r18": resnet_deconv.simplebaseline_r18,
    "simplebaseline-r50": resnet_deconv.simplebaseline_r50,
    "simplebaseline-r101": resnet_deconv.simplebaseline_r101,
    "simplebaseline-r152": resnet_deconv.simplebaseline_r152,
}
GIB = 2**30  # the HRNet tables print multiply-adds / 1024**3 as "GFLOPs"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def meta(name: str, out_channels: int = 17) -> nn.Module:
    """The backbone on the meta device (shapes only), shared with complexity's cache."""
    return complexity._meta_model(name, out_channels)


# ------------------------------------------------------------------------------ registry/API
def test_factories_are_registered_under_their_names():
    for name, factory in FACTORIES.items():
        assert registry.BACKBONES.items[name] is factory
    for name, factory in hrnet.SPLIT_FACTORIES.items():  # every HRNet also as CAL's split network
        assert registry.BACKBONES.items[name] is factory and factory.offset_tower
    assert {n.removesuffix(hrnet.SPLIT_SUFFIX) for n in hrnet.SPLIT_FACTORIES} == {
        n for n in FACTORIES if n.startswith("hrnet")
    }


def test_build_model_uses_registry_and_sizes_head():
    model = build_model("hrnet-w8", 51)
    assert model.final_layer.out_channels == 51
    with pytest.raises(ConfigError, match="unknown backbone 'hrnet-w7'"):
        build_model("hrnet-w7", 17)
    with pytest.raises(ConfigError, match="out_channels"):
        build_model("hrnet-w8", 0)


# ------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize(
    "name, millions, tol",
    [
        ("hrnet-w32", 28.5, 0.05),
        ("hrnet-w48", 63.6, 0.05),
        ("simplebaseline-r50", 34.0, 0.1),
        ("simplebaseline-r101", 53.0, 0.1),
        ("simplebaseline-r152", 68.6, 0.1),
    ],
)
def test_parameter_counts_match_published(name, millions, tol):
    assert abs(count_parameters(meta(name)) / 1e6 - millions) <= tol


def test_3k_head_adds_only_final_layer_parameters():
    """UDP/CAL 3K head on W32: +34 output maps of a 1x1 conv on 32 channels (weights + bias)."""
    extra = count_parameters(meta("hrnet-w32", 51)) - count_parameters(meta("hrnet-w32", 17))
    assert extra == 34 * 32 + 34
    assert backbone_parameters("hrnet-w32", 51) - backbone_parameters("hrnet-w32", 17) == extra


# ------------------------------------------------------------------------------ CAL's split network
@pytest.mark.parametrize(
    "name, millions, gmacs",
    [("hrnet-w32-split", 49.3, 2.5), ("hrnet-w48-split", 110.3, 5.3)],
)
def test_split_hrnet_matches_the_cal_papers_table_1(name, millions, gmacs):
    """Paper Table 1 (128x96): CAL W32 49.3M / 2.5 GFLOPs, W48 110.3M / 5.3, against HRNet's 28.5M /
    1.8 and 63.6M / 3.7: the reference network's second transition3 + stage 4 + two-block heads
    (ilovepose/Low-resolution-human-pose pose_hrnet.py) account for the whole difference."""
    assert backbone_parameters(name, 51) / 1e6 == pytest.approx(millions, abs=0.05)
    assert backbone_macs(name, Resolution(128, 96), 51) / GIB == pytest.approx(gmacs, abs=0.05)


def test_split_hrnet_has_the_reference_towers_and_keeps_the_backbone_keys():
    keys = set(meta("hrnet-w8-split", 51).state_dict())
    shared = set(meta("hrnet-w8", 51).state_dict()) - {"final_layer.weight", "final_layer.bias"}
    assert shared <= keys  # stages 1-4 and transitions keep the official names (pretrained files load)
    tower = {k.split(".")[0] for k in keys - shared}
    assert tower == {"transition3_om", "stage4_om", "head_hm", "head_om", "final_layer", "final_layer_om"}
    model = meta("hrnet-w8-split", 51)
    assert (model.final_layer.out_channels, model.final_layer_om.out_channels) == (17, 34)
    assert len(model.head_hm) == len(model.head_om) == 2  # HeadHeatMap/HeadOffsetMap: two BasicBlocks


def test_split_hrnet_heatmaps_and_offsets_come_from_their_own_towers():
    """Output layout [cls, x, y] per joint; the heatmaps depend on the heatmap tower only and the
    offsets on the offset tower only (stages 1-3 are shared)."""
    torch.manual_seed(0)
    model = build_model("hrnet-w8-split", 6).train()
    out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, 6, 16, 12)
    view = out.reshape(2, 2, 3, 16, 12)
    heat, offsets = view[:, :, 0], view[:, :, 1:]

    def touched(loss: torch.Tensor) -> set[str]:
        model.zero_grad()
        loss.backward(retain_graph=True)
        return {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    from_heat, from_offsets = touched(heat.pow(2).sum()), touched(offsets.pow(2).sum())
    assert {"stage4", "head_hm", "final_layer", "stage3"} <= from_heat
    assert not from_heat & {"stage4_om", "head_om", "final_layer_om", "transition3_om"}
    assert {"stage4_om", "head_om", "final_layer_om", "stage3"} <= from_offsets
    assert not from_offsets & {"stage4", "head_hm", "final_layer"}


def test_split_hrnet_refuses_a_heatmap_only_head():
    with pytest.raises(ConfigError, match=r"hrnet-w8-split: .*offset fields .*udp, cal.*use hrnet-w8"):
        build_model("hrnet-w8-split", 17)


def test_models_table_counts_a_split_backbone_with_the_offset_methods_head():
    table = models_table([Resolution(64, 48)], names=["hrnet-w8", "hrnet-w8-split"]).set_index("backbone")
    assert table.loc["hrnet-w8", "out_channels"] == 17 and table.loc["hrnet-w8-split", "out_channels"] == 51
    assert table.loc["hrnet-w8-split", "params_M"] == pytest.approx(backbone_parameters("hrnet-w8-split", 51) / 1e6)


def test_split_hrnet_output_layers_keep_the_official_init_under_kaiming():
    from lrpose_bench.models import apply_init

    torch.manual_seed(0)
    net = apply_init(build_model("hrnet-w8-split", 51), "kaiming")
    for layer in (net.final_layer, net.final_layer_om):
        assert layer.weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert net.head_om[0].conv1.weight.std().item() > 0.01


# ------------------------------------------------------------------------------ key layout
def test_hrnet_state_dict_uses_official_keys():
    keys = set(meta("hrnet-w32").state_dict())
    expected = {
        "conv1.weight", "bn1.running_var", "conv2.weight", "bn2.weight",
        "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "layer1.3.conv3.weight",
        "transition1.0.0.weight", "transition1.0.1.weight", "transition1.1.0.0.weight",
        "transition1.1.0.1.bias", "transition2.2.0.0.weight", "transition3.3.0.0.weight",
        "stage2.0.branches.1.3.conv2.weight", "stage2.0.fuse_layers.0.1.0.weight",
        "stage2.0.fuse_layers.0.1.1.running_mean", "stage2.0.fuse_layers.1.0.0.0.weight",
        "stage3.3.fuse_layers.2.0.0.0.weight", "stage3.3.fuse_layers.2.0.1.0.weight",
        "stage3.3.fuse_layers.2.0.1.1.bias", "stage4.2.fuse_layers.0.3.0.weight",
        "stage4.2.branches.3.3.bn2.weight", "final_layer.weight", "final_layer.bias",
    }  # fmt: skip
    assert expected <= keys
    assert not any(k.startswith(("stage4.2.fuse_layers.1", "transition1.1.1")) for k in keys)
    assert len([k for k in keys if k.startswith("stage3.")]) > len([k for k in keys if k.startswith("stage2.")])
    # the last stage-4 module fuses only into the highest-resolution branch; earlier ones into all 4
    assert any(k.startswith("stage4.1.fuse_layers.3.") for k in keys)


def test_simplebaseline_state_dict_uses_official_keys():
    keys = set(meta("simplebaseline-r50").state_dict())
    for index in (0, 3, 6):
        assert f"deconv_layers.{index}.weight" in keys and f"deconv_layers.{index + 1}.running_var" in keys
    assert {"conv1.weight", "layer4.2.conv3.weight", "layer1.0.downsample.0.weight", "final_layer.bias"} <= keys
    assert not any(k.startswith(("fc.", "deconv_layers.2", "avgpool")) for k in keys)
    # the trunk's keys are exactly torchvision's (minus the classifier), so its files load as they are
    with torch.device("meta"):
        tv = torchvision.models.resnet50(weights=None).state_dict()
    assert {k for k in tv if not k.startswith("fc.")} == {
        k for k in keys if not k.startswith(("deconv_layers.", "final_layer."))
    }


def test_simplebaseline_head_shapes():
    model = meta("simplebaseline-r50")
    deconvs = [m for m in model.deconv_layers if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 3
    assert all(d.kernel_size == (4, 4) and d.stride == (2, 2) and d.bias is None for d in deconvs)
    assert [d.out_channels for d in deconvs] == [256, 256, 256] and deconvs[0].in_channels == 2048
    r18 = meta("simplebaseline-r18")
    assert r18.deconv_layers[0].in_channels == 512 and r18.final_layer.in_channels == 128


# ------------------------------------------------------------------------------ init
def test_official_initialisation():
    torch.manual_seed(0)
    model = FACTORIES["hrnet-w8"](17)
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.001) < 1e-4 and abs(convs.mean().item()) < 1e-4
    assert torch.all(model.final_layer.bias == 0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert m.momentum == pytest.approx(0.1)
    sb = FACTORIES["simplebaseline-r18"](17)
    deconv = torch.cat([m.weight.flatten() for m in sb.deconv_layers if isinstance(m, nn.ConvTranspose2d)])
    assert abs(deconv.std().item() - 0.001) < 1e-4


# ------------------------------------------------------------------------------ forward/backward
@pytest.mark.parametrize("name", ["hrnet-w8", "simplebaseline-r18"])
@pytest.mark.parametrize("res", RESOLUTIONS, ids=str)
def test_small_backbones_forward_backward(name, res):
    torch.manual_seed(0)
    model = FACTORIES[name](51)
    x = torch.randn(1, 3, res.height, res.width, requires_grad=True)
    y = model(x)
    assert tuple(y.shape) == (1, 51, *res.heatmap)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


_W8 = {}


@given(h=st.integers(2, 30).map(lambda v: 4 * v), w=st.integers(2, 30).map(lambda v: 4 * v))
@settings(max_examples=12, deadline=None)
def test_small_backbones_handle_sizes_not_multiple_of_32(h, w):
    """At 64x48 the 1/32 branch is 1.5 wide; fusing by target size (HRNet) and cropping the
    deconvolution output (SimpleBaseline) keep every multiple-of-4 size working."""
    if not _W8:
        _W8.update({name: FACTORIES[name](17).eval() for name in ("hrnet-w8", "simplebaseline-r18")})
    with torch.no_grad():
        for model in _W8.values():
            assert tuple(model(torch.zeros(1, 3, h, w)).shape) == (1, 17, h // 4, w // 4)


def test_hrnet_64x48_real_forward_keeps_branch_sizes():
    model = FACTORIES["hrnet-w8"](17).eval()
    sizes: list[tuple[int, ...]] = []
    model.stage4.register_forward_pre_hook(lambda _m, args: sizes.extend(tuple(t.shape[-2:]) for t in args[0]))
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 48))
    assert sizes == [(16, 12), (8, 6), (4, 3), (2, 2)]  # 48/32 = 1.5 → 2 after ceil-rounding
    assert tuple(y.shape) == (1, 17, 16, 12)


def test_simplebaseline_crop_is_top_left_block_of_deconv_output():
    model = FACTORIES["simplebaseline-r18"](17).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        trunk = model.layer4(model.layer3(model.layer2(model.layer1(stem))))
        full = model.final_layer(model.deconv_layers(trunk))
        assert tuple(full.shape[-2:]) == (16, 16)  # what the official code returns at 64x48
        assert torch.equal(model(x), full[..., :16, :12])


@given(h=st.integers(1, 6), w=st.integers(1, 6), k=st.integers(1, 3), c=st.integers(1, 3), seed=st.integers(0, 99))
@settings(max_examples=25, deadline=None)
def test_fuse_by_size_equals_official_upsample_on_exact_sizes(h, w, k, c, seed):
    """F.interpolate(size) is the official nn.Upsample(scale_factor=2**k) whenever sizes divide."""
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))
    official = nn.Upsample(scale_factor=2**k, mode="nearest")(x)
    ours = F.interpolate(x, size=(h * 2**k, w * 2**k), mode="nearest")
    assert torch.equal(official, ours)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnet-w16", "hrnet-w32", "hrnet-w48", "simplebaseline-r50",
                                  "simplebaseline-r101", "simplebaseline-r152"])  # fmt: skip
def test_full_width_backbones_one_forward_64x48(name):
    model = FACTORIES[name](17).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 48))
    assert tuple(y.shape) == (1, 17, 16, 12) and torch.isfinite(y).all()


# ------------------------------------------------------------------------------ complexity
def test_measure_macs_counts_multiply_adds_of_a_convolution():
    conv = nn.Conv2d(3, 5, kernel_size=3, padding=1, bias=False)
    assert measure_macs(conv, Resolution(8, 12)) == 3 * 5 * 9 * 8 * 12


def test_measure_macs_deconvolution_conventions():
    """Official get_model_summary counts a deconvolution per output pixel (4x for stride 2)."""
    deconv = nn.ConvTranspose2d(3, 4, kernel_size=4, stride=2, padding=1, bias=False)
    true_macs = 3 * 4 * 16 * 8 * 4  # FlopCounterMode: per input pixel
    assert measure_macs(deconv, Resolution(8, 4), deconv_per_output_pixel=False) == true_macs
    assert measure_macs(deconv, Resolution(8, 4), deconv_per_output_pixel=True) == 4 * true_macs
    assert measure_macs(deconv, Resolution(8, 4)) == 4 * true_macs  # the configured default


_SLOW = pytest.mark.slow  # ~2-4 s each on a shared 2-core CPU; W32 and R-50 stay in the fast suite


@pytest.mark.parametrize(
    "name, res, published",
    [
        ("hrnet-w32", Resolution(256, 192), 7.1),
        ("simplebaseline-r50", Resolution(256, 192), 8.9),
        pytest.param("hrnet-w48", Resolution(256, 192), 14.6, marks=_SLOW),
        pytest.param("hrnet-w32", Resolution(128, 96), 1.8, marks=_SLOW),
        pytest.param("hrnet-w48", Resolution(128, 96), 3.7, marks=_SLOW),
        pytest.param("hrnet-w32", Resolution(384, 288), 16.0, marks=_SLOW),
        pytest.param("hrnet-w48", Resolution(384, 288), 32.9, marks=_SLOW),
        pytest.param("simplebaseline-r101", Resolution(256, 192), 12.4, marks=_SLOW),
        pytest.param("simplebaseline-r152", Resolution(256, 192), 15.7, marks=_SLOW),
        pytest.param("simplebaseline-r50", Resolution(128, 96), 2.3, marks=_SLOW),
        pytest.param("simplebaseline-r152", Resolution(384, 288), 35.6, marks=_SLOW),  # paper Table 9
    ],
    ids=lambda v: str(v),
)
def test_macs_match_published(name, res, published):
    measured = backbone_macs(name, res) / GIB
    assert math.isclose(measured, published, rel_tol=0.03), measured


def test_macs_scale_with_input_area():
    small, big = backbone_macs("hrnet-w8", Resolution(128, 96)), backbone_macs("hrnet-w8", Resolution(256, 192))
    assert big == pytest.approx(4 * small, rel=0.01)


def test_models_table_columns_and_cache():
    res = [Resolution(64, 48), Resolution(128, 96)]
    table = models_table(res, names=["hrnet-w8", "simplebaseline-r18"])
    assert list(table.columns) == ["backbone", "out_channels", "params_M", "GMACs@64x48", "GMACs@128x96"]
    assert list(table.backbone) == ["hrnet-w8", "simplebaseline-r18"]
    assert list(table.out_channels) == [17, 17]
    row = table.set_index("backbone").loc["hrnet-w8"]
    assert row.params_M == pytest.approx(count_parameters(FACTORIES["hrnet-w8"](17)) / 1e6)
    assert row["GMACs@64x48"] == pytest.approx(measure_macs(meta("hrnet-w8"), res[0]) / GIB)
    assert (table["GMACs@128x96"] > table["GMACs@64x48"]).all()
    hits = complexity._complexity.cache_info().hits
    models_table(res, names=["hrnet-w8", "simplebaseline-r18"])
    assert complexity._complexity.cache_info().hits == hits + 6


# ------------------------------------------------------------------------------ checkpoints
def _model(name: str = "hrnet-w8", out_channels: int = 17, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FACTORIES[name](out_channels)


def _assert_same_except(a: nn.Module, b: nn.Module, prefixes: tuple[str, ...] = ()) -> None:
    """Every tensor of ``a`` equals ``b``'s, except under ``prefixes``; conv weights are random, so a
    freshly initialised ``b`` would fail."""
    sa, sb = a.state_dict(), b.state_dict()
    for key, value in sa.items():
        if prefixes and key.startswith(prefixes):
            continue
        assert torch.equal(value, sb[key]), key


def test_official_checkpoint_loads_strictly(tmp_path: Path):
    source = _model(seed=1)
    path = tmp_path / "pose_hrnet.pth"
    torch.save(source.state_dict(), path)
    loaded = hrnet.hrnet_w8(17, pretrained=str(path))
    _assert_same_except(source, loaded)
    report = loaded.pretrained_report
    assert len(report.loaded) == len(source.state_dict())
    assert not (report.skipped_head or report.missing_head or report.ignored)


def test_mmpose_prefixed_wrapped_checkpoint_loads(tmp_path: Path):
    source = _model(seed=2)
    renamed = {
        ("head." if k.startswith("final_layer.") else "backbone.") + k: v for k, v in source.state_dict().items()
    }
    path = tmp_path / "mmpose.pth"
    torch.save({"state_dict": renamed, "meta": {"epoch": 210}}, path)
    loaded = hrnet.hrnet_w8(17, pretrained=str(path))
    _assert_same_except(source, loaded)


def test_17_channel_head_into_51_channel_head_is_skipped_and_reported(tmp_path: Path):
    source = _model(seed=3)
    path = tmp_path / "coco17.pth"
    torch.save(source.state_dict(), path)
    loaded = hrnet.hrnet_w8(51, pretrained=str(path))
    _assert_same_except(source, loaded, prefixes=("final_layer.",))  # everything else loaded
    report = loaded.pretrained_report
    assert {s.split()[0] for s in report.skipped_head} == {"final_layer.weight", "final_layer.bias"}
    assert "final_layer.weight" in report.summary() and str(path) in report.summary()
    assert loaded.final_layer.weight.shape[0] == 51
    assert torch.all(loaded.final_layer.bias == 0)  # fresh official init, not the 17-channel values


def test_imagenet_style_extras_are_ignored_and_reported(tmp_path: Path):
    source = _model(seed=4)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("final_layer.")}
    state["incre_modules.0.0.conv1.weight"] = torch.zeros(4, 8, 1, 1)
    state["stage4.0.fuse_layers.1.0.0.0.weight"] = torch.zeros(16, 8, 3, 3)
    state["final_layer.0.weight"] = torch.zeros(2048, 64, 1, 1)  # the classifier's final layer
    state["classifier.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "hrnet_imagenet.pth"
    torch.save(state, path)
    loaded = hrnet.hrnet_w8(17, pretrained=str(path))
    _assert_same_except(source, loaded, prefixes=("final_layer.",))
    report = loaded.pretrained_report
    assert set(report.missing_head) == {"final_layer.weight", "final_layer.bias"}
    assert "classifier.weight" in report.ignored and "stage4.0.fuse_layers.1.0.0.0.weight" in report.ignored


def test_torchvision_trunk_file_loads_into_simplebaseline(tmp_path: Path):
    torch.manual_seed(5)
    trunk = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(trunk.state_dict(), path)
    model = resnet_deconv.simplebaseline_r18(17, pretrained=str(path))
    state = model.state_dict()
    for key, value in trunk.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    report = model.pretrained_report
    assert {"fc.weight", "fc.bias"} <= set(report.ignored)
    assert "deconv_layers.0.weight" in report.missing_head and "final_layer.weight" in report.missing_head


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path: Path):
    path = tmp_path / "truncated.pth"
    torch.save(_model().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pth.*cannot be read"):
        hrnet.hrnet_w8(17, pretrained=str(path))


def test_missing_and_non_tensor_checkpoints(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")
    path = tmp_path / "weird.pth"
    torch.save({"conv1.weight": "not a tensor"}, path)
    with pytest.raises(CheckpointError, match="conv1.weight"):
        read_state_dict(path)


def test_wrong_shape_backbone_key_names_file_and_key(tmp_path: Path):
    state = _model().state_dict()
    state["transition1.0.0.weight"] = torch.zeros(9, 128, 3, 3)
    path = tmp_path / "wrong_shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong_shape\.pth.*'transition1\.0\.0\.weight'"):
        hrnet.hrnet_w8(17, pretrained=str(path))


def test_foreign_and_missing_keys_name_the_first_bad_key(tmp_path: Path):
    state = _model().state_dict()
    foreign = dict(state)
    foreign["decoder.blocks.0.weight"] = torch.zeros(1)
    path = tmp_path / "foreign.pth"
    torch.save(foreign, path)
    with pytest.raises(CheckpointError, match=r"foreign\.pth.*'decoder\.blocks\.0\.weight'"):
        hrnet.hrnet_w8(17, pretrained=str(path))
    missing = {k: v for k, v in state.items() if not k.startswith("stage3.")}
    path = tmp_path / "missing.pth"
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match=r"missing\.pth.*'stage3\.0\.branches"):
        hrnet.hrnet_w8(17, pretrained=str(path))


def test_checkpoint_of_another_width_is_rejected(tmp_path: Path):
    path = tmp_path / "w16.pth"
    shapes = meta("hrnet-w16").state_dict()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}, path)
    with pytest.raises(CheckpointError, match="w16.pth"):
        load_pretrained(_model(), path, head_prefixes=hrnet.HEAD_PREFIXES)
