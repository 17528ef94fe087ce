"""Published checkpoints (``lrpose-bench evaluate --weights FILE --format hrnet-official|mmpose``):
files written from a seeded model in each key layout load into a fresh model that then gives exactly
the seeded model's outputs; a layout mismatch is one line naming the first missing/unexpected key; the
command evaluates at several input sizes and writes JSON, CSV and the AP-vs-resolution figure."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_coco_fixture
from lrpose_bench.cli import main
from lrpose_bench.config import resolve_method_params
from lrpose_bench.engine.published_weights import load_published
from lrpose_bench.errors import CheckpointError
from lrpose_bench.method import MethodContext
from lrpose_bench.models import build_method_model
from lrpose_bench.models.hrnet import HEAD_PREFIXES
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution

RES = Resolution(64, 48)


def hrnet_method(res: Resolution = RES):
    cls = METHODS.get("hrnet")
    return cls(resolve_method_params(cls.Params, "hrnet", res), MethodContext(res))


def seeded_model(seed: int, backbone: str = "hrnet-w8") -> torch.nn.Module:
    """An hrnet-w8 with random weights *and* random BN statistics (so every buffer matters)."""
    torch.manual_seed(seed)
    model = build_method_model(backbone, hrnet_method())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.copy_(torch.rand_like(tensor) + 0.5)
                else:
                    tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model.eval()


def official_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """pose_hrnet_w32_256x192.pth style: a plain state dict with the official key names."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def mmpose_layout(model: torch.nn.Module, version: int = 1) -> dict:
    """An mmpose checkpoint: {"meta": …, "state_dict": {"backbone.…", "head.final_layer.…"}}."""
    head = "head." if version == 1 else "keypoint_head."
    state = {}
    for key, value in model.state_dict().items():
        prefix = head if key.startswith(HEAD_PREFIXES) else "backbone."
        state[prefix + key] = value.clone()
    return {
        "meta": {
            "mmpose_version": "1.3.1" if version == 1 else "0.29.0",
            "epoch": 210,
            "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17},
        },
        "state_dict": state,
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    model = seeded_model(0)
    paths = {
        "official": root / "pose_hrnet_w8_64x48.pth",
        "mmpose": root / "td-hm_hrnet-w8_64x48.pth",
        "mmpose0": root / "hrnet_w8_coco_64x48.pth",
        "dataparallel": root / "dp.pth",
    }
    torch.save(official_layout(model), paths["official"])
    torch.save(mmpose_layout(model), paths["mmpose"])
    torch.save(mmpose_layout(model, version=0), paths["mmpose0"])
    torch.save({"module." + k: v for k, v in official_layout(model).items()}, paths["dataparallel"])
    return paths


@pytest.mark.parametrize(
    "name,fmt",
    [("official", "hrnet-official"), ("dataparallel", "hrnet-official"), ("mmpose", "mmpose"), ("mmpose0", "mmpose")],
)
def test_each_layout_loads_to_exactly_the_seeded_outputs(files, name: str, fmt: str) -> None:
    reference = seeded_model(0)
    fresh = seeded_model(1)
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert not torch.equal(fresh(x), reference(x))
        summary = load_published(fresh, files[name], fmt)
        assert torch.equal(fresh(x), reference(x))
    assert summary["tensors"] == len(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_official_keys_are_the_official_module_names() -> None:
    """Our HRNet-W32 has the key names of leoxiaobin/deep-high-resolution-net.pytorch pose_hrnet.py."""
    with torch.device("meta"):
        keys = set(build_method_model("hrnet-w32", hrnet_method(Resolution(256, 192))).state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_mean",
        "conv2.weight",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.3.bn3.num_batches_tracked",
        "transition1.0.0.weight",
        "transition1.1.0.0.weight",
        "stage2.0.branches.1.3.conv2.weight",
        "stage2.0.fuse_layers.0.1.0.weight",
        "stage2.0.fuse_layers.1.0.0.0.weight",
        "transition3.3.0.0.weight",
        "stage3.3.fuse_layers.2.0.1.0.weight",
        "stage4.2.fuse_layers.0.3.1.running_var",
        "final_layer.weight",
        "final_layer.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith("stage4.2.fuse_layers.1") for k in keys)  # last module: one output branch


def test_layout_mismatch_is_one_line_naming_the_first_missing_and_unexpected_keys(files, tmp_path) -> None:
    model = seeded_model(1)
    with pytest.raises(CheckpointError, match="not an mmpose checkpoint: no 'state_dict'") as info:
        load_published(model, files["official"], "mmpose")
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_published(model, files["mmpose"], "hrnet-official")  # prefixes kept: nothing matches
    text = str(info.value)
    assert "\n" not in text and "first missing key 'conv1.weight'" in text
    assert "first unexpected key 'backbone.conv1.weight'" in text
    renamed = official_layout(seeded_model(0))
    renamed["final_conv.weight"] = renamed.pop("final_layer.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(
        CheckpointError, match="first missing key 'final_layer.weight' .*first unexpected key 'final_conv.weight'"
    ):
        load_published(model, tmp_path / "renamed.pth", "hrnet-official")
    wider = official_layout(seeded_model(0))
    wider["final_layer.weight"] = torch.zeros(51, *wider["final_layer.weight"].shape[1:])
    torch.save(wider, tmp_path / "wider.pth")
    with pytest.raises(CheckpointError, match="'final_layer.weight' has shape"):
        load_published(model, tmp_path / "wider.pth", "hrnet-official")


def test_unsafe_and_broken_files_are_refused(tmp_path) -> None:
    model = seeded_model(1)

    # a pickled object that is not a tensor or plain value: torch.load(weights_only=True) must refuse it
    torch.save({"state_dict": {}, "meta": {"note": Fraction(1, 3)}}, tmp_path / "object.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_published(model, tmp_path / "object.pth", "mmpose")
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_published(model, tmp_path / "broken.pth", "hrnet-official")
    with pytest.raises(CheckpointError, match="not found"):
        load_published(model, tmp_path / "missing.pth", "hrnet-official")


def test_evaluate_weights_writes_an_ap_vs_resolution_curve(files, tmp_path, capsys) -> None:
    torch.set_num_threads(1)
    data = tmp_path / "data"
    make_coco_fixture(data, num_images=3, persons_per_image=2, seed=2)
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--weights",
        str(files["mmpose"]),
        "--format",
        "mmpose",
        "--method",
        "hrnet",
        "--backbone",
        "hrnet-w8",
        "--weights-res",
        "64x48",
        "--res",
        "64x48,128x96",
        "--out",
        str(out),
        "--data",
        "coco",
        "--coco-root",
        str(data),
        "--set",
        "data.train_annotations=annotations.json",
        "--set",
        "data.val_annotations=annotations.json",
        "--set",
        "data.train_images=images",
        "--set",
        "data.val_images=images",
        "--set",
        "eval.batch_size=8",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "loaded" in printed and "test    64x48" in printed and "test   128x96 (resample)" in printed
    rows = json.loads((out / "published_evaluation.json").read_text())
    assert [r["test_resolution"] for r in rows] == ["64x48", "128x96"]
    assert all(r["format"] == "mmpose" and 0.0 <= r["AP"] <= 1.0 for r in rows)
    assert (out / "published_evaluation.csv").read_text().splitlines()[0].startswith("weights,format,method")
    assert (out / "ap_vs_resolution.png").read_bytes()[:4] == b"\x89PNG"
    # the native protocol runs the test-size crop through the network
    assert main([*args[:-1], "--protocol", "native", "--no-progress"]) == 0
    native = json.loads((out / "published_evaluation.json").read_text())
    assert [r["protocol"] for r in native] == ["native", "native"]
    assert np.isfinite([r["AP"] for r in native]).all()


def test_evaluate_weights_errors_are_one_line(files, capsys) -> None:
    assert main(["evaluate", "--weights", str(files["official"])]) == 2
    assert "--weights needs --format" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--weights",
                str(files["official"]),
                "--format",
                "mmpose",
                "--backbone",
                "hrnet-w8",
                "--weights-res",
                "64x48",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an mmpose checkpoint" in err
