"""Collectives for code below the engine: identity on one process, torch.distributed otherwise.

A leaf module (it imports only torch and ``errors``), as detectron2's ``utils/comm.py``: methods and
baselines call it — CAL gathers the stage-2 displacements of every rank, SPSR+pose trains its SR
network on rank 0 only — without importing the engine that launches processes, shards samplers and
wraps models (``lrpose_bench/engine/distributed.py``, which re-exports these names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lrpose_bench.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank (GPU index on its node), backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes checkpoints, logs, predictions and reports."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def context() -> DistContext:
    """This process's :class:`DistContext` (initialised process group, else torchrun's environment, else 1 process)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
    return DistContext(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0), None)


def is_writer() -> bool:
    return context().is_writer


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, Tensor | float], device: torch.device | None = None) -> dict[str, float]:
    """Mean over ranks of scalar values (one collective; one host sync), e.g. per-epoch loss sums."""
    keys = list(values)  # insertion order: every rank builds the same dict in the same order
    if not keys:
        return {}
    stacked = torch.stack(
        [torch.as_tensor(values[k], dtype=torch.float64).to(device or "cpu").reshape(()) for k in keys]
    )
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if device is None and dist.get_backend() == "nccl":
            stacked = stacked.cuda()
        dist.all_reduce(stacked)
        stacked = stacked / dist.get_world_size()
    return dict(zip(keys, stacked.cpu().tolist()))


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` (equal shapes) concatenated along dim 0 in rank order, on every rank;
    ``tensor`` itself with one process. No gradient flows (CAL gathers detached displacements)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def world_size() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_to_writer(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere); ``[obj]`` with one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out
