"""Data-parallel training on several processes (``torchrun``), keeping the run's determinism.

What the trainer needs, as small pieces (integration: a few lines in ``trainer.train``):

* :func:`init_from_env` / :func:`context`: rank and world size from ``torchrun``'s environment
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); NCCL on CUDA, gloo
  on CPU. A plain ``python -m lrpose_bench`` is world size 1 and none of this changes anything.
* :func:`resolve_device`: the device ``train.device`` names (checked against this machine), or
  this rank's ``cuda:LOCAL_RANK`` under DDP; the one device resolver of the engine and the CLI.
* :class:`ShardedEpochSampler`: every rank draws the *same* seeded permutation of (seed, epoch)
  as a single process would and takes a
  strided slice ``perm[start:][rank::world]``; with a per-rank batch ``b`` the union of the ranks'
  t-th batches is exactly the single-process t-th batch of size ``world·b``, so data order and
  augmentation stay a function of (seed, epoch, position) and a mid-epoch resume works with the
  global position.
* :func:`wrap_model`: ``DistributedDataParallel`` with synchronised batch norm, so the statistics are
  those of the global batch (``nn.SyncBatchNorm`` on CUDA; :class:`AllReduceBatchNorm2d`, the same
  computation over differentiable all-reduces, on CPU/gloo where ``nn.SyncBatchNorm`` refuses to
  run). Every method's loss is a plain mean over the batch, so DDP's gradient average over equal
  per-rank batches is the gradient of the global-batch loss: a 2-process run reproduces the
  1-process run with twice the batch up to float summation order (``tests/test_distributed.py``).
  CAL's stage-2 MGM gathers the displacements of every rank (:func:`all_gather_cat`) and fits one
  mixture to the global batch, as one process would.
* :func:`gather_to_writer`, :func:`all_reduce_mean`, :func:`is_writer`, :func:`barrier`: metrics
  gathered on rank 0, and only rank 0 writes files.
* :func:`torchrun_command` / :func:`relaunch_with_torchrun`: the ``--gpus N`` convenience re-executes
  the same command under ``python -m torch.distributed.run --nproc-per-node N``.

:func:`launch_local` spawns N local CPU processes (gloo) running a function, for the tests that
check the trainer under DDP against one process.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from lrpose_bench import comm as _comm
from lrpose_bench.comm import (  # noqa: F401  (re-exported: the engine's callers use them from here)
    DistContext,
    _env_int,
    all_gather_cat,
    all_reduce_mean,
    barrier,
    context,
    gather_to_writer,
    is_writer,
)
from lrpose_bench.errors import ConfigError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: re-exported (a plain name: parameters called ``world_size`` below shadow it)
world_size = _comm.world_size


# ---------------------------------------------------------------------------------- context
def under_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` / ``torch.distributed.run`` (or launch_local)."""
    return all(key in os.environ for key in ENV_KEYS)


def init_from_env(device: str = "auto", timeout_s: float = 1800.0, init_method: str | None = None) -> DistContext:
    """Join the process group torchrun describes (no-op for a single process); returns the context.

    Backend: NCCL when the run uses CUDA, gloo otherwise. On CUDA each process uses GPU ``LOCAL_RANK``.
    """
    ctx = context()
    if not ctx.is_distributed or dist.is_initialized():
        return ctx
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run with one process")
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {ctx.local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                "lower --nproc-per-node / --gpus"
            )
        torch.cuda.set_device(ctx.local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(
        backend,
        init_method=init_method,
        timeout=datetime.timedelta(seconds=timeout_s),
        **({"rank": ctx.rank, "world_size": ctx.world_size} if init_method else {}),
    )
    return context()


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """The torch device for ``train.device`` (``--device``), the one place a device name is read.

    Under DDP (``ctx`` distributed) each rank trains on ``cuda:LOCAL_RANK`` (or the CPU), whatever
    index the name carries. Otherwise a device this machine lacks is one :class:`ConfigError` line,
    raised when the run starts (the CLI asks before any work) rather than a torch traceback from
    inside a cell. The schema has already checked the name's form."""
    if ctx is not None and ctx.is_distributed:
        use_cuda = torch.cuda.is_available() if name == "auto" else name.startswith("cuda")
        return torch.device(f"cuda:{ctx.local_rank}") if use_cuda else torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        _check_cuda_device(name)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(
            f"train.device {name!r} (--device): Apple's MPS is not available on this machine; use --device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} (--device) is not a device; use auto, cpu, cuda or cuda:N") from None


def _check_cuda_device(name: str) -> None:
    """Refuse ``cuda``/``cuda:N`` where no such GPU is visible (why, in the message)."""
    if not torch.cuda.is_available():
        why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no NVIDIA GPU or driver found"
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


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------- sampler
class ShardedEpochSampler(Sampler[int]):
    """Rank ``rank``'s strided slice of the single-process epoch permutation (see module docstring).

    ``set_position(epoch, start)`` takes the *global* position (iterations × world × per-rank batch).
    With ``world_size == 1`` it yields the whole permutation (the single-process order).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world size {world_size}")
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def permutation(self) -> list[int]:
        # one formula for every world size, so resuming with another N keeps the data order
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def indices(self) -> list[int]:
        rest = self.permutation()[self.start :]
        usable = len(rest) - len(rest) % self.world_size  # equal shards: every rank steps together
        return rest[:usable][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.size - self.start) // self.world_size


# ----------------------------------------------------------------------------- batch norm
class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the global batch of all ranks, for backends where ``nn.SyncBatchNorm`` does not
    run (CPU/gloo). Statistics: two differentiable all-reduces (count and sum, then the sum of squared
    deviations), so gradients flow to every rank's inputs as in ``nn.SyncBatchNorm``; running
    statistics are updated with the global mean and unbiased variance, as a single process would."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        first = all_reduce(torch.cat([x.sum(dims), count]))
        total = first[-1]
        mean = first[:-1] / total
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce((centred * centred).sum(dims)) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``BatchNorm2d`` with its synchronised twin, sharing the parameters and buffers
    (an optimizer built before the conversion still holds the right tensors; state-dict keys unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm2d):
        new = AllReduceBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        replaced = convert_batchnorm(child, device)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def wrap_model(
    model: nn.Module, ctx: DistContext | None = None, device: torch.device | None = None, sync_bn: bool = True
) -> nn.Module:
    """``model`` for training on this rank: unchanged with one process; else batch norm synchronised
    (in place) and wrapped in ``DistributedDataParallel``. Keep the unwrapped ``model`` for
    ``state_dict()`` (checkpoints stay loadable without DDP's ``module.`` prefix)."""
    ctx = ctx or context()
    if not ctx.is_distributed:
        return model
    device = device or next(model.parameters()).device
    if sync_bn:
        converted = convert_batchnorm(model, device)
        if converted is not model:
            raise ConfigError("wrap_model: the model's root module is a BatchNorm layer; wrap it in a container")
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or compiled) wrapper."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


# --------------------------------------------------------------------------- collectives
# ---------------------------------------------------------------------------- evaluation
class ShardView(Dataset):
    """Rank ``rank``'s strided share of an evaluation ``PoseDataset`` (items keep their global ``index``)."""

    def __init__(self, dataset: Any, rank: int, world_size: int) -> None:
        self.base = dataset
        self.positions = list(range(rank, len(dataset), world_size))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.positions[i]]

    def __getattr__(self, name: str) -> Any:  # split, resolution, method, ... of the base dataset
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def merge_predictions(parts: Sequence[Any], world_size: int) -> Any:
    """Interleave the ranks' :class:`~lrpose_bench.engine.evaluator.Predictions` back into dataset order."""
    from dataclasses import fields

    first = parts[0]
    total = sum(len(p.image_ids) for p in parts)
    merged = {}
    for f in fields(first):
        column = np.empty((total, *getattr(first, f.name).shape[1:]), dtype=getattr(first, f.name).dtype)
        for rank, part in enumerate(parts):
            column[rank::world_size] = getattr(part, f.name)
        merged[f.name] = column
    return type(first)(**merged)


def predict_sharded(model: nn.Module, method: Any, dataset: Any, ctx: DistContext | None = None, **kwargs: Any) -> Any:
    """``evaluator.predict`` on this rank's share; the merged :class:`Predictions` on rank 0, ``None`` elsewhere."""
    from lrpose_bench.engine.evaluator import predict

    ctx = ctx or context()
    if not ctx.is_distributed:
        return predict(unwrap(model), method, dataset, **kwargs)
    part = predict(unwrap(model), method, ShardView(dataset, ctx.rank, ctx.world_size), **kwargs)
    parts = gather_to_writer(part)
    return merge_predictions(parts, ctx.world_size) if parts is not None else None


# ------------------------------------------------------------------------------- launching
def _local_entry(rank: int, world_size: int, folder: str, threads: int) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size)}
    )
    torch.set_num_threads(threads)
    fn, args, kwargs = torch.load(Path(folder) / "job.pt", weights_only=False)
    init_from_env("cpu", init_method=(Path(folder) / "rendezvous").as_uri())  # a file store: no port to race for
    try:
        result = fn(*args, **kwargs)
        if rank == 0:
            torch.save(result, Path(folder) / "result.pt")
    finally:
        shutdown()


def launch_local(world_size: int, fn: Callable[..., Any], *args: Any, threads: int = 1, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` local CPU processes (gloo); rank 0's result.

    For tests and CPU experiments; GPU runs go through ``torchrun``. ``fn`` and its arguments must be
    picklable (spawned processes).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="lrpose-ddp-") as tmp:
        # the job goes through a file, not mp's pickler: torch.multiprocessing would hand every rank the
        # *same* shared-memory tensors, and each rank's optimizer step would then update them again
        torch.save((fn, args, kwargs), Path(tmp) / "job.pt")
        mp.start_processes(
            _local_entry, args=(world_size, tmp, threads), nprocs=world_size, join=True, start_method="spawn"
        )
        return torch.load(Path(tmp) / "result.pt", weights_only=False)


def torchrun_command(nproc: int, argv: Sequence[str], *, nnodes: int = 1) -> list[str]:
    """``python -m torch.distributed.run --nproc-per-node N -m lrpose_bench ARGV`` without ``--gpus``.

    Single node: ``--standalone`` (local rendezvous on a free port). Multi-node runs call torchrun
    themselves with ``--nnodes``/``--rdzv-endpoint`` (see the docs' SLURM example).
    """
    if nproc < 1:
        raise ConfigError(f"--gpus must be >= 1, got {nproc}")
    rest: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--gpus":
            skip = True
            continue
        if item.startswith("--gpus="):
            continue
        rest.append(item)
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1:
        launcher.append("--standalone")
    return [*launcher, "-m", "lrpose_bench", *rest]


def relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Re-execute this command under torchrun with ``nproc`` processes (the ``--gpus N`` option).

    Returns the launcher's exit status; a no-op signal (``-1``) when already under torchrun or N == 1.
    """
    import subprocess

    if nproc <= 1 or under_torchrun():
        return -1
    if torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--gpus {nproc} but only {torch.cuda.device_count()} GPU(s) are visible")
    return subprocess.call(torchrun_command(nproc, argv))
