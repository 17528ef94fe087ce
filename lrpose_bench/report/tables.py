"""Paper-style tables built from a run folder (pandas), with the paper's numbers beside ours
(read by :mod:`lrpose_bench.report.paper_reference`).

Layout rules:

* our numbers sit in one column group headed by *our* evaluation data (e.g. ``Ours — SynthPose
  val``); published numbers sit in one group per data set (``Paper — COCO val2017``,
  ``Paper — COCO test-dev``), each with a source column. Numbers of different data sets never share
  a column, and a published number is never written into a measured column;
* a missing value stays missing (NaN, printed "—"); nothing is filled in;
* several seeds of one cell are shown as mean ± sample sd; failed cells are rows marked failed.

Tables: Table 1/2/8 layout per input size (Table 9 layout at 384×288), the CAL ablations (T3–T7),
paired-bootstrap AP differences, decoder error (coarse vs final displacement), and whatever optional
run-level JSON files are present (codec oracle, cross-resolution, bench, SR quality).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrpose_bench.analysis.bootstrap import PairedDifference, seed_summary
from lrpose_bench.analysis.keypoint_errors import ERROR_TYPES, ErrorBreakdown
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import FLIP_PAIR_NAMES, FLIP_PAIRS
from lrpose_bench.report.paper_reference import PAPER_METRICS, PaperReference
from lrpose_bench.report.run_folder import Cell, RunData
from lrpose_bench.resolution import Resolution

#: display names of the metric columns
PARAMS, GFLOPS, SOURCE = "#Params (M)", "GFLOPs", "Source"
LABEL = ""  # top level of the label columns


@dataclass
class Table:
    """One rendered table: numeric ``values`` (NaN = missing), optional ``sd`` for ± and text columns.

    ``values`` has two-level columns ``(group, name)``. ``bold`` lists the numeric columns whose
    maximum is set in bold (as the paper does); ``decimals`` gives digits per column (default 1).
    """

    key: str
    title: str
    values: pd.DataFrame
    sd: pd.DataFrame | None = None
    bold: list[tuple[str, str]] = field(default_factory=list)
    decimals: dict[tuple[str, str], int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed_rows: list[int] = field(default_factory=list)

    def bold_mask(self) -> pd.DataFrame:
        """True where a cell holds its column's best (max) value; ties are all bold."""
        mask = pd.DataFrame(False, index=self.values.index, columns=self.values.columns)
        for column in self.bold:
            if column not in self.values:
                continue
            numbers = pd.to_numeric(self.values[column], errors="coerce")
            if numbers.notna().sum() < 2:
                continue
            best = numbers.max()
            mask[column] = np.isclose(numbers.fillna(-np.inf), best, rtol=0, atol=1e-9)
        return mask

    def flat(self) -> pd.DataFrame:
        """One-level columns ``group: name`` (for CSV/JSON)."""
        frame = self.values.copy()
        frame.columns = [f"{g}: {n}" if g else n for g, n in frame.columns]
        return frame


# ------------------------------------------------------------------------------------ cell rows
def percent(value: Any) -> float:
    """Metric fraction → percent; missing or non-numeric (None, NaN, text) is NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return np.nan
    return 100.0 * number if np.isfinite(number) else np.nan


def cells_frame(run: RunData, extra: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per cell with every metric (fractions 0..1 as in metrics.json), floor, model, timing."""
    rows = []
    for cell in run.cells:
        info = cell.info
        model = info.get("model") or {}
        timing = info.get("timing") or {}
        row: dict[str, Any] = {
            "cell": cell.id,
            "state": cell.state,
            "reason": cell.reason or "",
            "method": cell.method,
            "backbone": cell.backbone,
            "resolution": cell.resolution,
            "seed": cell.seed,
            "ablation": cell.ablation_text,
            "dataset": (info.get("cell") or {}).get("dataset", run.dataset),
            "eval_split": (info.get("cell") or {}).get("eval_split", run.eval_split),
        }
        for name, value in (info.get("metrics") or {}).items():
            row[name] = value
        for name, value in (info.get("floor") or {}).items():
            row[f"floor_{name}"] = value
        row["params"] = model.get("params")
        row["gmacs"] = model.get("gmacs")
        row["train_resolution"] = model.get("train_resolution")
        row["num_instances"] = info.get("num_instances")
        for name, value in timing.items():
            row[f"timing_{name}"] = value
        row.update((extra or {}).get(cell.id, {}))
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class _Group:
    """Cells that differ only by seed, aggregated."""

    cells: list[Cell]

    @property
    def first(self) -> Cell:
        return self.cells[0]

    @property
    def complete(self) -> list[Cell]:
        return [c for c in self.cells if c.complete]

    def mean_sd(self, metric: str) -> tuple[float, float, int]:
        return seed_summary([percent(c.metrics.get(metric)) for c in self.complete])

    def model_value(self, key: str) -> float:
        values = [(c.info.get("model") or {}).get(key) for c in self.complete]
        values = [float(v) for v in values if v is not None]
        return values[0] if values else np.nan

    @property
    def state(self) -> str:
        if self.complete:
            return (
                "complete" if len(self.complete) == len(self.cells) else f"{len(self.complete)}/{len(self.cells)} seeds"
            )
        return self.cells[0].state if self.cells[0].state != "complete" else "failed"


def _seed_columns(group: _Group | None, ours: str) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Our metric columns of one row: the mean over the group's complete seeds (×100) and the sample
    sd, NaN unless at least two seeds have the metric (``±`` is printed only then). ``None`` (a row
    that was not run) is all NaN. The three tables of our numbers (main, ablation, other ablations) use it."""
    means: dict[tuple[str, str], float] = {}
    sds: dict[tuple[str, str], float] = {}
    for metric in PAPER_METRICS:
        mean, dev, n = group.mean_sd(metric) if group is not None else (np.nan, np.nan, 0)
        means[(ours, metric)] = mean
        sds[(ours, metric)] = dev if n > 1 else np.nan
    return means, sds


def _group_by_seed(cells: Iterable[Cell]) -> list[_Group]:
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        key = (cell.method, tuple(sorted(cell.ablation.items(), key=lambda kv: kv[0])), cell.backbone, cell.resolution)
        groups.setdefault(key, []).append(cell)
    return [_Group(sorted(v, key=lambda c: c.seed)) for v in groups.values()]


def _ours_group(run: RunData) -> str:
    return f"Ours — {run.eval_split}"


def _paper_group(dataset: str) -> str:
    return f"Paper — {dataset}"


def _comparability_note(run: RunData, datasets: Iterable[str]) -> str | None:
    others = [d for d in dict.fromkeys(datasets) if d != run.eval_split and not _same_data(run.eval_split, d)]
    if not others:
        return None
    return (
        f"Ours are measured on {run.eval_split}; the published numbers are on {', '.join(others)}. "
        "Absolute values are not comparable across data sets, only the ordering of methods and the "
        "gaps between them."
    )


def _same_data(ours: str, paper: str) -> bool:
    return ours.lower().replace(" ", "") == paper.lower().replace(" ", "")


def _res_display(res: str) -> str:
    return res.replace("x", "×")


# ------------------------------------------------------------------------------- main tables
def main_tables(run: RunData, ref: PaperReference) -> list[Table]:
    """Table 1/2/8 layout, one table per input size (Table 9 layout at 384×288)."""
    plain = [c for c in run.cells if not c.ablation]
    by_res: dict[str, list[Cell]] = {}
    for cell in sorted(plain, key=lambda c: (c.pixels, c.resolution)):
        by_res.setdefault(cell.resolution, []).append(cell)
    tables = []
    for res, cells in by_res.items():
        found: list[str] = []
        for cell in cells:
            for dataset in ref.lookup(cell.method, cell.backbone, res):
                if dataset not in found:
                    found.append(dataset)
        found.sort(key=lambda d: _dataset_rank(ref, d))
        # one table per published data set, as the paper splits Table 1 (test-dev) from Table 8 (val)
        for i, dataset in enumerate(found or [None]):
            tables.append(_resolution_table(run, ref, res, cells, dataset, primary=i == 0))
    return tables


def _dataset_rank(ref: PaperReference, dataset: str) -> int:
    labels = list(ref.datasets.values())
    return labels.index(dataset) if dataset in labels else len(labels)


def _resolution_table(
    run: RunData, ref: PaperReference, res: str, cells: list[Cell], dataset: str | None, primary: bool = True
) -> Table:
    ours = _ours_group(run)
    groups = sorted(
        _group_by_seed(cells), key=lambda g: (ref.method_rank(g.first.method), g.first.method, g.first.backbone)
    )
    rows, sds, proxies, seeds_seen = [], [], set(), set()
    paper_sets: list[str] = []
    failed_rows: list[int] = []
    notes: list[str] = []
    for i, group in enumerate(groups):
        cell = group.first
        row: dict[tuple[str, str], Any] = {
            (LABEL, "Method"): cell.method,
            (LABEL, "Backbone"): cell.backbone,
            (LABEL, "Input"): _res_display(res),
        }
        row[(ours, PARAMS)] = group.model_value("params") / 1e6
        row[(ours, GFLOPS)] = group.model_value("gmacs")
        means, sd = _seed_columns(group, ours)
        row.update(means)
        seeds_seen.add(len(group.complete))
        row[(LABEL, "Seeds")] = str(len(group.complete))
        row[(LABEL, "Status")] = group.state
        if not group.complete:
            failed_rows.append(i)
            reason = next((c.reason for c in group.cells if c.reason), None)
            if reason:
                notes.append(f"{cell.id}: {group.state} ({reason})")
        for found_set, (entry, proxy) in ref.lookup(cell.method, cell.backbone, res).items():
            if found_set != dataset:
                continue
            if dataset not in paper_sets:
                paper_sets.append(dataset)
            group_name = _paper_group(dataset)
            mark = "†" if proxy else ""
            row[(group_name, SOURCE)] = f"{entry.source.removeprefix('Paper ')} · {entry.backbone}{mark}"
            if proxy:
                proxies.add((cell.backbone, entry.backbone))
            row[(group_name, PARAMS)] = entry.params if entry.params is not None else np.nan
            row[(group_name, GFLOPS)] = entry.gflops if entry.gflops is not None else np.nan
            for metric in PAPER_METRICS:
                row[(group_name, metric)] = entry.metrics.get(metric, np.nan)
        rows.append(row)
        sds.append(sd)
    columns = [(LABEL, "Method"), (LABEL, "Backbone"), (LABEL, "Input"), (LABEL, "Seeds")]
    if any(r[(LABEL, "Status")] != "complete" for r in rows):
        columns.append((LABEL, "Status"))
    columns += [(ours, PARAMS), (ours, GFLOPS)] + [(ours, m) for m in PAPER_METRICS]
    for paper_set in paper_sets:
        g = _paper_group(paper_set)
        columns += [(g, SOURCE), (g, PARAMS), (g, GFLOPS)] + [(g, m) for m in PAPER_METRICS]
    values = pd.DataFrame(rows).reindex(columns=pd.MultiIndex.from_tuples(columns))
    values = _drop_empty_paper_columns(values, ours)
    sd_frame = pd.DataFrame(sds).reindex(index=values.index, columns=values.columns)
    decimals = {c: 2 for c in values.columns if c[1] in (PARAMS, GFLOPS)}
    bold = [c for c in values.columns if c[1] in PAPER_METRICS]
    if dataset is not None and "test-dev" in dataset:
        layout = "Table 1 layout (paper on COCO test-dev)"
    elif _height(res) >= 384:
        layout = "Table 9 layout (high resolution)"
    else:
        layout = "Table 1/2/8 layout"
    lines = [
        f"OKS AP/AR ×100 on {run.eval_split}; best value per column in bold. #Params and GFLOPs are "
        "ours (GFLOPs = billions of multiply-adds, the HRNet papers' convention) measured at the training input."
    ]
    if max(seeds_seen or {1}) > 1:
        lines.append("Several seeds: mean ± sample standard deviation over seeds.")
    if 1 in seeds_seen:
        lines.append(
            "Seeds = 1: a row from one training run has no spread; seed-to-seed differences of several AP "
            "are common at this budget, so do not read an order from it."
        )
    note = _comparability_note(run, paper_sets)
    if note:
        lines.append(note)
    if not paper_sets:
        lines.append("The paper reports no number for these methods/backbones at this input size (no paper column).")
    lines.append(
        "Source: the paper's table (T1, T2, T4, T8, T9) or a reference repository's README, and the "
        "paper's backbone. Paper method names: hrnet = HRNet (SimpleBaseline on a ResNet backbone), dark = DARK, udp = UDP, "
        "cal = CAL, spsr+hrnet = HRNet+SPSR, spsr+udp = UDP+SPSR, simcc = SimCC, rle = RLE, integral = IPR."
    )
    for ours_backbone, paper_backbone in sorted(proxies):
        lines.append(
            f"† our {ours_backbone} has no counterpart in the paper; the paper column shows its "
            f"{paper_backbone} number for orientation only."
        )
    floor = _floor_ap(cells)
    if floor is not None:
        lines.append(
            f"Mean-pose floor on {run.eval_split} at {_res_display(res)}: AP {floor:.1f} "
            "(a predictor that ignores the image)."
        )
    key = f"main_{res}" if primary else f"main_{res}_{_slug(dataset or '')}"
    return Table(
        key=key,
        title=f"{layout}: input {_res_display(res)}",
        values=values,
        sd=sd_frame,
        bold=bold,
        decimals=decimals,
        notes=lines + notes,
        failed_rows=failed_rows,
    )


def _slug(text: str) -> str:
    return "".join(ch.lower() if ch.isalnum() else "_" for ch in text).strip("_")


def _drop_empty_paper_columns(values: pd.DataFrame, ours: str) -> pd.DataFrame:
    keep = [c for c in values.columns if c[0] in (LABEL, ours) or values[c].notna().any()]
    return values[keep]


def _floor_ap(cells: Sequence[Cell]) -> float | None:
    for cell in cells:
        floor = cell.info.get("floor") or {}
        if "AP" in floor:
            return percent(floor["AP"])
    return None


def published_elsewhere_table(run: RunData, ref: PaperReference) -> Table | None:
    """Published numbers of this run's methods at input sizes that no benchmark cell uses:
    SimCC's README at 64×64 / 128×128, mmpose's integral regression at 256×256, … .

    They never share a row with a measured number, because no cell of ours has that input size; this
    table lists them on their own, one column group per data set. A ``method_names`` line may name
    ``related`` published variants (``integral`` → DSNT, Debias-IPR) that are listed with it.
    """
    benchmark_inputs = {"64x48", "128x96", "256x192", "384x288"} | {c.resolution for c in run.cells}
    seen: set[tuple[str, str]] = set()
    rows: list[dict[tuple[str, str], Any]] = []
    datasets: list[str] = []
    for cell in sorted((c for c in run.cells if not c.ablation), key=lambda c: ref.method_rank(c.method)):
        name = ref.paper_method(cell.method, cell.backbone)
        if name is None or (cell.method, name) in seen:
            continue
        seen.add((cell.method, name))
        line = next(
            (
                m
                for m in ref.method_names
                if m["method"] == cell.method and cell.backbone.startswith(m.get("family", ""))
            ),
            {},
        )
        names = [name, *[str(r) for r in line.get("related", []) or []]]
        for entry in ref.entries:
            if entry.method not in names or entry.input in benchmark_inputs:
                continue
            if entry.dataset not in datasets:
                datasets.append(entry.dataset)
            group = _paper_group(entry.dataset)
            row: dict[tuple[str, str], Any] = {
                (LABEL, "Ours"): cell.method,
                (LABEL, "Published method"): entry.method,
                (LABEL, "Backbone"): entry.backbone,
                (LABEL, "Input"): _res_display(entry.input),
                (group, SOURCE): entry.source,
                (group, PARAMS): entry.params if entry.params is not None else np.nan,
                (group, GFLOPS): entry.gflops if entry.gflops is not None else np.nan,
            }
            for metric in PAPER_METRICS:
                row[(group, metric)] = entry.metrics.get(metric, np.nan)
            rows.append(row)
    if not rows:
        return None
    datasets.sort(key=lambda d: _dataset_rank(ref, d))
    columns = [(LABEL, "Ours"), (LABEL, "Published method"), (LABEL, "Backbone"), (LABEL, "Input")]
    for dataset in datasets:
        g = _paper_group(dataset)
        columns += [(g, SOURCE), (g, PARAMS), (g, GFLOPS)] + [(g, m) for m in PAPER_METRICS]
    values = pd.DataFrame(rows).reindex(columns=pd.MultiIndex.from_tuples(columns))
    values = values[[c for c in values.columns if c[0] == LABEL or values[c].notna().any()]]
    notes = [
        "Published numbers only (OKS AP/AR ×100 as the sources print them), at input sizes no cell of this "
        "run uses: there is no measured column, and none of these numbers is comparable with ours.",
        "Sources: leeyegy/SimCC README (COCO val2017, detected boxes, flip test; heatmap rows with and without "
        "its extra coordinate refinement), open-mmlab/mmpose model-zoo pages (COCO val2017, detector person "
        "AP 56.4). Missing values are not published there.",
    ]
    return Table(
        key="published_other_inputs",
        title="Published numbers at other input sizes",
        values=values,
        decimals={c: 2 for c in values.columns if c[1] in (PARAMS, GFLOPS)},
        notes=notes,
    )


# ---------------------------------------------------------------------------------- ablations
def ablation_tables(run: RunData, ref: PaperReference) -> list[Table]:
    """T3–T7 layout: per ablation switch and input size, the un-ablated cell as reference row."""
    ablated = [c for c in run.cells if c.ablation]
    if not ablated:
        return []
    specs = {spec["key"]: spec for spec in ref.ablations}
    tables: list[Table] = []
    keyed: dict[tuple[str, str, str, str], list[Cell]] = {}
    other: list[Cell] = []
    for cell in ablated:
        if len(cell.ablation) == 1:
            (key,) = cell.ablation
            keyed.setdefault((cell.method, key, cell.resolution, cell.backbone), []).append(cell)
        else:
            other.append(cell)
    for (method, key, res, backbone), cells in sorted(
        keyed.items(), key=lambda kv: (kv[0][0], kv[0][1], _height(kv[0][2]), kv[0][3])
    ):
        reference = [
            c
            for c in run.cells
            if not c.ablation and c.method == method and c.resolution == res and c.backbone == backbone
        ]
        spec = specs.get(key) if method == "cal" else None
        tables.append(_ablation_table(run, method, key, res, backbone, cells, reference, spec))
    if other:
        tables.append(_generic_ablation_table(run, other))
    return tables


def _ablation_table(
    run: RunData,
    method: str,
    key: str,
    res: str,
    backbone: str,
    cells: list[Cell],
    reference: list[Cell],
    spec: dict[str, Any] | None,
) -> Table:
    ours = _ours_group(run)
    by_value: dict[str, list[Cell]] = {}
    ref_value = None
    if reference:
        params = next((c.method_params() for c in reference if c.method_params()), {})
        ref_value = params.get(key)
        by_value.setdefault(_text(ref_value) if ref_value is not None else "default", []).extend(reference)
    for cell in cells:
        by_value.setdefault(_text(cell.ablation[key]), []).extend([cell])
    paper_rows = {}
    paper_group = None
    if spec:
        paper_group = (
            f"{_paper_group(spec['dataset'])} ({spec.get('table', '')}, {spec.get('backbone', '')} {_res_display(res)})"
        )
        paper_rows = {_text(row["value"]): row for row in spec["rows"] if row["input"] == res}
    values_order = list(by_value) + [v for v in paper_rows if v not in by_value]
    rows, sds, failed = [], [], []
    for i, value in enumerate(values_order):
        group_cells = by_value.get(value, [])
        group = _Group(group_cells) if group_cells else None
        is_ref = ref_value is not None and value == _text(ref_value)
        row: dict[tuple[str, str], Any] = {
            (LABEL, key): value + (" (reference)" if is_ref else ""),
            (LABEL, "Status"): group.state if group else "not run",
        }
        means, sd = _seed_columns(group, ours)
        row.update(means)
        if group is not None and not group.complete:
            failed.append(i)
        if paper_group is not None:
            paper = paper_rows.get(value)
            row[(paper_group, "Variant")] = paper["label"] if paper else None
            for metric in PAPER_METRICS:
                row[(paper_group, metric)] = paper["metrics"].get(metric, np.nan) if paper else np.nan
        rows.append(row)
        sds.append(sd)
    columns = [(LABEL, key)]
    if any(r[(LABEL, "Status")] != "complete" for r in rows):
        columns.append((LABEL, "Status"))
    columns += [(ours, m) for m in PAPER_METRICS]
    if paper_group is not None:
        columns += [(paper_group, "Variant")] + [(paper_group, m) for m in PAPER_METRICS]
    values = pd.DataFrame(rows).reindex(columns=pd.MultiIndex.from_tuples(columns))
    sd_frame = pd.DataFrame(sds).reindex(index=values.index, columns=values.columns)
    notes = [
        f"{method} on {backbone} at {_res_display(res)}, one switch changed (--ablation {key}=VALUE); "
        f"OKS AP/AR ×100 on {run.eval_split}; best per column in bold."
    ]
    if not reference:
        notes.append(f"No un-ablated {method} cell at {_res_display(res)} on {backbone} in this run: no reference row.")
    if spec:
        label = spec.get("table", "")
        notes.append(f"Paper {label}: {spec.get('title', '')}, CAL {spec.get('backbone', '')} on {spec['dataset']}.")
        if not paper_rows:
            inputs = sorted({row["input"] for row in spec["rows"]})
            notes.append(
                f"The paper ran this ablation at {', '.join(_res_display(i) for i in inputs)} only: "
                "no paper number at this input size."
            )
        note = _comparability_note(run, [spec["dataset"]])
        if note:
            notes.append(note)
    else:
        notes.append("The paper has no ablation of this switch: no paper column.")
    title = f"{spec.get('table')} layout: {spec.get('title')}" if spec else f"Ablation of {method}: {key}"
    return Table(
        key=f"ablation_{method}_{key}_{res}_{backbone}",
        title=f"{title} ({_res_display(res)}, {backbone})",
        values=values,
        sd=sd_frame,
        bold=[c for c in values.columns if c[1] in PAPER_METRICS],
        notes=notes,
        failed_rows=failed,
    )


def _generic_ablation_table(run: RunData, cells: list[Cell]) -> Table:
    ours = _ours_group(run)
    rows, sds = [], []
    for group in _group_by_seed(cells):
        c = group.first
        row = {
            (LABEL, "Method"): c.method,
            (LABEL, "Ablation"): c.ablation_text,
            (LABEL, "Backbone"): c.backbone,
            (LABEL, "Input"): _res_display(c.resolution),
            (LABEL, "Status"): group.state,
        }
        means, sd = _seed_columns(group, ours)
        row.update(means)
        rows.append(row)
        sds.append(sd)
    values = pd.DataFrame(rows)
    values.columns = pd.MultiIndex.from_tuples(values.columns)
    sd_frame = pd.DataFrame(sds).reindex(index=values.index, columns=values.columns)
    return Table(
        key="ablation_other",
        title="Other ablations (several switches per cell)",
        values=values,
        sd=sd_frame,
        bold=[c for c in values.columns if c[1] in PAPER_METRICS],
        notes=["No paper counterpart (the paper changes one switch at a time)."],
    )


def _text(value: Any) -> str:
    return str(value)


# ---------------------------------------------------------------------------------- bootstrap
def bootstrap_table(run: RunData, differences: list[tuple[dict[str, Any], PairedDifference]]) -> Table | None:
    """Paired-bootstrap AP differences (×100) with their percentile intervals."""
    if not differences:
        return None
    values = _difference_frame(differences)
    first = differences[0][1]
    notes = [
        f"Paired bootstrap over images of {run.eval_split}: {first.samples} resamples of the image ids with "
        f"replacement, both methods scored by COCO OKS AP on the same resample; {100 * first.level:.0f} % "
        "percentile interval of the difference. Pairs share input size, backbone and seed.",
        "Seed 'pooled (n)': a two-level bootstrap over the n seeds and the images (each replicate draws seeds "
        "and images with replacement and averages AP(A) − AP(B) over the drawn seeds): the interval to read "
        "when a method is said to beat another.",
        "The paper reports no intervals: no paper column.",
    ]
    return Table(key="bootstrap", title="Paired differences in AP (bootstrap over images)", values=values, notes=notes)


def fixed_bootstrap_table(
    run: RunData, differences: list[tuple[dict[str, Any], PairedDifference]], fixed: str
) -> Table | None:
    """The pooled paired bootstrap of AP with one kind of keypoint error (``fixed``) removed: how the
    methods compare on what remains. A diagnostic beside :func:`bootstrap_table`, never instead of it."""
    if not differences:
        return None
    first = differences[0][1]
    notes = [
        f"As the pooled rows of the bootstrap table, on AP ×100 with every {fixed} error fixed (see the keypoint "
        f"error table): {first.samples} replicates drawing seeds and images of {run.eval_split} with replacement, "
        f"{100 * first.level:.0f} % percentile interval.",
        f"A diagnostic that uses the ground truth to undo the {fixed}s: it says whether the methods differ in "
        "what a codec can change once the errors no codec can change are set aside. The scored comparison is "
        "the bootstrap table above.",
    ]
    return Table(
        key=f"bootstrap_{fixed}_fixed",
        title=f"Paired differences in AP with {fixed}s fixed (diagnostic, pooled over seeds)",
        values=_difference_frame(differences),
        notes=notes,
    )


def _difference_frame(differences: list[tuple[dict[str, Any], PairedDifference]]) -> pd.DataFrame:
    """One row per paired difference: context, both APs, the difference and its interval (×100)."""
    rows = []
    for context, diff in differences:
        rows.append(
            {
                (LABEL, "Input"): _res_display(context["resolution"]),
                (LABEL, "Backbone"): context["backbone"],
                (LABEL, "Seed"): str(context["seed"]),
                (LABEL, "A"): diff.a,
                (LABEL, "B"): diff.b,
                ("AP ×100", "A"): 100 * diff.ap_a,
                ("AP ×100", "B"): 100 * diff.ap_b,
                ("AP(A) − AP(B) ×100", "Δ"): 100 * diff.difference,
                ("AP(A) − AP(B) ×100", "CI low"): 100 * diff.low,
                ("AP(A) − AP(B) ×100", "CI high"): 100 * diff.high,
                ("AP(A) − AP(B) ×100", "CI excludes 0"): "yes" if diff.excludes_zero else "no",
            }
        )
    values = pd.DataFrame(rows)
    values.columns = pd.MultiIndex.from_tuples(values.columns)
    return values


# ------------------------------------------------------------------------------ displacement
def displacement_table(run: RunData, summaries: dict[str, dict[str, float]], labels: Sequence[str]) -> Table | None:
    """Mean/median coarse vs final error per cell (heatmap px) and coarse shares per bin (Fig. 5)."""
    if not summaries:
        return None
    rows = []
    by_id = {c.id: c for c in run.cells}
    for cell_id, s in summaries.items():
        cell = by_id[cell_id]
        row = {
            (LABEL, "Cell"): cell.label,
            (LABEL, "Backbone"): cell.backbone,
            (LABEL, "Input"): _res_display(cell.resolution),
            (LABEL, "Seed"): str(cell.seed),
            ("Joints", "n"): s["joints"],
            ("Coarse ŷ−y (px)", "mean"): s["coarse_mean"],
            ("Coarse ŷ−y (px)", "median"): s["coarse_median"],
            ("Final error (px)", "mean"): s["final_mean"],
            ("Final error (px)", "median"): s["final_median"],
            ("Final error (px)", "removed %"): 100 * s["removed"],
        }
        for label in labels:
            row[("Coarse share per bin (%)", label)] = 100 * s[f"coarse_share_{label}"]
        rows.append(row)
    values = pd.DataFrame(rows)
    values.columns = pd.MultiIndex.from_tuples(values.columns)
    decimals = {c: 2 for c in values.columns if c[0] in ("Coarse ŷ−y (px)", "Final error (px)")}
    decimals[("Joints", "n")] = 0
    decimals[("Final error (px)", "removed %")] = 1
    notes = [
        "Distances in heatmap pixels for visible joints: coarse = arg-max − ground truth (Eq. 11, paper Fig. 5); "
        "final = decoded prediction − ground truth (after offsets, DARK or the quarter-pixel shift); "
        "'removed' = 1 − final mean / coarse mean. A method without an arg-max stage (rle: direct regression) "
        "reports its regressed coordinate as the coarse prediction, so its coarse and final errors are equal.",
        "The paper shows these statistics only as a figure (Fig. 5, UDP HRNet-W32 on COCO): no paper column.",
    ]
    return Table(
        key="displacement",
        title="Decoder error: coarse vs final displacement (Fig. 5 statistics)",
        values=values,
        decimals=decimals,
        notes=notes,
    )


# ------------------------------------------------------------------------------ keypoint errors
def keypoint_error_table(run: RunData, breakdowns: Mapping[str, ErrorBreakdown]) -> Table | None:
    """Ronchi & Perona's keypoint error shares per method (mean ± sd over seeds) and the AP each
    method would have with one kind of error fixed (:mod:`lrpose_bench.analysis.keypoint_errors`).

    Why: a codec only turns jitter into good; inversions, swaps and misses come from the backbone
    and the data. The table shows how much of a method's AP gap is the codec's to close."""
    fixes = list(dict.fromkeys(name for b in breakdowns.values() for name in b.ap_fixed))

    def columns(found: list[ErrorBreakdown]) -> list[tuple[tuple[str, str], list[float]]]:
        out = [(("Labelled joints (%)", name), [100 * b.share(name) for b in found]) for name in ERROR_TYPES]
        out.append((("Left/right (%)", "nearer mirror"), [100 * b.nearer_mirror_share for b in found]))
        if all(b.separable_by_joint for b in found):
            out.append((("Left/right (%)", "collapsed"), [100 * b.collapsed_share for b in found]))
        out.append((("AP ×100", "as scored"), [100 * b.ap for b in found]))
        return out + [(("AP ×100", f"{name} fixed"), [100 * b.ap_fixed[name] for b in found]) for name in fixes]

    frames = _seed_summary_frames(run, breakdowns, columns)
    if frames is None:
        return None
    values, sd = frames
    first = next(iter(breakdowns.values()))
    notes = [
        "Every labelled joint of every detection matched to a person (OKS ≥ "
        f"{first.thresholds.match_oks:g}) is classified by its keypoint similarity ks to the people of its image "
        f"(Ronchi & Perona, ICCV 2017; coco-analyze): good ks > {first.thresholds.high:g} on its own joint; jitter "
        f"{first.thresholds.low:g} ≤ ks ≤ {first.thresholds.high:g} on its own joint; inversion ks ≥ "
        f"{first.thresholds.low:g} on the same person's left/right mirror joint; swap ks ≥ {first.thresholds.low:g} "
        f"on another person; miss ks < {first.thresholds.low:g} everywhere. Mean ± sd over seeds.",
        "'nearer mirror': of the lateral joints whose left/right partner is labelled too, the share predicted "
        "nearer the partner's ground truth than their own, at any distance. The taxonomy counts such a joint as "
        "an inversion only within its lower bound of the partner (else a miss), so a more precise method shows "
        "more inversions for the same confusion; this column compares the confusion itself.",
        "'collapsed': of the same joints (partners labelled apart), the share whose pair's two predictions lie "
        f"closer together than {first.thresholds.collapse_ratio:g} × the distance between the two true joints: "
        "the network gives both sides of the pair the same map, so both land on one point and one of them is "
        "nearer its mirror by a coin toss. A confusion without a collapse is a side picked wrongly.",
        "'X fixed': COCO AP (0.50:0.95) with every joint of type X moved onto its own joint at the distance that "
        "keeps its similarity (jitter at ks = the upper bound, miss at the lower one). A codec moves a joint by a "
        "fraction of a heatmap pixel: it can turn jitter into good, not an inversion, swap or miss into anything.",
        "A diagnostic, not a score: the fixed APs use the ground truth. The paper reports no error breakdown: "
        "no paper column.",
    ]
    return Table(
        key="keypoint_errors",
        title="Keypoint errors: good, jitter, inversion, swap, miss (Ronchi & Perona 2017)",
        values=values,
        sd=sd,
        notes=notes,
    )


def left_right_table(run: RunData, breakdowns: Mapping[str, ErrorBreakdown]) -> Table | None:
    """Left/right confusion ("nearer mirror") per joint pair, mean ± sd over seeds.

    Why: the error table says *how often* a method confuses left and right; this one says *where*.
    Two methods with the same overall rate can confuse different body parts (a codec's extra
    confusions at close pairs such as knees and ankles, where the partner lies a pixel or two away on
    a low-resolution map, point at the heatmap, not at the data's left/right cues)."""

    def columns(found: list[ErrorBreakdown]) -> list[tuple[tuple[str, str], list[float]]]:
        out = [
            (("Nearer mirror (%)", name), [100 * b.nearer_mirror_share_of(pair) for b in found])
            for name, pair in zip(FLIP_PAIR_NAMES, FLIP_PAIRS, strict=True)
        ]
        out.append((("Nearer mirror (%)", "all"), [100 * b.nearer_mirror_share for b in found]))
        if all(b.separable_by_joint for b in found):
            out += [
                (("Collapsed (%)", name), [100 * b.collapsed_share_of(pair) for b in found])
                for name, pair in zip(FLIP_PAIR_NAMES, FLIP_PAIRS, strict=True)
            ]
            out.append((("Collapsed (%)", "all"), [100 * b.collapsed_share for b in found]))
        return out

    usable = {cid: b for cid, b in breakdowns.items() if b.lateral_by_joint}
    frames = _seed_summary_frames(run, usable, columns)
    if frames is None:
        return None
    values, sd = frames
    notes = [
        "Of the joints of each left/right pair labelled on both sides (detections matched as in the keypoint "
        "error table), the share predicted nearer the partner's ground truth than their own, at any distance; "
        "'all' is the table above's 'nearer mirror'. 50 % is a coin toss between the two sides. Mean ± sd over "
        "seeds.",
        "'Collapsed': of the pair's joints labelled apart, the share whose two predictions lie closer together than "
        "the keypoint error table's collapse ratio × the true separation (both sides given one map). Where "
        "'nearer mirror' nears 50 % and 'collapsed' is high, the network does not tell that pair's sides apart; "
        "where 'collapsed' stays low, it tells them apart and sometimes picks the wrong one. A pair less than a "
        "heatmap pixel apart (the eyes at 64×48) collapses under a plain arg-max by quantization alone.",
        "A diagnostic of where a method confuses left and right, not a score; the paper has no such table.",
    ]
    return Table(
        key="left_right_by_pair",
        title="Left/right confusion per joint pair (nearer mirror)",
        values=values,
        sd=sd,
        notes=notes,
    )


def errors_by_seed_table(run: RunData, breakdowns: Mapping[str, ErrorBreakdown]) -> Table | None:
    """One row per cell: AP as scored, AP with each kind of error fixed, and the left/right confusion
    per joint pair, with the across-seed correlation of AP and confusion per method in the notes.

    Why: the tables above average the seeds, and a method's seed spread can hide one cause. On
    SynthPose at 64×48 CAL's inversion-fixed AP barely moves across seeds while its scored AP
    follows its knee/ankle confusion (docs/speed.md, "CAL against UDP over eight seeds"); a pooled
    bootstrap that does not separate two methods reads differently once one sees that."""
    fixes = list(dict.fromkeys(name for b in breakdowns.values() for name in b.ap_fixed))
    rows: list[dict[tuple[str, str], Any]] = []
    cells = sorted(
        (c for c in run.complete_cells() if c.id in breakdowns),
        key=lambda c: (_height(c.resolution), c.method, c.label, c.seed),
    )
    if not cells:
        return None
    for cell in cells:
        found = breakdowns[cell.id]
        row: dict[tuple[str, str], Any] = {
            (LABEL, "Method"): cell.label,
            (LABEL, "Backbone"): cell.backbone,
            (LABEL, "Input"): _res_display(cell.resolution),
            (LABEL, "Seed"): str(cell.seed),
            ("AP ×100", "as scored"): 100 * found.ap,
        }
        row.update({("AP ×100", f"{name} fixed"): 100 * found.ap_fixed[name] for name in fixes})
        if found.lateral_by_joint:
            for name, pair in zip(FLIP_PAIR_NAMES, FLIP_PAIRS, strict=True):
                row[("Nearer mirror (%)", name)] = 100 * found.nearer_mirror_share_of(pair)
            row[("Nearer mirror (%)", "all")] = 100 * found.nearer_mirror_share
        if found.separable_by_joint:
            row[("Collapsed (%)", "all")] = 100 * found.collapsed_share
        rows.append(row)
    values = pd.DataFrame(rows)
    values.columns = pd.MultiIndex.from_tuples(values.columns)
    notes = [
        "Per cell (no averaging over seeds): the numbers behind the keypoint error and left/right tables. "
        "A diagnostic, not a score; the paper has no such table."
    ]
    correlations = _ap_confusion_correlations(values)
    if correlations:
        notes.append(
            "Across seeds, the correlation of AP as scored with the 'all' nearer-mirror share (methods with ≥ 3 "
            "seeds): " + ", ".join(correlations) + ". Near −1: the seeds that confuse left and right more "
            "score lower. It says whether AP follows the confusion, not by how much: read it beside the "
            "spread of the two columns."
        )
    return Table(key="errors_by_seed", title="Keypoint errors seed by seed", values=values, notes=notes)


def _ap_confusion_correlations(values: pd.DataFrame) -> list[str]:
    """``method (backbone, input) r`` for each such group with ≥ 3 seeds and non-constant columns."""
    confusion = ("Nearer mirror (%)", "all")
    if confusion not in values:
        return []
    out = []
    keys = [(LABEL, "Method"), (LABEL, "Backbone"), (LABEL, "Input")]
    for (method, backbone, size), group in values.groupby(keys, sort=False):
        ap, share = group[("AP ×100", "as scored")].to_numpy(float), group[confusion].to_numpy(float)
        if len(group) < 3 or np.ptp(ap) == 0 or np.ptp(share) == 0:
            continue
        out.append(f"{method} ({backbone}, {size}) {np.corrcoef(ap, share)[0, 1]:+.2f}")
    return out


def _seed_summary_frames(
    run: RunData,
    breakdowns: Mapping[str, ErrorBreakdown],
    columns_of: Callable[[list[ErrorBreakdown]], list[tuple[tuple[str, str], list[float]]]],
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Mean and sd over seeds of ``columns_of``'s per-seed values, one row per (method, backbone,
    input size) with a breakdown; None when no cell has one."""
    groups = [g for g in _group_by_seed(run.cells) if any(c.id in breakdowns for c in g.complete)]
    if not groups:
        return None
    rows, sds = [], []
    for group in sorted(groups, key=lambda g: (_height(g.first.resolution), g.first.method, g.first.label)):
        found = [breakdowns[c.id] for c in group.complete if c.id in breakdowns]
        row: dict[tuple[str, str], Any] = {
            (LABEL, "Method"): group.first.label,
            (LABEL, "Backbone"): group.first.backbone,
            (LABEL, "Input"): _res_display(group.first.resolution),
            (LABEL, "Seeds"): str(len(found)),
        }
        sd_row: dict[tuple[str, str], float] = {}
        for key, per_seed in columns_of(found):
            mean, dev, n = seed_summary(per_seed)
            row[key] = mean
            sd_row[key] = dev if n > 1 else np.nan
        rows.append(row)
        sds.append(sd_row)
    values = pd.DataFrame(rows)
    values.columns = pd.MultiIndex.from_tuples(values.columns)
    return values, pd.DataFrame(sds).reindex(index=values.index, columns=values.columns)


# ------------------------------------------------------------------------------------ extras
EXTRA_TITLES: dict[str, str] = {
    "oracle.json": "Codec oracle: AP of ground-truth heatmaps/targets decoded by each codec",
    "cross_resolution.json": "Cross-resolution: AP when testing at another input size than training",
    "bench.json": "Speed benchmark",
    "sr_quality.json": "Super-resolution quality (SPSR vs bicubic)",
}


def extra_tables(run: RunData) -> list[Table]:
    """Tables for the optional run-level JSON files, built generically from their records."""
    tables = []
    for name, data in run.extras.items():
        frame = json_frame(data)
        if frame is None or frame.empty:
            continue
        metric_cols = [c for c in frame.columns if c in (*PAPER_METRICS, "AR50", "AR75", "ARM", "ARL")]
        for column in metric_cols:
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.notna().any() and numbers.abs().max() <= 1.0:
                frame[column] = numbers * 100  # fractions as in metrics.json → ×100 like every table
        values = frame.copy()
        values.columns = pd.MultiIndex.from_tuples([(LABEL, str(c)) for c in values.columns])
        notes = [
            f"From {name}." + (" Metrics ×100." if metric_cols else ""),
            "The paper has no counterpart of this table: no paper column.",
        ]
        tables.append(
            Table(
                key=f"extra_{Path(name).stem}",
                title=EXTRA_TITLES.get(name, name),
                values=values,
                bold=[(LABEL, c) for c in metric_cols],
                notes=notes,
            )
        )
    return tables


def json_frame(data: Any) -> pd.DataFrame | None:
    """A records frame from a list of dicts, ``{"rows": [...]}`` or nested dicts (flattened keys)."""
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, list):
        if not all(isinstance(r, dict) for r in data):
            return None
        return pd.json_normalize(data)
    if isinstance(data, dict):
        records = []
        for key, value in data.items():
            if isinstance(value, dict):
                records.append({"key": key, **pd.json_normalize(value).iloc[0].to_dict()})
            else:
                records.append({"key": key, "value": value})
        return pd.DataFrame(records)
    return None


def pairs_for_bootstrap(run: RunData) -> list[tuple[dict[str, Any], list[Cell]]]:
    """Cells that can be compared pairwise: same input size, backbone, seed and ground-truth file."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in run.complete_cells():
        if not (cell.folder / "predictions.json").is_file() or not cell.info.get("gt_annotations"):
            continue
        key = (cell.resolution, cell.backbone, cell.seed, str(cell.info["gt_annotations"]))
        groups.setdefault(key, []).append(cell)
    out = []
    for (res, backbone, seed, gt), cells in sorted(groups.items(), key=lambda kv: (_height(kv[0][0]), kv[0][1:])):
        if len(cells) >= 2:
            out.append(({"resolution": res, "backbone": backbone, "seed": seed, "gt": gt}, cells))
    return out


def _height(res: str) -> int:
    """Input height of ``HxW`` for ordering (0 for an unreadable label)."""
    try:
        return Resolution.parse(res).height
    except ConfigError:
        return 0


# ------------------------------------------------------------------------------ training budget
#: the error kind whose fixed AP the report follows beyond the keypoint-error table (its pooled
#: bootstrap, the budget table): the one a codec cannot touch
INVERSION_FIX = "inversion"
#: a budget point of a cell: (cell id, fraction of the base epochs), ``None`` for the end of training
BudgetPoint = tuple[str, float | None]
#: the budget table's breakdown columns: (group, what it reads from an ErrorBreakdown)
BUDGET_BREAKDOWN_COLUMNS: tuple[tuple[str, Callable[[ErrorBreakdown], float]], ...] = (
    ("AP, inversions fixed", lambda b: percent(b.ap_fixed.get(INVERSION_FIX, float("nan")))),
    ("Left/right confusion (%)", lambda b: 100 * b.nearer_mirror_share),
)


def _mean_and_sd(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample sd of the finite values (NaN when there are none, sd NaN below two)."""
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    mean = float(np.mean(kept)) if kept else np.nan
    return mean, float(np.std(kept, ddof=1)) if len(kept) > 1 else np.nan


def budget_table(run: RunData, breakdowns: Mapping[BudgetPoint, ErrorBreakdown] | None = None) -> Table | None:
    """Score against training budget, from the weights each cell kept at fractions of its base
    epochs (``train.snapshot_fractions``) and at the end: the budget curve, and the budget-matched
    control. At fraction 1.0 every method has trained the profile's epochs: CAL's stage 1, a
    baseline before its matched extra epochs; "final" is after CAL's stage 2 and the baselines'
    equally long continuation at the same learning rate (``train.match_budget``). No extra training
    is done for this table. Mean ± sd over seeds, like the main table.

    ``breakdowns`` (keyed by (cell id, fraction), ``None`` = final) add, where a run kept each
    snapshot's predictions, the AP with inversions fixed and the left/right confusion at each point
    (:data:`BUDGET_BREAKDOWN_COLUMNS`): whether a method's gain or loss with training is where it
    puts joints or which side it takes them for."""
    breakdowns = breakdowns or {}
    groups = [
        g for g in _group_by_seed(c for c in run.cells if not c.ablation) if any(_snapshots(c) for c in g.complete)
    ]
    if not groups:
        return None
    fractions = sorted({s["fraction"] for g in groups for c in g.complete for s in _snapshots(c)})
    points = [f"{f:g}× ep" for f in fractions] + ["final"]
    rows, sds = [], []
    for group in sorted(groups, key=lambda g: (_height(g.first.resolution), g.first.method)):
        row: dict[tuple[str, str], Any] = {
            (LABEL, "Method"): group.first.method,
            (LABEL, "Input"): _res_display(group.first.resolution),
            (LABEL, "Seeds"): str(len(group.complete)),
            (LABEL, "Epochs (base + extra)"): _epochs_label(group.first),
            (LABEL, "Train CPU-min"): _cpu_minutes_label(group.complete),
        }
        sd_row: dict[tuple[str, str], float] = {}
        for label, fraction in zip(points, [*fractions, None], strict=True):
            for metric in ("AP", "AP75"):
                values = [_snapshot_metric(c, fraction, metric) for c in group.complete]
                row[(metric, label)], sd_row[(metric, label)] = _mean_and_sd(values)
            found = [b for b in (breakdowns.get((c.id, fraction)) for c in group.complete) if b is not None]
            for group_name, read in BUDGET_BREAKDOWN_COLUMNS:
                row[(group_name, label)], sd_row[(group_name, label)] = _mean_and_sd(read(b) for b in found)
        rows.append(row)
        sds.append(sd_row)
    columns = [(LABEL, "Method"), (LABEL, "Input"), (LABEL, "Seeds"), (LABEL, "Epochs (base + extra)")]
    columns += [(LABEL, "Train CPU-min"), *((m, p) for m in ("AP", "AP75") for p in points)]
    with_snapshots = {(cid, f) for cid, f in breakdowns if f is not None}
    if with_snapshots:  # only runs that kept each snapshot's predictions
        columns += [(g, p) for g, _ in BUDGET_BREAKDOWN_COLUMNS for p in points]
    values = pd.DataFrame(rows).reindex(columns=pd.MultiIndex.from_tuples(columns))
    notes = [
        f"OKS AP and AP75 ×100 on {run.eval_split} at fractions of the profile's epochs (weights kept during "
        "training, no extra training) and at the end.",
        "At 1× every method has trained the same epochs: CAL's column is its stage 1 (Eq. 14 only). 'final' "
        "adds CAL's stage 2 (Eq. 15, MGM) and, for single-stage methods with train.match_budget, as many "
        "extra epochs at the same post-milestone learning rate: the difference CAL − baseline at 'final' is "
        "the MGM's, not the extra epochs'.",
        "Train CPU-min: a cell's whole training (every epoch), wall seconds × its torch threads / 60, mean over "
        "seeds; the budget points before 'final' cost their share of the epochs.",
    ]
    if with_snapshots:
        notes.append(
            "AP, inversions fixed: AP ×100 with every joint predicted on its mirror partner moved back (a "
            "diagnostic, as in the keypoint-error table). Left/right confusion: % of lateral joints (both "
            "partners labelled) predicted nearer the partner than the joint. Read from each point's saved "
            "predictions: a method whose AP lags while its inversion-fixed AP leads loses on which side, not where."
        )
    return Table(key="budget", title="Training budget: score against epochs (budget curve, matched control)",
                 values=values, sd=pd.DataFrame(sds).reindex(index=values.index, columns=values.columns),
                 bold=[], decimals={}, notes=notes)  # fmt: skip


def _snapshots(cell: Cell) -> list[dict[str, Any]]:
    return list(cell.info.get("snapshots") or [])


def _snapshot_metric(cell: Cell, fraction: float | None, metric: str) -> float | None:
    if fraction is None:
        value = cell.metrics.get(metric)
    else:
        found = next((s for s in _snapshots(cell) if s["fraction"] == fraction), None)
        value = (found or {}).get("metrics", {}).get(metric)
    return None if value is None else percent(value)


def train_cpu_minutes(cell: Cell) -> float | None:
    """A cell's training cost in CPU-minutes: ``timing.train_cpu_s`` / 60 (each part of the training
    priced at the threads it ran on; cells trained side by side run on one thread each). Runs made
    before that field, or whose epoch log lacks the threads, fall back to ``timing.train_s`` × the
    threads of the process that wrote ``metrics.json`` (``environment.threads``), which are the
    training's unless the cell was resumed or re-evaluated elsewhere."""
    timing = cell.info.get("timing") or {}
    cpu_seconds = timing.get("train_cpu_s")
    if isinstance(cpu_seconds, (int, float)) and cpu_seconds > 0:
        return cpu_seconds / 60.0
    seconds = timing.get("train_s")
    threads = (cell.info.get("environment") or {}).get("threads")
    if not isinstance(seconds, (int, float)) or not isinstance(threads, int) or seconds <= 0:
        return None
    return seconds * threads / 60.0


def _cpu_minutes_label(cells: list[Cell]) -> str:
    values = [v for v in (train_cpu_minutes(c) for c in cells) if v is not None]
    return f"{np.mean(values):.1f}" if values else ""


def _epochs_label(cell: Cell) -> str:
    stages = (cell.info.get("method") or {}).get("stages") or []
    parts = [f"{s.get('epochs')}" for s in stages if isinstance(s, dict)]
    return " + ".join(parts) if parts else ""
