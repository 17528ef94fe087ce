"""Matched training budgets (baselines continue for CAL's stage-2 epochs at the same lr) and the
budget curve (weights kept at fractions of the epochs, scored like the final ones)."""

from __future__ import annotations

import csv
import json

import pytest

from lrpose_bench.cli import main
from lrpose_bench.config import load_config, resolve_method_params
from lrpose_bench.engine.trainer import learning_rate, snapshot_epochs, training_stages
from lrpose_bench.method import MethodContext
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution


def method(name: str, res: str = "64x48"):
    cls = METHODS.get(name)
    resolution = Resolution.parse(res)
    return cls(resolve_method_params(cls.Params, name, resolution), MethodContext(resolution))


@pytest.mark.parametrize("epochs", [20, 210, 3])
def test_baselines_get_cal_s_stage2_epochs(epochs: int) -> None:
    cfg = load_config("quick", overrides={"train.epochs": epochs}).train
    cal = training_stages(method("cal"), cfg)
    for name in ("hrnet", "dark", "udp", "simcc"):
        stages = training_stages(method(name), cfg)
        assert sum(s.epochs for s in stages) == sum(s.epochs for s in cal)
        assert stages[-1].name == "matched_extra" and stages[-1].index == stages[0].index
    assert [s.name for s in cal] == ["stage1", "stage2"]  # CAL is the budget, nothing added
    off = load_config("quick", overrides={"train.epochs": epochs, "train.match_budget": False}).train
    assert [s.name for s in training_stages(method("hrnet"), off)] == ["train"]


@pytest.mark.parametrize("res", ["64x48", "128x96", "256x192", "384x288"])
def test_matched_ratio_is_cal_s_stage2_ratio(res: str) -> None:
    assert method("cal", res).params.stage2_ratio == pytest.approx(load_config().train.matched_extra_ratio)


def test_extra_epochs_run_at_the_post_milestone_lr() -> None:
    cfg = load_config("quick").train  # 24 epochs, milestones 19 and 23
    assert cfg.milestones() == [19, 23]
    extra = range(cfg.epochs, cfg.epochs + training_stages(method("hrnet"), cfg)[-1].epochs)
    assert {learning_rate(cfg, e) for e in extra} == {learning_rate(cfg, cfg.epochs - 1)}
    assert snapshot_epochs(cfg) == {6: 0.25, 12: 0.5, 24: 1.0}


def test_cell_scores_its_snapshots_and_the_report_shows_the_budget(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["run", "--methods", "hrnet,cal", "--res", "64x48", "--out", str(out), "--backbone", "hrnet-w8",
            "--no-progress", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.epochs=4",
            "--set", "train.snapshot_fractions=[0.5, 1.0]", "--set", "data.synth.num_train_images=6",
            "--set", "data.synth.num_val_images=2", "--set", "data.synth.num_tune_images=1",
            "--set", "train.threads=1", "--set", "eval.bootstrap_samples=0"]  # fmt: skip
    assert main(args) == 0
    lrs = {}
    for name, stage_names in (("hrnet", ["train", "matched_extra"]), ("cal", ["stage1", "stage2"])):
        cell = next(out.glob(f"{name}__*"))
        info = json.loads((cell / "metrics.json").read_text())
        assert [s["name"] for s in info["method"]["stages"]] == stage_names
        assert sum(s["epochs"] for s in info["method"]["stages"]) == 5
        assert [(s["fraction"], s["epochs"]) for s in info["snapshots"]] == [(0.5, 2), (1.0, 4)]
        assert all("AP" in s["metrics"] and "final_mean_px" in s["errors"] for s in info["snapshots"])
        rows = list(csv.DictReader((cell / "train_log.csv").open()))
        assert len(rows) == 5
        lrs[name] = [float(r["lr"]) for r in rows]
    assert lrs["hrnet"] == lrs["cal"]  # the matched epochs at CAL's stage-2 learning rate
    report = json.loads((out / "report" / "report.json").read_text())
    assert "budget" in report["tables"]
    # the cost axis of the frontier: each cell's training in CPU-minutes (wall s x its threads / 60)
    for row in report["tables"]["budget"]["rows"]:
        cell = next(out.glob(f"{row['Method']}__*"))
        info = json.loads((cell / "metrics.json").read_text())
        assert info["timing"]["train_cpu_s"] == pytest.approx(info["timing"]["train_s"] * 1, abs=0.02)  # 1 thread
        assert row["Train CPU-min"] == f"{info['timing']['train_cpu_s'] / 60:.1f}"
        assert {int(r["cpu_threads"]) for r in csv.DictReader((cell / "train_log.csv").open())} == {1}
    # metrics.json written by a process with other threads (a cell re-evaluated elsewhere): the
    # CPU-minutes are still the training's (they were multiplied by the writer's threads)
    cell = next(out.glob("hrnet__*"))
    info = json.loads((cell / "metrics.json").read_text())
    info["environment"]["threads"] = 1000
    (cell / "metrics.json").write_text(json.dumps(info))
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    row = next(r for r in again["tables"]["budget"]["rows"] if r["Method"] == "hrnet")
    assert row["Train CPU-min"] == f"{info['timing']['train_cpu_s'] / 60:.1f}"
    assert (out / "report" / "latex" / "figures" / "budget_curve.pdf").is_file()
    assert "Budget curve" in (out / "report" / "report.html").read_text()

    # each snapshot's COCO results are kept beside its weights (the report's breakdown per budget
    # point reads them; its values are tested on constructed predictions in test_keypoint_errors.py)
    columns = set(report["tables"]["budget"]["rows"][0])
    assert {"Left/right confusion (%): 0.5× ep", "AP, inversions fixed: final"} <= columns
    for name in ("hrnet", "cal"):
        cell = next(out.glob(f"{name}__*"))
        info = json.loads((cell / "metrics.json").read_text())
        final = json.loads((cell / "predictions.json").read_text())
        for snap in info["snapshots"]:
            assert snap["predictions"] == f"predictions_epoch{snap['epochs']:04d}.json"
            results = json.loads((cell / snap["predictions"]).read_text())
            assert len(results) == len(final) and {r["image_id"] for r in results} == {r["image_id"] for r in final}
            assert all(len(r["keypoints"]) == 3 * 17 for r in results)
