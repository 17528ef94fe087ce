"""GPU-only checks of the fast path; skipped where CUDA is absent (CI, this CPU machine).

They are the prepared device check: on a GPU machine run
``python -m pytest -q tests/test_gpu.py`` then the ``lrpose-bench bench`` command of docs/speed.md.
Each compares a GPU path with its CPU-tested counterpart:

* the CUDA-graphed step follows the eager step (same weights after a few steps, CAL stage 2 incl.);
* the device pipeline on CUDA gives the batches it gives on the CPU (store on the device or not);
* the trainer runs an epoch from the crop store with bf16, channels_last and CUDA graphs.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lrpose_bench.config import TrainConfig, load_config
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.data.gpu_augment import DeviceAugmentPipeline
from lrpose_bench.engine.accelerate import TrainStep, adam_for
from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method
from lrpose_bench.engine.trainer import train
from lrpose_bench.resolution import Resolution

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
R64 = Resolution(64, 48)
CUDA = torch.device("cuda")


@pytest.mark.parametrize("method_name", ["hrnet", "cal"])
def test_graphed_step_follows_the_eager_step(split_and_store, method_name):
    split, store = split_and_store
    cfg = load_config("quick", overrides={"model.backbone": "hrnet-w8"})
    spec = CellSpec(method_name, "hrnet-w8", R64, 0)
    method = build_method(spec, cfg)
    torch.manual_seed(0)
    eager_model = build_cell_model(method, spec, cfg).to(CUDA)
    graph_model = copy.deepcopy(eager_model)
    pipe = DeviceAugmentPipeline(store, method, R64, cfg.augment, seed=0, device=CUDA)
    stage = method.stages(10)[-1]  # CAL: stage 2, the MGM inside the graph

    def loss_fn(outputs, batch):
        return method.loss(outputs, batch, stage)

    eager = TrainStep(eager_model, adam_for(eager_model, 1e-3, 0.0, CUDA), loss_fn, device=CUDA)
    graphed = TrainStep(
        graph_model, adam_for(graph_model, 1e-3, 0.0, CUDA, graphed=True), loss_fn, device=CUDA, graphed=True
    )
    assert graphed.graphed
    batches = list(pipe.batches(list(range(len(store))), 4))
    for batch in batches:
        a = eager.step(batch)["loss"]
        b = graphed.step(batch)["loss"]
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6)
    for (name, x), y in zip(eager_model.state_dict().items(), graph_model.state_dict().values()):
        if x.is_floating_point():
            torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("on_device", [True, False])
def test_cuda_pipeline_equals_the_cpu_pipeline(split_and_store, on_device):
    split, store = split_and_store
    cfg = load_config("quick", overrides={"augment.half_body_prob": 0.3})
    method = build_method(CellSpec("udp", "hrnet-w8", R64, 0), cfg)
    order = list(range(len(store)))
    cpu = DeviceAugmentPipeline(store, method, R64, cfg.augment, seed=1, device="cpu").batch(order)
    gpu = DeviceAugmentPipeline(store, method, R64, cfg.augment, seed=1, device=CUDA, store_on_device=on_device).batch(
        order
    )
    for key, value in cpu.items():
        other = gpu[key].cpu()
        tolerance = 1e-4 if key == "image" else 1e-5  # grid_sample / exp on another device
        torch.testing.assert_close(other, value, rtol=0, atol=tolerance, msg=key)


def test_trainer_epoch_on_cuda_with_graphs_bf16_and_the_crop_store(split_and_store, tmp_path):
    split, store = split_and_store
    cfg = load_config("quick", overrides={"model.backbone": "hrnet-w8"})
    spec = CellSpec("cal", "hrnet-w8", R64, 0)
    method = build_method(spec, cfg)
    model = build_cell_model(method, spec, cfg)
    tcfg = TrainConfig(
        epochs=2,
        batch_size=4,
        lr=1e-3,
        device="cuda",
        amp=True,
        channels_last=True,
        cuda_graphs=True,
        deterministic=False,
        sync_every=3,
    )
    dataset = PoseDataset(split, method, R64, train=True, augment=cfg.augment, seed=0)
    pipeline = DeviceAugmentPipeline(store, method, R64, cfg.augment, seed=0, device=CUDA)
    meta = {"method": "cal", "backbone": "hrnet-w8", "resolution": str(R64)}
    result = train(
        model,
        method,
        dataset,
        tcfg,
        cell_dir=tmp_path,
        meta=meta,
        seed=0,
        device=CUDA,
        progress=False,
        pipeline=pipeline,
    )
    assert [r["stage"] for r in result.history] == ["stage1", "stage1", "stage2"]
    assert all(r["iterations"] == 4 and r["loss"] > 0 for r in result.history)
    assert (tmp_path / "checkpoint.pt").is_file()
