"""SPSR+pose / bicubic+pose methods: registration, delegation, the eval transform, and the SR stage
(train, cache, reuse, quality JSON) on a tiny COCO-format fixture with a tiny generator."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lrpose_bench.baselines.spsr import method as spsr_method
from lrpose_bench.baselines.spsr import train_sr
from lrpose_bench.baselines.spsr.generator import bicubic_upsample
from lrpose_bench.baselines.spsr.train_sr import SrProfileConfig, degrade, renormalise
from lrpose_bench.config import load_config
from lrpose_bench.data.coco import load_split
from lrpose_bench.data.dataset import ImageCache
from lrpose_bench.data.sources import DataBundle
from lrpose_bench.engine.cell import CellSpec, build_method
from lrpose_bench.errors import ConfigError
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution

LR, HR = Resolution(64, 48), Resolution(256, 192)
NAMES = ["spsr+hrnet", "spsr+udp", "bicubic+hrnet", "bicubic+udp"]


def build(name: str, res: Resolution = LR):
    return build_method(CellSpec(name, "hrnet-w8", res), load_config("quick"), res)


def test_registered_and_configured_from_yaml() -> None:
    for name in NAMES:
        assert name in METHODS.names()
    m = build("spsr+hrnet")
    assert m.sr.scale == 4 and m.lr_res == LR and m.hr_res == HR
    assert m.train_resolution() == HR
    assert m.sr.quick.nf < m.sr.paper.nf and m.sr.paper.nb == 23
    assert m.sr.losses.branch_pixel == 0.5 and m.sr.losses.gradient_pixel == 1e-2


@pytest.mark.parametrize("name,inner,channels", [("spsr+hrnet", "hrnet", 17), ("bicubic+udp", "udp", 51)])
def test_delegates_to_inner_method_at_256x192(name: str, inner: str, channels: int) -> None:
    for res in (LR, HR):  # the engine builds it at the cell resolution and at the train resolution
        m = build(name, res)
        assert m.inner.name == inner and m.inner.context.resolution == HR
        assert m.head_channels() == channels
        joints = np.array([[3.3, 7.7]] * 17, dtype=np.float32)
        visible = np.ones(17, dtype=np.float32)
        ours, theirs = m.encode(joints, visible), m.inner.encode(joints, visible)
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])
        assert m.describe_params()["inner"] == inner


def test_other_resolutions_are_refused() -> None:
    with pytest.raises(ConfigError, match="--res 64x48"):
        build("spsr+hrnet", Resolution(128, 96))


def test_bicubic_eval_transform_upsamples_the_native_crop() -> None:
    """The evaluation input is the native 64×48 crop (``eval_crop_resolution``); the transform is
    bicubic ×4 of exactly that crop, with no second reduction."""
    m = build("bicubic+hrnet")
    assert m.eval_crop_resolution() == Resolution(64, 48) and m.train_resolution() == Resolution(256, 192)
    torch.manual_seed(0)
    lr01 = torch.rand(2, 3, 64, 48)
    out = m.eval_input_transform()(renormalise(lr01))
    assert out.shape == (2, 3, 256, 192)
    torch.testing.assert_close(out, renormalise(bicubic_upsample(lr01, 4)))
    # the SR training pairs are still (HR crop, its bicubic x1/4 reduction), 8-bit
    lr = degrade(torch.rand(1, 3, 256, 192), 4)
    assert lr.shape[-2:] == (64, 48)
    torch.testing.assert_close(lr * 255, torch.round(lr * 255))


def test_sr_eval_crop_is_the_native_crop_with_a_lifted_matrix(coco_fixture) -> None:
    """SR+pose is scored on the same pixels as a native 64×48 method, and a point of the
    upsampled 256×192 frame back-projects exactly: X = 4x + 1.5 (pixel-centre alignment)."""
    from lrpose_bench.config import load_config
    from lrpose_bench.data.coco import load_split
    from lrpose_bench.data.dataset import lift_matrix
    from lrpose_bench.engine.cell import CellSpec, build_method
    from lrpose_bench.engine.evaluator import build_eval_dataset

    ann, images, _ = coco_fixture
    split = load_split("fixture", ann, images)
    cfg = load_config()
    sr = build("bicubic+hrnet")
    native = build_method(CellSpec("hrnet", "hrnet-w8", Resolution(64, 48)), cfg)
    sr_set = build_eval_dataset(split, sr, sr.train_resolution(), cfg)
    native_set = build_eval_dataset(split, native, native.train_resolution(), cfg)
    a, b = sr_set[0], native_set[0]
    torch.testing.assert_close(a["image"], b["image"])  # the very same crop
    lifted = lift_matrix(b["matrix"].numpy(), Resolution(64, 48), Resolution(256, 192))
    np.testing.assert_allclose(a["matrix"].numpy(), lifted)
    np.testing.assert_allclose(lifted[:, :2], 4 * b["matrix"].numpy()[:, :2])
    np.testing.assert_allclose(lifted[:, 2], 4 * b["matrix"].numpy()[:, 2] + 1.5)
    # joints in the 64x48 heatmap of the 256x192 input = 4x the native input joints, mapped
    native_in = b["joints"].numpy() / np.array([11 / 47, 15 / 63])  # native heatmap -> 48x64 input px
    sr_in = a["joints"].numpy() / np.array([47 / 191, 63 / 255])  # SR heatmap -> 192x256 input px
    np.testing.assert_allclose(sr_in, 4 * native_in + 1.5, atol=1e-3)


def test_spsr_eval_transform_needs_prepare() -> None:
    with pytest.raises(ConfigError, match="prepare"):
        build("spsr+udp").eval_input_transform()


def tiny_bundle(coco_fixture) -> DataBundle:
    annotations, images, _ = coco_fixture
    split = load_split("fixture", annotations, images)
    return DataBundle("fixture", split, split)


def test_prepare_trains_caches_and_reuses(coco_fixture, tmp_path: Path, monkeypatch) -> None:
    cfg = load_config("quick")
    bundle = tiny_bundle(coco_fixture)
    tiny = SrProfileConfig(
        nf=4,
        nb=2,
        gc=4,
        taps=None,
        iters=4,
        batch_size=2,
        patch_hr=[32, 24],
        lr=1e-3,
        lr_milestones=[2],
        eval_batch_size=4,
        max_val_crops=3,
        log_every=2,
    )
    run_dir = tmp_path / "run"

    def make():
        m = build("spsr+hrnet")
        m.sr = dataclasses.replace(m.sr, quick=tiny)
        return m

    m = make()
    m.prepare(
        bundle=bundle,
        cfg=cfg,
        run_dir=run_dir,
        cell_dir=run_dir / "cellA",
        device=torch.device("cpu"),
        progress=False,
        image_cache=ImageCache(64),
    )
    ckpts = list((run_dir / "_sr").glob("*/sr.pt"))
    assert len(ckpts) == 1
    quality = json.loads((run_dir / "sr_quality.json").read_text())
    assert quality["num_crops"] == 3
    for name in ("spsr", "bicubic"):
        assert 0 < quality[name]["psnr"] < 100 and -1 <= quality[name]["ssim"] <= 1
    assert set(quality["losses_used"]) == {"pixel_l1", "gradient_mse", "branch_l1"}
    assert quality["losses_used"]["pixel_l1"] == 1.0  # no perceptual term -> pixel_without_perceptual
    assert (run_dir / "cellA" / "sr_quality.json").is_file()
    out = m.eval_input_transform()(renormalise(torch.rand(1, 3, 64, 48)))
    assert out.shape == (1, 3, 256, 192) and torch.isfinite(out).all()

    # a second pose method in the same run folder reuses the checkpoint (no training)
    def refuse(*args, **kwargs):
        raise AssertionError("the cached SR checkpoint should have been reused")

    monkeypatch.setattr(spsr_method, "train_generator", refuse)
    again = make()
    again.prepare(
        bundle=bundle,
        cfg=cfg,
        run_dir=run_dir,
        cell_dir=run_dir / "cellB",
        device=torch.device("cpu"),
        progress=False,
        image_cache=ImageCache(64),
    )
    first = m.generator.state_dict()
    for key, value in again.generator.state_dict().items():
        torch.testing.assert_close(value, first[key])
    assert again.sr_info["key"] == ckpts[0].parent.name


def test_bad_cached_checkpoint_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "sr.pt"
    torch.save({"format": "something-else"}, path)
    from lrpose_bench.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not an lrpose-bench SPSR checkpoint"):
        train_sr.load_generator(path, SrProfileConfig(nf=4, nb=1, gc=4), build("spsr+hrnet").sr)


def test_missing_vgg_weights_file_is_a_config_error(tmp_path: Path) -> None:
    losses = train_sr.SrLossConfig(vgg19_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="vgg19_weights"):
        train_sr.SrLoss(losses)


def _tiny_profile() -> SrProfileConfig:
    return SrProfileConfig(
        nf=4,
        nb=2,
        gc=4,
        taps=None,
        iters=4,
        batch_size=2,
        patch_hr=[32, 24],
        lr=1e-3,
        lr_milestones=[2],
        eval_batch_size=4,
        max_val_crops=3,
        log_every=2,
    )


def _ddp_prepare(annotations: Path, images: Path, run_dir: Path) -> dict:
    """One rank of a 2-process run: prepare the SR stage, report who trained and the weights."""
    from lrpose_bench.engine import distributed as D

    trained = []
    real = spsr_method.train_generator

    def counting(*args, **kwargs):
        trained.append(D.context().rank)
        return real(*args, **kwargs)

    spsr_method.train_generator = counting
    m = build("spsr+hrnet")
    m.sr = dataclasses.replace(m.sr, quick=_tiny_profile())
    m.prepare(
        bundle=tiny_bundle((annotations, images, None)),
        cfg=load_config("quick"),
        run_dir=run_dir,
        cell_dir=run_dir / "cell",
        device=torch.device("cpu"),
        progress=False,
        image_cache=ImageCache(64),
    )
    parts = D.gather_to_writer({"trained": trained, "weights": m.generator.state_dict()})
    return {"parts": parts}


def test_prepare_under_ddp_trains_the_sr_network_once(coco_fixture, tmp_path: Path) -> None:
    """Rank 0 trains the SR network and writes it; rank 1 waits at the barrier and loads the same
    weights (before: every rank trained its own copy)."""
    from lrpose_bench.engine import distributed as D

    annotations, images, _ = coco_fixture
    result = D.launch_local(2, _ddp_prepare, annotations, images, tmp_path / "run")
    rank0, rank1 = result["parts"]
    assert rank0["trained"] == [0] and rank1["trained"] == []
    for key, value in rank0["weights"].items():
        torch.testing.assert_close(rank1["weights"][key], value, rtol=0, atol=0)
    assert len(list((tmp_path / "run" / "_sr").glob("*/sr.pt"))) == 1
    assert (tmp_path / "run" / "sr_quality.json").is_file()
