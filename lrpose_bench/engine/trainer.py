"""The training loop shared by every method: Adam, step schedule, stages, checkpoint/resume.

The loop knows nothing about a method's name: it asks the method for its stages (CAL: Eq. 14 then
Eq. 15) and its loss. Data order and augmentation are functions of (seed, epoch, position), so a run
killed mid-epoch resumes from its last checkpoint and reaches the same weights as an uninterrupted
run.

Reliability (issue 10): checkpoints are written atomically (``store.atomic_write``); a resumed
epoch restores the loss sums of its first half, so ``train_log.csv`` matches an uninterrupted run;
a non-finite loss (or non-finite weights at a checkpoint) raises :class:`TrainingDiverged` naming
the epoch and iteration *before* anything is saved, so the last checkpoint on disk stays good.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lrpose_bench.config import TrainConfig
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.engine import distributed
from lrpose_bench.engine.accelerate import maybe_compile
from lrpose_bench.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lrpose_bench.errors import CheckpointError, TrainingDiverged, UserError
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.store import atomic_write, remove_stale_temp_files


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: ``lr · γ^(#milestones ≤ epoch)`` with milestones scaled to the profile."""
    passed = sum(1 for m in cfg.milestones() if epoch >= m)
    return cfg.lr * (cfg.lr_gamma**passed)


def stage_at(stages: list[TrainingStage], epoch: int) -> TrainingStage:
    """The stage that epoch ``epoch`` (0-based) belongs to."""
    start = 0
    for stage in stages:
        if epoch < start + stage.epochs:
            return stage
        start += stage.epochs
    return stages[-1]


@dataclass
class TrainResult:
    epochs: int
    iterations: int
    seconds: float
    images_per_second: float
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


#: entries every training checkpoint must hold (``engine.checkpoint`` says what each is)
CHECKPOINT_KEYS = ("model", "optimizer", "rng", "epoch", "iteration")


def _restore(path: Path, payload: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             sampler_now: dict[str, int]) -> None:
    """Load a checkpoint's states; anything that does not fit becomes one :class:`CheckpointError`."""
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; delete it to retrain from the start")
    saved = payload.get("sampler")
    if int(payload["iteration"]) > 0 and isinstance(saved, dict):
        for key in ("size", "batch_size"):
            if saved.get(key) != sampler_now[key]:
                raise CheckpointError(
                    f"checkpoint {path} stopped mid-epoch with {key.replace('_', ' ')} {saved.get(key)}, "
                    f"this run has {sampler_now[key]}; resume with the same data and train.batch_size, "
                    "or delete the checkpoint to retrain"
                )
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        set_rng_state(payload["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} does not fit this model/optimizer ({first[:160]}); "
            "delete it to retrain, or use another output folder"
        ) from error


def _unwrap_worker_error(error: UserError) -> UserError:
    """A loader worker's :class:`UserError` arrives as "Caught X in DataLoader worker ... Original
    Traceback ..." (torch ``ExceptionWrapper.reraise``); give back the original one line."""
    text = str(error).strip()
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return error
    last = text.splitlines()[-1]
    name = f"{type(error).__module__}.{type(error).__name__}: "
    message = last[len(name):] if last.startswith(name) else last.split(": ", 1)[-1]
    return type(error)(message)


def _batches(loader: Iterator[Any] | Any) -> Iterator[Any]:
    """Iterate a data loader, turning worker-wrapped user errors back into one line."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except UserError as error:
            raise _unwrap_worker_error(error) from error
        yield batch


def _check_finite_weights(model: nn.Module, epoch: int, iteration: int) -> None:
    """Refuse to overwrite the last good checkpoint with NaN/inf weights (finite loss, bad step)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDiverged(
                f"non-finite weights ({name}) after epoch {epoch + 1}, iteration {iteration}; "
                "the last good checkpoint is kept"
            )


def train(
    model: nn.Module,
    method: Method,
    dataset: PoseDataset,
    cfg: TrainConfig,
    *,
    cell_dir: Path,
    meta: dict[str, Any],
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
    on_iteration: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` for the method's stages; checkpoint each epoch (and every N iterations)."""
    device = device or resolve_device(cfg.device)
    cell_dir = Path(cell_dir)
    checkpoint_path = cell_dir / "checkpoint.pt"
    log_path = cell_dir / "train_log.csv"
    stages = method.stages(cfg.epochs)
    total_epochs = sum(stage.epochs for stage in stages)
    ctx = distributed.context()  # world size 1 unless started by torchrun / --gpus N
    model.to(device)
    use_cuda = device.type == "cuda"
    if use_cuda and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 **({"fused": True} if use_cuda else {}))
    # DDP (synchronised BN) and torch.compile wrap the module that runs the step; ``model`` stays the
    # plain module whose state_dict the checkpoints hold
    train_model = maybe_compile(distributed.wrap_model(model, ctx, device), cfg.compile)
    # a seeded permutation per epoch (world 1: all of it; N ranks: strided shards of the same one)
    sampler = distributed.ShardedEpochSampler(len(dataset), seed, ctx.rank, ctx.world_size)
    global_batch = cfg.batch_size * ctx.world_size  # train.batch_size is per process (per GPU)
    steps_per_epoch = len(dataset) // global_batch
    if steps_per_epoch == 0:
        raise TrainingDiverged(f"training set has {len(dataset)} instances, fewer than one batch of {global_batch}")

    sampler_now = {"seed": seed, "size": len(dataset), "batch_size": global_batch}
    # the caller holds the cell lock, so temp files here are leftovers of a killed atomic_write
    remove_stale_temp_files(cell_dir)

    start_epoch, start_iter, history, resumed_from = 0, 0, [], None
    partial: dict[str, Any] = {}
    if checkpoint_path.is_file():
        payload = load_checkpoint(checkpoint_path, expect={k: meta[k] for k in ("method", "backbone", "resolution")})
        _restore(checkpoint_path, payload, model, optimizer, sampler_now)
        start_epoch = int(payload["epoch"])
        start_iter = int(payload["iteration"])
        history = list(payload.get("history", []))
        partial = dict(payload.get("partial") or {}) if start_iter > 0 else {}
        resumed_from = start_epoch
        if payload["meta"].get("complete"):
            return TrainResult(total_epochs, 0, 0.0, 0.0, resumed_from, history)

    def checkpoint(epoch: int, iteration: int, complete: bool = False,
                   sums: dict[str, float] | None = None, count: int = 0) -> None:
        _check_finite_weights(model, epoch if iteration else epoch - 1, iteration or steps_per_epoch)
        if not ctx.is_writer:  # only rank 0 writes
            return
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,
            "iteration": iteration,
            "stage": stage_at(stages, min(epoch, total_epochs - 1)).index,
            "sampler": {**sampler_now, "epoch": epoch, "position": iteration * global_batch},
            "partial": {"sums": dict(sums or {}), "count": count} if iteration else {},
            "history": history,
            "meta": {**meta, "complete": complete, "total_epochs": total_epochs},
        })

    started = time.perf_counter()
    images_seen = 0
    iterations = 0
    for epoch in range(start_epoch, total_epochs):
        stage = stage_at(stages, epoch)
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        dataset.set_epoch(epoch)
        first = start_iter if epoch == start_epoch else 0
        sampler.set_position(epoch, first * global_batch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                            num_workers=cfg.num_workers, pin_memory=use_cuda,
                            persistent_workers=False)
        train_model.train()
        resumed_part = partial if epoch == start_epoch and first > 0 else {}
        sums: dict[str, float] = {k: float(v) for k, v in (resumed_part.get("sums") or {}).items()}
        count = int(resumed_part.get("count", 0))
        epoch_start = time.perf_counter()
        bar = tqdm(loader, desc=f"train {stage.name} epoch {epoch + 1}/{total_epochs}",
                   disable=not progress or not ctx.is_writer, leave=False)
        for step, batch in enumerate(_batches(bar), start=first):
            batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
            images = batch["image"]
            if use_cuda and cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_cuda and cfg.amp):
                outputs = train_model(images)
            losses = method.loss(outputs.float(), batch, stage)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, iteration {step + 1}; "
                    "the last good checkpoint is kept"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            count += 1
            iterations += 1
            images_seen += images.shape[0] * ctx.world_size
            if progress:
                bar.set_postfix(loss=f"{sums['loss'] / count:.5f}")
            if on_iteration is not None:
                on_iteration(epoch, step + 1)
            if cfg.checkpoint_every_iters and (step + 1) % cfg.checkpoint_every_iters == 0 and step + 1 < steps_per_epoch:
                checkpoint(epoch, step + 1, sums=sums, count=count)
        seconds = time.perf_counter() - epoch_start
        row = {"epoch": epoch + 1, "stage": stage.name, "lr": lr, "iterations": count,
               "seconds": round(seconds, 3), "images_per_s": round(count * global_batch / max(seconds, 1e-9), 1)}
        # per-rank means of equal batches, averaged over ranks = the global batch mean
        row.update(distributed.all_reduce_mean({k: (sums[k] / max(count, 1)) for k in sums}))
        history.append(row)
        checkpoint(epoch + 1, 0, complete=epoch + 1 == total_epochs)
        if ctx.is_writer:
            _write_log(log_path, history)
    elapsed = time.perf_counter() - started
    return TrainResult(total_epochs, iterations, elapsed, images_seen / max(elapsed, 1e-9), resumed_from, history)
