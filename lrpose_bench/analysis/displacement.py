"""Displacement statistics of paper Fig. 5.

The paper studies the displacements ``S = {ŷ − y}`` (Eq. 11) between the coarse prediction (heatmap
arg-max) and the ground truth, in heatmap pixels: their scatter, the share falling into distance bins
(0, (0,1], (1,2], (2,3], >3 px) and their 2-D histogram. We add the same statistics for the *final*
error after each decoder's refinement (offsets for UDP/CAL, Taylor step for DARK, quarter-pixel shift
for HRNet), so a report shows what each decoder removes.

Input is a cell's ``displacements.npz`` (written by ``lrpose_bench.engine.evaluator``); only
visible joints count, as only they carry ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lrpose_bench.errors import ConfigError, DataError

#: a distance at or below this counts as exactly 0 (the paper's "0" bin; float32 round-off)
ZERO_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Displacements:
    """Visible joints' displacements of one cell, in heatmap pixels."""

    coarse: np.ndarray  # (M, 2) arg-max − ground truth, (dx, dy)
    final: np.ndarray  # (M, 2) decoded − ground truth
    keypoint_id: np.ndarray  # (M,)
    heatmap_size: tuple[int, int]  # (H, W)

    @property
    def count(self) -> int:
        return int(self.coarse.shape[0])

    def distances(self, which: str = "coarse") -> np.ndarray:
        return np.linalg.norm(getattr(self, which), axis=1)


def load_displacements(path: Path | str) -> Displacements:
    """Read ``displacements.npz``; keeps visible joints with finite values."""
    path = Path(path)
    try:
        with np.load(path) as data:
            coarse = np.asarray(data["coarse"], dtype=np.float64).reshape(-1, 2)
            final = np.asarray(data["final"], dtype=np.float64).reshape(-1, 2)
            visible = np.asarray(data["visible"], dtype=bool).reshape(-1)
            keypoint_id = np.asarray(data["keypoint_id"]).reshape(-1)
            heatmap_size = tuple(int(v) for v in np.asarray(data["heatmap_size"]).reshape(-1)[:2])
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{path}: cannot read displacements ({error}); re-evaluate the cell") from None
    if not (coarse.shape == final.shape and visible.shape[0] == coarse.shape[0] == keypoint_id.shape[0]):
        raise DataError(f"{path}: coarse/final/visible arrays disagree in shape; re-evaluate the cell")
    keep = visible & np.isfinite(coarse).all(axis=1) & np.isfinite(final).all(axis=1)
    return Displacements(coarse[keep], final[keep], keypoint_id[keep], (heatmap_size[0], heatmap_size[1]))


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Labels of :func:`bin_shares`: with edges ``[0, 1, 2, 3]``: ``0, (0,1], (1,2], (2,3], >3``."""
    edges = _check_edges(edges)
    labels = [_num(edges[0]) if edges[0] == 0 else f"[0,{_num(edges[0])}]"]
    labels += [f"({_num(a)},{_num(b)}]" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f">{_num(edges[-1])}")
    return labels


def bin_index(distances: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of every distance: 0 for ``d <= edges[0]`` (``d == 0`` when edges[0] is 0), then
    ``(e_i, e_{i+1}]`` and a last open bin ``> e_n`` (the paper's Fig. 5 legend)."""
    edges = _check_edges(edges)
    d = np.asarray(distances, dtype=np.float64)
    first = edges[0] if edges[0] > 0 else ZERO_TOLERANCE
    upper = np.array([first] + list(edges[1:]))
    # searchsorted(side='left') puts d == e_i into the bin that closes at e_i: right-closed bins
    return np.searchsorted(upper, d, side="left")


def bin_shares(distances: np.ndarray, edges: Sequence[float]) -> pd.Series:
    """Share (0..1) of distances per bin, indexed by :func:`bin_labels`."""
    labels = bin_labels(edges)
    index = bin_index(distances, edges)
    counts = np.bincount(index, minlength=len(labels)).astype(np.float64)
    total = counts.sum()
    shares = counts / total if total else np.full(len(labels), np.nan)
    return pd.Series(shares, index=labels, name="share")


def summarize(disp: Displacements, edges: Sequence[float]) -> dict[str, float]:
    """Mean/median/90th percentile of coarse and final error and the coarse and final bin shares."""
    out: dict[str, float] = {"joints": float(disp.count)}
    for which in ("coarse", "final"):
        d = disp.distances(which)
        if d.size:
            out[f"{which}_mean"] = float(d.mean())
            out[f"{which}_median"] = float(np.median(d))
            out[f"{which}_p90"] = float(np.percentile(d, 90))
        else:
            out.update({f"{which}_mean": np.nan, f"{which}_median": np.nan, f"{which}_p90": np.nan})
        for label, share in bin_shares(d, edges).items():
            out[f"{which}_share_{label}"] = float(share)
    coarse_mean, final_mean = out["coarse_mean"], out["final_mean"]
    out["removed"] = (1.0 - final_mean / coarse_mean) if coarse_mean and np.isfinite(coarse_mean) else np.nan
    return out


def _check_edges(edges: Sequence[float]) -> list[float]:
    values = [float(e) for e in edges]
    if not values or any(b <= a for a, b in zip(values[:-1], values[1:])) or values[0] < 0:
        raise ConfigError(f"report.displacement_bins must be increasing non-negative numbers, got {list(edges)}")
    return values


def _num(value: float) -> str:
    return f"{value:g}"
