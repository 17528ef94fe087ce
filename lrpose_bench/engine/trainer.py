"""The training loop shared by every method: Adam, step schedule, stages, checkpoint/resume.

The loop knows nothing about a method's name: it asks the method for its stages (CAL: Eq. 14 then
Eq. 15) and its loss. Data order and augmentation are functions of (seed, epoch, position), so a run
killed mid-epoch resumes from its last checkpoint and reaches the same weights as an uninterrupted
run.

Pieces, each with one job: :func:`train` sets up (``_prepare_run``), resumes (:class:`Checkpointer`)
and hands over to the epoch loop (``_EpochLoop``); :class:`EpochFeed` hides which input path feeds
the step (``epoch_batches(epoch)``: the reference ``DataLoader`` over ``PoseDataset``, or the crop
store with device-side augmentation); :class:`Checkpointer` saves the training state at each epoch's
end and every ``train.checkpoint_every_iters`` iterations, and restores it.

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

from lrpose_bench.comm import DistContext
from lrpose_bench.config import TrainConfig
from lrpose_bench.data.dataset import PoseDataset
from lrpose_bench.engine import distributed
from lrpose_bench.engine.accelerate import TrainStep, adam_for, configure_backends, make_capturable, maybe_compile
from lrpose_bench.engine.distributed import resolve_device
from lrpose_bench.engine.train_state import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from lrpose_bench.errors import CheckpointError, TrainingDiverged, UserError
from lrpose_bench.method import Method, TrainingStage
from lrpose_bench.store import atomic_write, remove_stale_temp_files

__all__ = [
    "CHECKPOINT_KEYS",
    "Checkpointer",
    "EpochFeed",
    "ResumePoint",
    "TrainResult",
    "effective_batch_size",
    "learning_rate",
    "resolve_device",
    "snapshot_epochs",
    "snapshot_path",
    "stage_at",
    "step_learning_rate",
    "train",
    "training_stages",
    "warmup_factor",
]


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: ``lr · γ^(#milestones ≤ epoch)`` with milestones scaled to the profile."""
    passed = sum(1 for m in cfg.milestones() if epoch >= m)
    return cfg.lr * (cfg.lr_gamma**passed)


def warmup_factor(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over the first ``train.warmup_iters`` optimisation steps, from
    ``train.warmup_start_factor`` to 1 (mmpose's ``LinearLR(start_factor, by_epoch=False, end=N)``
    before its ``MultiStepLR``): ``f(i) = s + (1 - s) · i / N`` for ``i < N``, then 1. ``step`` counts
    the steps of the whole training (0-based), so a resumed run continues the same ramp."""
    if cfg.warmup_iters <= 0 or step >= cfg.warmup_iters:
        return 1.0
    start = cfg.warmup_start_factor
    return start + (1.0 - start) * step / cfg.warmup_iters


def step_learning_rate(cfg: TrainConfig, epoch: int, iteration: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``iteration`` (0-based) of ``epoch``: the epoch's step-schedule rate
    (:func:`learning_rate`) times the warm-up factor (:func:`warmup_factor`)."""
    return learning_rate(cfg, epoch) * warmup_factor(cfg, epoch * steps_per_epoch + iteration)


def training_stages(method: Method, cfg: TrainConfig) -> list[TrainingStage]:
    """The method's stages, plus the budget-matched continuation (``train.match_budget``).

    CAL trains ``epochs`` (Eq. 14) + ``round(epochs · 40/210)`` (Eq. 15). A method whose stages sum
    to fewer epochs than ``epochs + max(1, round(epochs · matched_extra_ratio))`` (the same rule,
    :meth:`CalMethod.stages`) gets a stage ``matched_extra`` with its last stage's loss for the
    difference; the learning rate of those epochs is the schedule's (:func:`learning_rate`), the
    post-milestone rate CAL's stage 2 runs at. So "CAL − baseline" is not "more epochs"."""
    stages = method.stages(cfg.epochs)
    if not cfg.match_budget or cfg.epochs <= 0:
        return stages
    target = cfg.epochs + max(1, round(cfg.epochs * cfg.matched_extra_ratio))
    missing = target - sum(stage.epochs for stage in stages)
    if missing <= 0:
        return stages
    return [*stages, TrainingStage("matched_extra", missing, stages[-1].index)]


def snapshot_epochs(cfg: TrainConfig) -> dict[int, float]:
    """Epoch counts (1-based) after which the weights are kept for the budget curve → their fraction
    of ``train.epochs`` (``train.snapshot_fractions``; 1.0 = the base budget, CAL's stage 1)."""
    return {max(1, round(f * cfg.epochs)): f for f in cfg.snapshot_fractions}


def snapshot_path(cell_dir: Path, epochs: int) -> Path:
    return Path(cell_dir) / f"weights_epoch{epochs:04d}.pt"


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
    """What a :func:`train` call did (the cell's ``metrics.json`` timing reads it)."""

    epochs: int
    iterations: int
    seconds: float
    images_per_second: float
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the batch over all processes that trained (train.batch_size x world, unless clamped)
    global_batch: int | None = None
    #: seconds and CPU threads of the epoch a mid-epoch checkpoint cut, spent before that checkpoint
    #: in an earlier process (0.0 / 0 when the run did not resume mid-epoch)
    carried_seconds: float = 0.0
    carried_cpu_threads: int = 0


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
    """Rewrite ``train_log.csv`` whole and atomically (a resumed run's rows include the restored
    ones; a stage may add loss parts, so the header is the union of every row's keys)."""
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


#: entries every training checkpoint must hold (``engine.train_state`` says what each is)
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


@dataclass
class _Run:
    """What one :func:`train` call sets up once and every epoch reads."""

    model: nn.Module  # the plain module: checkpoints hold its state_dict
    train_model: nn.Module  # the module that runs the step (DDP and/or torch.compile around ``model``)
    method: Method
    cfg: TrainConfig
    device: torch.device
    ctx: DistContext
    optimizer: torch.optim.Optimizer
    stages: list[TrainingStage]
    graphed: bool  # the step replays a CUDA graph
    batch_size: int  # per process
    global_batch: int  # over all processes (train.batch_size x world, unless clamped)
    steps_per_epoch: int
    sync_every: int  # steps between host synchronisations
    steps: dict[int, TrainStep] = field(default_factory=dict)

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def step_for(self, stage: TrainingStage) -> TrainStep:
        """The stage's training step, built on first use: one per stage (and one CUDA graph per
        stage when graphed), because the loss differs between stages."""
        if stage.index not in self.steps:
            self.steps[stage.index] = TrainStep(
                self.train_model,
                self.optimizer,
                lambda out, b, st=stage: self.method.loss(out, b, st),
                device=self.device,
                amp=self.cfg.amp,
                channels_last=self.cfg.channels_last,
                graphed=self.graphed,
            )
        return self.steps[stage.index]


def _use_cuda_graphs(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> bool:
    """``train.cuda_graphs`` on a CUDA device; not combined with DDP or torch.compile (one warning
    then, so the flag is never silently ignored)."""
    graphed = bool(cfg.cuda_graphs and device.type == "cuda")
    if graphed and (ctx.is_distributed or cfg.compile):
        warnings.warn(
            "train.cuda_graphs is not combined with DistributedDataParallel or train.compile here; "
            "training without CUDA graphs",
            stacklevel=4,  # the caller of train()
        )
        return False
    return graphed


def _prepare_run(model: nn.Module, method: Method, instances: int, cfg: TrainConfig, device: torch.device) -> _Run:
    """Put ``model`` on the device and build what trains it: optimizer, wrapped module, batch sizes."""
    ctx = distributed.context()  # world size 1 unless started by torchrun / --gpus N
    stages = training_stages(method, cfg)
    model.to(device)
    configure_backends(device, cfg.deterministic)
    if cfg.channels_last:  # NHWC: cuDNN's and oneDNN's preferred convolution layout
        model.to(memory_format=torch.channels_last)
    graphed = _use_cuda_graphs(cfg, ctx, device)
    optimizer = adam_for(model, cfg.lr, cfg.weight_decay, device, graphed=graphed, fused=cfg.fused_adam)
    # DDP (synchronised BN) and torch.compile wrap the module that runs the step; ``model`` stays the
    # plain module whose state_dict the checkpoints hold
    train_model = maybe_compile(distributed.wrap_model(model, ctx, device), cfg.compile)
    batch_size = effective_batch_size(cfg.batch_size, instances, ctx.world_size)
    global_batch = batch_size * ctx.world_size  # train.batch_size is per process (per GPU)
    return _Run(
        model=model,
        train_model=train_model,
        method=method,
        cfg=cfg,
        device=device,
        ctx=ctx,
        optimizer=optimizer,
        stages=stages,
        graphed=graphed,
        batch_size=batch_size,
        global_batch=global_batch,
        steps_per_epoch=instances // global_batch,
        sync_every=_sync_every(cfg, device),
    )


@dataclass
class ResumePoint:
    """Where a :func:`train` call starts: from scratch, or where a checkpoint left off."""

    epoch: int = 0
    iteration: int = 0  # the next batch of ``epoch`` to run
    history: list[dict[str, Any]] = field(default_factory=list)  # train_log.csv rows so far
    partial: dict[str, Any] = field(default_factory=dict)  # loss sums and seconds of the half-finished ``epoch``
    resumed_from: int | None = None  # the epoch a checkpoint was loaded at (None: fresh start)
    complete: bool = False  # the checkpoint is of a finished training

    def first_iteration(self, epoch: int) -> int:
        """The batch ``epoch`` starts at: mid-epoch for the resumed epoch, else 0."""
        return self.iteration if epoch == self.epoch else 0

    def partial_sums(self, epoch: int) -> dict[str, Any]:
        """The saved loss sums ``epoch`` continues from (only the epoch a mid-epoch checkpoint cut)."""
        return self.partial if epoch == self.epoch and self.iteration > 0 else {}

    def carried_seconds(self) -> float:
        """Seconds the cut epoch ran before its mid-epoch checkpoint (0.0 for checkpoints written
        before they recorded it, and at epoch boundaries)."""
        return float(self.partial.get("seconds", 0.0)) if self.iteration > 0 else 0.0

    def carried_cpu_threads(self) -> int:
        """CPU threads that first part ran on (0: unknown)."""
        return int(self.partial.get("cpu_threads", 0)) if self.iteration > 0 else 0


class Checkpointer:
    """Saves and restores one cell's training state (``checkpoint.pt``; what it holds:
    :mod:`lrpose_bench.engine.train_state`).

    Saved at every epoch's end and every ``train.checkpoint_every_iters`` iterations inside an epoch.
    Every rank checks its weights are finite first (so a bad step never replaces the last good
    checkpoint), and only the writer (rank 0) writes."""

    def __init__(self, path: Path, run: _Run, meta: dict[str, Any], sampler_now: dict[str, int]) -> None:
        self.path = path
        self.run = run
        self.meta = meta  # the cell's identity (method, backbone, resolution, ...), checked on resume
        self.sampler_now = sampler_now  # seed, data-set size, global batch of this run

    def resume(self) -> ResumePoint:
        """Load a saved state into the model, optimizer and RNGs; a fresh start when there is none.
        A checkpoint of another cell or one that does not fit is a :class:`CheckpointError`."""
        if not self.path.is_file():
            return ResumePoint()
        run = self.run
        payload = load_checkpoint(self.path, expect={k: self.meta[k] for k in ("method", "backbone", "resolution")})
        _restore(self.path, payload, run.model, run.optimizer, self.sampler_now)
        if run.graphed:
            make_capturable(run.optimizer, run.device)
        iteration = int(payload["iteration"])
        return ResumePoint(
            epoch=int(payload["epoch"]),
            iteration=iteration,
            history=list(payload.get("history", [])),
            partial=dict(payload.get("partial") or {}) if iteration > 0 else {},
            resumed_from=int(payload["epoch"]),
            complete=bool(payload["meta"].get("complete")),
        )

    def due(self, iteration: int) -> bool:
        """Whether a mid-epoch checkpoint falls after ``iteration`` (1-based); the epoch's last
        iteration is not one: the end of the epoch saves anyway."""
        every = self.run.cfg.checkpoint_every_iters
        return bool(every and iteration % every == 0 and iteration != self.run.steps_per_epoch)

    def save(
        self,
        epoch: int,
        iteration: int,
        history: list[dict[str, Any]],
        *,
        complete: bool = False,
        sums: dict[str, float] | None = None,
        count: int = 0,
        seconds: float = 0.0,
    ) -> None:
        """Save the state before batch ``iteration`` of ``epoch`` (``iteration`` 0: ``epoch`` starts
        next); ``sums``/``count``/``seconds``: the loss sums and time of the epoch's first part, for
        its log row and the cell's whole training time (a resumed run adds them, loses nothing)."""
        run = self.run
        _check_finite_weights(run.model, epoch if iteration else epoch - 1, iteration or run.steps_per_epoch)
        if not run.ctx.is_writer:  # only rank 0 writes
            return
        total = run.total_epochs
        save_checkpoint(
            self.path,
            {
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "iteration": iteration,
                "stage": stage_at(run.stages, min(epoch, total - 1)).index,
                "sampler": {**self.sampler_now, "epoch": epoch, "position": iteration * run.global_batch},
                "partial": (
                    {
                        "sums": dict(sums or {}),
                        "count": count,
                        "seconds": seconds,
                        "cpu_threads": cpu_threads(run.ctx.world_size),
                    }
                    if iteration
                    else {}
                ),
                "history": history,
                "meta": {**self.meta, "complete": complete, "total_epochs": total},
            },
        )


class EpochFeed:
    """The batches that feed the training step, whichever input path makes them.

    ``pipeline``: a :class:`~lrpose_bench.data.gpu_augment.DeviceAugmentPipeline` over the same
    instances as ``dataset`` (the fast path: crop store + batched augmentation and targets on the
    device); ``None``: batches of ``dataset`` through a ``DataLoader`` (the reference path). Both
    follow the same seeded order (:class:`~lrpose_bench.engine.distributed.ShardedEpochSampler`)
    and draw the same augmentation for the same (seed, epoch, index)."""

    def __init__(self, dataset: PoseDataset, pipeline: Any | None, run: _Run, seed: int) -> None:
        self.dataset = dataset
        self.pipeline = pipeline
        self.run = run
        self.seed = seed
        # a seeded permutation per epoch (world 1: all of it; N ranks: strided shards of the same one)
        self.sampler = self._sampler()

    def _sampler(self) -> distributed.ShardedEpochSampler:
        return distributed.ShardedEpochSampler(len(self.dataset), self.seed, self.run.ctx.rank, self.run.ctx.world_size)

    def epoch_batches(self, epoch: int, first: int = 0) -> Iterator[Any]:
        """This rank's batches of ``epoch`` from batch ``first`` on (a resumed epoch skips the
        batches it ran before the checkpoint)."""
        self.sampler.set_position(epoch, first * self.run.global_batch)
        if self.pipeline is not None:
            return self._device_batches(epoch)
        return self._loader_batches(epoch)

    def _device_batches(self, epoch: int) -> Iterator[Any]:
        """Fast path; the next epoch's augmentation is planned while this one trains."""
        self.pipeline.set_epoch(epoch)
        batches = self.pipeline.batches(self.sampler.indices(), self.run.batch_size)
        if epoch + 1 < self.run.total_epochs:
            upcoming = self._sampler()
            upcoming.set_position(epoch + 1, 0)
            self.pipeline.prefetch(epoch + 1, upcoming.indices())
        return batches

    def _loader_batches(self, epoch: int) -> Iterator[Any]:
        """Reference path: ``PoseDataset`` items collated by a ``DataLoader`` (a loader worker's
        user error comes back as its one line)."""
        self.dataset.set_epoch(epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.run.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.run.cfg.num_workers,
            pin_memory=self.run.device.type == "cuda",
            persistent_workers=False,
        )
        return _batches(loader)


class _EpochLoop:
    """The epochs of one :func:`train` call: each runs its steps, logs its row and is checkpointed."""

    def __init__(
        self,
        run: _Run,
        feed: EpochFeed,
        checkpointer: Checkpointer,
        log_path: Path,
        progress: bool,
        on_iteration: Callable[[int, int], None] | None,
    ) -> None:
        self.run = run
        self.feed = feed
        self.checkpointer = checkpointer
        self.log_path = log_path
        self.progress = progress
        self.on_iteration = on_iteration
        self._epoch_start = time.perf_counter()  # the running epoch's clock (mid-epoch checkpoints save it)

    def run_from(self, start: ResumePoint) -> TrainResult:
        """Train epochs ``start.epoch`` to the last; returns the timing and the full history."""
        run, history = self.run, start.history
        started = time.perf_counter()
        iterations = 0
        for epoch in range(start.epoch, run.total_epochs):
            stage = stage_at(run.stages, epoch)
            lr = learning_rate(run.cfg, epoch)
            meter, steps, seconds = self._train_epoch(epoch, stage, lr, start, history)
            iterations += steps
            history.append(self._log_row(epoch, stage, lr, meter, seconds))
            self._keep_snapshot(epoch + 1)
            self.checkpointer.save(epoch + 1, 0, history, complete=epoch + 1 == run.total_epochs)
            if run.ctx.is_writer:
                _write_log(self.log_path, history)
        elapsed = time.perf_counter() - started
        images_per_second = iterations * run.global_batch / max(elapsed, 1e-9)
        return TrainResult(
            run.total_epochs,
            iterations,
            elapsed,
            images_per_second,
            start.resumed_from,
            history,
            run.global_batch,
            carried_seconds=start.carried_seconds(),
            carried_cpu_threads=start.carried_cpu_threads(),
        )

    def _keep_snapshot(self, epochs_done: int) -> None:
        """The weights after ``epochs_done`` epochs when that is a budget-curve point (written before
        the epoch's checkpoint, so a resumed run has every snapshot it has passed)."""
        run = self.run
        if epochs_done in snapshot_epochs(run.cfg) and epochs_done < run.total_epochs and run.ctx.is_writer:
            path = snapshot_path(self.log_path.parent, epochs_done)
            state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
            atomic_write(path, lambda tmp: torch.save(state, tmp))

    def _train_epoch(
        self, epoch: int, stage: TrainingStage, lr: float, start: ResumePoint, history: list[dict[str, Any]]
    ) -> tuple[_LossMeter, int, float]:
        """The steps of one epoch; returns its loss meter, the steps run and the seconds taken."""
        run = self.run
        train_step = run.step_for(stage)
        train_step.set_lr(lr)
        first = start.first_iteration(epoch)
        batches = self.feed.epoch_batches(epoch, first)
        run.train_model.train()
        resumed = start.partial_sums(epoch)
        meter = _LossMeter(run.device, resumed.get("sums") or {}, int(resumed.get("count", 0)))
        # the epoch's clock starts where the cut epoch's earlier part left it, so its log row (and
        # the cell's training time) counts the whole epoch
        epoch_start = time.perf_counter() - float(resumed.get("seconds", 0.0))
        self._epoch_start = epoch_start
        bar = tqdm(
            batches,
            total=run.steps_per_epoch - first,
            desc=f"train {stage.name} epoch {epoch + 1}/{run.total_epochs}",
            disable=not self.progress or not run.ctx.is_writer,
            leave=False,
        )
        steps = 0
        warming = run.cfg.warmup_iters > epoch * run.steps_per_epoch + first
        for step, batch in enumerate(bar, start=first):
            if warming:  # per-step rates only while the warm-up lasts
                train_step.set_lr(step_learning_rate(run.cfg, epoch, step, run.steps_per_epoch))
            batch = {k: (v.to(run.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
            meter.add(train_step.step(batch), step + 1)
            steps += 1
            self._after_step(epoch, step + 1, meter, bar, history)
        meter.check(epoch)
        return meter, steps, time.perf_counter() - epoch_start

    def _after_step(self, epoch: int, iteration: int, meter: _LossMeter, bar: Any, history: list[Any]) -> None:
        """Host sync (loss check, progress bar) when due, the caller's hook, a mid-epoch checkpoint."""
        run = self.run
        checkpoint_now = self.checkpointer.due(iteration)
        if checkpoint_now or iteration == run.steps_per_epoch or len(meter.pending) >= run.sync_every:
            meter.check(epoch)
            if self.progress and run.ctx.is_writer:
                bar.set_postfix(loss=f"{float(meter.sums['loss']) / max(meter.count, 1):.5f}")
        if self.on_iteration is not None:
            self.on_iteration(epoch, iteration)
        if checkpoint_now:
            seconds = time.perf_counter() - self._epoch_start
            self.checkpointer.save(
                epoch, iteration, history, sums=meter.host_sums(), count=meter.count, seconds=seconds
            )

    def _log_row(
        self, epoch: int, stage: TrainingStage, lr: float, meter: _LossMeter, seconds: float
    ) -> dict[str, Any]:
        """The epoch's ``train_log.csv`` row: schedule, speed and the mean of each loss part."""
        count, sums = meter.count, meter.host_sums()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "stage": stage.name,
            "lr": lr,
            "iterations": count,
            "seconds": round(seconds, 3),
            "images_per_s": round(count * self.run.global_batch / max(seconds, 1e-9), 1),
            "cpu_threads": cpu_threads(self.run.ctx.world_size),
        }
        # per-rank means of equal batches, averaged over ranks = the global batch mean
        row.update(distributed.all_reduce_mean({k: (sums[k] / max(count, 1)) for k in sums}))
        return row


def _announce_start(cell_name: str, start: ResumePoint, run: _Run) -> None:
    """One line when a checkpoint is picked up: finished already, or where training resumes."""
    if not run.ctx.is_writer or start.resumed_from is None:
        return
    total = run.total_epochs
    if start.complete:
        print(
            f"   {cell_name}: training finished earlier (epoch {total} of {total}); evaluating from its checkpoint",
            flush=True,
        )
        return
    where = f", iteration {start.iteration + 1} of {run.steps_per_epoch}" if start.iteration else ""
    print(
        f"   resuming {cell_name} at epoch {start.epoch + 1} of {total}{where} (from its last checkpoint)",
        flush=True,
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
    pipeline: Any | None = None,
) -> TrainResult:
    """Train ``model`` for the method's stages; checkpoint each epoch (and every N iterations).

    ``pipeline``: a :class:`~lrpose_bench.data.gpu_augment.DeviceAugmentPipeline` over the same
    instances as ``dataset`` (the fast input path: crop store + batched augmentation and targets on
    the device); ``None`` reads batches of ``dataset`` through a ``DataLoader`` (the reference path).
    Both draw the same augmentation for the same (seed, epoch, index) and visit the same order
    (:class:`EpochFeed`). A finished checkpoint in ``cell_dir`` is loaded and nothing trains.
    """
    device = device or resolve_device(cfg.device)
    cell_dir = Path(cell_dir)
    if pipeline is not None and len(pipeline) != len(dataset):
        raise ValueError(f"train: the fast pipeline holds {len(pipeline)} instances, the data set {len(dataset)}")
    run = _prepare_run(model, method, len(dataset), cfg, device)
    sampler_now = {"seed": seed, "size": len(dataset), "batch_size": run.global_batch}
    # the caller holds the cell lock, so temp files here are leftovers of a killed atomic_write
    remove_stale_temp_files(cell_dir)
    checkpointer = Checkpointer(cell_dir / "checkpoint.pt", run, meta, sampler_now)
    start = checkpointer.resume()
    _announce_start(cell_dir.name, start, run)
    if start.complete:
        return TrainResult(run.total_epochs, 0, 0.0, 0.0, start.resumed_from, start.history, run.global_batch)
    feed = EpochFeed(dataset, pipeline, run, seed)
    loop = _EpochLoop(run, feed, checkpointer, cell_dir / "train_log.csv", progress, on_iteration)
    try:
        return loop.run_from(start)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{error}{precision_hint(run)}") from error


def cpu_threads(world_size: int) -> int:
    """The CPU threads training runs on, all processes together: torch's intra-op threads × world
    size. Why: the budget table prices training in CPU-minutes (seconds × these threads); recorded
    with each epoch, because a cell may resume, or be re-evaluated, in a process with other threads."""
    return torch.get_num_threads() * world_size


def precision_hint(run: _Run) -> str:
    """The fix to name after a divergence when a step ran under bf16 autocast: train in fp32.

    Why: bf16 keeps 8 mantissa bits, and a BatchNorm that normalises very few values per channel
    (a batch of 4 on HRNet's 1-pixel 1/32 branch at inputs under 32 px) can get a near-zero batch
    variance and a gradient of ~1e34. Measured on the 2-core AVX-512-BF16 Xeon (hrnet-w8, batch 4,
    random input, 20 Adam steps): NaN at 64x8 and 16x12 under bf16, finite at 32x24 and 64x48; the
    same cells in fp32 (``train.amp=false``) train at 8x8 and 16x12 (hrnet, udp, cal; a 6-image fixture)."""
    if not any(step.amp for step in run.steps.values()):
        return ""
    return "; it trained under bf16 autocast: rerun with --set train.amp=false to train in fp32"
