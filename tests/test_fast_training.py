"""The trainer's fast paths, checked on the CPU: the crop-store input pipeline trains,
resumes exactly, and follows the reference pipeline's trajectory closely; batched host
synchronisation (``train.sync_every``) changes nothing but when the host looks; the CUDA-graph
step's warm-up undo restores a fresh optimizer; ``data.pipeline`` picks the path as documented."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch

from _train_child import coco_train_args, make_coco_layout, poison_heatmap_loss
from conftest import make_coco_fixture
from lrpose_bench.cli import main
from lrpose_bench.config import AugmentConfig, TrainConfig, load_config
from lrpose_bench.data.coco import load_split
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.data.gpu_augment import DeviceAugmentPipeline
from lrpose_bench.engine.accelerate import TrainStep, adam_for
from lrpose_bench.engine.cell import (
    CellSpec,
    TrainedCell,
    build_cell_model,
    build_method,
    use_crop_store,
    whole_training_time,
)
from lrpose_bench.engine.train_state import load_checkpoint
from lrpose_bench.engine.trainer import TrainResult, train
from lrpose_bench.errors import ConfigError
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import read_status

R64 = Resolution(64, 48)
CELL = CellSpec("hrnet", "hrnet-w8", R64, 0).cell_id


# ----------------------------------------------------------------------------- pipeline choice
def test_pipeline_choice_follows_the_documented_rule():
    cfg = load_config("quick")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert cfg.data.pipeline == "auto"
    assert use_crop_store(cfg, cpu) and use_crop_store(cfg, cuda)  # the store feeds the CPU too (bench)
    cfg.data.coordinates = "biased"
    assert not use_crop_store(cfg, cpu)  # the store and its warp are unbiased
    cfg.data.coordinates = "unbiased"
    cfg.data.pipeline = "crop_store"
    assert use_crop_store(cfg, cpu)
    cfg.data.pipeline = "reference"
    assert not use_crop_store(cfg, cuda)
    cfg.degrade = "lr-mild"
    cfg.data.pipeline = "auto"
    assert not use_crop_store(cfg, cuda)  # per-epoch degradations cannot be cached
    cfg.data.pipeline = "crop_store"
    with pytest.raises(ConfigError, match="degrade: clean"):
        use_crop_store(cfg, cuda)
    cfg.data.pipeline = "gpu"
    with pytest.raises(ConfigError, match="data.pipeline"):
        use_crop_store(cfg, cpu)


# ------------------------------------------------------------------------ in-process training
def _train(
    split,
    store,
    cell_dir: Path,
    *,
    fast: bool,
    stop_at: tuple[int, int] | None = None,
    pause_at: tuple[int, int] | None = None,
    **train_kw,
):
    """Train hrnet-w8 at 64×48 for 2 epochs of 4 steps (batch 4) on the fixture, on the CPU;
    ``stop_at`` (epoch, iteration) kills it there, ``pause_at`` sleeps 0.5 s there."""
    cfg = load_config("quick", overrides={"model.backbone": "hrnet-w8"})
    spec = CellSpec("hrnet", "hrnet-w8", R64, 0)
    torch.manual_seed(0)
    method = build_method(spec, cfg)
    model = build_cell_model(method, spec, cfg)
    tcfg = TrainConfig(
        epochs=2,
        batch_size=4,
        lr=1e-3,
        device="cpu",
        amp=False,
        channels_last=False,
        checkpoint_every_iters=2,
        **train_kw,
    )
    dataset = PoseDataset(split, method, R64, train=True, augment=AugmentConfig(), seed=0)
    pipeline = DeviceAugmentPipeline(store, method, R64, AugmentConfig(), seed=0, device="cpu") if fast else None

    def stop(epoch: int, iteration: int) -> None:
        if pause_at is not None and (epoch, iteration) == pause_at:
            time.sleep(0.5)
        if stop_at is not None and (epoch, iteration) == stop_at:
            raise KeyboardInterrupt  # as a kill during that iteration (after the previous checkpoint)

    meta = {"method": "hrnet", "backbone": "hrnet-w8", "resolution": str(R64)}
    return model, train(
        model,
        method,
        dataset,
        tcfg,
        cell_dir=cell_dir,
        meta=meta,
        seed=0,
        device=torch.device("cpu"),
        progress=False,
        pipeline=pipeline,
        on_iteration=stop,
    )


def _weights(cell_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(cell_dir / "checkpoint.pt")["model"]


def test_crop_store_training_resumes_exactly_and_tracks_the_reference_path(split_and_store, tmp_path):
    split, store = split_and_store
    assert len(split.instances) == 16
    _, fast = _train(split, store, tmp_path / "fast", fast=True)
    with pytest.raises(KeyboardInterrupt):
        _train(split, store, tmp_path / "killed", fast=True, stop_at=(1, 3))
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["iteration"] == 2
    _, resumed = _train(split, store, tmp_path / "killed", fast=True)
    assert resumed.resumed_from == 1
    killed = _weights(tmp_path / "killed")
    for key, value in _weights(tmp_path / "fast").items():
        torch.testing.assert_close(killed[key], value, rtol=0, atol=1e-6, msg=key)
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in fast.history], abs=1e-9)

    # same augmentation and order as the reference path; the images differ only by the store's
    # resampling (tests/test_gpu_augment.py bounds it), so the first epoch's mean loss agrees closely
    _, reference = _train(split, store, tmp_path / "reference", fast=False)
    first_fast, first_ref = fast.history[0]["loss"], reference.history[0]["loss"]
    assert first_fast == pytest.approx(first_ref, rel=0.02), (first_fast, first_ref)
    assert fast.history[0]["iterations"] == reference.history[0]["iterations"] == 4


def test_a_mid_epoch_resume_keeps_the_seconds_the_cut_epoch_ran_before_its_checkpoint(split_and_store, tmp_path):
    """The cut epoch's log row, and so the cell's whole training time (the budget table's
    CPU-minutes), count the part before the mid-epoch checkpoint. They used to restart the epoch's
    clock at the resume and lose that part (here 0.5 s of sleep before the checkpoint at iteration 2)."""
    split, store = split_and_store
    with pytest.raises(KeyboardInterrupt):
        _train(split, store, tmp_path / "killed", fast=True, pause_at=(1, 1), stop_at=(1, 3))
    partial = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["partial"]
    assert partial["seconds"] >= 0.5 and partial["cpu_threads"] == torch.get_num_threads()
    _, resumed = _train(split, store, tmp_path / "killed", fast=True)
    assert resumed.resumed_from == 1
    assert resumed.carried_seconds == pytest.approx(partial["seconds"])
    assert resumed.carried_cpu_threads == torch.get_num_threads()
    assert resumed.history[1]["seconds"] >= 0.5  # the whole second epoch, both processes' parts
    assert all(row["cpu_threads"] == torch.get_num_threads() for row in resumed.history)


def test_whole_training_time_prices_each_part_at_the_threads_it_ran_on():
    """A cell re-evaluated, or resumed, in a process with other threads than its training: each
    part's CPU-seconds use the threads its log row (or mid-epoch checkpoint) recorded. The report
    used to multiply every second by the threads of the process that wrote metrics.json."""
    history = [
        {"epoch": 1, "iterations": 4, "seconds": 10.0, "cpu_threads": 1},
        {"epoch": 2, "iterations": 4, "seconds": 12.0, "cpu_threads": 1},
        {"epoch": 3, "iterations": 4, "seconds": 9.0, "cpu_threads": 2},
    ]
    finished = TrainedCell(TrainResult(3, 0, 0.0, 0.0, 3, history, 4), 0.1, "crop_store")
    time_ = whole_training_time(finished, threads_now=4)
    assert time_.seconds == pytest.approx(31.0) and time_.cpu_seconds == pytest.approx(10 + 12 + 18)
    assert time_.source.startswith("epoch log") and time_.images_per_second == pytest.approx(12 * 4 / 31.0)
    # resumed in epoch 3 after 3 s of it (on 1 thread); this process ran the rest, 6 s on 2 threads
    cut = TrainedCell(
        TrainResult(3, 2, 6.0, 0.0, 2, history, 4, carried_seconds=3.0, carried_cpu_threads=1), 6.0, "crop_store"
    )
    time_ = whole_training_time(cut, threads_now=2)
    assert time_.seconds == pytest.approx(10 + 12 + 3 + 6) and time_.cpu_seconds == pytest.approx(22 + 3 + 12)
    # a log written before the threads were recorded: the CPU-seconds are unknown, not guessed
    old_log = [{k: v for k, v in row.items() if k != "cpu_threads"} for row in history]
    time_ = whole_training_time(TrainedCell(TrainResult(3, 0, 0.0, 0.0, 3, old_log, 4), 0.1, "x"), threads_now=2)
    assert time_.seconds == pytest.approx(31.0) and time_.cpu_seconds is None
    fresh = TrainedCell(TrainResult(3, 12, 30.0, 1.6, None, history, 4), 30.5, "crop_store")
    time_ = whole_training_time(fresh, threads_now=2)
    assert (time_.seconds, time_.cpu_seconds, time_.source) == (30.5, 61.0, "wall clock")


def test_batched_host_syncs_change_nothing(split_and_store, tmp_path):
    split, store = split_and_store
    _, every = _train(split, store, tmp_path / "every", fast=False, sync_every=1)
    _, batched = _train(split, store, tmp_path / "batched", fast=False, sync_every=3)
    assert [r["loss"] for r in batched.history] == [r["loss"] for r in every.history]
    batched_weights = _weights(tmp_path / "batched")
    for key, value in _weights(tmp_path / "every").items():
        torch.testing.assert_close(batched_weights[key], value, rtol=0, atol=0, msg=key)


def test_a_nan_loss_is_named_by_its_iteration_even_between_host_syncs(tmp_path, monkeypatch):
    coco = make_coco_layout(tmp_path / "coco", train_images=10, val_images=1)
    poison_heatmap_loss(monkeypatch)  # NaN at epoch 2, iteration 3
    out = tmp_path / "out"
    code = main(
        [
            "train",
            "--method",
            "hrnet",
            "--res",
            "64x48",
            "--data",
            "coco",
            "--coco-root",
            str(coco),
            "--out",
            str(out),
            "--no-progress",
            "--backbone",
            "hrnet-w8",
            "--set",
            "train.epochs=3",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.sync_every=4",
            "--set",
            "train.threads=1",
            "--set",
            "train.device=cpu",
        ]
    )
    assert code == 1
    status = read_status(out / CELL)
    assert status["state"] == "failed" and "epoch 2, iteration 3" in status["reason"]
    kept = load_checkpoint(out / CELL / "checkpoint.pt")
    assert (kept["epoch"], kept["iteration"]) == (1, 0)  # the epoch-1 checkpoint, not a NaN one
    assert all(bool(torch.isfinite(t).all()) for t in kept["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("amp", [True, False])
def test_a_divergence_under_bf16_autocast_names_the_fp32_fix(tmp_path, monkeypatch, amp):
    """A cell that diverges under bf16 autocast says how to train it in fp32 (bf16 BatchNorm on a
    1-pixel branch diverges at inputs under 32 px, where fp32 trains); an fp32 cell's reason does
    not. The CPU is declared bf16-capable so the autocast path runs on any CI machine."""
    monkeypatch.setattr("lrpose_bench.engine.accelerate.cpu_has_native_bf16", lambda: True)
    coco = make_coco_layout(tmp_path / "coco", train_images=10, val_images=1)
    poison_heatmap_loss(monkeypatch)  # NaN at epoch 2, iteration 3
    out = tmp_path / "out"
    args = ["train", "--method", "hrnet", "--res", "64x48", "--data", "coco", "--coco-root", str(coco),
            "--out", str(out), "--no-progress", "--backbone", "hrnet-w8", "--set", "train.epochs=2",
            "--set", "train.batch_size=4", "--set", "train.threads=1", "--set", "train.device=cpu",
            "--set", f"train.amp={str(amp).lower()}"]  # fmt: skip
    assert main(args) == 1
    reason = read_status(out / CELL)["reason"]
    assert "non-finite loss" in reason and "epoch 2, iteration 3" in reason
    hint = "it trained under bf16 autocast: rerun with --set train.amp=false to train in fp32"
    assert (hint in reason) is amp


def test_run_with_the_crop_store_pipeline_records_it(tmp_path):
    coco = make_coco_layout(tmp_path / "coco", train_images=4, val_images=1)
    out = tmp_path / "out"
    extra = ("--set", "data.pipeline=crop_store", "--set", f"data.crop_store.root={tmp_path / 'stores'}")
    assert main(coco_train_args("udp", coco, out, *extra)) == 0
    cell = out / CellSpec("udp", "hrnet-w8", R64, 0).cell_id
    info = json.loads((cell / "metrics.json").read_text())
    assert info["timing"]["input_pipeline"] == "crop_store"
    assert len(list((tmp_path / "stores").glob("cropstore-*"))) == 1


# ------------------------------------------------------------------------------- graph step
def test_warm_up_undo_restores_weights_buffers_and_a_fresh_adam():
    """What ``TrainStep._capture`` does around the CUDA-graph warm-up, checked on the CPU: after
    ``_restore`` the next step equals the first step of an untouched copy."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
    batch = {"image": torch.randn(2, 3, 8, 6), "target": torch.randn(2, 2, 8, 6)}
    untouched = copy.deepcopy(model)

    def loss_fn(outputs, b):
        loss = (outputs - b["target"]).pow(2).mean()
        return {"loss": loss}

    cpu = torch.device("cpu")
    step = TrainStep(model, adam_for(model, 1e-2, 0.0, cpu), loss_fn, device=cpu)
    snapshot = step._snapshot()
    for _ in range(3):
        step.step(batch)
    step._restore(snapshot)
    reference = TrainStep(untouched, adam_for(untouched, 1e-2, 0.0, cpu), loss_fn, device=cpu)
    for _ in range(2):
        torch.testing.assert_close(step.step(batch)["loss"], reference.step(batch)["loss"], rtol=0, atol=1e-7)
    for a, b in zip(model.state_dict().values(), untouched.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_an_old_run_folder_without_the_new_config_keys_is_not_another_configuration(tmp_path):
    from lrpose_bench.cli import _check_same_configuration

    cfg = load_config("quick")
    old = cfg.to_dict()
    del old["data"]["pipeline"], old["data"]["crop_store"], old["train"]["cuda_graphs"]
    (tmp_path / "run.json").write_text(json.dumps({"config": old}))
    _check_same_configuration(tmp_path, cfg, force=False)  # keys at their defaults: same configuration
    cfg.data.pipeline = "crop_store"
    with pytest.raises(ConfigError, match="data.pipeline"):
        _check_same_configuration(tmp_path, cfg, force=False)


def test_a_prefetched_epoch_plan_equals_the_synchronous_one(split_and_store):
    split, store = split_and_store
    cfg = load_config("quick", overrides={"augment.half_body_prob": 0.5})
    method = build_method(CellSpec("cal", "hrnet-w8", R64, 0), cfg)
    pipe = DeviceAugmentPipeline(store, method, R64, cfg.augment, seed=3, device="cpu")
    order = list(reversed(range(len(store))))
    pipe.prefetch(4, order)
    pipe.prefetch(5, order[:6])
    ahead, ahead5 = pipe.plan(order, epoch=4), pipe.plan(order[:6], epoch=5)
    assert pipe._prefetched == {}  # both were picked up, not recomputed
    now = pipe.plan(order, epoch=4)
    for field in ("indices", "theta", "joints", "visible"):
        torch.testing.assert_close(getattr(ahead, field), getattr(now, field), rtol=0, atol=0)
    assert not torch.equal(ahead5.theta, now.theta[:6])  # another epoch draws other augmentations
    pipe.set_epoch(4)
    first = next(pipe.batches(order, 4))
    reference = pipe.batch(order[:4])
    for key in reference:
        torch.testing.assert_close(first[key], reference[key], rtol=0, atol=0, msg=key)
    pipe.close()


def test_a_store_over_its_size_budget_is_refused_or_skipped(tmp_path):
    """COCO train at 256x192 would make an ~87 GB store: ``auto`` keeps the reference path,
    an explicit ``crop_store`` is a ConfigError naming the size and the key."""
    from lrpose_bench.data.sources import DataBundle
    from lrpose_bench.engine.cell import fast_pipeline

    root = tmp_path / "data"
    make_coco_fixture(root, num_images=2, persons_per_image=2, seed=1)
    split = load_split("fixture", root / "annotations.json", root / "images")
    bundle = DataBundle("fixture", split, split)
    cfg = load_config("quick", overrides={"data.crop_store.max_gb": 1e-6, "data.crop_store.root": str(tmp_path / "s")})
    method = build_method(CellSpec("udp", "hrnet-w8", R64, 0), cfg)
    assert fast_pipeline(cfg, bundle, method, R64, torch.device("cuda"), seed=0) is None  # auto on CUDA
    cfg.data.pipeline = "crop_store"
    with pytest.raises(ConfigError, match="data.crop_store.max_gb"):
        fast_pipeline(cfg, bundle, method, R64, torch.device("cpu"), seed=0)
    assert not (tmp_path / "s").exists()  # nothing was built
    cfg.data.crop_store.max_gb = 32.0
    assert fast_pipeline(cfg, bundle, method, R64, torch.device("cpu"), seed=0) is not None
