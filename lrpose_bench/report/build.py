"""``build_report``: run folder → tables, figures, bootstrap → HTML / LaTeX / CSV / JSON.

Called by ``lrpose-bench report RUN_DIR`` and at the end of ``lrpose-bench run``. Reads only the run
folder (see :mod:`lrpose_bench.report.run_folder`), so a report can be rebuilt at any time, also for a
run that is still going or has failed cells (they show as failed rows). Every file is written
atomically (``lrpose_bench.store``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lrpose_bench.analysis import figures as figs
from lrpose_bench.analysis.bootstrap import (
    ImageEvaluation,
    PairedDifference,
    evaluate_images,
    paired_differences,
    pooled_differences,
)
from lrpose_bench.analysis.displacement import Displacements, bin_labels, load_displacements, summarize
from lrpose_bench.analysis.keypoint_errors import ErrorBreakdown, Thresholds, error_breakdown
from lrpose_bench.config import EvalConfig, ReportConfig
from lrpose_bench.errors import ConfigError, UserError
from lrpose_bench.report import tables as tbl
from lrpose_bench.report.paper_reference import PaperReference, load_reference
from lrpose_bench.report.render import FigureOut, ReportContent, render_csv, render_html, render_json, render_latex
from lrpose_bench.report.run_folder import Cell, RunData, load_run
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import atomic_write, ensure_writable_folder

FORMATS: tuple[str, ...] = ("html", "latex", "csv", "json")
PNG_DPI = 100
#: no creation date or software version in the figure files: rebuilding a report from the same run
#: folder gives the same bytes, so a committed report changes in git only where a number changed
PDF_METADATA: dict[str, None] = {"CreationDate": None, "Producer": None, "Creator": None}
PNG_METADATA: dict[str, None] = {"Software": None}


@dataclass
class Settings:
    """Report settings taken from the run's resolved config (defaults when absent)."""

    bins: list[float]
    bootstrap_samples: int
    seed: int
    formats: list[str]
    keypoint_errors: Thresholds


def settings_of(run: RunData, bootstrap_samples: int | None = None) -> Settings:
    """The run's report settings; ``bootstrap_samples`` (when given) replaces the run's
    ``eval.bootstrap_samples``, so a coarse interval can be refined from the saved predictions
    without retraining and without editing ``run.json``."""
    config = run.config
    report = config.get("report") or {}
    evaluation = config.get("eval") or {}
    if bootstrap_samples is None:
        bootstrap_samples = int(evaluation.get("bootstrap_samples", EvalConfig().bootstrap_samples))
    elif bootstrap_samples < 0:
        raise ConfigError(
            f"--bootstrap-samples {bootstrap_samples}: give a count >= 0 (0 turns the bootstrap off, "
            "e.g. --bootstrap-samples 1000)"
        )
    return Settings(
        bins=[float(b) for b in report.get("displacement_bins", ReportConfig().displacement_bins)],
        bootstrap_samples=int(bootstrap_samples),
        seed=int(config.get("seed", 0) or 0),
        formats=list(report.get("formats", ReportConfig().formats)),
        keypoint_errors=_keypoint_error_thresholds(report),
    )


def _keypoint_error_thresholds(report: dict[str, Any]) -> Thresholds:
    """Thresholds of the keypoint error table from the run's ``report`` config (defaults for runs
    made before the table existed)."""
    defaults = ReportConfig()
    low, high = (float(v) for v in report.get("keypoint_error_ks", defaults.keypoint_error_ks))
    match = float(report.get("keypoint_error_match_oks", defaults.keypoint_error_match_oks))
    collapse = float(report.get("keypoint_error_collapse_ratio", defaults.keypoint_error_collapse_ratio))
    try:
        return Thresholds(low=low, high=high, match_oks=match, collapse_ratio=collapse)
    except ValueError as error:
        raise ConfigError(
            f"report.keypoint_error_ks / keypoint_error_match_oks / keypoint_error_collapse_ratio: {error}"
        ) from None


def parse_formats(formats: Sequence[str] | str | None, default: Sequence[str]) -> list[str]:
    """Validated, de-duplicated list of output formats."""
    if formats is None:
        items = list(default)
    elif isinstance(formats, str):
        items = [f.strip().lower() for f in formats.split(",") if f.strip()]
    else:
        items = [str(f).strip().lower() for f in formats if str(f).strip()]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ConfigError(
            f"unknown report format(s) {unknown or items}: choose from {', '.join(FORMATS)} (e.g. --format html,csv)"
        )
    return list(dict.fromkeys(items))


def build_report(
    run_dir: Path,
    formats: list[str] | None = None,
    out: Path | None = None,
    bootstrap_samples: int | None = None,
) -> dict[str, Path]:
    """Render the report of ``run_dir`` into ``out`` (default ``run_dir/report``).

    ``bootstrap_samples`` overrides the run's ``eval.bootstrap_samples`` (None keeps it); the
    report's run table says which count was used.

    Returns the main file per format: ``{"html": .../report.html, "latex": .../latex/report.tex,
    "csv": .../cells.csv, "json": .../report.json}``.
    """
    t0 = time.perf_counter()
    run = load_run(run_dir)
    settings = settings_of(run, bootstrap_samples)
    chosen = parse_formats(formats, settings.formats)
    out = ensure_writable_folder(Path(out) if out is not None else run.folder / "report")
    ref = load_reference()

    displacements = _load_displacements(run)
    labels = bin_labels(settings.bins)
    summaries = {cell_id: summarize(d, settings.bins) for cell_id, d in displacements.items()}
    truths = GroundTruths()  # every table below scores against the same annotation files
    differences, bootstrap_notes = run_bootstrap(run, settings.bootstrap_samples, settings.seed, truths=truths)

    tables: list[tbl.Table] = []
    tables += tbl.main_tables(run, ref)
    elsewhere = tbl.published_elsewhere_table(run, ref)
    if elsewhere is not None:
        tables.append(elsewhere)
    tables += tbl.ablation_tables(run, ref)
    unusable: dict[str, str] = {}
    errors = keypoint_error_breakdowns(run, settings.keypoint_errors, unusable, truths)
    warn_unusable_predictions(run, unusable)
    by_budget = budget_point_breakdowns(run, errors, settings.keypoint_errors, truths)
    budget = tbl.budget_table(run, by_budget)
    if budget is not None:
        tables.append(budget)
    optional_tables = (
        tbl.bootstrap_table(run, differences),
        tbl.displacement_table(run, summaries, labels),
        tbl.keypoint_error_table(run, errors),
        tbl.left_right_table(run, errors),
        tbl.errors_by_seed_table(run, errors),
        tbl.fixed_bootstrap_table(run, _fixed_differences(run, errors, settings, truths), tbl.INVERSION_FIX),
    )
    for optional in optional_tables:
        if optional is not None:
            tables.append(optional)
    tables += tbl.extra_tables(run)
    if tables and bootstrap_notes:
        boot = next((t for t in tables if t.key == "bootstrap"), None)
        (boot or tables[0]).notes.extend(bootstrap_notes)

    pdf_dir = out / "latex" / "figures" if "latex" in chosen else None
    figures = make_figures(
        run, ref, displacements, summaries, settings, want_png="html" in chosen, pdf_dir=pdf_dir, by_budget=by_budget
    )

    extra_columns = {cid: {f"disp_{k}": v for k, v in s.items()} for cid, s in summaries.items()}
    content = ReportContent(
        title=f"lrpose-bench report: {run.folder.name}",
        run_dir=run.folder,
        summary=_summary(run, settings),
        notes=_page_notes(run),
        tables=tables,
        figures=figures,
        config_yaml=yaml.safe_dump(run.config, sort_keys=False) if run.config else "(run.json has no config)",
        environment=_environment(run),
        cells=tbl.cells_frame(run, extra_columns),
        records={"bootstrap": [dict(context, **_diff_record(d)) for context, d in differences]},
    )
    paths: dict[str, Path] = {}
    if "html" in chosen:
        paths["html"] = render_html(content, out / "report.html")
    if "latex" in chosen:
        paths["latex"] = render_latex(content, out / "latex")
    if "csv" in chosen:
        paths["csv"] = render_csv(content, out)
    if "json" in chosen:
        content.records["build_seconds"] = round(time.perf_counter() - t0, 2)
        paths["json"] = render_json(content, out / "report.json")
    return paths


# ------------------------------------------------------------------------------------- pieces
def _lowest_seed_cells(displacements: Mapping[str, Displacements], cells: Mapping[str, Cell]) -> set[str]:
    """The cells whose displacement figures are drawn: the lowest seed of each (method, ablation,
    backbone, resolution). Seeds of one configuration look alike, and one ~100 kB figure per seed
    made an 8-seed report's HTML 3.4 MB; the displacement table keeps every seed's numbers."""
    lowest: dict[tuple, Cell] = {}
    for cid in displacements:
        c = cells[cid]
        key = (c.method, c.ablation_text, c.backbone, c.resolution)
        if key not in lowest or c.seed < lowest[key].seed:
            lowest[key] = c
    return {c.id for c in lowest.values()}


def _load_displacements(run: RunData) -> dict[str, Displacements]:
    out = {}
    for cell in run.complete_cells():
        path = cell.folder / "displacements.npz"
        if path.is_file():
            try:
                out[cell.id] = load_displacements(path)
            except UserError:
                continue  # an unreadable file: the cell simply has no displacement figure
    return out


def _saved_predictions(cell: Cell) -> list[dict[str, Any]]:
    return json.loads((cell.folder / "predictions.json").read_text())


def run_bootstrap(
    run: RunData,
    samples: int,
    seed: int,
    predictions_of: Callable[[Cell], list[dict[str, Any]]] = _saved_predictions,
    truths: GroundTruths | None = None,
) -> tuple[list[tuple[dict[str, Any], PairedDifference]], list[str]]:
    """Paired bootstrap for every pair of cells sharing input size, backbone, seed and ground truth.

    ``predictions_of`` gives a cell's COCO results (default: its ``predictions.json``); the keypoint
    error table passes predictions with one kind of error fixed; ``truths``: the build's ground truths."""
    truths = truths or GroundTruths()
    notes: list[str] = []
    if samples <= 0:
        return [], ["Bootstrap disabled (0 resamples: eval.bootstrap_samples or --bootstrap-samples)."]
    results: list[tuple[dict[str, Any], PairedDifference]] = []
    per_seed: dict[tuple[str, str, str], dict[int, dict[str, ImageEvaluation]]] = {}
    for context, cells in tbl.pairs_for_bootstrap(run):
        gt_path = Path(context["gt"])
        coco_gt = truths.get(gt_path)
        if coco_gt is None:
            notes.append(
                f"Bootstrap skipped for {context['resolution']} / {context['backbone']}: ground truth "
                f"{gt_path} is not readable (move it back or re-evaluate)."
            )
            continue
        evaluations: dict[str, ImageEvaluation] = {}
        for cell in cells:
            try:
                evaluations[cell.label] = evaluate_images(coco_gt, predictions_of(cell))
            except (OSError, ValueError, AssertionError, KeyError) as error:
                notes.append(f"Bootstrap skipped {cell.id}: predictions.json unusable ({type(error).__name__}).")
        if len(evaluations) < 2:
            continue
        public = {k: v for k, v in context.items() if k != "gt"}
        for diff in paired_differences(evaluations, samples, seed):
            results.append((public, diff))
        key = (context["resolution"], context["backbone"], context["gt"])
        per_seed.setdefault(key, {})[context["seed"]] = evaluations
    for (res, backbone, _), by_seed in per_seed.items():  # pooled over seeds, after the per-seed rows
        for diff in pooled_differences(by_seed, samples, seed):
            results.append(({"resolution": res, "backbone": backbone, "seed": f"pooled ({diff.seeds})"}, diff))
    return results, notes


def _fixed_differences(
    run: RunData, errors: dict[str, ErrorBreakdown], settings: Settings, truths: GroundTruths
) -> list[tuple[dict[str, Any], PairedDifference]]:
    """Pooled-over-seeds paired bootstrap of AP with inversions fixed (only where every cell of a
    comparison has a breakdown; per-seed rows are left to the main bootstrap table)."""
    if settings.bootstrap_samples <= 0 or not errors:
        return []

    def fixed(cell: Cell) -> list[dict[str, Any]]:
        return errors[cell.id].fixed_results[tbl.INVERSION_FIX]

    usable = dataclasses.replace(run, cells=[c for c in run.cells if c.id in errors])
    differences, _ = run_bootstrap(usable, settings.bootstrap_samples, settings.seed, fixed, truths)
    return [(context, diff) for context, diff in differences if str(context["seed"]).startswith("pooled")]


def keypoint_error_breakdowns(
    run: RunData,
    thresholds: Thresholds,
    problems: dict[str, str] | None = None,
    truths: GroundTruths | None = None,
) -> dict[str, ErrorBreakdown]:
    """Keypoint error breakdown of every complete cell whose predictions and ground truth are
    readable; a cell without them simply has no row (its AP is in the main table). ``problems``
    collects, per cell id, why an existing ``predictions.json`` could not be used."""
    truths = truths or GroundTruths()
    out: dict[str, ErrorBreakdown] = {}
    for cell in run.complete_cells():
        gt_path = cell.info.get("gt_annotations")
        coco_gt = truths.get(gt_path) if gt_path else None
        if coco_gt is None:
            continue
        try:
            predictions = json.loads((cell.folder / "predictions.json").read_text())
            out[cell.id] = error_breakdown(coco_gt, predictions, thresholds)
        except (OSError, ValueError, AssertionError, KeyError) as error:
            if problems is not None:
                problems[cell.id] = type(error).__name__
    return out


def budget_point_breakdowns(
    run: RunData, final: Mapping[str, ErrorBreakdown], thresholds: Thresholds, truths: GroundTruths | None = None
) -> dict[tbl.BudgetPoint, ErrorBreakdown]:
    """Keypoint error breakdown at every budget point: each snapshot's saved COCO results
    (``metrics.json`` ``snapshots[].predictions``, written by ``engine/cell.py::score_snapshots``)
    with inversions fixed, and the final predictions' breakdown (``final``) at ``None``.

    Why: the budget curve shows whether the ranking holds as training grows; with the left/right
    confusion and the inversion-fixed AP beside it, it also shows whether what moves is where a
    method puts a joint or which side it thinks the joint is on (for CAL: whether stage 2 changes
    the confusion, since its point at 1× is stage 1). Cells run before snapshots kept their results
    simply have no snapshot entries."""
    truths = truths or GroundTruths()
    out: dict[tbl.BudgetPoint, ErrorBreakdown] = {}
    for cell in run.complete_cells():
        if cell.ablation:
            continue
        if cell.id in final:
            out[(cell.id, None)] = final[cell.id]
        gt_path = cell.info.get("gt_annotations")
        snaps = [s for s in cell.info.get("snapshots") or [] if isinstance(s, dict) and s.get("predictions")]
        coco_gt = truths.get(gt_path) if gt_path and snaps else None
        if coco_gt is None:
            continue
        for snap in snaps:
            try:
                results = json.loads((cell.folder / str(snap["predictions"])).read_text())
                out[(cell.id, float(snap["fraction"]))] = error_breakdown(
                    coco_gt, results, thresholds, fix=(tbl.INVERSION_FIX,)
                )
            except (OSError, ValueError, AssertionError, KeyError, TypeError):
                continue  # that point simply has no breakdown; its AP is in metrics.json
    return out


def warn_unusable_predictions(run: RunData, problems: Mapping[str, str]) -> None:
    """One console line per complete cell whose ``predictions.json`` is unusable: the report leaves
    it out of the bootstrap and keypoint-error tables, which a reader of the HTML alone could miss,
    and the fix is a rerun of the run command, which re-evaluates such a cell from its checkpoint
    (``engine/cell.py::read_finished_metrics``)."""
    for cell_id, why in sorted(problems.items()):
        warnings.warn(
            f"{cell_id}: predictions.json unusable ({why}); the report leaves this cell out of the "
            "bootstrap and keypoint-error tables (its AP stays in the main table). To restore it, rerun "
            "the run command: the cell is re-evaluated from its checkpoint, not retrained",
            stacklevel=2,
        )


class GroundTruths:
    """The ground-truth COCO objects of one report build, each annotation file read and indexed once.

    Why: the paired bootstrap, its inversion-fixed twin, the keypoint-error breakdown and the
    budget-point breakdown all score against the same ``metrics.json`` ``gt_annotations`` file; each
    used to read it anew (four reads of the same JSON per report, COCO val's is ~10 MB)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}
        self.reads = 0  # how many files were read (a test counts them)

    def get(self, path: str | Path) -> Any:
        """The COCO object of ``path``; ``None`` when it is unreadable (the caller skips or notes it)."""
        key = str(path)
        if key not in self._loaded:
            self._loaded[key] = self._read(Path(path))
        return self._loaded[key]

    def _read(self, path: Path) -> Any:
        from lrpose_bench.data.coco import coco_from_dict

        self.reads += 1
        try:
            return coco_from_dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None


def _diff_record(diff: PairedDifference) -> dict[str, Any]:
    return {
        "a": diff.a,
        "b": diff.b,
        "AP_a": diff.ap_a,
        "AP_b": diff.ap_b,
        "difference": diff.difference,
        "low": diff.low,
        "high": diff.high,
        "samples": diff.samples,
        "level": diff.level,
        "seeds": diff.seeds,
    }


def _summary(run: RunData, settings: Settings) -> list[tuple[str, str]]:
    states = pd.Series([c.state for c in run.cells]).value_counts().to_dict() if run.cells else {}
    cells_text = ", ".join(f"{n} {s}" for s, n in states.items()) or "none"
    res = sorted({c.resolution for c in run.cells}, key=lambda r: _pixels(r))
    out = [
        ("Run folder", str(run.folder)),
        ("Evaluated on", run.eval_split),
        ("Started", str(run.run.get("started", "unknown"))),
        ("Cells", f"{len(run.cells)} ({cells_text})"),
        ("Methods", ", ".join(dict.fromkeys(c.label for c in run.cells))),
        ("Backbones", ", ".join(sorted({c.backbone for c in run.cells}))),
        ("Input sizes", ", ".join(r.replace("x", "×") for r in res)),
        ("Profile", str(run.config.get("profile", "unknown"))),
        ("Bootstrap", f"{settings.bootstrap_samples} resamples over images, seed {settings.seed}"),
    ]
    processes = run.run.get("processes") or {}
    if int(processes.get("world_size") or 1) > 1:  # train.batch_size is per process: say what trained
        out.append(
            (
                "Processes",
                f"{processes['world_size']} (DistributedDataParallel), batch "
                f"{processes.get('batch_per_process', '?')} each, global batch "
                f"{processes.get('global_batch', '?')}",
            )
        )
    out += _protocol_rows(run)
    if run.run.get("argv"):
        out.append(("Command", "lrpose-bench " + " ".join(str(a) for a in run.run["argv"])))
    return out


def _protocol_rows(run: RunData) -> list[tuple[str, str]]:
    """The protocol a reader needs to weigh the numbers: coordinates, boxes, budget, seeds, tuning."""
    cfg = run.config
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    coordinates = data.get("coordinates", "unbiased")
    boxes = (
        "detected person boxes"
        if data.get("person_boxes") and "coco" in run.eval_split.lower()
        else "ground-truth boxes"
    )
    seeds = sorted({c.seed for c in run.cells})
    epochs = train.get("epochs")
    if train.get("match_budget", False):
        ratio = float(train.get("matched_extra_ratio", 0.0))
        extra = max(1, round(int(epochs or 0) * ratio)) if epochs else "?"
        budget = (f"{epochs} epochs + {extra} (CAL: stage 2; every other method: the same extra epochs at the same "
                  "post-milestone learning rate, train.match_budget)")  # fmt: skip
    else:
        budget = f"{epochs} epochs per method (CAL adds its stage 2; train.match_budget off)"
    return [
        ("Coordinates", f"{coordinates} ({'UDP' if coordinates == 'unbiased' else 'HRNet reference'} data processing)"),
        ("Boxes", boxes),
        ("Training budget", budget),
        (
            "Seeds",
            f"{len(seeds)} ({', '.join(str(s) for s in seeds)})"
            + ("; one seed is no evidence of an order" if len(seeds) == 1 else ""),
        ),
        (
            "Constants",
            "chosen on the tune split by lrpose-bench sweep where configs/methods say so; never on the scored split",
        ),
    ]


def _page_notes(run: RunData) -> list[str]:
    notes = []
    if (run.config.get("data") or {}).get("eval_split") == "train":
        notes.append(
            f"Scored on the training images ({run.eval_split}, data.eval_split: train): a fitting diagnostic, "
            "not a result. Train AP near val AP means the models under-fit; far above it, they over-fit."
        )
    if "coco" not in run.eval_split.lower():
        notes.append(
            f"Our numbers are measured on {run.eval_split}; the paper's are on COCO (val2017 or "
            "test-dev). They sit in separate column groups: compare orderings and gaps, not absolute values."
        )
    bad = [c for c in run.cells if c.state != "complete"]
    if bad:
        notes.append(
            f"{len(bad)} cell(s) did not complete: "
            + "; ".join(f"{c.id} ({c.state}{': ' + c.reason if c.reason else ''})" for c in bad[:6])
            + (" …" if len(bad) > 6 else "")
        )
    return notes


def _environment(run: RunData) -> dict[str, Any]:
    env = dict(run.run.get("environment") or {})
    if not env:
        env = next(
            (dict(c.info.get("environment") or {}) for c in run.complete_cells() if c.info.get("environment")), {}
        )
    return env


def _budget_frame(run: RunData, by_budget: Mapping[tbl.BudgetPoint, ErrorBreakdown]) -> pd.DataFrame | None:
    """Rows (method, resolution, epochs, AP, ratio, mirror + sds) from every un-ablated cell's
    snapshots and final scores, ``mirror`` the left/right confusion (nearer-mirror %) where the
    point has a breakdown; ``None`` when no cell kept snapshots."""
    points: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    for cell in run.complete_cells():
        snaps = cell.info.get("snapshots") or []
        if cell.ablation or not snaps:
            continue
        floor = (cell.info.get("floor") or {}).get("final_mean_px")
        stages = (cell.info.get("method") or {}).get("stages") or []
        total = sum(int(s.get("epochs", 0)) for s in stages if isinstance(s, dict))
        entries = [(int(s["epochs"]), s.get("metrics", {}), s.get("errors", {}), s.get("fraction")) for s in snaps]
        entries.append((total, cell.metrics, cell.info.get("errors") or {}, None))
        for epochs, metrics, errors, fraction in entries:
            if metrics.get("AP") is None:
                continue
            error = errors.get("final_mean_px")
            ratio = error / floor if error is not None and floor else float("nan")
            key = (cell.id, None if fraction is None else float(fraction))
            mirror = 100 * by_budget[key].nearer_mirror_share if key in by_budget else float("nan")
            points.setdefault((cell.method, cell.resolution, epochs), []).append((100 * metrics["AP"], ratio, mirror))
    if not points:
        return None
    rows = []
    for (method, res, epochs), values in points.items():
        ap, ratio, mirror = (pd.Series([v[i] for v in values]) for i in range(3))
        rows.append({"method": method, "resolution": res, "epochs": epochs, "AP": ap.mean(), "AP_sd": ap.std(),
                     "ratio": ratio.mean(), "ratio_sd": ratio.std(), "mirror": mirror.mean(),
                     "mirror_sd": mirror.std()})  # fmt: skip
    return pd.DataFrame(rows).sort_values(["resolution", "method", "epochs"], key=None)


def _pixels(res: str) -> int:
    try:
        r = Resolution.parse(res)
    except UserError:
        return 0
    return r.height * r.width


# ------------------------------------------------------------------------------------ figures
def make_figures(
    run: RunData,
    ref: PaperReference,
    displacements: dict[str, Displacements],
    summaries: dict[str, dict[str, float]],
    settings: Settings,
    want_png: bool,
    pdf_dir: Path | None,
    by_budget: Mapping[tbl.BudgetPoint, ErrorBreakdown] | None = None,
) -> list[FigureOut]:
    """Every figure of the report, rendered to PNG (HTML) and/or PDF (LaTeX) and closed."""
    out: list[FigureOut] = []

    def emit(fig, key: str, title: str, caption: str, section: str) -> None:
        png = None
        if want_png:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=PNG_DPI, metadata=PNG_METADATA)
            png = buffer.getvalue()
        pdf = None
        if pdf_dir is not None:
            pdf = pdf_dir / f"{_safe(key)}.pdf"
            atomic_write(pdf, lambda handle: fig.savefig(handle, format="pdf", metadata=PDF_METADATA))
        fig.clear()
        out.append(FigureOut(key=key, title=title, caption=caption, png=png, pdf=pdf, section=section))

    cells = {c.id: c for c in run.cells}
    ap = _ap_vs_resolution_frames(run, ref)
    if ap is not None:
        ours, paper, paper_label = ap
        fig = figs.ap_vs_resolution(ours, paper, f"ours, {run.eval_split}", paper_label)
        emit(
            fig,
            "ap_vs_resolution",
            "AP versus input size (paper Fig. 1 style)",
            f"One line per method; ours on {run.eval_split}"
            + (
                f", the published numbers ({paper_label}) in a "
                "separate panel: absolute values are not comparable across data sets"
                if paper is not None
                else ""
            )
            + ".",
            "figures",
        )
    budget = _budget_frame(run, by_budget or {})
    if budget is not None:
        emit(
            figs.budget_curve(budget),
            "budget_curve",
            "Budget curve: score against training epochs",
            "Mean over seeds (bars: sd) of AP and of the final error relative to the mean-pose floor, from the "
            "weights kept at fractions of the epochs and at the end (no extra training), and, where the run kept "
            "each snapshot's predictions, the left/right confusion (lateral joints predicted nearer their mirror "
            "partner). The last point of a baseline includes its budget-matched epochs; CAL's point at the base "
            "epochs is its stage 1.",
            "figures",
        )
    if summaries:
        frame = pd.DataFrame(
            [
                {
                    "label": cells[cid].label,
                    "method": cells[cid].method,
                    "ablated": bool(cells[cid].ablation),
                    "resolution": cells[cid].resolution,
                    **s,
                }
                for cid, s in summaries.items()
            ]
        )
        frame = frame.sort_values("resolution", key=lambda s: s.map(_pixels), kind="stable")
        emit(
            figs.bin_share_overview(frame, bin_labels(settings.bins)),
            "displacement_bins",
            "Share of coarse displacements per distance bin",
            "Arg-max displacement ŷ−y (Eq. 11) of visible joints in heatmap pixels, bins as paper Fig. 5.",
            "figures",
        )

    # Fig. 5 layout: the same method at several input sizes (the paper's 128×96 vs 256×192 panels)
    drawn = _lowest_seed_cells(displacements, cells)
    by_series: dict[tuple, list[Cell]] = {}
    for cid in drawn:
        c = cells[cid]
        by_series.setdefault((c.method, c.ablation_text, c.backbone, c.seed), []).append(c)
    shown: set[str] = set()
    for (_method, _ablation, backbone, seed), series in by_series.items():
        series = sorted(series, key=lambda c: _pixels(c.resolution))
        if len(series) < 2:
            continue
        shown.update(c.id for c in series)
        rows = [(f"{c.label} {c.resolution.replace('x', '×')}", c.method, displacements[c.id]) for c in series]
        label = series[0].label
        emit(
            figs.displacement_figure(rows, settings.bins),
            f"fig5_{label}_{backbone}_s{seed}",
            f"Fig. 5 layout: {label} ({backbone}) across input sizes",
            "Rows: input sizes. Columns: scatter of coarse displacements ŷ−y, share per distance bin (coarse vs "
            "final after decoding), 2-D histogram; heatmap pixels, visible joints. Each row is that cell's "
            "displacement figure.",
            "displacement",
        )
    for cid, disp in displacements.items():
        if cid in shown or cid not in drawn:  # drawn in a Fig. 5 layout above, or a later seed
            continue
        c = cells[cid]
        title = f"{c.label}, {c.backbone}, {c.resolution.replace('x', '×')}, seed {c.seed}"
        emit(
            figs.displacement_figure([(title, c.method, disp)], settings.bins),
            f"disp_{cid}",
            f"Displacements: {title}",
            f"Heatmap {disp.heatmap_size[0]}×{disp.heatmap_size[1]}; coarse = arg-max − ground truth, final = "
            "decoded − ground truth. Drawn for the lowest seed of each configuration; every seed's statistics are "
            "in the displacement table.",
            "displacement",
        )

    logs = {}
    for c in run.cells:
        log = c.train_log()
        if log is not None and len(log):
            logs[f"{c.label} {c.resolution} s{c.seed}"] = (c.method, c.resolution, log)
    if logs:
        emit(
            figs.training_curves(logs),
            "training_curves",
            "Training loss per epoch",
            "Mean loss per epoch from each cell's train_log.csv; colour = method.",
            "training",
        )
    return out


def _ap_vs_resolution_frames(run: RunData, ref: PaperReference):
    rows = []
    for c in run.complete_cells():
        if not c.ablation:
            rows.append(
                {
                    "method": c.method,
                    "backbone": c.backbone,
                    "resolution": c.resolution,
                    "pixels": _pixels(c.resolution),
                    "AP": 100 * float(c.metrics.get("AP", np.nan)),
                }
            )
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    if frame["resolution"].nunique() < 2:
        return None
    several_backbones = frame["backbone"].nunique() > 1
    if several_backbones:
        frame["method"] = frame["method"] + " / " + frame["backbone"]
    ours = (
        frame.groupby(["method", "backbone", "resolution", "pixels"], sort=False)["AP"]
        .agg(["mean", "std"])
        .reset_index()
        .rename(columns={"mean": "AP", "std": "sd"})
    )
    paper_rows, label = [], None
    for (method, backbone, res), _ in frame.groupby(["method", "backbone", "resolution"], sort=False):
        base = method.split(" / ")[0]
        found = ref.lookup(base, backbone, res)
        for dataset, (entry, _) in found.items():
            if "val" in dataset.lower() and "AP" in entry.metrics:
                label = f"paper, {dataset}, {entry.backbone}" if not several_backbones else f"paper, {dataset}"
                paper_rows.append(
                    {"method": method, "resolution": res, "pixels": _pixels(res), "AP": entry.metrics["AP"]}
                )
    paper = pd.DataFrame(paper_rows) if paper_rows else None
    return ours, paper, label


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)
