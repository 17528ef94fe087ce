"""A run folder keeps its cells honest: a cell trained with other method constants (an edited
``configs/methods/*.yaml``) is neither skipped nor resumed silently, and ``--force`` really
retrains (before, a complete checkpoint was loaded and only re-evaluated)."""

from __future__ import annotations

import json

import yaml

from _train_child import coco_train_args, make_coco_layout
from lrpose_bench.cli import main
from lrpose_bench.engine.cell import CellSpec
from lrpose_bench.resolution import Resolution

CELL = CellSpec("udp", "hrnet-w8", Resolution(64, 48), 0).cell_id


def _args(coco, out, *extra):
    return coco_train_args("udp", coco, out, *extra)


def test_changed_method_constants_are_refused_and_force_retrains(tmp_path, capsys):
    coco = make_coco_layout(tmp_path / "coco", train_images=4, val_images=1)
    out = tmp_path / "out"
    cell = out / CELL
    assert main(_args(coco, out)) == 0
    first = json.loads((cell / "metrics.json").read_text())

    # the same constants: the finished cell is skipped, untouched
    before = (cell / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(_args(coco, out)) == 0
    assert (cell / "metrics.json").stat().st_mtime_ns == before
    assert f"{CELL}: already complete" in capsys.readouterr().out  # the rerun says what it skipped

    # as if udp.yaml had changed since the cell was trained
    saved = yaml.safe_load((cell / "config.yaml").read_text())
    saved["method_params"]["radius_factor"] = 0.0546875
    (cell / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    capsys.readouterr()
    assert main(_args(coco, out)) != 0
    err = capsys.readouterr().err
    assert CELL in err and "radius_factor: 0.0546875 -> 0.09375" in err and "--force" in err
    assert "Traceback" not in err
    assert (cell / "metrics.json").stat().st_mtime_ns == before  # nothing was touched

    # --force retrains from the start with the current constants
    assert main(_args(coco, out, "--force")) == 0
    again = json.loads((cell / "metrics.json").read_text())
    assert again["timing"]["resumed_from_epoch"] is None and again["timing"]["train_s"] > 0
    assert again["method"]["params"]["radius_factor"] == 0.09375
    assert yaml.safe_load((cell / "config.yaml").read_text())["method_params"]["radius_factor"] == 0.09375
    assert again["metrics"] == first["metrics"]  # deterministic: the same training again
