"""Cross-resolution evaluation (``lrpose-bench evaluate --checkpoint CELL --res ...``) on a tiny trained cell.

A one-epoch HRNet-W8 cell on a small COCO-format fixture takes about two seconds on one CPU thread; its
AP is near zero, so "evaluating at the training resolution equals the cell" is checked on the
predictions themselves (every keypoint of ``predictions.json``), not only on the metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import make_coco_fixture
from lrpose_bench.cli import main
from lrpose_bench.config import load_config
from lrpose_bench.data.sources import load_data
from lrpose_bench.engine import evaluate_cli
from lrpose_bench.engine.cell import CellSpec, run_cell
from lrpose_bench.resolution import Resolution

TRAIN_RES = Resolution(64, 48)


def tiny_config(root: Path, degrade: str = "clean"):
    return load_config(
        "quick",
        overrides={
            "data.source": "coco",
            "data.coco_root": str(root),
            "data.train_annotations": "annotations.json",
            "data.val_annotations": "annotations.json",
            "data.train_images": "images",
            "data.val_images": "images",
            "train.epochs": 1,
            "train.batch_size": 4,
            "train.threads": 1,
            "train.device": "cpu",
            "eval.batch_size": 8,
            "model.backbone": "hrnet-w8",
            "degrade": degrade,
        },
    )


def train_tiny_cell(base: Path, degrade: str = "clean") -> Path:
    data_root = base / "data"
    if not (data_root / "annotations.json").is_file():
        make_coco_fixture(data_root, num_images=4, persons_per_image=2, seed=3)
    cfg = tiny_config(data_root, degrade)
    spec = CellSpec("hrnet", "hrnet-w8", TRAIN_RES, seed=0)
    run_dir = base / f"run-{degrade}"
    result = run_cell(spec, cfg, load_data(cfg.data, progress=False), run_dir, progress=False)
    assert result.state == "complete"
    return run_dir / spec.cell_id


@pytest.fixture(scope="module")
def clean_cell(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return train_tiny_cell(tmp_path_factory.mktemp("xres"))


def _missing(value: Any) -> bool:
    """No instance in an area range: NaN in memory, null once written by ``store.write_json``."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def same_metrics(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal COCO metrics (missing equal to missing)."""
    keys = [k for k in b if k.startswith(("AP", "AR"))]
    return bool(keys) and all(
        _missing(a[k]) if _missing(b[k]) else (not _missing(a[k]) and a[k] == pytest.approx(b[k], abs=1e-12))
        for k in keys
    )


def assert_same_results(ours: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    key = lambda r: (r["image_id"], r["score"])  # noqa: E731
    ours, reference = sorted(ours, key=key), sorted(reference, key=key)
    assert [r["image_id"] for r in ours] == [r["image_id"] for r in reference]
    # relative tolerance: a one-epoch model's keypoint confidences are ~1e-3 and move only slightly
    # with the input, so an absolute tolerance would hide a changed input
    np.testing.assert_allclose(
        [r["keypoints"] for r in ours], [r["keypoints"] for r in reference], rtol=1e-6, atol=1e-12
    )
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in reference], rtol=1e-6, atol=1e-12)


@pytest.fixture()
def captured(monkeypatch) -> list[list[dict[str, Any]]]:
    """COCO results that ``evaluate_cell`` scores, one list per test resolution."""
    calls: list[list[dict[str, Any]]] = []
    original = evaluate_cli.score_predictions

    def spy(bundle, preds, cfg):
        metrics, results = original(bundle, preds, cfg)
        calls.append(results)
        return metrics, results

    monkeypatch.setattr(evaluate_cli, "score_predictions", spy)
    return calls


# ------------------------------------------------------------------------- resampling
def test_resample_transform_is_identity_at_the_training_resolution():
    assert evaluate_cli.resample_transform(TRAIN_RES, TRAIN_RES) is None


@pytest.mark.parametrize("test_res", [Resolution(32, 24), Resolution(16, 12), Resolution(128, 96)])
def test_resample_transform_keeps_the_training_input_size_and_flat_fields(test_res):
    transform = evaluate_cli.resample_transform(test_res, TRAIN_RES)
    flat = torch.full((2, 3, *TRAIN_RES.size), 0.7)
    out = transform(flat)
    assert out.shape == flat.shape
    torch.testing.assert_close(out, flat)


def test_resample_transform_to_a_lower_resolution_removes_detail_above_its_nyquist():
    """Reducing 64×48 to 16×12 (k = 4) and back removes a period-2 pattern, keeps a period-32 one."""
    y = torch.arange(TRAIN_RES.height, dtype=torch.float32)[:, None].expand(*TRAIN_RES.size)
    fine = torch.cos(torch.pi * y)  # 0.5 cycles/px
    coarse = torch.cos(2 * torch.pi * y / 32.0)  # well below the new Nyquist 0.125
    transform = evaluate_cli.resample_transform(Resolution(16, 12), TRAIN_RES)
    # away from the top/bottom rows, where the truncated antialias kernel renormalises
    assert transform(fine.expand(1, 3, -1, -1))[..., 8:-8, :].abs().max() < 1e-4
    kept = transform(coarse.expand(1, 3, -1, -1))[0, 0]
    assert float((kept * coarse).sum() / (coarse * coarse).sum()) > 0.8


# ---------------------------------------------------------------------------- evaluation
def test_evaluating_at_the_training_resolution_reproduces_the_cell(clean_cell, captured):
    metrics = json.loads((clean_cell / "metrics.json").read_text())
    (row,) = evaluate_cli.evaluate_cell(clean_cell, [TRAIN_RES], progress=False)
    assert row["train_resolution"] == row["test_resolution"] == str(TRAIN_RES)
    assert row["method"] == "hrnet" and row["backbone"] == "hrnet-w8" and row["degrade"] == "clean"
    assert row["cell"] == clean_cell.name
    assert same_metrics(row, metrics["metrics"])
    assert_same_results(captured[0], json.loads((clean_cell / "predictions.json").read_text()))
    # no resolution given: the training one
    (default_row,) = evaluate_cli.evaluate_cell(clean_cell, None, progress=False)
    assert default_row["test_resolution"] == str(TRAIN_RES) and same_metrics(default_row, metrics["metrics"])


def test_cli_writes_the_cross_resolution_rows(clean_cell, captured, capsys):
    run_dir = clean_cell.parent
    rc = main(
        ["evaluate", "--checkpoint", str(clean_cell / "checkpoint.pt"), "--res", "64x48,32x24,128x96", "--no-progress"]
    )
    assert rc == 0
    rows = json.loads((run_dir / "cross_resolution.json").read_text())
    assert [r["test_resolution"] for r in rows] == ["64x48", "32x24", "128x96"]
    assert {r["train_resolution"] for r in rows} == {"64x48"}
    assert {r["cell"] for r in rows} == {clean_cell.name}
    for row in rows:
        assert 0.0 <= row["AP"] <= 1.0 and 0.0 <= row["AR"] <= 1.0
        assert row["method"] == "hrnet" and row["eval_split"] and row["degrade"] == "clean"
    cell_metrics = json.loads((clean_cell / "metrics.json").read_text())["metrics"]
    assert same_metrics(rows[0], cell_metrics)
    assert json.loads((clean_cell / "evaluation.json").read_text()) == rows
    # the reduced resolution really changed what the network saw
    assert_same_results(captured[0], json.loads((clean_cell / "predictions.json").read_text()))
    with pytest.raises(AssertionError):
        assert_same_results(captured[1], captured[0])
    assert "test 32x24" in capsys.readouterr().out
    # evaluating the cell again never duplicates a (cell, test resolution) entry of the matrix
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--res", "64x48,16x12", "--no-progress"]) == 0
    rows = json.loads((run_dir / "cross_resolution.json").read_text())
    entries = [(r["cell"], r["test_resolution"]) for r in rows]
    assert len(entries) == len(set(entries))
    assert {"64x48", "16x12"} <= {r["test_resolution"] for r in rows}


def test_unknown_cell_folder_is_a_user_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--res", "64x48"]) == 2
    assert "not a cell folder" in capsys.readouterr().err


# ------------------------------------------------------------- known gaps (reported to the lead)
def test_a_degraded_cell_is_reevaluated_under_its_own_protocol(tmp_path, captured):
    cell = train_tiny_cell(tmp_path, degrade="lr-severe")
    (row,) = evaluate_cli.evaluate_cell(cell, [TRAIN_RES], progress=False)
    assert row["degrade"] == "lr-severe"
    assert_same_results(captured[0], json.loads((cell / "predictions.json").read_text()))


def test_evaluate_applies_a_degradation_protocol_given_on_the_command_line(clean_cell):
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(clean_cell),
                "--res",
                "64x48,32x24",
                "--degrade",
                "lr-severe-eval",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((clean_cell / "evaluation.json").read_text())
    assert {r["degrade"] for r in rows} == {"lr-severe-eval"}


def test_a_single_test_resolution_is_recorded_in_the_matrix(clean_cell):
    path = clean_cell.parent / "cross_resolution.json"
    before = json.loads(path.read_text()) if path.is_file() else []
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--res", "48x36", "--no-progress"]) == 0
    rows = json.loads(path.read_text())
    assert "48x36" in {r["test_resolution"] for r in rows}
    assert len(rows) >= len(before)


def test_split_scores_the_training_images_beside_the_cell_s_own_evaluation(clean_cell, capsys):
    """``evaluate --split train``: the fitting diagnostic. This fixture trains and scores the same
    annotation file, so the train-split numbers must equal the cell's own, and land in their own file."""
    own = clean_cell / "evaluation.json"
    before = own.read_text() if own.is_file() else None
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--split", "train", "--no-progress"]) == 0
    (row,) = json.loads((clean_cell / "evaluation_train.json").read_text())
    assert row["eval_split"] == "COCO train2017" and "(COCO train2017)" in capsys.readouterr().out
    assert same_metrics(row, json.loads((clean_cell / "metrics.json").read_text())["metrics"])
    assert (own.read_text() if own.is_file() else None) == before
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--split", "train", "--res", "32x24"]) == 2
    assert "--split train with --res" in capsys.readouterr().err


def test_another_split_s_coco_results_are_written_beside_its_evaluation(clean_cell, captured):
    """``evaluate --split`` / ``--no-flip-test`` also write the COCO results they scored
    (``predictions_<split>.json``), so a paired bootstrap on that split needs no retraining; the
    cell's own ``predictions.json`` stays as it was. This fixture trains and scores one annotation
    file, so the train-split results must equal the cell's own."""
    own = clean_cell / "predictions.json"
    before = own.read_text()
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--split", "train", "--no-progress"]) == 0
    written = json.loads((clean_cell / "predictions_train.json").read_text())
    assert written and written == captured[-1]
    assert_same_results(written, json.loads(before))
    assert own.read_text() == before
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--no-flip-test", "--no-progress"]) == 0
    noflip = json.loads((clean_cell / "predictions_noflip.json").read_text())
    assert noflip == captured[-1] and {r["image_id"] for r in noflip} == {r["image_id"] for r in written}
    assert own.read_text() == before


def test_no_flip_test_predicts_without_flip_beside_the_cell_s_own_evaluation(clean_cell, capsys, monkeypatch):
    """``evaluate --no-flip-test``: the flip-test ablation. The flag must reach the prediction (recorded
    here), the row must say so, and the cell's own evaluation must stay as it was."""
    from lrpose_bench.engine import evaluate_cli

    seen: list[bool] = []
    real_predict = evaluate_cli.predict

    def recording_predict(*args, **kwargs):
        seen.append(kwargs["flip_test"])
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(evaluate_cli, "predict", recording_predict)
    own = clean_cell / "evaluation.json"
    before = own.read_text() if own.is_file() else None
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--no-flip-test", "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--split", "train", "--no-progress"]) == 0
    assert seen == [False, True]
    (row,) = json.loads((clean_cell / "evaluation_noflip.json").read_text())
    assert row["flip_test"] is False and "no flip test" in capsys.readouterr().out
    (flipped,) = json.loads((clean_cell / "evaluation_train.json").read_text())
    assert flipped["flip_test"] is True
    assert (own.read_text() if own.is_file() else None) == before
    assert main(["evaluate", "--checkpoint", str(clean_cell), "--no-flip-test", "--res", "32x24"]) == 2
    assert "--no-flip-test with --res" in capsys.readouterr().err
