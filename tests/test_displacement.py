"""Fig. 5 displacement statistics: distance bins, summaries, npz reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.analysis.displacement import bin_index, bin_labels, bin_shares, load_displacements, summarize
from lrpose_bench.errors import ConfigError, DataError
from lrpose_bench.store import write_npz

PAPER_EDGES = [0.0, 1.0, 2.0, 3.0]


def test_paper_bins_labels_and_boundaries() -> None:
    assert bin_labels(PAPER_EDGES) == ["0", "(0,1]", "(1,2]", "(2,3]", ">3"]
    d = np.array([0.0, 1e-9, 0.5, 1.0, 1.0001, 2.0, 2.5, 3.0, 3.0001, 10.0])
    # exactly 0 (within float round-off) → "0"; right-closed bins: 1.0 in (0,1], 3.0 in (2,3]
    assert bin_index(d, PAPER_EDGES).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_custom_bins_first_bin_closed_interval() -> None:
    assert bin_labels([0.5, 1.5]) == ["[0,0.5]", "(0.5,1.5]", ">1.5"]
    assert bin_index(np.array([0.0, 0.5, 0.7, 2.0]), [0.5, 1.5]).tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("edges", [[], [1.0, 1.0], [2.0, 1.0], [-1.0, 1.0]])
def test_bad_edges_are_config_errors(edges) -> None:
    with pytest.raises(ConfigError, match="report.displacement_bins"):
        bin_labels(edges)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), min_size=1, max_size=200),
    st.lists(st.floats(min_value=0.01, max_value=5), min_size=1, max_size=6, unique=True),
)
def test_shares_partition_the_distances(distances, edges) -> None:
    edges = sorted(edges)
    d = np.array(distances)
    shares = bin_shares(d, edges)
    assert shares.sum() == pytest.approx(1.0)
    index = bin_index(d, edges)
    # every distance lies inside the interval its bin names
    lower = np.array([0.0] + edges)
    upper = np.array(edges + [np.inf])
    assert np.all(d <= upper[index] + 1e-12)
    assert np.all((d > lower[index]) | (index == 0))


def test_summarize_known_values() -> None:
    from lrpose_bench.analysis.displacement import Displacements

    coarse = np.array([[0.0, 0.0], [3.0, 4.0], [0.6, 0.8], [1.5, 0.0]])  # distances 0, 5, 1, 1.5
    final = coarse / 2
    s = summarize(Displacements(coarse, final, np.arange(4), (16, 12)), PAPER_EDGES)
    assert s["joints"] == 4
    assert s["coarse_mean"] == pytest.approx((0 + 5 + 1 + 1.5) / 4)
    assert s["coarse_median"] == pytest.approx(1.25)
    assert s["final_mean"] == pytest.approx(s["coarse_mean"] / 2)
    assert s["removed"] == pytest.approx(0.5)
    assert [s[f"coarse_share_{b}"] for b in bin_labels(PAPER_EDGES)] == [0.25, 0.25, 0.25, 0.0, 0.25]


def test_load_keeps_visible_finite_joints(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(5, 17, 2)).astype(np.float32)
    visible = rng.random((5, 17)) > 0.3
    coarse[0, 0] = np.nan
    visible[0, 0] = True
    write_npz(
        tmp_path / "d.npz",
        coarse=coarse,
        final=coarse * 0.5,
        visible=visible,
        keypoint_id=np.broadcast_to(np.arange(17), (5, 17)).astype(np.int16),
        image_id=np.arange(5),
        heatmap_size=np.array([16, 12]),
    )
    disp = load_displacements(tmp_path / "d.npz")
    assert disp.count == int(visible.sum()) - 1
    assert disp.heatmap_size == (16, 12)
    assert np.allclose(disp.final, disp.coarse * 0.5)


def test_load_reports_broken_file(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="d.npz"):
        load_displacements(tmp_path / "d.npz")
