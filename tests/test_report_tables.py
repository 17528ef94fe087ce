"""Paper-style tables from fake run folders: values, ordering, bolding, paper columns, failed rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_report_factory import CellSpec, make_run, standard_specs

from lrpose_bench.errors import ConfigError, UserError
from lrpose_bench.report import paper_reference
from lrpose_bench.report import tables as tbl
from lrpose_bench.report.run_folder import load_run, parse_cell_id

OURS = "Ours — SynthPose val"
VAL = "Paper — COCO val2017"
TESTDEV = "Paper — COCO test-dev"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), standard_specs(), num_images=12)


@pytest.fixture(scope="module")
def ref() -> paper_reference.PaperReference:
    return paper_reference.load_reference()


def _metric(run_dir: Path, cell_id: str, name: str = "AP") -> float:
    return 100 * json.loads((run_dir / cell_id / "metrics.json").read_text())["metrics"][name]


def _row(table: tbl.Table, method: str):
    frame = table.values
    return frame[frame[("", "Method")] == method].iloc[0]


def test_cell_id_parsing() -> None:
    assert parse_cell_id("cal@gmm_components=2@offset_mask=binary__hrnet-w8__64x48__s3") == {
        "method": "cal",
        "backbone": "hrnet-w8",
        "resolution": "64x48",
        "seed": 3,
        "ablation": {"gmm_components": 2, "offset_mask": "binary"},
    }


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        load_run(tmp_path / "nope")


def test_main_tables_values_order_and_paper_columns(run_dir: Path, ref) -> None:
    run = load_run(run_dir)
    tables = {t.key: t for t in tbl.main_tables(run, ref)}
    # ordered by input size; the paper's test-dev numbers (Table 1) get their own table, as in the paper
    assert list(tables) == ["main_64x48", "main_128x96", "main_128x96_coco_test_dev"]
    t64 = tables["main_64x48"]
    # rows in the paper's order; our values are the cells' measured values
    assert list(t64.values[("", "Method")]) == ["hrnet", "dark", "udp", "spsr+udp", "cal"]
    for method in ("hrnet", "dark", "udp", "cal"):
        row = _row(t64, method)
        for metric in tbl.PAPER_METRICS:
            assert row[(OURS, metric)] == pytest.approx(_metric(run_dir, f"{method}__hrnet-w8__64x48__s0", metric))
        assert row[(OURS, tbl.PARAMS)] == pytest.approx(2.0 + (0.001 if method in ("udp", "cal") else 0))
    # paper's Table 8 (COCO val) beside ours, W32 numbers for the hrnet-w8 proxy, flagged with a dagger
    cal = _row(t64, "cal")
    assert [cal[(VAL, m)] for m in tbl.PAPER_METRICS] == [58.4, 86.6, 65.1, 57.3, 60.5, 64.8]
    assert cal[(VAL, tbl.SOURCE)] == "T8 · HRNet-W32†"
    assert any("hrnet-w8 has no counterpart" in n for n in t64.notes)
    assert _row(t64, "spsr+udp")[(VAL, "AP")] == 52.5  # Table 2: UDP+SPSR
    # 64x48 has no test-dev numbers: no such column group; 128x96 has Table 1 (test-dev) beside T8 (val)
    assert TESTDEV not in t64.values.columns.get_level_values(0)
    t128, t1 = tables["main_128x96"], tables["main_128x96_coco_test_dev"]
    assert list(dict.fromkeys(t128.values.columns.get_level_values(0))) == ["", OURS, VAL]
    assert list(dict.fromkeys(t1.values.columns.get_level_values(0))) == ["", OURS, TESTDEV]
    assert t1.title.startswith("Table 1 layout")
    assert _row(t128, "udp")[(VAL, "AP")] == 69.5
    udp = _row(t1, "udp")
    assert udp[(TESTDEV, "AP")] == 67.9 and udp[(TESTDEV, tbl.PARAMS)] == 28.6 and udp[(TESTDEV, tbl.GFLOPS)] == 1.8
    assert udp[(OURS, "AP")] == _row(t128, "udp")[(OURS, "AP")]
    assert np.isnan(_row(t1, "dark")[(TESTDEV, "AP")])  # missing stays missing, not filled in
    assert any("not comparable" in n for n in t128.notes)


def test_paper_numbers_never_in_measured_columns(run_dir: Path, ref) -> None:
    run = load_run(run_dir)
    measured = {round(_metric(run_dir, c.id, m), 6) for c in run.complete_cells() for m in tbl.PAPER_METRICS}
    for table in tbl.main_tables(run, ref) + tbl.ablation_tables(run, ref):
        for column in table.values.columns:
            if column[0].startswith("Ours") and column[1] in tbl.PAPER_METRICS:
                values = {round(v, 6) for v in table.values[column].dropna()}
                assert values <= measured, column


def test_bold_marks_best_per_column(run_dir: Path, ref) -> None:
    run = load_run(run_dir)
    t64 = tbl.main_tables(run, ref)[0]
    mask = t64.bold_mask()
    ap = t64.values[(OURS, "AP")]
    assert list(mask[(OURS, "AP")]) == list(ap == ap.max())
    assert mask[(OURS, "AP")].sum() >= 1
    assert list(mask[(VAL, "AP")]) == list(t64.values[(VAL, "AP")] == 58.4)  # CAL best in the paper column
    assert not mask[(OURS, tbl.PARAMS)].any()  # size columns are not ranked


def test_failed_cell_is_a_failed_row(run_dir: Path, ref) -> None:
    run = load_run(run_dir)
    t64 = tbl.main_tables(run, ref)[0]
    row = _row(t64, "spsr+udp")
    assert row[("", "Status")] == "failed"
    assert np.isnan(row[(OURS, "AP")])
    assert t64.failed_rows == [3]
    assert any("loss became NaN" in n for n in t64.notes)


def test_ablation_table_reference_row_and_paper_t3(run_dir: Path, ref) -> None:
    run = load_run(run_dir)
    (table,) = tbl.ablation_tables(run, ref)
    assert table.key == "ablation_cal_offset_mask_128x96_hrnet-w8"
    labels = list(table.values[("", "offset_mask")])
    assert labels == ["mgm (reference)", "binary"]
    paper = [c for c in table.values.columns if c[0].startswith("Paper — COCO val2017 (T3")]
    assert paper, table.values.columns
    group = paper[0][0]
    assert list(table.values[(group, "AP")]) == [74.3, 73.3]
    assert list(table.values[(group, "Variant")]) == ["MGM", "Binary heatmap"]
    assert table.values[(OURS, "AP")].iloc[1] == pytest.approx(
        _metric(run_dir, "cal@offset_mask=binary__hrnet-w8__128x96__s0")
    )


def test_ablation_at_other_resolution_has_paper_rows_missing(tmp_path: Path, ref) -> None:
    specs = [CellSpec("cal", params={"gmm_components": 1}), CellSpec("cal", ablation={"gmm_components": 2}, noise=5)]
    run = load_run(make_run(tmp_path / "r", specs, num_images=6))
    (table,) = tbl.ablation_tables(run, ref)
    group = [c for c in table.values.columns if c[0].startswith("Paper")][0][0]
    assert table.values[group].drop(columns="Variant").isna().all().all()
    assert any("128×96, 256×192 only" in n for n in table.notes)


def test_seeds_are_mean_and_sd(tmp_path: Path, ref) -> None:
    specs = [CellSpec("udp", seed=s, noise=3 + s) for s in range(3)] + [CellSpec("hrnet", noise=9)]
    run_dir = make_run(tmp_path / "r", specs, num_images=8)
    run = load_run(run_dir)
    (table,) = tbl.main_tables(run, ref)
    aps = [_metric(run_dir, f"udp__hrnet-w8__64x48__s{s}") for s in range(3)]
    udp = table.values[table.values[("", "Method")] == "udp"].index[0]
    assert table.values.loc[udp, (OURS, "AP")] == pytest.approx(np.mean(aps))
    assert table.sd.loc[udp, (OURS, "AP")] == pytest.approx(np.std(aps, ddof=1))
    assert any("mean ± sample standard deviation" in n for n in table.notes)


def test_bootstrap_pairs_share_resolution_backbone_seed(run_dir: Path) -> None:
    run = load_run(run_dir)
    groups = tbl.pairs_for_bootstrap(run)
    assert [(g["resolution"], len(cells)) for g, cells in groups] == [("64x48", 4), ("128x96", 5)]


def test_reference_yaml_transcription(ref) -> None:
    """Spot checks against /work/shared/PAPER.md and REFERENCES.md, and every entry is labelled."""

    def find(source, method, backbone, res):
        (entry,) = [
            e for e in ref.entries if (e.source, e.method, e.backbone, e.input) == (source, method, backbone, res)
        ]
        return entry

    assert find("Paper T1", "CAL", "HRNet-W48", "128x96").metrics["AP"] == 72.3
    assert find("Paper T1", "CAL", "HRNet-W48", "128x96").dataset == "COCO test-dev"
    assert find("Paper T8", "DARK", "HRNet-W48", "64x48").metrics == dict(
        zip(tbl.PAPER_METRICS, [57.4, 87.1, 64.8, 56.5, 58.9, 62.0])
    )
    assert find("Paper T9", "UDP", "HRNet-W48", "384x288").params == 63.6
    assert find("DarkPose README (det 56.4)", "DARK", "HRNet-W32", "128x96").metrics == {"AP": 70.7}
    assert all(e.dataset in ("COCO val2017", "COCO test-dev") for e in ref.entries)
    t4 = next(a for a in ref.ablations if a["key"] == "gmm_components")
    assert [r["metrics"]["AP"] for r in t4["rows"]] == [74.3, 73.6, 72.8, 78.5, 78.6, 78.3]
    assert ref.paper_method("hrnet", "simplebaseline-r50") == "SimpleBaseline"
    assert ref.paper_method("spsr+hrnet", "hrnet-w32") == "HRNet+SPSR"


def test_reference_yaml_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "ref.yaml"
    bad.write_text(
        "datasets: {coco_val: COCO val}\nentries:\n  - {source: x, dataset: nope, method: HRNet, "
        "backbone: W32, input: 64x48, metrics: [1, 2, 3, 4, 5, 6]}\n"
    )
    with pytest.raises(ConfigError, match=re.escape("entries[0]")):
        paper_reference.load_reference(bad)


def test_extra_files_become_tables(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r", [CellSpec("udp")], num_images=4)
    (run_dir / "oracle.json").write_text(
        json.dumps(
            [
                {"method": "udp", "resolution": "64x48", "AP": 0.95},
                {"method": "hrnet", "resolution": "64x48", "AP": 0.61},
            ]
        )
    )
    (table,) = tbl.extra_tables(load_run(run_dir))
    assert table.key == "extra_oracle"
    assert list(table.values[("", "AP")]) == [95.0, 61.0]
    assert list(table.bold_mask()[("", "AP")]) == [True, False]


def test_cells_frame_has_every_metric(run_dir: Path) -> None:
    frame = tbl.cells_frame(load_run(run_dir))
    assert len(frame) == len(standard_specs())
    for name in ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL", "floor_AP", "params"):
        assert name in frame.columns
    assert set(frame["state"]) == {"complete", "failed"}
