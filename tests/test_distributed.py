"""DDP helpers: the sharded sampler keeps the single-process order; 2 gloo processes train and evaluate
to the numbers of one process with the same global batch; torchrun re-execution command."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_coco_fixture
from lrpose_bench.config import AugmentConfig, TrainConfig, resolve_method_params
from lrpose_bench.data.coco import load_split
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.engine import distributed as D
from lrpose_bench.evaluation.coco_metric import build_results, evaluate_keypoints
from lrpose_bench.method import MethodContext
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 200),
    seed=st.integers(0, 1000),
    epoch=st.integers(0, 300),
    world=st.integers(1, 8),
    batch=st.integers(1, 16),
    steps_done=st.integers(0, 5),
)
def test_shards_reassemble_the_single_process_batches(size, seed, epoch, world, batch, steps_done):
    start = min(size, steps_done * world * batch)
    # the single-process order: one seeded permutation per (seed, epoch), from the resume position
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()[start:]
    shards = []
    for rank in range(world):
        sampler = D.ShardedEpochSampler(size, seed, rank, world)
        sampler.set_position(epoch, start)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    for step in range(len(shards[0]) // batch):
        union = sorted(i for s in shards for i in s[step * batch : (step + 1) * batch])
        assert union == sorted(order[step * world * batch : (step + 1) * world * batch])
    if world == 1:
        assert shards[0] == order


def test_context_defaults_and_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = D.context()
    assert (ctx.rank, ctx.world_size, ctx.is_distributed, ctx.is_writer) == (0, 1, False, True)
    assert not D.under_torchrun()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = D.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_writer) == (3, 4, 1, False)
    assert D.under_torchrun() and not D.is_writer()
    assert D.relaunch_with_torchrun(2, ["run"]) == -1  # already under torchrun: never nests


def test_torchrun_command_drops_gpus_and_keeps_the_rest():
    cmd = D.torchrun_command(4, ["run", "--methods", "cal", "--gpus", "4", "--res", "64x48", "--gpus=4"])
    assert cmd[:4] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4"]
    assert "--standalone" in cmd
    assert cmd[cmd.index("-m", 3) :] == ["-m", "lrpose_bench", "run", "--methods", "cal", "--res", "64x48"]
    assert "--standalone" not in D.torchrun_command(2, ["run"], nnodes=2)


def test_single_process_helpers_are_identity():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert D.wrap_model(model, D.DistContext()) is model
    assert D.gather_to_writer({"a": 1}) == [{"a": 1}]
    assert D.all_reduce_mean({"x": torch.tensor(2.0)}) == {"x": 2.0}
    assert D.unwrap(model) is model


def test_allreduce_batchnorm_equals_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    ref = copy.deepcopy(model)
    converted = D.convert_batchnorm(model, torch.device("cpu"))
    assert isinstance(converted[1], D.AllReduceBatchNorm2d)
    assert converted[1].weight is ref[1].weight or torch.equal(converted[1].weight, ref[1].weight)
    assert list(converted.state_dict()) == list(ref.state_dict())
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(converted(x), ref(x))  # no process group: plain batch norm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    make_coco_fixture(root / "data", num_images=8, persons_per_image=2, seed=5)
    split = load_split("fixture", root / "data" / "annotations.json", root / "data" / "images")
    res = Resolution(64, 48)
    cls = METHODS.get("hrnet")
    method = cls(resolve_method_params(cls.Params, "hrnet", res), MethodContext(res))
    train_set = PoseDataset(split, method, res, train=True, augment=AugmentConfig(), seed=0)
    eval_set = PoseDataset(split, method, res, train=False)
    from lrpose_bench.models import build_model

    torch.manual_seed(0)
    model = build_model("hrnet-w8", method.head_channels())
    return split, method, train_set, eval_set, model


def first_step_gradients(model, method, dataset, batch_size, dtype=torch.float64):
    """Gradients of the first step of epoch 0 on this rank (DDP-averaged when distributed).

    Computed in float64: the two paths (2 ranks x batch 4 with all-reduced batch norm, 1 process x
    batch 8) are the same algorithm in another summation order, so in float64 they agree to ~1e-12
    relative, and a real difference between the paths (variance estimator, reduction, the data each
    rank sees) stands out by many orders of magnitude. In float32 the same comparison differs by up to
    ~3e-3 relative on conv1 and ~2e-2 on some BN parameters (batch-4 statistics amplify the
    summation-order noise, and how much depends on the CPU's kernels), which is why it is not used.
    """
    from torch.utils.data import default_collate

    ctx = D.context()
    model = model.to(dtype)
    net = D.wrap_model(model, ctx, torch.device("cpu"))
    net.train()
    sampler = D.ShardedEpochSampler(len(dataset), 0, ctx.rank, ctx.world_size)
    dataset.set_epoch(0)
    batch = default_collate([dataset[i] for i in list(sampler)[:batch_size]])
    batch = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    stage = method.stages(1)[0]
    method.loss(net(batch["image"]), batch, stage)["loss"].backward()
    return {name: p.grad.detach().clone() for name, p in D.unwrap(net).named_parameters()}


def worker(model, method, train_set, eval_set, cfg, eval_batch_size, cell_dir):
    """The real trainer and the sharded evaluation on this rank; rank 0 returns what it saw."""
    from lrpose_bench.engine.trainer import train

    grads = first_step_gradients(copy.deepcopy(model), method, train_set, cfg.batch_size)
    ctx = D.context()
    meta = {"method": method.name, "backbone": "hrnet-w8", "resolution": str(method.context.resolution)}
    result = train(
        model, method, train_set, cfg, cell_dir=cell_dir, meta=meta, seed=0, device=torch.device("cpu"), progress=False
    )
    predictions = D.predict_sharded(
        model, method, eval_set, ctx, batch_size=eval_batch_size, flip_test=True, device="cpu", progress=False
    )
    if not ctx.is_writer:
        return None
    return {
        "history": result.history,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "predictions": predictions,
        "world_size": ctx.world_size,
        "grads": grads,
    }


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny, tmp_path):
    """2 ranks × batch 4 with synchronised BN against 1 process × batch 8.

    The gradient of a step is the same up to float summation order (tight). Over training, Adam
    amplifies those 1e-7 differences where a gradient is ~0 (its step is ~lr·sign(g)), so weights are
    compared with a bound of 2·lr per step on the few that flip, and the evaluation within 0.02 AP.
    """
    split, method, train_set, eval_set, model = tiny
    lr, epochs = 2e-3, 2
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=lr, device="cpu", amp=False, channels_last=False)
    single = worker(copy.deepcopy(model), method, train_set, eval_set, cfg, 16, tmp_path / "one")
    cfg2 = TrainConfig(epochs=epochs, batch_size=4, lr=lr, device="cpu", amp=False, channels_last=False)
    double = D.launch_local(2, worker, copy.deepcopy(model), method, train_set, eval_set, cfg2, 8, tmp_path / "two")
    assert double["world_size"] == 2 and single["world_size"] == 1
    for name, grad in single["grads"].items():
        assert grad.dtype == torch.float64
        scale = float(grad.abs().max()) + 1e-30
        # float64: measured max |difference| / max |gradient| <= 1e-12 on both kernel choices
        # (default AVX-512 and ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2); 1e-9 leaves margin
        torch.testing.assert_close(double["grads"][name], grad, atol=1e-9 * scale, rtol=0, msg=name)
    steps = 0
    for a, b in zip(single["history"], double["history"]):
        assert a["iterations"] == 2 and b["iterations"] == 2  # 16 instances / global batch 8
        steps += 2
    # float32 training: epoch 0's mean loss includes step 2, taken after one Adam step, where weights
    # with a ~0 gradient move by ~lr*sign(g) and the sign is summation-order noise. Measured relative
    # difference of the epoch losses on the default AVX-512 kernels: 3.9e-4 (epoch 0), 6.5e-3 (epoch 1);
    # below 5e-3 with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2. Bounds: 5e-3 and 2e-2. The
    # equivalence of the two paths is proven by the float64 gradients above, not by these.
    assert single["history"][0]["loss"] == pytest.approx(double["history"][0]["loss"], rel=5e-3)
    assert single["history"][-1]["loss"] == pytest.approx(double["history"][-1]["loss"], rel=2e-2)
    start = model.state_dict()
    close = total = 0
    moved = 0.0
    for key, value in single["state_dict"].items():
        other = double["state_dict"][key]
        if not value.is_floating_point():
            assert torch.equal(other, value), key  # e.g. BN num_batches_tracked: updated once per step
            continue
        diff = (other - value).abs()
        close += int((diff < 1e-4).sum())
        total += diff.numel()
        if "running" not in key:
            assert float(diff.max()) <= 2 * lr * steps, key
            moved = max(moved, float((value - start[key]).abs().max()))
    # the share of weights within 1e-4 depends on the kernels (0.50 on AVX-512 here, 0.85+ elsewhere):
    # reported for reading, not asserted; the hard bound above (Adam moves a weight by <= ~lr a step)
    # holds for every weight on every machine
    print(f"weights within 1e-4: {close / total:.3f}")
    assert moved > 2 * lr  # training did move the weights
    p1, p2 = single["predictions"], double["predictions"]
    np.testing.assert_array_equal(p1.image_ids, p2.image_ids)
    np.testing.assert_allclose(p2.box_areas, p1.box_areas)
    np.testing.assert_allclose(p2.gt_hm, p1.gt_hm)  # merged back into dataset order
    assert np.median(np.abs(p2.keypoints - p1.keypoints)) < 0.5
    ap = [
        evaluate_keypoints(
            split.gt, build_results(p.image_ids, p.keypoints, p.confidences, p.box_scores, p.box_areas, 0.2, 0.9)
        )["AP"]
        for p in (p1, p2)
    ]
    assert ap[0] == pytest.approx(ap[1], abs=0.02)


def mgm_worker(heatmaps, joints, visible, radius, components):
    """One rank's share (strided halves) of a stage-2 batch: CAL's MGM with the displacements gathered."""
    from lrpose_bench.methods.cal.mgm import mgm_from_predictions

    rank, world = D.context().rank, D.world_size()
    mask, gmm = mgm_from_predictions(
        heatmaps[rank::world],
        joints[rank::world],
        visible[rank::world],
        radius,
        components,
        20,
        1e-3,
        gather=D.all_gather_cat,
    )
    return {"mask": mask, "weights": gmm.weights, "means": gmm.means, "covariances": gmm.covariances}


@pytest.mark.parametrize("components", [1, 2])
def test_cal_fits_one_mixture_to_the_global_batch_under_ddp(components):
    """Algorithm 1 fits the mixture to the mini-batch's displacements; with 2 processes the global
    batch is split, so the ranks gather before fitting: the mixture equals the one-process fit of
    the whole batch (same points; the concatenation order differs, which EM sums do not see beyond
    float rounding), and rank 0's masks equal the one-process masks of its instances."""
    from lrpose_bench.methods.cal.mgm import mgm_from_predictions

    gen = torch.Generator().manual_seed(components)
    heatmaps = torch.rand(8, 17, 16, 12, generator=gen)
    joints = torch.rand(8, 17, 2, generator=gen) * torch.tensor([11.0, 15.0])
    visible = (torch.rand(8, 17, generator=gen) > 0.2).float()
    radius = 3.5
    # one process on the batch in rank-major order (rank 0's instances first), as all_gather concatenates
    order = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])
    single_mask, single = mgm_from_predictions(
        heatmaps[order], joints[order], visible[order], radius, components, 20, 1e-3
    )
    double = D.launch_local(2, mgm_worker, heatmaps, joints, visible, radius, components)
    torch.testing.assert_close(double["weights"], single.weights, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(double["means"], single.means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(double["covariances"], single.covariances, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(double["mask"], single_mask[:4], atol=1e-5, rtol=0)
    # without the gather, rank 0 alone would fit another mixture (the check above has teeth)
    _, local = mgm_from_predictions(heatmaps[0::2], joints[0::2], visible[0::2], radius, components, 20, 1e-3)
    assert not torch.allclose(local.means, single.means, atol=1e-3)


def fast_path_worker(annotations, images, cell_dir, batch_size, store_root):
    """The real trainer on this rank with the crop-store pipeline that ``cell.fast_pipeline`` builds
    (rank 0 builds the store behind a barrier, the others open it)."""
    from lrpose_bench.config import load_config
    from lrpose_bench.data.sources import DataBundle
    from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method, fast_pipeline
    from lrpose_bench.engine.trainer import train

    split = load_split("fixture", annotations, images)
    res = Resolution(64, 48)
    cfg = load_config(
        "quick",
        overrides={
            "data.pipeline": "crop_store",
            "data.crop_store.root": str(store_root),
            "model.backbone": "hrnet-w8",
        },
    )
    spec = CellSpec("cal", "hrnet-w8", res, 0)
    method = build_method(spec, cfg)
    torch.manual_seed(0)
    model = build_cell_model(method, spec, cfg)
    pipeline = fast_pipeline(cfg, DataBundle("fixture", split, split), method, res, torch.device("cpu"), seed=0)
    dataset = PoseDataset(split, method, res, train=True, augment=cfg.augment, seed=0)
    tcfg = TrainConfig(epochs=2, batch_size=batch_size, lr=2e-3, device="cpu", amp=False, channels_last=False)
    meta = {"method": "cal", "backbone": "hrnet-w8", "resolution": str(res)}
    result = train(
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
    )
    gmm = method.last_gmm  # the stage-2 mixture of the last step
    fitted = [gmm.weights, gmm.means, gmm.covariances]
    return {
        "history": result.history,
        "stores": sorted(p.name for p in store_root.iterdir()),
        "mixtures": D.gather_to_writer(fitted),
    }


@pytest.mark.slow
def test_two_gloo_processes_train_from_the_crop_store_like_one(tiny, tmp_path):
    """CAL trained by the real trainer from the crop store: 2 ranks × batch 4 against 1 process ×
    batch 8, one store built for both ranks. Stage 1 agrees as the DataLoader test above (Adam
    turns 1e-7 gradient differences into lr-sized steps where a gradient is ~0, hence 5e-3 after
    the first epoch); in stage 2 the MGM is fitted to arg-max displacements of nearly flat early
    heatmaps, which such differences can move by a pixel, so there the check is that both ranks
    fitted the *same* (global-batch) mixture, and the loss only agrees loosely."""
    split = tiny[0]
    single = fast_path_worker(split.annotation_file, split.image_root, tmp_path / "one", 8, tmp_path / "stores1")
    double = D.launch_local(
        2, fast_path_worker, split.annotation_file, split.image_root, tmp_path / "two", 4, tmp_path / "stores2"
    )
    assert len(double["stores"]) == 1 and not any(s.startswith(".building") for s in double["stores"])
    assert (
        [r["stage"] for r in double["history"]]
        == [r["stage"] for r in single["history"]]
        == ["stage1", "stage1", "stage2"]
    )
    assert all(r["iterations"] == 2 for r in double["history"] + single["history"])
    # measured: epoch 1 rel 8e-5, epoch 2 rel 1.1e-3, stage 2 rel 2e-2 (R = 2 px at 64x48)
    assert double["history"][0]["loss"] == pytest.approx(single["history"][0]["loss"], rel=5e-4)
    assert double["history"][1]["loss"] == pytest.approx(single["history"][1]["loss"], rel=5e-3)
    assert double["history"][-1]["loss"] == pytest.approx(single["history"][-1]["loss"], rel=0.15)
    rank0, rank1 = double["mixtures"]
    for a, b in zip(rank0, rank1):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
