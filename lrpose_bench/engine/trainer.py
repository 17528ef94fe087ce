"""The training loop shared by every method: Adam, step schedule, stages, checkpoint/resume.

The loop knows nothing about a method's name: it asks the method for its stages (CAL: Eq. 14 then
Eq. 15) and its loss. Data order and augmentation are functions of (seed, epoch, position), so a run
killed mid-epoch resumes from its last checkpoint and reaches the same weights as an uninterrupted
run.

Reliability: checkpoints are written atomically (``store.atomic_write``); a resumed
epoch restores the loss sums of its first half, so ``train_log.csv`` matches an uninterrupted run;
a non-finite loss (or non-finite weights at a checkpoint) raises :class:`TrainingDiverged` naming
the epoch and iteration *before* anything is saved, so the last checkpoint on disk stays good.
"""

from __future__ import annotations

import csv
import io
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lrpose_bench.config import TrainConfig
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.engine import distributed
from lrpose_bench.engine.accelerate import TrainStep, adam_for, configure_backends, make_capturable, maybe_compile
from lrpose_bench.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lrpose_bench.errors import CheckpointError, ConfigError, TrainingDiverged, UserError
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
    #: the batch over all processes that trained (train.batch_size x world, unless clamped)
    global_batch: int | None = None


def resolve_device(name: str) -> torch.device:
    """The torch device for ``train.device`` (``--device``); a device this machine lacks is one
    :class:`ConfigError` line, raised when the run starts (the CLI asks before any work) rather
    than a torch traceback from inside a cell. The schema has already checked the name's form."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = (
                "this PyTorch is built without CUDA" if torch.version.cuda is None else "no NVIDIA GPU or driver found"
            )
            raise ConfigError(
                f"train.device {name!r} (--device): no CUDA GPU is usable on this machine ({why}); "
                "use --device cpu, or --device auto to take a GPU when there is one"
            )
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device {name!r} (--device): only {torch.cuda.device_count()} CUDA GPU(s) are "
                f"visible (cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one of them"
            )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(
            f"train.device {name!r} (--device): Apple's MPS is not available on this machine; use --device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} (--device) is not a device; use auto, cpu, cuda or cuda:N") from None


def effective_batch_size(requested: int, instances: int, world_size: int = 1) -> int:
    """The per-process batch: ``train.batch_size``, clamped (with a one-line warning) when the
    training set holds fewer instances than one global batch, so a small private set fine-tunes
    instead of being refused; every epoch then takes one step of the whole set (``drop_last`` keeps
    every rank's batch the same size). A set smaller than the number of processes cannot train."""
    if instances >= requested * world_size:
        return requested
    clamped = instances // world_size
    if clamped == 0:
        raise TrainingDiverged(
            f"training set has {instances} instances, fewer than the {world_size} processes "
            "training it; train with fewer processes (--gpus)"
        )
    warnings.warn(
        f"train.batch_size {requested} is more than the training set holds ({instances} instances"
        f"{f' over {world_size} processes' if world_size > 1 else ''}); training with batch "
        f"{clamped} per process, one step per epoch",
        stacklevel=2,
    )
    return clamped


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


def _restore(
    path: Path, payload: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, sampler_now: dict[str, int]
) -> None:
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
    message = last[len(name) :] if last.startswith(name) else last.split(": ", 1)[-1]
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
    """Refuse to overwrite the last good checkpoint with NaN/inf weights (finite loss, bad step).

    One host synchronisation for the whole state (a per-tensor check would wait on the device once
    per parameter); the offending tensor is looked up only when something is wrong."""
    floating = [(name, t) for name, t in model.state_dict().items() if t.is_floating_point()]
    if not floating:
        return
    finite = torch.stack([torch.isfinite(t).all() for _, t in floating])
    if bool(finite.all()):
        return
    name = floating[int((~finite).nonzero()[0, 0])][0]
    raise TrainingDiverged(
        f"non-finite weights ({name}) after epoch {epoch + 1}, iteration {iteration}; the last good checkpoint is kept"
    )


def _sync_every(cfg: TrainConfig, device: torch.device) -> int:
    """Steps between host synchronisations: every step on a CPU (a sync costs nothing there),
    ``50`` on CUDA, unless ``train.sync_every`` says. A non-finite loss is found at the next sync;
    weights it corrupted never reach a checkpoint (every checkpoint syncs and checks first)."""
    if cfg.sync_every > 0:
        return cfg.sync_every
    return 50 if device.type == "cuda" else 1


class _LossMeter:
    """Per-epoch loss sums kept on the training device (float64, the exact sums of the float32
    values), read on the host only every ``sync_every`` steps; :meth:`check` names the first
    non-finite loss since the last check by its iteration."""

    def __init__(self, device: torch.device, sums: dict[str, float], count: int) -> None:
        self.device = device
        self.sums = {k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in sums.items()}
        self.count = count
        self.pending: list[Tensor] = []
        self.pending_first = 0

    def add(self, losses: dict[str, Tensor], iteration: int) -> None:
        if not self.pending:
            self.pending_first = iteration
        for key, value in losses.items():
            value = value.detach().to(torch.float64)
            if key in self.sums:
                self.sums[key] += value
            else:
                self.sums[key] = value.clone()
        self.pending.append(losses["loss"].detach().reshape(1).clone())
        self.count += 1

    def check(self, epoch: int) -> None:
        """One host synchronisation: raise :class:`TrainingDiverged` for a non-finite loss."""
        if not self.pending:
            return
        values = torch.cat(self.pending)
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise TrainingDiverged(
                f"non-finite loss ({float(values[bad])}) at epoch {epoch + 1}, iteration {self.pending_first + bad}; "
                "the last good checkpoint is kept"
            )
        self.pending.clear()

    def host_sums(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}


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
    pipeline: Any | None = None,
) -> TrainResult:
    """Train ``model`` for the method's stages; checkpoint each epoch (and every N iterations).

    ``pipeline``: a :class:`~lrpose_bench.data.gpu_augment.DeviceAugmentPipeline` over the same
    instances as ``dataset`` (the fast input path: crop store + batched augmentation and targets on
    the device); ``None`` reads batches of ``dataset`` through a ``DataLoader`` (the reference path).
    Both draw the same augmentation for the same (seed, epoch, index) and visit the same order.
    """
    device = device or resolve_device(cfg.device)
    cell_dir = Path(cell_dir)
    checkpoint_path = cell_dir / "checkpoint.pt"
    log_path = cell_dir / "train_log.csv"
    stages = method.stages(cfg.epochs)
    total_epochs = sum(stage.epochs for stage in stages)
    ctx = distributed.context()  # world size 1 unless started by torchrun / --gpus N
    if pipeline is not None and len(pipeline) != len(dataset):
        raise ValueError(f"train: the fast pipeline holds {len(pipeline)} instances, the data set {len(dataset)}")
    model.to(device)
    use_cuda = device.type == "cuda"
    configure_backends(device, cfg.deterministic)
    if use_cuda and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    graphed = bool(cfg.cuda_graphs and use_cuda)
    if graphed and (ctx.is_distributed or cfg.compile):
        warnings.warn(
            "train.cuda_graphs is not combined with DistributedDataParallel or train.compile here; "
            "training without CUDA graphs",
            stacklevel=2,
        )
        graphed = False
    optimizer = adam_for(model, cfg.lr, cfg.weight_decay, device, graphed=graphed)
    # DDP (synchronised BN) and torch.compile wrap the module that runs the step; ``model`` stays the
    # plain module whose state_dict the checkpoints hold
    train_model = maybe_compile(distributed.wrap_model(model, ctx, device), cfg.compile)
    # a seeded permutation per epoch (world 1: all of it; N ranks: strided shards of the same one)
    sampler = distributed.ShardedEpochSampler(len(dataset), seed, ctx.rank, ctx.world_size)
    batch_size = effective_batch_size(cfg.batch_size, len(dataset), ctx.world_size)
    global_batch = batch_size * ctx.world_size  # train.batch_size is per process (per GPU)
    steps_per_epoch = len(dataset) // global_batch
    sync_every = _sync_every(cfg, device)

    sampler_now = {"seed": seed, "size": len(dataset), "batch_size": global_batch}
    # the caller holds the cell lock, so temp files here are leftovers of a killed atomic_write
    remove_stale_temp_files(cell_dir)

    start_epoch, start_iter, history, resumed_from = 0, 0, [], None
    partial: dict[str, Any] = {}
    if checkpoint_path.is_file():
        payload = load_checkpoint(checkpoint_path, expect={k: meta[k] for k in ("method", "backbone", "resolution")})
        _restore(checkpoint_path, payload, model, optimizer, sampler_now)
        if graphed:
            make_capturable(optimizer, device)
        start_epoch = int(payload["epoch"])
        start_iter = int(payload["iteration"])
        history = list(payload.get("history", []))
        partial = dict(payload.get("partial") or {}) if start_iter > 0 else {}
        resumed_from = start_epoch
        if payload["meta"].get("complete"):
            if ctx.is_writer:
                print(
                    f"   {cell_dir.name}: training finished earlier (epoch {total_epochs} of {total_epochs}); "
                    "evaluating from its checkpoint",
                    flush=True,
                )
            return TrainResult(total_epochs, 0, 0.0, 0.0, resumed_from, history, global_batch)
        if ctx.is_writer:
            where = f", iteration {start_iter + 1} of {steps_per_epoch}" if start_iter else ""
            print(
                f"   resuming {cell_dir.name} at epoch {start_epoch + 1} of {total_epochs}{where} "
                "(from its last checkpoint)",
                flush=True,
            )

    def checkpoint(
        epoch: int, iteration: int, complete: bool = False, sums: dict[str, float] | None = None, count: int = 0
    ) -> None:
        _check_finite_weights(model, epoch if iteration else epoch - 1, iteration or steps_per_epoch)
        if not ctx.is_writer:  # only rank 0 writes
            return
        save_checkpoint(
            checkpoint_path,
            {
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
            },
        )

    steps: dict[int, TrainStep] = {}  # one (graph) per stage: the loss differs between stages

    def step_for(stage: TrainingStage) -> TrainStep:
        if stage.index not in steps:
            steps[stage.index] = TrainStep(
                train_model,
                optimizer,
                lambda out, b, st=stage: method.loss(out, b, st),
                device=device,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                graphed=graphed,
            )
        return steps[stage.index]

    started = time.perf_counter()
    images_seen = 0
    iterations = 0
    for epoch in range(start_epoch, total_epochs):
        stage = stage_at(stages, epoch)
        lr = learning_rate(cfg, epoch)
        train_step = step_for(stage)
        train_step.set_lr(lr)
        first = start_iter if epoch == start_epoch else 0
        sampler.set_position(epoch, first * global_batch)
        if pipeline is not None:
            pipeline.set_epoch(epoch)
            batches: Iterator[Any] = pipeline.batches(sampler.indices(), batch_size)
            if epoch + 1 < total_epochs:  # plan the next epoch's augmentation while this one trains
                upcoming = distributed.ShardedEpochSampler(len(dataset), seed, ctx.rank, ctx.world_size)
                upcoming.set_position(epoch + 1, 0)
                pipeline.prefetch(epoch + 1, upcoming.indices())
        else:
            dataset.set_epoch(epoch)
            batches = _batches(
                DataLoader(
                    dataset,
                    batch_size=batch_size,
                    sampler=sampler,
                    drop_last=True,
                    num_workers=cfg.num_workers,
                    pin_memory=use_cuda,
                    persistent_workers=False,
                )
            )
        train_model.train()
        resumed_part = partial if epoch == start_epoch and first > 0 else {}
        meter = _LossMeter(device, resumed_part.get("sums") or {}, int(resumed_part.get("count", 0)))
        epoch_start = time.perf_counter()
        bar = tqdm(
            batches,
            total=steps_per_epoch - first,
            desc=f"train {stage.name} epoch {epoch + 1}/{total_epochs}",
            disable=not progress or not ctx.is_writer,
            leave=False,
        )
        for step, batch in enumerate(bar, start=first):
            batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
            meter.add(train_step.step(batch), step + 1)
            iterations += 1
            images_seen += global_batch
            last = step + 1 == steps_per_epoch
            ckpt_now = bool(cfg.checkpoint_every_iters and (step + 1) % cfg.checkpoint_every_iters == 0 and not last)
            if ckpt_now or last or len(meter.pending) >= sync_every:
                meter.check(epoch)
                if progress and ctx.is_writer:
                    bar.set_postfix(loss=f"{float(meter.sums['loss']) / max(meter.count, 1):.5f}")
            if on_iteration is not None:
                on_iteration(epoch, step + 1)
            if ckpt_now:
                checkpoint(epoch, step + 1, sums=meter.host_sums(), count=meter.count)
        meter.check(epoch)
        seconds = time.perf_counter() - epoch_start
        count = meter.count
        sums = meter.host_sums()
        row = {
            "epoch": epoch + 1,
            "stage": stage.name,
            "lr": lr,
            "iterations": count,
            "seconds": round(seconds, 3),
            "images_per_s": round(count * global_batch / max(seconds, 1e-9), 1),
        }
        # per-rank means of equal batches, averaged over ranks = the global batch mean
        row.update(distributed.all_reduce_mean({k: (sums[k] / max(count, 1)) for k in sums}))
        history.append(row)
        checkpoint(epoch + 1, 0, complete=epoch + 1 == total_epochs)
        if ctx.is_writer:
            _write_log(log_path, history)
    elapsed = time.perf_counter() - started
    return TrainResult(
        total_epochs, iterations, elapsed, images_seen / max(elapsed, 1e-9), resumed_from, history, global_batch
    )
