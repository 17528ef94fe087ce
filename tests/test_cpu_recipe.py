"""The CPU training recipe: linear learning-rate warm-up (mmpose ``LinearLR`` before ``MultiStepLR``),
bf16 autocast only where oneDNN computes bf16 natively, NHWC and fused Adam on the CPU, and the
``bench`` recipe table that times the old and the new CPU path side by side."""

from __future__ import annotations

import math

import pytest
import torch

from lrpose_bench.commands.bench_recipes import RECIPE_KEYS, compare_rows, load_recipes
from lrpose_bench.config import load_config
from lrpose_bench.engine import accelerate
from lrpose_bench.engine.accelerate import TrainStep, adam_for, autocast_dtype, precision_name
from lrpose_bench.engine.trainer import learning_rate, step_learning_rate, warmup_factor
from lrpose_bench.errors import ConfigError

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------- warm-up
def test_warmup_is_mmpose_linear_lr_then_the_step_schedule():
    cfg = load_config("quick", overrides={"train.warmup_iters": 10, "train.warmup_start_factor": 0.001})
    # LinearLR(start_factor=s, end=N): factor s + (1 - s) * i / N at step i < N, then 1
    for i in range(10):
        assert math.isclose(warmup_factor(cfg.train, i), 0.001 + 0.999 * i / 10, rel_tol=1e-12)
    assert warmup_factor(cfg.train, 10) == 1.0 and warmup_factor(cfg.train, 10_000) == 1.0
    steps = 4  # steps per epoch: the ramp runs over epochs 0-2 and half of 2
    assert step_learning_rate(cfg.train, 0, 0, steps) == pytest.approx(cfg.train.lr * 0.001)
    assert step_learning_rate(cfg.train, 1, 1, steps) == pytest.approx(cfg.train.lr * (0.001 + 0.999 * 5 / 10))
    assert step_learning_rate(cfg.train, 2, 2, steps) == pytest.approx(cfg.train.lr)  # step 10: done
    last = cfg.train.epochs - 1  # after the milestones the warm-up is long over: the step schedule alone
    assert step_learning_rate(cfg.train, last, 0, steps) == learning_rate(cfg.train, last)


def test_no_warmup_leaves_the_paper_schedule():
    cfg = load_config("paper")
    assert cfg.train.warmup_iters == 0
    assert all(warmup_factor(cfg.train, i) == 1.0 for i in range(5))


def test_the_trainer_ramps_the_rate_step_by_step(tmp_path, monkeypatch):
    """The rates the optimizer sees during a real (tiny) training: the warm-up ramp, step by step."""
    from conftest import make_coco_fixture
    from lrpose_bench.data.coco import load_split
    from lrpose_bench.data.dataset import PoseDataset
    from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method
    from lrpose_bench.engine.trainer import train
    from lrpose_bench.resolution import Resolution

    root = tmp_path / "fx"
    make_coco_fixture(root, num_images=4, persons_per_image=2, seed=0)
    split = load_split("train", root / "annotations.json", root / "images")
    cfg = load_config(
        "quick",
        overrides={"train.epochs": 2, "train.batch_size": 2, "train.warmup_iters": 5, "train.match_budget": False},
    )
    spec = CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0)
    method = build_method(spec, cfg)
    model = build_cell_model(method, spec, cfg)
    seen: list[float] = []
    real_step = TrainStep.step

    def spy(self, batch):
        seen.append(float(self.optimizer.param_groups[0]["lr"]))
        return real_step(self, batch)

    monkeypatch.setattr(TrainStep, "step", spy)
    dataset = PoseDataset(split, method, spec.resolution, train=True, augment=cfg.augment, seed=0)
    train(model, method, dataset, cfg.train, cell_dir=tmp_path / "cell", meta={}, device=CPU, progress=False)
    per_epoch = len(dataset) // 2
    expected = [step_learning_rate(cfg.train, i // per_epoch, i % per_epoch, per_epoch) for i in range(2 * per_epoch)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(cfg.train.lr * cfg.train.warmup_start_factor)
    assert seen[-1] == pytest.approx(learning_rate(cfg.train, 1))


# ----------------------------------------------------------------------------- precision
def test_bf16_autocast_only_where_onednn_has_native_bf16(monkeypatch):
    cuda = torch.device("cuda")  # a device object needs no GPU
    assert autocast_dtype(cuda, True) is torch.bfloat16 and autocast_dtype(cuda, False) is None
    monkeypatch.setattr(accelerate, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(CPU, True) is torch.bfloat16 and precision_name(CPU, True) == "bf16-autocast"
    assert autocast_dtype(CPU, False) is None and precision_name(CPU, False) == "fp32"
    monkeypatch.setattr(accelerate, "cpu_has_native_bf16", lambda: False)  # emulated bf16 is slower: fp32
    assert autocast_dtype(CPU, True) is None and precision_name(CPU, True) == "fp32"


def test_cpu_step_runs_nhwc_under_the_precision_it_reports():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 2, 1))
    model.to(memory_format=torch.channels_last)
    seen = {}

    def loss_fn(outputs, batch):
        seen["dtype"] = outputs.dtype
        return {"loss": (outputs - batch["target"]).pow(2).mean()}

    step = TrainStep(model, adam_for(model, 1e-2, 0.0, CPU), loss_fn, device=CPU, amp=True, channels_last=True)
    inner = {}

    def record(module, inputs, output) -> None:
        inner.setdefault("dtype", output.dtype)

    model[0].register_forward_hook(record)
    batch = {"image": torch.randn(2, 3, 8, 6), "target": torch.randn(2, 2, 8, 6)}
    losses = step.step(batch)
    assert torch.isfinite(losses["loss"])
    assert seen["dtype"] is torch.float32  # the loss always sees float32 outputs
    expected = torch.bfloat16 if accelerate.cpu_has_native_bf16() else torch.float32
    assert inner["dtype"] is expected
    assert step.amp == (expected is torch.bfloat16)


def test_cpu_adam_is_fused_unless_told_otherwise():
    model = torch.nn.Linear(3, 2)
    assert adam_for(model, 1e-3, 0.0, CPU).defaults["fused"] is True
    assert not adam_for(model, 1e-3, 0.0, CPU, fused=False).defaults.get("fused")


# ------------------------------------------------------------------------------- recipes
def test_shipped_recipes_compare_the_old_cpu_path_with_the_default():
    recipes = load_recipes()
    first, *rest = recipes
    assert first == "reference_cpu" and rest == ["default", "default_nchw"]
    old = recipes["reference_cpu"]
    assert old == {
        "train.batch_size": 32,
        "train.amp": False,
        "train.channels_last": False,
        "train.fused_adam": False,
        "data.pipeline": "reference",
    }
    assert recipes["default"] == {}
    assert recipes["default_nchw"] == {"train.channels_last": False}


def test_a_recipe_may_only_set_speed_keys(tmp_path, monkeypatch):
    (tmp_path / "bench.yaml").write_text("recipes:\n  a: {train.lr: 0.1}\n")
    monkeypatch.setattr("lrpose_bench.commands.bench_recipes.config_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"recipe 'a' sets train.lr; a recipe may set only"):
        load_recipes()
    assert "train.lr" not in RECIPE_KEYS


def test_recipe_rows_divide_by_the_first_recipe():
    entry = {"res": "64x48", "method": "hrnet", "pipeline": "reference", "precision": "fp32"}
    measured = {
        "old": [{**entry, "img_s": 200.0, "batch_size": 32, "channels_last": False, "fused_adam": False}],
        "new": [{**entry, "img_s": 500.0, "batch_size": 128, "channels_last": True, "fused_adam": True}],
    }
    (row,) = compare_rows(measured)
    assert row["new_vs_old"] == pytest.approx(2.5)
    assert row["old_setup"] == "b32 reference fp32" and row["new_setup"] == "b128 reference fp32 nhwc fused"
