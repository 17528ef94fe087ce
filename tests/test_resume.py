"""Resume after a kill: SIGKILL mid-epoch and SIGKILL inside a checkpoint write both
resume to exactly the weights, predictions and metrics of an uninterrupted run; a finished cell is
skipped; a non-finite loss fails only its cell, keeps the last good checkpoint, and the run goes on.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _train_child import KILL_ENV, make_coco_layout, poison_heatmap_loss
from lrpose_bench.cli import main
from lrpose_bench.engine.cell import CellSpec
from lrpose_bench.engine.train_state import load_checkpoint
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import read_status

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CELL = CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0).cell_id
#: the brief's tiny schedule; 10 train images × 2 persons / batch 4 = 5 steps per epoch, so
#: checkpoints land at iterations 2 and 4 (mid-epoch) and at every epoch end
TINY = [
    "--set",
    "train.epochs=3",
    "--set",
    "train.match_budget=false",  # these tests are about resuming, not budgets: 3 epochs for every method
    "--set",
    "train.batch_size=4",
    "--set",
    "train.checkpoint_every_iters=2",
    "--set",
    "train.threads=1",
    "--set",
    "train.device=cpu",
    "--backbone",
    "hrnet-w8",
]
TIMEOUT = 420


def train_args(coco: Path, out: Path, method: str = "hrnet") -> list[str]:
    return [
        "train",
        "--method",
        method,
        "--res",
        "64x48",
        "--data",
        "coco",
        "--coco-root",
        str(coco),
        "--out",
        str(out),
        "--no-progress",
        *TINY,
    ]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}"})
    env.pop(KILL_ENV, None)
    env.update(extra)
    return env


def run_to_end(args: list[str], log: Path, **env: str) -> subprocess.CompletedProcess:
    with open(log, "w") as handle:
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            env=child_env(**env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT,
        )


def kill_after_first_checkpoint(args: list[str], checkpoint: Path, log: Path) -> None:
    """Start a training, watch for its first checkpoint file, SIGKILL it at once (mid-epoch)."""
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=child_env(), stdout=handle, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + TIMEOUT
        try:
            while not checkpoint.is_file():
                assert proc.poll() is None, f"training ended before its first checkpoint:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def log_rows(cell: Path) -> list[dict[str, str]]:
    with open(cell / "train_log.csv") as handle:
        return list(csv.DictReader(handle))


def temp_files(cell: Path) -> list[Path]:
    return [p for p in cell.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def assert_same_training(a: Path, b: Path) -> None:
    """Weights, predictions, metrics and per-epoch losses of two cell folders agree to 1e-6."""
    wa = load_checkpoint(a / "checkpoint.pt")["model"]
    wb = load_checkpoint(b / "checkpoint.pt")["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=f"weights differ at {key}")
    pa, pb = (json.loads((c / "predictions.json").read_text()) for c in (a, b))
    assert len(pa) == len(pb) > 0
    for ra, rb in zip(pa, pb):
        assert ra["image_id"] == rb["image_id"]
        np.testing.assert_allclose(ra["keypoints"], rb["keypoints"], rtol=0, atol=1e-6)
        assert ra["score"] == pytest.approx(rb["score"], abs=1e-6)
    ma, mb = (json.loads((c / "metrics.json").read_text())["metrics"] for c in (a, b))
    assert ma.keys() == mb.keys()
    for key in ma:
        if ma[key] is None:
            assert mb[key] is None
        else:
            assert ma[key] == pytest.approx(mb[key], abs=1e-6), key
    la, lb = log_rows(a), log_rows(b)
    assert [r["epoch"] for r in la] == [r["epoch"] for r in lb] == ["1", "2", "3"]
    for ra, rb in zip(la, lb):
        assert ra["iterations"] == rb["iterations"] == "5"
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=0, abs=1e-9)


@pytest.mark.slow
def test_sigkill_mid_epoch_and_inside_checkpoint_write_resume_to_the_same_result(tmp_path):
    coco = make_coco_layout(tmp_path / "coco", train_images=10, val_images=3)
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    ref, cell = ref_out / CELL, out / CELL

    # 1. the uninterrupted reference
    done = run_to_end(["-m", "lrpose_bench", *train_args(coco, ref_out)], tmp_path / "ref.log")
    assert done.returncode == 0, (tmp_path / "ref.log").read_text()
    assert read_status(ref)["state"] == "complete"

    # 2. SIGKILL from outside as soon as the first (mid-epoch) checkpoint exists
    kill_after_first_checkpoint(
        ["-m", "lrpose_bench", *train_args(coco, out)], cell / "checkpoint.pt", tmp_path / "kill1.log"
    )
    first = load_checkpoint(cell / "checkpoint.pt", expect={"method": "hrnet", "backbone": "hrnet-w8"})
    assert first["epoch"] == 0 and first["iteration"] in (2, 4), "the kill should land mid-epoch"
    assert first["sampler"]["position"] == 4 * first["iteration"]
    assert read_status(cell)["state"] == "running"  # a SIGKILL cannot write anything
    assert (cell / ".lock").is_file()  # stale: its pid is dead, the next run takes it over
    assert not (cell / "metrics.json").exists()

    # 3. resume; SIGKILL itself inside the 2nd checkpoint write (temp file written, not renamed)
    killed = run_to_end(
        [str(TESTS / "_train_child.py"), *train_args(coco, out)],
        tmp_path / "kill2.log",
        **{KILL_ENV: "checkpoint.pt:2"},
    )
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "kill2.log").read_text()
    survivor = load_checkpoint(cell / "checkpoint.pt")  # the previous checkpoint, intact
    assert (survivor["epoch"], survivor["iteration"]) > (first["epoch"], first["iteration"])
    if survivor["iteration"]:  # a mid-epoch survivor carries the loss sums of its half epoch
        assert survivor["partial"]["count"] == survivor["iteration"]
    leftovers = temp_files(cell)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".checkpoint.pt.")

    # 4. resume to the end: same weights, predictions, metrics and losses as the reference
    done = run_to_end(["-m", "lrpose_bench", *train_args(coco, out)], tmp_path / "resume.log")
    assert done.returncode == 0, (tmp_path / "resume.log").read_text()
    assert read_status(cell)["state"] == "complete"
    assert temp_files(cell) == [] and not (cell / ".lock").exists()
    info = json.loads((cell / "metrics.json").read_text())
    assert info["timing"]["resumed_from_epoch"] == survivor["epoch"]
    assert_same_training(ref, cell)

    # 5. a finished cell is skipped, not recomputed
    before = {p.name: p.stat().st_mtime_ns for p in cell.iterdir()}
    assert main(train_args(coco, out)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in cell.iterdir()} == before


def test_nan_loss_fails_the_cell_keeps_checkpoint_and_run_goes_on(tmp_path, monkeypatch, capsys):
    coco = make_coco_layout(tmp_path / "coco", train_images=10, val_images=2)
    poison_heatmap_loss(monkeypatch)  # NaN at epoch 2, iteration 3
    out = tmp_path / "run"
    args = [
        "run",
        "--methods",
        "hrnet,udp",
        "--res",
        "64x48",
        "--data",
        "coco",
        "--coco-root",
        str(coco),
        "--out",
        str(out),
        "--no-progress",
        "--no-report",
        *TINY,
        # in this process: the poisoned loss is a monkeypatch, which spawned cell workers do not see
        "--set",
        "train.parallel_cells=1",
    ]
    code = main(args)
    stdout = capsys.readouterr().out
    assert code == 1  # non-zero at the end, after the other cells ran

    failed = out / CELL
    status = read_status(failed)
    assert status["state"] == "failed"
    assert "non-finite loss" in status["reason"] and "epoch 2, iteration 3" in status["reason"]
    assert f"cell {CELL} FAILED" in stdout
    kept = load_checkpoint(failed / "checkpoint.pt")  # the last good one, from before the NaN
    assert (kept["epoch"], kept["iteration"]) == (1, 2) and not kept["meta"]["complete"]
    assert all(bool(torch.isfinite(t).all()) for t in kept["model"].values() if t.is_floating_point())
    assert not (failed / "metrics.json").exists()
    assert not (failed / ".lock").exists()

    other = out / CellSpec("udp", "hrnet-w8", Resolution(64, 48), 0).cell_id
    assert read_status(other)["state"] == "complete"
    assert (other / "metrics.json").is_file()


def test_nan_weights_after_a_finite_loss_never_overwrite_the_good_checkpoint(tmp_path, monkeypatch):
    """An optimizer step can turn weights non-finite while its loss was finite; the checkpoint
    right after that step must refuse to save them (the trainer's weight check)."""
    coco = make_coco_layout(tmp_path / "coco", train_images=10, val_images=1)
    real_step = torch.optim.Adam.step
    steps = [0]

    def poisoned_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        steps[0] += 1
        if steps[0] == 4:  # the step just before the mid-epoch checkpoint at iteration 4
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    out = tmp_path / "out"
    assert main(train_args(coco, out)) == 1
    status = read_status(out / CELL)
    assert status["state"] == "failed"
    assert "non-finite weights" in status["reason"] and "epoch 1, iteration 4" in status["reason"]
    kept = load_checkpoint(out / CELL / "checkpoint.pt")
    assert (kept["epoch"], kept["iteration"]) == (0, 2)
    assert all(bool(torch.isfinite(t).all()) for t in kept["model"].values() if t.is_floating_point())
