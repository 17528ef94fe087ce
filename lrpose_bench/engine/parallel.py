"""Cells side by side on a CPU: ``train.parallel_cells`` worker processes, each running whole cells
on its share of the cores.

Why: a small network's step does not scale across cores. Measured on the 2-core EPYC (hrnet-w8,
64×48, batch 128, bf16 + NHWC, model step alone): one process on 2 threads 950-1000 img/s, one on
1 thread 640; two 1-thread processes side by side 610-660 each, ~1,300 img/s together, 1.3× the
2-thread process. So a run with several cells trains two at a time, one thread each.

Each worker is a fresh (``spawn``) interpreter that loads the data bundle once (SynthPose and the
crop store are already on disk, written by the parent or the first worker; both writes are atomic)
and runs :func:`~lrpose_bench.engine.cell.run_cell`, the same function a sequential run calls, with
``train.threads`` set to its share. A cell's numbers depend on its thread count (float sums in
another order: statistically another seed), not on the process it runs in: with the same
``train.threads`` a cell trained in a worker is bit-identical to one trained in the parent (tested).
Skipped, resumed and failed cells behave as in a sequential run; Ctrl-C reaches every worker, whose
cells are marked interrupted and resume on the next run.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from lrpose_bench.config import BenchConfig
from lrpose_bench.engine.cell import CellResult, CellSpec

#: what a worker process holds between its cells: (configuration, data bundle, image cache, run folder)
_WORKER: dict[str, Any] = {}


def threads_per_cell(cfg: BenchConfig, jobs: int) -> int:
    """``train.threads`` when set, else an equal share of this machine's cores (at least 1)."""
    if cfg.train.threads > 0:
        return cfg.train.threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def cell_jobs(cfg: BenchConfig, cells: int, world_size: int) -> int:
    """Worker processes for ``cells`` cells: ``train.parallel_cells`` capped by the cell count; 1 (the
    sequential loop in this process) under DDP, on a GPU, or for a single cell."""
    import torch

    name = cfg.train.device
    on_gpu = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if world_size > 1 or cells <= 1 or on_gpu:
        return 1
    return max(1, min(cfg.train.parallel_cells, cells))


def _init_worker(cfg: BenchConfig, out: Path) -> None:
    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.sources import load_data

    _WORKER.update(cfg=cfg, bundle=load_data(cfg.data, progress=False), cache=ImageCache(cfg.data.image_cache_mb))
    _WORKER["out"] = out


def _run_in_worker(spec: CellSpec, force: bool) -> CellResult:
    from lrpose_bench.engine.cell import run_cell

    print(f"== cell {spec.cell_id} (worker {os.getpid()})", flush=True)
    return run_cell(
        spec,
        _WORKER["cfg"],
        _WORKER["bundle"],
        _WORKER["out"],
        progress=False,
        image_cache=_WORKER["cache"],
        force=force,
    )


def run_cells_parallel(
    specs: list[CellSpec], cfg: BenchConfig, out: Path, jobs: int, force: bool
) -> Iterator[tuple[CellSpec, CellResult]]:
    """Run ``specs`` on ``jobs`` worker processes; yields ``(spec, result)`` as cells finish. A worker's
    error (a bad input, a full disk) is raised here, after the other running cells have stopped."""
    worker_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads_per_cell(cfg, jobs)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(worker_cfg, out)) as pool:
        pending: dict[Future, CellSpec] = {pool.submit(_run_in_worker, spec, force): spec for spec in specs}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    spec = pending.pop(future)
                    yield spec, future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
