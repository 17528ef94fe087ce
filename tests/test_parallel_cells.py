"""Cells side by side (``train.parallel_cells``, engine/parallel.py): a cell trained in a worker
process is the cell trained in the parent, bit for bit, at the same thread count; the run records
what each cell ran with; a finished run is skipped by a parallel rerun as by a sequential one."""

from __future__ import annotations

import json

import torch

from _train_child import make_coco_layout
from lrpose_bench.cli import main
from lrpose_bench.config import load_config
from lrpose_bench.engine.parallel import cell_jobs, threads_per_cell

CELLS = ("hrnet__hrnet-w8__64x48__s0", "udp__hrnet-w8__64x48__s0")


def _run_args(coco, out, *extra):
    return [
        "run", "--methods", "hrnet,udp", "--res", "64x48", "--data", "coco", "--coco-root", str(coco),
        "--out", str(out), "--backbone", "hrnet-w8", "--no-progress", "--no-report",
        "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "train.device=cpu",
        "--set", "train.snapshot_fractions=[1.0]", *extra,
    ]  # fmt: skip


def test_parallel_cells_are_the_sequential_cells_bit_for_bit(tmp_path, capsys):
    coco = make_coco_layout(tmp_path / "coco", train_images=6, val_images=2)
    one_thread = ("--set", "train.threads=1")
    assert main(_run_args(coco, tmp_path / "seq", *one_thread)) == 0
    assert main(_run_args(coco, tmp_path / "par", *one_thread, "--set", "train.parallel_cells=2")) == 0
    assert "training 2 cells at a time, 1 thread(s) each" in capsys.readouterr().out
    for cell in CELLS:
        seq = json.loads((tmp_path / "seq" / cell / "metrics.json").read_text())
        par = json.loads((tmp_path / "par" / cell / "metrics.json").read_text())
        assert par["metrics"] == seq["metrics"] and par["errors"] == seq["errors"]
        assert par["environment"]["threads"] == seq["environment"]["threads"] == 1
        a = torch.load(tmp_path / "seq" / cell / "checkpoint.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / "par" / cell / "checkpoint.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a rerun with another layout finds every cell finished: parallel_cells is not part of the result
    assert main(_run_args(coco, tmp_path / "par", *one_thread)) == 0


def test_the_share_of_the_cores_and_when_cells_run_side_by_side(monkeypatch):
    cfg = load_config("quick", overrides={"train.parallel_cells": 2, "train.threads": 0, "train.device": "cpu"})
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert threads_per_cell(cfg, 2) == 4 and threads_per_cell(cfg, 16) == 1
    cfg.train.threads = 3
    assert threads_per_cell(cfg, 2) == 3  # an explicit train.threads wins
    assert cell_jobs(cfg, cells=8, world_size=1) == 2
    assert cell_jobs(cfg, cells=1, world_size=1) == 1  # one cell: in this process
    assert cell_jobs(cfg, cells=8, world_size=4) == 1  # DDP: every rank trains the same cell
    cfg.train.device = "cuda"  # a GPU trains one cell at a time
    assert cell_jobs(cfg, cells=8, world_size=1) == 1
