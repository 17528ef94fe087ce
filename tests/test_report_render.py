"""build_report / ``lrpose-bench report``: HTML, LaTeX, CSV, JSON from a fake run folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from test_report_factory import CellSpec, make_run, standard_specs

from lrpose_bench.cli import main
from lrpose_bench.errors import ConfigError, UserError
from lrpose_bench.report.build import build_report, parse_formats
from lrpose_bench.report.render import latex_escape


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("run"), standard_specs(), num_images=10)
    paths = build_report(run_dir)
    return run_dir, paths


def test_all_formats_written(built) -> None:
    run_dir, paths = built
    assert set(paths) == {"html", "latex", "csv", "json"}
    assert paths["html"] == run_dir / "report" / "report.html"
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0


def test_html_is_self_contained(built) -> None:
    _, paths = built
    html = paths["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external resource in the page"
    assert "@import" not in html and "<script" not in html
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 4
    assert html.count("<table") >= 6
    assert "Paper — COCO val2017" in html and "Ours — SynthPose val" in html
    assert "not comparable" in html
    assert "failed" in html and "loss became NaN" in html
    assert "font-weight: bold" in html  # best values bolded through the Styler CSS


def test_csv_and_json_have_one_row_per_cell(built) -> None:
    run_dir, paths = built
    frame = pd.read_csv(paths["csv"])
    assert len(frame) == len(standard_specs())
    udp = frame[frame["cell"] == "udp__hrnet-w8__64x48__s0"].iloc[0]
    metrics = json.loads((run_dir / "udp__hrnet-w8__64x48__s0" / "metrics.json").read_text())["metrics"]
    for name, value in metrics.items():
        assert udp[name] == pytest.approx(value)
    assert udp["disp_coarse_mean"] > udp["disp_final_mean"] > 0
    report = json.loads(paths["json"].read_text())
    assert len(report["cells"]) == len(standard_specs())
    assert "main_64x48" in report["tables"] and report["bootstrap"]
    assert all(set(b) >= {"a", "b", "difference", "low", "high"} for b in report["bootstrap"])
    assert (paths["csv"].parent / "tables" / "main_128x96.csv").is_file()


def _tabular_columns(spec: str) -> int:
    return len(re.sub(r"[^lrc]", "", spec))


def _row_width(row: str) -> int:
    cells = re.split(r"(?<!\\)&", row)
    width = 0
    for cell in cells:
        match = re.search(r"\\multicolumn\{(\d+)\}", cell)
        width += int(match.group(1)) if match else 1
    return width


def test_latex_is_ascii_booktabs_and_well_formed(built) -> None:
    _, paths = built
    folder = paths["latex"].parent
    tex_files = [paths["latex"], *sorted((folder / "tables").glob("*.tex"))]
    assert len(tex_files) >= 6
    for path in tex_files:
        text = path.read_text()
        assert text.isascii(), path
        begins = re.findall(r"\\begin\{(\w+)\}", text)
        ends = re.findall(r"\\end\{(\w+)\}", text)
        assert sorted(begins) == sorted(ends), path
        assert text.count("{") - text.count(r"\{") == text.count("}") - text.count(r"\}"), path
        for spec, body in re.findall(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", text, re.S):
            assert "\\toprule" in body and "\\midrule" in body and "\\bottomrule" in body
            n = _tabular_columns(spec)
            rows = [r for r in body.split("\\\\") if "&" in r]
            assert rows and all(_row_width(r) == n for r in rows), path
    main = (folder / "tables" / "main_64x48.tex").read_text()
    assert "\\bfseries" in main and "\\cmidrule" in main and "--" in main
    for ref in re.findall(r"\\includegraphics\[[^]]*\]\{([^}]*)\}", paths["latex"].read_text()):
        assert (folder / ref).is_file() and (folder / ref).read_bytes().startswith(b"%PDF")


@pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex is not installed on this machine (TeX is "
    "deliberately not installed here); the structure test above still checks the LaTeX",
)
def test_latex_compiles(built, tmp_path: Path) -> None:
    _, paths = built
    work = tmp_path / "latex"
    shutil.copytree(paths["latex"].parent, work)
    for _ in range(2):
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
    assert (work / "report.pdf").stat().st_size > 1000


def test_rebuilding_a_report_gives_the_same_figure_bytes(tmp_path: Path) -> None:
    """A committed report must change in git only where a number changed: the PDFs used to embed
    their creation date, so every rebuild rewrote every figure."""
    root = make_run(tmp_path / "run", [CellSpec("udp"), CellSpec("hrnet", noise=6.0)], num_images=6)
    first = build_report(root, ["latex", "html"], out=tmp_path / "a")
    time.sleep(1.1)  # a second later: a timestamp would differ
    second = build_report(root, ["latex", "html"], out=tmp_path / "b")
    pdfs = sorted((first["latex"].parent / "figures").glob("*.pdf"))
    assert pdfs
    for pdf in pdfs:
        assert pdf.read_bytes() == (second["latex"].parent / "figures" / pdf.name).read_bytes(), pdf.name
    assert first["html"].read_bytes() == second["html"].read_bytes()


def test_displacement_figures_are_drawn_for_the_lowest_seed_only(tmp_path: Path) -> None:
    """An 8-seed run's HTML reached 3.4 MB with one displacement figure per seed; seeds of a
    configuration look alike and the table keeps their numbers, so only the lowest is drawn."""
    specs = [CellSpec("udp", seed=s) for s in (2, 0, 1)] + [CellSpec("hrnet", seed=1, noise=6.0)]
    root = make_run(tmp_path / "run", specs, num_images=6)
    paths = build_report(root, ["latex", "csv"])
    figures = sorted(p.name for p in (paths["latex"].parent / "figures").glob("disp_*.pdf"))
    assert figures == ["disp_hrnet__hrnet-w8__64x48__s1.pdf", "disp_udp__hrnet-w8__64x48__s0.pdf"]
    table = pd.read_csv(paths["csv"].parent / "tables" / "displacement.csv")
    assert len(table) >= 2  # the table still covers the methods (mean over every seed)


def test_latex_escape() -> None:
    assert latex_escape("cal@offset_mask=binary 50% #1 & ŷ−y ± 1×2 —") == (
        r"cal@offset\_mask=binary 50\% \#1 \& $\hat{y}-$y $\pm$ 1$\times$2 --"
    )


def test_format_selection(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r", [CellSpec("udp"), CellSpec("cal", noise=2)], num_images=5)
    paths = build_report(run_dir, formats=["csv", "json"], out=tmp_path / "out")
    assert set(paths) == {"csv", "json"}
    assert not (tmp_path / "out" / "report.html").exists()
    assert parse_formats("html, LaTeX", ["csv"]) == ["html", "latex"]
    with pytest.raises(ConfigError, match="pdf"):
        parse_formats("html,pdf", ["csv"])


def test_cli_report(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path / "r", [CellSpec("udp"), CellSpec("dark", noise=6)], num_images=5)
    assert main(["report", str(run_dir), "--format", "html,json", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and (tmp_path / "rep" / "report.json").is_file()
    assert main(["report", str(tmp_path / "empty-or-missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_bootstrap_samples_overrides_the_run_config(tmp_path: Path, capsys) -> None:
    """``--bootstrap-samples`` refines the intervals from the saved predictions; run.json is untouched."""
    run_dir = make_run(tmp_path / "r", [CellSpec("udp"), CellSpec("cal", noise=2)], num_images=8)
    run_json = (run_dir / "run.json").read_bytes()
    configured = json.loads(build_report(run_dir, ["json"], out=tmp_path / "a")["json"].read_text())
    assert main(["report", str(run_dir), "--format", "json", "--out", str(tmp_path / "b"),
                 "--bootstrap-samples", "37"]) == 0  # fmt: skip
    overridden = json.loads((tmp_path / "b" / "report.json").read_text())
    assert overridden["summary"]["Bootstrap"].startswith("37 resamples")
    assert not configured["summary"]["Bootstrap"].startswith("37 ")
    assert overridden["bootstrap"] and overridden["bootstrap"] != configured["bootstrap"]
    assert (run_dir / "run.json").read_bytes() == run_json
    off = build_report(run_dir, ["json"], out=tmp_path / "c", bootstrap_samples=0)["json"]
    assert json.loads(off.read_text())["bootstrap"] == []
    capsys.readouterr()
    assert main(["report", str(run_dir), "--bootstrap-samples", "-5"]) == 2
    err = capsys.readouterr().err
    assert "--bootstrap-samples -5" in err and ">= 0" in err and "Traceback" not in err


def test_not_a_run_folder_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        build_report(tmp_path)


def test_running_and_unlisted_cells(tmp_path: Path) -> None:
    """A cell still running and a cell folder missing entirely both render as not-complete rows."""
    run_dir = make_run(tmp_path / "r", [CellSpec("udp"), CellSpec("cal", state="running")], num_images=5)
    data = json.loads((run_dir / "run.json").read_text())
    data["cells"].append("dark__hrnet-w8__64x48__s0")  # listed, never started
    (run_dir / "run.json").write_text(json.dumps(data))
    paths = build_report(run_dir, formats=["json"])
    states = {c["cell"]: c["state"] for c in json.loads(paths["json"].read_text())["cells"]}
    assert states == {
        "udp__hrnet-w8__64x48__s0": "complete",
        "cal__hrnet-w8__64x48__s0": "running",
        "dark__hrnet-w8__64x48__s0": "missing",
    }


@pytest.mark.slow
def test_a_train_split_run_is_labelled_a_diagnostic(tmp_path: Path) -> None:
    specs = standard_specs()[:2]
    run_dir = make_run(tmp_path / "run", specs, num_images=6, eval_split="SynthPose train",
                       config={"data": {"eval_split": "train"}})  # fmt: skip
    html = build_report(run_dir, formats=["html"])["html"].read_text()
    assert "a fitting diagnostic, not a result" in html
    val_dir = make_run(tmp_path / "val", specs, num_images=6)
    assert "fitting diagnostic" not in build_report(val_dir, formats=["html"])["html"].read_text()


def test_twelve_cell_report_time(tmp_path: Path) -> None:
    """Performance note: a 12-cell run (500 instances × 17 joints each) is measured, not asserted
    tightly; the time is printed and recorded in report.json."""
    specs = [
        CellSpec(m, r, noise=n)
        for r in ("64x48", "128x96", "256x192")
        for m, n in (("hrnet", 9.0), ("dark", 6.0), ("udp", 5.0), ("cal", 3.0))
    ]
    run_dir = make_run(tmp_path / "r", specs, num_images=250, persons=2)
    start = time.perf_counter()
    paths = build_report(run_dir)
    seconds = time.perf_counter() - start
    print(f"\n12-cell report: {seconds:.1f} s wall")
    assert json.loads(paths["json"].read_text())["build_seconds"] > 0
    assert seconds < 120  # loose guard against pathological slowness only
