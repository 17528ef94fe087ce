"""`lrpose-bench regress`: an unchanged tree passes, a broken codec fails naming its cell, a
baseline from another configuration is refused, and two runs give identical numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lrpose_bench.cli import main


def _spec(tmp_path: Path, epochs: int = 1) -> Path:
    spec = {
        "profile": "quick",
        "overrides": {
            "seed": 0, "train.epochs": epochs, "train.threads": 1, "train.batch_size": 8,
            "data.cache_dir": str(tmp_path / "cache"),
            "data.synth.num_train_images": 24, "data.synth.num_val_images": 8,
            "data.synth.image_height": 96, "data.synth.image_width": 96, "data.synth.seed": 3,
            "model.backbone": "hrnet-w8", "eval.batch_size": 64,
        },
        "cells": [{"method": "hrnet", "res": "64x48"}, {"method": "udp", "res": "64x48"}],
        "tolerances": {"AP": 1e-9, "AP50": 1e-9, "AR": 1e-9, "final_mean_px": 1e-6, "coarse_mean_px": 1e-6},
        "floor_margin": -1.0,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_regress_detects_a_broken_codec(tmp_path, capsys, monkeypatch):
    spec = _spec(tmp_path)
    baseline = tmp_path / "baseline.json"
    args = ["regress", "--spec", str(spec), "--baseline", str(baseline), "--no-progress"]
    assert main(args + ["--update"]) == 0
    data = json.loads(baseline.read_text())
    assert set(data["cells"]) == {"hrnet__hrnet-w8__64x48__s0", "udp__hrnet-w8__64x48__s0"}
    capsys.readouterr()

    # unchanged tree: identical numbers (determinism), exit 0
    assert main(args) == 0
    assert "match the baseline" in capsys.readouterr().out

    # drop the offset term of UDP's decoder on purpose: the udp cell must be named
    from lrpose_bench.baselines.udp import UdpMethod as UDPMethod

    original = UDPMethod.decode

    def broken(self, outputs):
        coords, scores = original(self, outputs)
        return coords + 1.0, scores

    monkeypatch.setattr(UDPMethod, "decode", broken)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    problem_rows = out.split("REGRESSION")[1].split("If the change")[0].strip().splitlines()[2:]
    assert problem_rows, out
    assert all(row.strip().startswith("udp__hrnet-w8__64x48__s0") for row in problem_rows), problem_rows


def test_baseline_for_another_configuration_is_refused(tmp_path, capsys):
    spec = _spec(tmp_path)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"config_hash": "0000", "cells": {}}))
    code = main(["regress", "--spec", str(spec), "--baseline", str(baseline)])
    err = capsys.readouterr().err
    assert code == 2
    assert "is for another configuration" in err and "run with --update after review" in err


def test_missing_baseline_says_how_to_create_it(tmp_path, capsys):
    code = main(["regress", "--spec", str(_spec(tmp_path)), "--baseline", str(tmp_path / "none.json")])
    assert code == 2 and "--update" in capsys.readouterr().err


def _tiny_spec(ordering=None):
    from lrpose_bench.commands.regress import RegressionSpec

    return RegressionSpec(cfg=None, cells=[], tolerances={"AP": 0.01, "APL": 0.01, "final_mean_px": 0.05},
                          floor_margin=0.0, floor_error_ratio=1.0, ordering=ordering or {}, digest="x")


def _cell(method, ap, final, apl=None, floor_px=2.0):
    return {"method": method, "resolution": "64x48", "AP": ap, "APL": apl, "final_mean_px": final,
            "floor_AP": 0.0, "floor_final_mean_px": floor_px}


def test_compare_treats_null_and_nan_as_the_same_missing_value():
    from lrpose_bench.commands.regress import compare

    base = {"cells": {"a": _cell("hrnet", 0.1, 1.0, apl=None)}}
    now = {"a": _cell("hrnet", 0.1, 1.0, apl=float("nan"))}
    assert compare(_tiny_spec(), base, now) == []


def test_compare_flags_moved_metrics_floor_and_ordering():
    from lrpose_bench.commands.regress import compare

    ordering = {"resolution": "64x48", "metric": "final_mean_px", "higher_is_better": False, "margin": 0.05}
    base = {"cells": {"a": _cell("dark", 0.1, 1.0), "b": _cell("hrnet", 0.1, 1.2)}}
    now = {"a": _cell("dark", 0.1, 1.3), "b": _cell("hrnet", 0.1, 1.2, floor_px=1.1)}
    problems = compare(_tiny_spec(ordering), base, now)
    kinds = {(p["cell"], p["metric"]) for p in problems}
    assert ("a", "final_mean_px") in kinds  # moved beyond tolerance
    assert ("b", "final error vs mean-pose floor (px)") in kinds  # worse than the mean pose
    assert any(p["cell"] == "ordering at 64x48" for p in problems)  # dark no longer localises better
