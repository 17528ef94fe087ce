"""The HRNet heatmap decode against a literal rebuild of HRNet's ``get_final_preds``."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.codecs.heatmap_ops import argmax_2d, quarter_offset_refine


def hrnet_get_final_preds(batch_heatmaps: np.ndarray) -> np.ndarray:
    """deep-high-resolution-net.pytorch ``lib/core/inference.py::get_final_preds`` (before
    ``transform_preds``), loop for loop: arg-max, then ±0.25 when ``1 < px < W-1 and 1 < py < H-1``."""
    n, k, height, width = batch_heatmaps.shape
    flat = batch_heatmaps.reshape(n, k, -1)
    idx = flat.argmax(-1)
    coords = np.stack([idx % width, idx // width], -1).astype(np.float64)
    for i in range(n):
        for p in range(k):
            hm = batch_heatmaps[i][p]
            px = int(math.floor(coords[i][p][0] + 0.5))
            py = int(math.floor(coords[i][p][1] + 0.5))
            if 1 < px < width - 1 and 1 < py < height - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                coords[i][p] += np.sign(diff) * 0.25
    return coords


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.sampled_from([16, 32]), width=st.sampled_from([12, 24]))
def test_quarter_refine_matches_hrnet_reference(seed: int, height: int, width: int) -> None:
    rng = np.random.default_rng(seed)
    maps = rng.random((2, 17, height, width)).astype(np.float32)
    # put arg-maxes on and next to every border, where the guard decides
    for j, (x, y) in enumerate([(0, 5), (1, 5), (width - 2, 5), (width - 1, 5), (5, 0), (5, 1), (1, 1), (2, 2)]):
        maps[0, j, y, x] = 2.0
    heat = torch.from_numpy(maps)
    coords, _ = argmax_2d(heat)
    ours = quarter_offset_refine(heat, coords).numpy()
    np.testing.assert_array_equal(ours, hrnet_get_final_preds(maps))


def test_argmax_in_second_column_is_not_shifted_on_either_axis() -> None:
    """The joint guard: x = 1 blocks the y shift too (mmpose's per-axis guard would shift y)."""
    maps = torch.zeros(1, 1, 16, 12)
    maps[0, 0, 6, 1] = 1.0
    maps[0, 0, 7, 1] = 0.5  # higher neighbour below
    maps[0, 0, 6, 2] = 0.5  # higher neighbour right
    coords, _ = argmax_2d(maps)
    assert quarter_offset_refine(maps, coords)[0, 0].tolist() == [1.0, 6.0]
    maps = maps.roll(1, dims=-1)  # arg-max at x = 2: both shifts apply
    coords, _ = argmax_2d(maps)
    assert quarter_offset_refine(maps, coords)[0, 0].tolist() == [2.25, 6.25]
