"""Report figures that scale with the number of cells: a 4-method x 8-seed run must still lay out."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd

from lrpose_bench.analysis import figures as figs
from lrpose_bench.analysis.displacement import bin_labels

METHODS = ("hrnet", "dark", "udp", "cal")
SEEDS = range(8)


def _render(fig) -> None:
    """PNG and PDF, with every warning an error (constrained layout collapsing warns, then draws
    an unreadable figure)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fmt in ("png", "pdf"):
            fig.savefig(io.BytesIO(), format=fmt)


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_training_curves_of_32_cells_lay_out_with_a_per_method_legend() -> None:
    epochs = np.arange(1, 30)
    logs = {
        f"{m} s{s}": (m, "64x48", pd.DataFrame({"epoch": epochs, "loss": 1.0 / (epochs + s)}))
        for m in METHODS
        for s in SEEDS
    }
    fig = figs.training_curves(logs)
    _render(fig)
    assert _legend_texts(fig) == [f"{m} (all seeds)" for m in METHODS]


def test_bin_shares_of_32_cells_lay_out_with_a_per_method_legend() -> None:
    labels = bin_labels([0.25, 0.5, 1.0])
    rows = []
    for m in METHODS:
        for s in SEEDS:
            row = {"label": f"{m} s{s}", "method": m, "resolution": "64x48"}
            row.update({f"coarse_share_{b}": 1.0 / len(labels) for b in labels})
            rows.append(row)
    fig = figs.bin_share_overview(pd.DataFrame(rows), labels)
    _render(fig)
    assert _legend_texts(fig) == [f"{m} (all seeds)" for m in METHODS]


def test_a_few_cells_keep_one_legend_entry_each() -> None:
    epochs = np.arange(1, 5)
    logs = {f"{m} s0": (m, "64x48", pd.DataFrame({"epoch": epochs, "loss": 1.0 / epochs})) for m in METHODS}
    fig = figs.training_curves(logs)
    _render(fig)
    assert _legend_texts(fig) == [f"{m} s0" for m in METHODS]


def test_budget_curve_adds_the_left_right_panel_only_when_a_point_has_it() -> None:
    rows = [
        {"method": m, "resolution": "64x48", "epochs": e, "AP": ap, "AP_sd": 0.5, "ratio": 0.6, "ratio_sd": 0.01}
        for m, base in (("udp", 10.0), ("cal", 9.0))
        for e, ap in ((6, base / 4), (24, base), (29, base + 0.5))
    ]
    frame = pd.DataFrame(rows)
    assert len(figs.budget_curve(frame).axes) == 2
    assert len(figs.budget_curve(frame.assign(mirror=float("nan"), mirror_sd=float("nan"))).axes) == 2
    with_mirror = frame.assign(mirror=[30.0, 25.0, 24.0, 35.0, 40.0, 41.0], mirror_sd=1.0)
    with_mirror.loc[0, "mirror"] = float("nan")  # an old cell without that snapshot's predictions
    figure = figs.budget_curve(with_mirror)
    assert len(figure.axes) == 3
    panel = figure.axes[2]
    assert "left/right" in panel.get_ylabel()
    plotted = {bars.get_label(): list(bars.lines[0].get_ydata()) for bars in panel.containers}
    assert plotted == {"udp": [25.0, 24.0], "cal": [35.0, 40.0, 41.0]}
