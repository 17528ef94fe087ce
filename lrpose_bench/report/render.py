"""Renderers: self-contained HTML, LaTeX (booktabs), CSV and JSON from the report's tables and figures.

Tables go through pandas' jinja2-based ``Styler`` (``to_html`` / ``to_latex``); the pages around them
are jinja2 templates in ``templates/``. The HTML page embeds every figure as a base64 PNG and loads
nothing from outside (no scripts, fonts or style sheets), so it opens offline and in a mail
attachment. The LaTeX output is ASCII only (special characters are escaped, Unicode symbols mapped to
LaTeX macros) and uses booktabs, graphicx and geometry, which every TeX distribution ships.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from lrpose_bench.report.tables import Table
from lrpose_bench.store import write_json, write_text

MISSING_HTML = "—"
MISSING_LATEX = "--"


@dataclass
class FigureOut:
    """A rendered figure: PNG bytes for HTML, optional PDF path for LaTeX."""

    key: str
    title: str
    caption: str
    png: bytes | None = None
    pdf: Path | None = None
    section: str = "figures"  # figures | displacement | training

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png or b"").decode("ascii")


@dataclass
class ReportContent:
    """Everything a renderer needs."""

    title: str
    run_dir: Path
    summary: list[tuple[str, str]]
    notes: list[str]
    tables: list[Table]
    figures: list[FigureOut]
    config_yaml: str
    environment: dict[str, Any]
    cells: pd.DataFrame
    records: dict[str, Any] = field(default_factory=dict)


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("lrpose_bench.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


# ----------------------------------------------------------------------------- cell formatting
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _format_cell(value: Any, sd: Any, digits: int, latex: bool) -> str:
    missing = MISSING_LATEX if latex else MISSING_HTML
    if value is None or value is pd.NA or (_is_number(value) and not math.isfinite(float(value))):
        return missing
    if _is_number(value):
        text = f"{float(value):.{digits}f}"
        if sd is not None and _is_number(sd) and math.isfinite(float(sd)):
            text += (r" $\pm$ " if latex else " ± ") + f"{float(sd):.{digits}f}"
        return text
    text = str(value)
    return latex_escape(text) if latex else text


def display_frame(table: Table, latex: bool) -> pd.DataFrame:
    """Strings to print: numbers with their digits (± sd), '—' for missing, LaTeX-escaped text."""
    out = pd.DataFrame(index=table.values.index, columns=table.values.columns, dtype=object)
    for column in table.values.columns:
        digits = table.decimals.get(column, 1)
        sds = table.sd[column] if table.sd is not None and column in table.sd else None
        for index, value in table.values[column].items():
            sd = sds.loc[index] if sds is not None else None
            out.loc[index, column] = _format_cell(value, sd, digits, latex)
    if latex:
        out.columns = pd.MultiIndex.from_tuples([(latex_escape(g), latex_escape(n)) for g, n in out.columns])
    return out


def _css(table: Table, latex: bool) -> pd.DataFrame:
    bold = table.bold_mask()
    css = pd.DataFrame("", index=table.values.index, columns=table.values.columns)
    css[bold] = "font-weight: bold;"  # Styler.to_latex(convert_css=True) turns this into \bfseries
    if not latex:
        for column in table.values.columns:
            if not _numeric_column(table.values[column]):
                css[column] = css[column] + "text-align: left;"
        for row in table.failed_rows:
            css.iloc[row] = css.iloc[row] + "color: #b00020;"
    if latex:
        css.columns = pd.MultiIndex.from_tuples([(latex_escape(g), latex_escape(n)) for g, n in css.columns])
    return css


def table_html(table: Table) -> str:
    """One ``<table>`` (pandas Styler), bold best values, failed rows in red."""
    shown = display_frame(table, latex=False)
    css = _css(table, latex=False)
    styler = (
        shown.style.hide(axis="index")
        .apply(lambda _: css, axis=None)
        .format(escape="html")
        .format_index(escape="html", axis=1)
        .set_table_attributes('class="results"')
    )
    return styler.to_html(table_uuid=_file_key(table.key))


def table_latex(table: Table) -> str:
    """A ``tabular`` (booktabs rules) with bold best values and ``\\cmidrule`` under column groups."""
    shown = display_frame(table, latex=True)
    css = _css(table, latex=True)
    kinds = "".join("l" if not _numeric_column(table.values[c]) else "r" for c in table.values.columns)
    styler = shown.style.hide(axis="index").apply(lambda _: css, axis=None)
    text = styler.to_latex(hrules=True, multicol_align="c", convert_css=True, column_format=kinds)
    return _add_cmidrules(text, [g for g, _ in table.values.columns])


def _numeric_column(series: pd.Series) -> bool:
    return any(_is_number(v) for v in series if v is not None)


def _add_cmidrules(text: str, groups: Sequence[str]) -> str:
    """``\\cmidrule(lr){a-b}`` under each named column group (booktabs style)."""
    spans, start = [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            if groups[start]:
                spans.append(f"\\cmidrule(lr){{{start + 1}-{i}}}")
            start = i
    if not spans:
        return text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("\\toprule"):
            # the group header row follows \toprule; rules go right below it
            lines.insert(i + 2, " ".join(spans))
            break
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_UNICODE = {
    "—": "--",
    "–": "--",
    "−": "$-$",
    "×": r"$\times$",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "Δ": r"$\Delta$",
    "ŷ": r"$\hat{y}$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "…": "...",
    "→": r"$\rightarrow$",
    "·": r"$\cdot$",
    "’": "'",
    "‘": "`",
    "“": "``",
    "”": "''",
    "²": r"$^2$",
    "α": r"$\alpha$",
    "σ": r"$\sigma$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the Unicode symbols used in the report to ASCII LaTeX."""
    out = []
    for char in str(text):
        if char in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[char])
        elif char in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[char])
        elif ord(char) < 128:
            out.append(char)
        else:
            out.append("?")
    return "".join(out).replace("$$", "")


# ---------------------------------------------------------------------------------- documents
def render_html(content: ReportContent, path: Path) -> Path:
    """Write the self-contained HTML page."""
    template = _env().get_template("report.html.j2")
    sections = {
        name: [f for f in content.figures if f.section == name] for name in ("figures", "displacement", "training")
    }
    html = template.render(
        title=content.title,
        summary=content.summary,
        notes=content.notes,
        tables=[{"key": t.key, "title": t.title, "notes": t.notes, "html": table_html(t)} for t in content.tables],
        figures=sections["figures"],
        displacement_figures=sections["displacement"],
        training_figures=sections["training"],
        config_yaml=content.config_yaml,
        environment=content.environment,
        cells=_cell_rows(content.cells),
    )
    write_text(path, html)
    return path


def _cell_rows(cells: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for record in cells.to_dict("records"):
        ap, train_s = record.get("AP"), record.get("timing_train_s")
        rows.append(
            {
                "cell": str(record.get("cell", "")),
                "state": str(record.get("state", "")),
                "reason": str(record.get("reason") or ""),
                "ap": f"{100 * float(ap):.1f}" if _finite(ap) else MISSING_HTML,
                "train_s": f"{float(train_s):.0f}" if _finite(train_s) else MISSING_HTML,
            }
        )
    return rows


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(float(value))


def render_latex(content: ReportContent, folder: Path) -> Path:
    """Write ``report.tex`` with one ``tables/<key>.tex`` per table and ``figures/<key>.pdf``."""
    env = _env()
    table_template = env.get_template("table.tex.j2")
    keys = []
    for table in content.tables:
        key = _file_key(table.key)
        # shrink a table wider than the text, never enlarge a narrow one (graphicx's \width idiom)
        tabular = (
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            + table_latex(table).rstrip("\n")
            + "}"
        )
        text = table_template.render(
            title=latex_escape(table.title),
            label=f"tab:{key}",
            tabular=tabular,
            notes=[latex_escape(n) for n in table.notes],
        )
        write_text(folder / "tables" / f"{key}.tex", text)
        keys.append(key)
    figures = [
        {
            "path": f"figures/{f.pdf.name}",
            "caption": latex_escape(f.caption or f.title),
            "label": f"fig:{_file_key(f.key)}",
        }
        for f in content.figures
        if f.pdf is not None
    ]
    report = env.get_template("report.tex.j2").render(
        title=latex_escape(content.title),
        summary=[(latex_escape(k), latex_escape(v)) for k, v in content.summary],
        notes=[latex_escape(n) for n in content.notes],
        tables=keys,
        figures=figures,
    )
    path = folder / "report.tex"
    write_text(path, report)
    return path


def _file_key(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)


def render_csv(content: ReportContent, folder: Path) -> Path:
    """``cells.csv`` (one row per cell, every metric) plus ``tables/<key>.csv`` per table."""
    path = folder / "cells.csv"
    write_text(path, content.cells.to_csv(index=False))
    for table in content.tables:
        write_text(folder / "tables" / f"{_file_key(table.key)}.csv", table.flat().to_csv(index=False))
    return path


def render_json(content: ReportContent, path: Path) -> Path:
    """``report.json``: summary, cells (one record per cell, every metric) and every table's rows."""
    cells = json_records(content.cells)
    tables = {t.key: {"title": t.title, "notes": t.notes, "rows": json_records(t.flat())} for t in content.tables}
    write_json(
        path,
        {
            "title": content.title,
            "summary": dict(content.summary),
            "notes": content.notes,
            "units": "cells: metrics are fractions 0..1 as in metrics.json; tables: ×100",
            "cells": cells,
            "tables": tables,
            **content.records,
        },
    )
    return path


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records with NaN → null (JSON has no NaN)."""
    out = []
    for record in frame.to_dict("records"):
        out.append({str(k): (None if _is_number(v) and not math.isfinite(float(v)) else v) for k, v in record.items()})
    return out
