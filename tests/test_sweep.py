"""``lrpose-bench sweep``: constants are chosen on the tune split, never on the scored one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lrpose_bench.cli import main
from lrpose_bench.commands.sweep import SweepSpec, build_record, choose, load_sweep_spec, render_markdown, write_choice
from lrpose_bench.config import config_dir, load_config
from lrpose_bench.data.sources import load_data
from lrpose_bench.errors import ConfigError

TINY = [
    "--set", "data.synth.num_train_images=6", "--set", "data.synth.num_val_images=2",
    "--set", "data.synth.num_tune_images=2", "--set", "train.threads=1", "--set", "eval.bootstrap_samples=0",
]  # fmt: skip


def tiny_spec(tmp_path: Path) -> Path:
    spec = {
        "metric": "AP",
        "seeds": [0, 1, 2],
        "budget": {"train.epochs": 1},
        "grids": {"hrnet": {"64x48": [{"sigma": 1.0}, {"sigma": 2.0}]}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tune_split_is_its_own_images(tmp_path) -> None:
    cfg = load_config(overrides={"data.cache_dir": str(tmp_path), "data.synth.num_train_images": 6,
                                 "data.synth.num_val_images": 2, "data.synth.num_tune_images": 2})  # fmt: skip
    val = load_data(cfg.data, progress=False)
    tune = load_data(
        load_config(overrides={"data.cache_dir": str(tmp_path), "data.synth.num_train_images": 6,
                               "data.synth.num_val_images": 2, "data.synth.num_tune_images": 2,
                               "data.eval_split": "tune"}).data, progress=False)  # fmt: skip
    assert val.eval_label == "SynthPose val" and tune.eval_label == "SynthPose tune"
    assert tune.val.annotation_file != val.val.annotation_file
    assert [i.joints.tolist() for i in tune.val.instances] != [i.joints.tolist() for i in val.val.instances]
    assert [i.image_id for i in val.train.instances] == [i.image_id for i in tune.train.instances]


def test_sweep_scores_tune_and_writes_the_winner_with_evidence(tmp_path, capsys) -> None:
    configs = tmp_path / "methods"
    shutil.copytree(config_dir() / "methods", configs)
    out = tmp_path / "sweep"
    args = ["sweep", "--methods", "hrnet", "--res", "64x48", "--spec", str(tiny_spec(tmp_path)), "--out", str(out),
            "--backbone", "hrnet-w8", "--write", "--method-configs", str(configs), "--no-progress",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", *TINY]  # fmt: skip
    assert main(args) == 0
    # one pool for both points' six cells (two at a time), not one pool per point
    assert capsys.readouterr().out.count("cells at a time") == 1
    record = json.loads((out / "sweep.json").read_text())
    cells = list(out.glob("hrnet@sigma=*__s*"))
    assert len(cells) == 6  # 2 points x 3 seeds
    for cell in cells:  # the acceptance check: no sweep cell read the scored split
        assert json.loads((cell / "metrics.json").read_text())["cell"]["eval_split"] == "SynthPose tune"
    assert record["eval_split"] == "SynthPose tune" and len(record["results"]) == 2
    (chosen,) = record["chosen"]
    assert chosen["mean"] == max(r["mean"] for r in record["results"])
    text = (configs / "hrnet.yaml").read_text()
    assert "# sweep 64x48: chosen by lrpose-bench sweep" in text and "SynthPose tune" in text
    data = yaml.safe_load(text)
    assert data["per_resolution"]["64x48"]["sigma"] == chosen["point"]["sigma"]
    assert (out / "sweep.md").read_text().count("| hrnet |") == 2


def test_sweep_refuses_to_score_val(tmp_path, capsys) -> None:
    args = ["sweep", "--methods", "hrnet", "--spec", str(tiny_spec(tmp_path)), "--out", str(tmp_path / "o"),
            "--set", "data.eval_split=val"]  # fmt: skip
    assert main(args) != 0
    assert "always scores the tune split" in capsys.readouterr().err


def test_spec_needs_three_seeds_and_choice_rule(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"seeds": [0, 1], "grids": {"hrnet": {"64x48": [{"sigma": 1.0}]}}}))
    with pytest.raises(ConfigError, match=">= 3 seeds"):
        load_sweep_spec(path)
    points = [{"mean": 0.2, "sd": 0.02}, {"mean": 0.2, "sd": 0.01}, {"mean": 0.1, "sd": 0.0}]
    assert choose(points) is points[1]
    assert load_sweep_spec(config_dir() / "sweep.yaml").seeds == (0, 1, 2, 3)


def test_write_choice_replaces_the_line_and_its_old_evidence(tmp_path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("defaults:\n  sigma: 2.0\nper_resolution:\n  64x48: {sigma: 1.0, truncate: 3.0}  # old\n")
    choice = {"resolution": "64x48", "point": {"sigma": 1.5}, "mean": 0.1, "sd": 0.01, "others": []}
    write_choice(path, choice, "E")
    write_choice(path, choice, "E")  # idempotent: one evidence line
    text = path.read_text()
    assert text.count("# sweep 64x48") == 1
    assert yaml.safe_load(text)["per_resolution"]["64x48"] == {"sigma": 1.5, "truncate": 3.0}


def test_a_winner_at_a_grid_edge_is_flagged_and_an_interior_one_is_not() -> None:
    """The rule of configs/sweep.yaml: a winner at the first or last point of a grid gets the grid
    extended one step past it, so the sweep must say which winners sit at an edge."""

    def group(*means: float) -> list[dict]:
        return [{"method": "m", "resolution": "64x48", "point": {"sigma": float(i)}, "values": [v], "mean": v,
                 "sd": 0.0, "eval_split": "SynthPose tune"} for i, v in enumerate(means)]  # fmt: skip

    spec = SweepSpec("AP", (0, 1, 2), {}, {})
    cfg = SimpleNamespace(profile="quick", model=SimpleNamespace(backbone="hrnet-w8"))
    first, middle, last = (build_record(group(*m), spec, cfg, Path("sweep.yaml"), "0") for m in
                           [(0.3, 0.2, 0.1), (0.1, 0.3, 0.2), (0.1, 0.2, 0.3)])  # fmt: skip
    assert [r["chosen"][0]["at_edge"] for r in (first, middle, last)] == [True, False, True]
    assert "**yes** (grid edge)" in render_markdown(first) and "(grid edge)" not in render_markdown(middle)
    two_points = build_record(group(0.3, 0.2), spec, cfg, Path("sweep.yaml"), "0")
    assert not two_points["chosen"][0]["at_edge"]  # two points have no interior to prefer
