"""Figures of the report: Fig. 5 displacement panels, AP versus resolution (Fig. 1 style), loss curves.

Matplotlib's object API only (``Figure`` objects, never pyplot), so no GUI backend is touched and a
user's interactive session keeps its backend; ``savefig`` renders PNG through Agg and PDF directly. Colours come from the Okabe–Ito palette
(Okabe & Ito 2008, colour-blind safe) through one fixed method → colour map, so a method has the same
colour in every figure of every report. Functions return ``matplotlib.figure.Figure`` objects built
with the object API (no pyplot state), which the caller saves as PNG/PDF and closes.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lrpose_bench.analysis.displacement import Displacements, bin_labels, bin_shares

#: Okabe–Ito palette
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: fixed method → colour map (stable across figures and reports)
METHOD_COLOURS: dict[str, str] = {
    "hrnet": OKABE_ITO["sky_blue"],
    "dark": OKABE_ITO["bluish_green"],
    "udp": OKABE_ITO["orange"],
    "cal": OKABE_ITO["vermillion"],
    "spsr+hrnet": OKABE_ITO["blue"],
    "spsr+udp": OKABE_ITO["reddish_purple"],
}
_SPARE = (OKABE_ITO["black"], "#7F7F7F", "#B8860B", "#4B0082")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def method_colour(method: str) -> str:
    """Colour of ``method``; methods outside the map get a spare colour chosen by a stable hash."""
    base = method.split("@")[0]
    if base in METHOD_COLOURS:
        return METHOD_COLOURS[base]
    return _SPARE[zlib.crc32(base.encode()) % len(_SPARE)]


def _style(ax) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


#: more legend entries than this and a per-cell legend squeezes the panel to nothing (32 cells,
#: 4 methods x 8 seeds, collapsed the constrained layout): the legend then names methods only
MAX_LEGEND_ENTRIES = 12


def _legend(ax, method_of: Mapping[str, str], kind: str) -> None:
    """One entry per cell while they fit, else one per method (its colour; seeds share it).
    ``method_of`` maps each artist label on ``ax`` to its method; ``kind`` is ``line`` or ``bar``."""
    _, labels = ax.get_legend_handles_labels()
    if len(labels) <= MAX_LEGEND_ENTRIES:
        ax.legend(fontsize=7, frameon=False)
        return
    methods = list(dict.fromkeys(method_of[label] for label in labels))
    if kind == "bar":
        proxies = [Patch(color=method_colour(m)) for m in methods]
    else:
        proxies = [Line2D([0], [0], color=method_colour(m)) for m in methods]
    ax.legend(proxies, [f"{m} (all seeds)" for m in methods], fontsize=7, frameon=False)


# ------------------------------------------------------------------ Fig. 5: displacement panels
def _panel_row(axes, disp: Displacements, edges: Sequence[float], colour: str, limit: float, title: str) -> None:
    """Scatter, bin shares (coarse vs final) and 2-D histogram of one cell (one row of Fig. 5)."""
    scatter_ax, share_ax, hist_ax = axes
    coarse = disp.coarse
    scatter_ax.scatter(coarse[:, 0], coarse[:, 1], s=5, alpha=0.4, color=colour, linewidths=0, rasterized=True)
    scatter_ax.set_xlim(-limit, limit)
    scatter_ax.set_ylim(limit, -limit)  # image convention: y grows downwards
    scatter_ax.set_aspect("equal")
    scatter_ax.set_xlabel("dx (heatmap px)")
    scatter_ax.set_ylabel("dy (heatmap px)")
    scatter_ax.set_title(f"{title}\ncoarse ŷ−y, n={disp.count}", fontsize=9)
    _style(scatter_ax)

    labels = bin_labels(edges)
    coarse_share = bin_shares(disp.distances("coarse"), edges).to_numpy() * 100
    final_share = bin_shares(disp.distances("final"), edges).to_numpy() * 100
    x = np.arange(len(labels))
    share_ax.bar(x - 0.2, coarse_share, width=0.4, color=colour, label="coarse (arg-max)")
    share_ax.bar(
        x + 0.2,
        final_share,
        width=0.4,
        color=colour,
        alpha=0.45,
        hatch="//",
        edgecolor="#333333",
        linewidth=0.4,
        label="final (decoded)",
    )
    share_ax.set_xticks(x, labels, fontsize=8)
    share_ax.set_xlabel("distance bin (heatmap px)")
    share_ax.set_ylabel("share of joints (%)")
    share_ax.set_title("share per distance bin", fontsize=9)
    share_ax.legend(fontsize=7, frameon=False)
    _style(share_ax)

    bins = np.arange(-np.ceil(limit), np.ceil(limit) + 1) - 0.5  # one bin per integer displacement
    hist, xedges, yedges = np.histogram2d(coarse[:, 0], coarse[:, 1], bins=[bins, bins])
    mesh = hist_ax.pcolormesh(xedges, yedges, hist.T, cmap="viridis", rasterized=True)
    hist_ax.set_xlim(-limit, limit)
    hist_ax.set_ylim(limit, -limit)
    hist_ax.set_aspect("equal")
    hist_ax.set_xlabel("dx (heatmap px)")
    hist_ax.set_title("2-D histogram (count)", fontsize=9)
    hist_ax.figure.colorbar(mesh, ax=hist_ax, fraction=0.046, pad=0.04)


def _limit(displacements: Sequence[Displacements]) -> float:
    """Common axis half-width: the 99th percentile of |coarse| over all panels, at least 3 px."""
    values = np.concatenate([np.abs(d.coarse).ravel() for d in displacements if d.count] or [np.zeros(1)])
    return float(max(3.0, np.ceil(np.percentile(values, 99)) + 0.5))


def displacement_figure(
    rows: Sequence[tuple[str, str, Displacements]], edges: Sequence[float], title: str | None = None
) -> Figure:
    """Fig. 5 layout: one row per (label, method, displacements); columns scatter / shares / 2-D hist."""
    n = max(1, len(rows))
    height = 3.4 * n + (0.4 if title else 0.0)
    # fixed margins (in inches) instead of constrained layout: this figure is drawn once per cell and
    # the layout solver was most of its drawing time
    top = 1.0 - (0.62 + (0.4 if title else 0.0)) / height
    fig = Figure(figsize=(11.0, height))
    axes = fig.subplots(
        n,
        3,
        squeeze=False,
        gridspec_kw={"left": 0.07, "right": 0.96, "top": top, "bottom": 0.55 / height, "wspace": 0.38, "hspace": 0.6},
    )
    limit = _limit([d for _, _, d in rows])
    for row_axes, (label, method, disp) in zip(axes, rows):
        _panel_row(row_axes, disp, edges, method_colour(method), limit, label)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def bin_share_overview(frame: pd.DataFrame, labels: Sequence[str]) -> Figure:
    """Coarse-displacement bin shares of every cell: one panel per resolution, bars per method.

    ``frame`` has columns ``label, method, resolution`` and ``coarse_share_<bin>`` /
    ``final_share_<bin>`` (from :func:`lrpose_bench.analysis.displacement.summarize`).
    """
    resolutions = list(dict.fromkeys(frame["resolution"]))
    fig = Figure(figsize=(min(4.2 * len(resolutions), 14.0), 3.8), layout="constrained")
    axes = fig.subplots(1, len(resolutions), squeeze=False, sharey=True)[0]
    for ax, res in zip(axes, resolutions):
        part = frame[frame["resolution"] == res]
        width = 0.8 / max(1, len(part))
        x = np.arange(len(labels))
        for i, (_, row) in enumerate(part.iterrows()):
            values = [100 * row[f"coarse_share_{b}"] for b in labels]
            ax.bar(
                x - 0.4 + width * (i + 0.5),
                values,
                width=width,
                color=method_colour(row["method"]),
                label=row["label"],
                hatch=None if not row.get("ablated") else "..",
                edgecolor="white",
                linewidth=0.3,
            )
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(f"{str(res).replace('x', '×')}: coarse ŷ−y per bin", fontsize=9)
        ax.set_xlabel("distance bin (heatmap px)")
        _style(ax)
        _legend(ax, dict(zip(part["label"], part["method"])), "bar")
    axes[0].set_ylabel("share of joints (%)")
    return fig


# ---------------------------------------------------------------------------- AP vs resolution
def ap_vs_resolution(
    ours: pd.DataFrame, paper: pd.DataFrame | None, ours_label: str, paper_label: str | None
) -> Figure:
    """Paper Fig. 1 style: AP (×100) against input size, one line per method.

    ``ours`` columns: ``method, resolution, pixels, AP`` and optional ``sd``; ``paper`` the same
    without ``sd``. The two data sets get separate panels: their absolute values are not comparable.
    """
    panels = [(ours, ours_label)] + ([(paper, paper_label)] if paper is not None and len(paper) else [])
    fig = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (frame, label) in zip(axes, panels):
        order = frame.drop_duplicates("resolution").sort_values("pixels")
        positions = {res: i for i, res in enumerate(order["resolution"])}
        for j, (method, part) in enumerate(frame.groupby("method", sort=False)):
            part = part.sort_values("pixels")
            x = [positions[r] for r in part["resolution"]]
            colour = method_colour(str(method))
            ax.plot(x, part["AP"], marker=_MARKERS[j % len(_MARKERS)], color=colour, label=str(method))
            if "sd" in part and part["sd"].fillna(0).gt(0).any():
                ax.errorbar(x, part["AP"], yerr=part["sd"].fillna(0), color=colour, capsize=3, linestyle="none")
        ax.set_xticks(list(positions.values()), [r.replace("x", "×") for r in positions])
        ax.set_xlabel("input size (H×W)")
        ax.set_ylabel("AP (OKS, ×100)")
        ax.set_title(label, fontsize=10)
        _style(ax)
        ax.legend(fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------------ training curves
def training_curves(logs: Mapping[str, tuple[str, str, pd.DataFrame]]) -> Figure:
    """Loss versus epoch: one panel per resolution, one line per cell (colour = method).

    ``logs`` maps a cell label to ``(method, resolution, train_log frame)``; the frame needs
    ``epoch`` and ``loss`` (several rows per epoch are averaged) and may carry ``stage``.
    """
    resolutions = list(dict.fromkeys(res for _, res, _ in logs.values()))
    n = max(1, len(resolutions))
    fig = Figure(figsize=(min(4.6 * n, 14.0), 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    used: dict[tuple[int, str], int] = {}
    for label, (method, res, frame) in logs.items():
        ax_index = resolutions.index(res)
        ax = axes[ax_index]
        per_epoch = frame.groupby("epoch", sort=True)["loss"].mean()
        k = used.get((ax_index, method), 0)
        used[(ax_index, method)] = k + 1
        ax.plot(
            per_epoch.index,
            per_epoch.to_numpy(),
            color=method_colour(method),
            linestyle=_LINESTYLES[k % len(_LINESTYLES)],
            marker="." if len(per_epoch) < 30 else None,
            label=label,
        )
    positive = all((frame["loss"] > 0).all() for _, _, frame in logs.values())
    for ax, res in zip(axes, resolutions):
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"training loss, {str(res).replace('x', '×')}", fontsize=10)
        _style(ax)
        _legend(ax, {label: method for label, (method, _, _) in logs.items()}, "line")
    axes[0].set_ylabel("loss (log scale)" if positive else "loss")
    return fig


# ------------------------------------------------------------------------------- budget curve
def budget_curve(frame: pd.DataFrame) -> Figure:
    """AP (×100) and final error / floor error against training epochs, one line per method
    (mean over seeds, bars = sd): does the ranking hold as training grows?

    ``frame`` columns: ``method, resolution, epochs, AP, AP_sd, ratio, ratio_sd`` (one row per
    method, resolution and budget point, the last point being the end of training), and optionally
    ``mirror, mirror_sd``, the left/right confusion (%): a third panel when any value is known.
    """
    resolutions = list(dict.fromkeys(frame["resolution"]))
    panels = [("AP", "AP (OKS, ×100)"), ("ratio", "final error / mean-pose floor")]
    if "mirror" in frame and frame["mirror"].notna().any():
        panels.append(("mirror", "left/right confusion (% nearer mirror)"))
    fig = Figure(figsize=(4.5 * len(panels), 3.4 * len(resolutions)), layout="constrained")
    axes = fig.subplots(len(resolutions), len(panels), squeeze=False)
    for row, res in enumerate(resolutions):
        part = frame[frame["resolution"] == res]
        for j, (method, lines) in enumerate(part.groupby("method", sort=False)):
            lines = lines.sort_values("epochs")
            colour = method_colour(str(method))
            for ax, (key, _) in zip(axes[row], panels, strict=True):
                known = lines[lines[key].notna()]
                ax.errorbar(known["epochs"], known[key], yerr=known[f"{key}_sd"].fillna(0), color=colour,
                            marker=_MARKERS[j % len(_MARKERS)], capsize=3, label=str(method))  # fmt: skip
        for ax, (_, label) in zip(axes[row], panels, strict=True):
            ax.set_ylabel(label)
        axes[row][1].axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
        for ax in axes[row]:
            ax.set_xlabel("training epochs")
            ax.set_title(f"budget curve, {str(res).replace('x', '×')}", fontsize=10)
            _style(ax)
        axes[row][0].legend(fontsize=8, frameon=False)
    return fig
