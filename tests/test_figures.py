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
