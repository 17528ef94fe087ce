"""``lrpose-bench bench``'s recipe table: whole training steps under two training recipes, side by side.

A *recipe* is the part of a configuration that decides how fast a training step runs and nothing
about what it learns from: the batch size, the input pipeline (``data.pipeline``), bf16 autocast
(``train.amp``), the memory layout (``train.channels_last``) and Adam's kernel
(``train.fused_adam``). ``configs/bench.yaml`` names the recipes as override sets on top of the
run's configuration; the shipped pair is the quick profile's CPU path before it was tuned
(``reference_cpu``: fp32, NCHW, batch 32, the per-parameter Adam loop, batches from
``PoseDataset`` through a ``DataLoader``) and the configuration as it stands (``default``).

Each recipe is timed the way it trains: its own batch size, batches from the pipeline
:func:`~lrpose_bench.engine.cell.use_crop_store` picks for it (the crop store's epoch plan is made
before the clock starts, as training makes it an epoch ahead in a background thread), then the
trainer's :class:`~lrpose_bench.engine.accelerate.TrainStep`. Both recipes run in the same process
one after the other, on the same threads, so their ratio is a side-by-side measurement.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from lrpose_bench.config import BenchConfig, config_dir, read_yaml
from lrpose_bench.errors import ConfigError

#: keys a recipe may set: the ones that change a step's speed, not what the step learns from
RECIPE_KEYS = ("train.batch_size", "train.amp", "train.channels_last", "train.fused_adam", "data.pipeline")


def load_recipes() -> dict[str, dict[str, Any]]:
    """``configs/bench.yaml`` ``recipes``: name → dotted overrides (only :data:`RECIPE_KEYS`)."""
    path = config_dir() / "bench.yaml"
    recipes = read_yaml(path).get("recipes")
    if not isinstance(recipes, dict) or not recipes:
        raise ConfigError(f"{path}: 'recipes' must map recipe names to override sets; restore the shipped file")
    for name, overrides in recipes.items():
        overrides = overrides or {}
        unknown = sorted(set(overrides) - set(RECIPE_KEYS))
        if unknown:
            raise ConfigError(
                f"{path}: recipe {name!r} sets {', '.join(unknown)}; a recipe may set only {', '.join(RECIPE_KEYS)}"
            )
        recipes[name] = dict(overrides)
    return recipes


def bench_train_set(bundle: Any, method: Any, res: Any, cfg: BenchConfig, cache: Any) -> Any:
    """The training split as the reference path reads it (``PoseDataset(train=True)``, the run's
    augmentation, seed and box padding): ``bench``'s one way to build it."""
    from lrpose_bench.data.dataset import PoseDataset

    return PoseDataset(
        bundle.train,
        method,
        res,
        train=True,
        augment=cfg.augment,
        box_padding=cfg.data.box_padding,
        seed=cfg.seed,
        image_cache=cache,
    )


def _reference_batches(cfg: BenchConfig, train_set: Any, batch_size: int, device: torch.device) -> Iterator[Any]:
    """Endless batches of the CPU reference path (``PoseDataset`` → ``DataLoader``, as the trainer)."""
    from torch.utils.data import DataLoader

    if len(train_set) < batch_size:
        raise ConfigError(f"bench: {len(train_set)} training instances, fewer than one batch of {batch_size}")
    while True:
        loader = DataLoader(
            train_set,
            batch_size=batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=cfg.train.num_workers,
            pin_memory=device.type == "cuda",
        )
        for batch in loader:
            yield {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _store_batches(pipeline: Any, instances: int, batch_size: int) -> Iterator[Any]:
    """Endless batches of the crop-store path from one epoch plan made up front."""
    usable = instances - instances % batch_size
    if usable == 0:
        raise ConfigError(f"bench: {instances} crops in the store, fewer than one batch of {batch_size}")
    plan = pipeline.plan(list(range(usable)))
    for start in itertools.cycle(range(0, usable, batch_size)):
        yield pipeline.batch_of(plan, start, start + batch_size)


def bench_recipe(
    method_name: str,
    res: Any,
    cfg: BenchConfig,
    bundle: Any,
    store: Any,
    device: torch.device,
    steps: int,
    median_seconds: Callable[..., float],
) -> dict[str, Any]:
    """Images/s of whole training steps (input pipeline + forward, loss, backward, Adam) under ``cfg``."""
    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.gpu_augment import DeviceAugmentPipeline
    from lrpose_bench.engine.accelerate import TrainStep, adam_for, precision_name
    from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method, use_crop_store
    from lrpose_bench.engine.trainer import effective_batch_size

    spec = CellSpec(method_name, cfg.model.backbone, res, cfg.seed)
    method = build_method(spec, cfg)
    torch.manual_seed(cfg.seed)
    model = build_cell_model(method, spec, cfg).to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = adam_for(model, cfg.train.lr, cfg.train.weight_decay, device, fused=cfg.train.fused_adam)
    stage = method.stages(1)[0]
    step = TrainStep(
        model,
        optimizer,
        lambda outputs, batch: method.loss(outputs, batch, stage),
        device=device,
        amp=cfg.train.amp,
        channels_last=cfg.train.channels_last,
    )
    # a split smaller than the recipe's batch trains one clamped batch, as the trainer does (with its warning)
    n = effective_batch_size(cfg.train.batch_size, len(bundle.train.instances))
    crop_store = use_crop_store(cfg, device)
    if crop_store:
        pipeline = DeviceAugmentPipeline(store, method, res, cfg.augment, seed=cfg.seed, device=device)
        batches = _store_batches(pipeline, len(store), n)
    else:
        train_set = bench_train_set(bundle, method, res, cfg, ImageCache(cfg.data.image_cache_mb))
        batches = _reference_batches(cfg, train_set, n, device)
    model.train()
    seconds = median_seconds(lambda: step.step(next(batches)), steps, device, warmup=2)
    return {
        "res": str(res),
        "method": method_name,
        "batch_size": n,
        "pipeline": "crop_store" if crop_store else "reference",
        "precision": precision_name(device, cfg.train.amp),
        "channels_last": bool(cfg.train.channels_last),
        "fused_adam": bool(cfg.train.fused_adam),
        "img_s": n / seconds,
    }


def compare_rows(measured: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (resolution, method): each recipe's img/s and every recipe's ratio to the first."""
    names = list(measured)
    rows: list[dict[str, Any]] = []
    for i, first in enumerate(measured[names[0]]):
        row: dict[str, Any] = {"res": first["res"], "method": first["method"]}
        for name in names:
            entry = measured[name][i]
            row[f"{name}_img_s"] = entry["img_s"]
            row[f"{name}_setup"] = (
                f"b{entry['batch_size']} {entry['pipeline']} {entry['precision']}"
                f"{' nhwc' if entry['channels_last'] else ''}{' fused' if entry['fused_adam'] else ''}"
            )
        for name in names[1:]:
            row[f"{name}_vs_{names[0]}"] = row[f"{name}_img_s"] / row[f"{names[0]}_img_s"]
        rows.append(row)
    return rows


def format_recipes(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)
    for column in table.columns:
        if column.endswith("_img_s"):
            table[column] = table[column].map(lambda v: f"{v:,.0f}")
        elif "_vs_" in column:
            table[column] = table[column].map(lambda v: f"{v:.2f}x")
    return table.to_string(index=False)
