"""UDP and CAL on CAL's reference network (``hrnet-*-split``: separate heatmap and offset towers after
stage 3, ilovepose/Low-resolution-human-pose ``pose_hrnet.py``), end to end on a tiny COCO fixture:
the cell trains, saves, and its kept weights reproduce its own predictions; a heatmap-only method is
refused with one line naming the backbone and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cross_resolution import TRAIN_RES, tiny_config

from conftest import make_coco_fixture
from lrpose_bench.cli import main
from lrpose_bench.data.sources import load_data
from lrpose_bench.engine import evaluate_cli
from lrpose_bench.engine.cell import CellSpec, run_cell
from lrpose_bench.errors import ConfigError

DATA = {
    "data.source": "coco",
    "data.train_annotations": "annotations.json",
    "data.val_annotations": "annotations.json",
    "data.train_images": "images",
    "data.val_images": "images",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split") / "data"
    make_coco_fixture(root, num_images=4, persons_per_image=2, seed=5)
    return root


@pytest.mark.parametrize("method", ["udp", "cal"])
def test_offset_methods_train_on_the_split_network_and_reload_it(method, data_root, tmp_path):
    cfg = tiny_config(data_root)
    spec = CellSpec(method, "hrnet-w8-split", TRAIN_RES, seed=0)
    result = run_cell(spec, cfg, load_data(cfg.data, progress=False), tmp_path, progress=False)
    assert result.state == "complete"
    cell = tmp_path / spec.cell_id
    saved = json.loads((cell / "predictions.json").read_text())
    sink: list = []
    evaluate_cli.evaluate_cell(cell, None, progress=False, results_sink=sink)
    reloaded = np.array([r["keypoints"] for r in sink[0]])
    np.testing.assert_allclose(reloaded, np.array([r["keypoints"] for r in saved]), atol=1e-4)


def test_a_heatmap_method_on_the_split_network_is_refused(data_root, tmp_path):
    cfg = tiny_config(data_root)
    spec = CellSpec("hrnet", "hrnet-w8-split", TRAIN_RES, seed=0)
    with pytest.raises(ConfigError, match="hrnet-w8-split: .*udp, cal.*use hrnet-w8"):
        run_cell(spec, cfg, load_data(cfg.data, progress=False), tmp_path, progress=False)


def test_the_cli_names_the_backbone_and_the_fix_in_one_line(data_root, tmp_path, capsys):
    code = main(
        ["train", "--method", "hrnet", "--res", "64x48", "--backbone", "hrnet-w8-split", "--out", str(tmp_path)]
        + [arg for key, value in DATA.items() for arg in ("--set", f"{key}={value}")]
        + ["--set", f"data.coco_root={data_root}", "--set", "train.epochs=1", "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err
    assert "hrnet-w8-split" in err and "use hrnet-w8" in err
