"""Paired bootstrap: the fast re-accumulation equals pycocotools on resampled documents, and the
interval covers a known difference in simulation."""

from __future__ import annotations

import numpy as np
import pytest
from test_report_factory import make_gt, noisy_predictions

from lrpose_bench.analysis.bootstrap import (
    evaluate_images,
    paired_differences,
    resample_indices,
    resampled_documents,
    seed_summary,
)
from lrpose_bench.evaluation.coco_metric import evaluate_keypoints


def _with_extras(gt, results, seed):
    """Make the case harder: drop some predictions, add false positives, tie some scores."""
    rng = np.random.default_rng(seed)
    kept = [r for r in results if rng.random() > 0.1]
    for r in kept[::7]:
        r["score"] = 0.75  # ties across images exercise the stable-sort order
    for image in gt["images"][::5]:
        k = np.column_stack([rng.uniform(0, 600, 17), rng.uniform(0, 450, 17), np.ones(17)])
        kept.append({"image_id": image["id"], "category_id": 1, "keypoints": k.ravel().tolist(), "score": 0.75})
    return kept


@pytest.fixture(scope="module")
def case():
    gt = make_gt(num_images=25, persons=2, seed=3)
    gt["images"].append({"id": 999, "file_name": "empty.png", "height": 480, "width": 640})  # no people
    a = _with_extras(gt, noisy_predictions(gt, 3.0, 1), 1)
    b = _with_extras(gt, noisy_predictions(gt, 6.0, 2), 2)
    return gt, a, b


def test_full_set_matches_evaluate_keypoints(case) -> None:
    gt, a, b = case
    for results in (a, b):
        assert evaluate_images(gt, results).ap() == pytest.approx(evaluate_keypoints(gt, results)["AP"], abs=1e-12)


def test_resamples_with_duplicates_match_slow_recomputation(case) -> None:
    gt, a, _ = case
    ev = evaluate_images(gt, a)
    draws = resample_indices(ev.image_ids.size, 6, seed=11)
    assert any(len(set(row)) < len(row) for row in draws)  # duplicates are really exercised
    for row in draws:
        gt_r, res_r = resampled_documents(gt, a, ev.image_ids[row])
        slow = evaluate_keypoints(gt_r, res_r)["AP"]
        assert ev.ap(row) == pytest.approx(slow, abs=1e-12)


def test_duplicates_count_twice(case) -> None:
    """Doubling one image changes AP exactly as pycocotools on a document with the image twice."""
    gt, a, _ = case
    ev = evaluate_images(gt, a)
    row = np.concatenate([np.arange(ev.image_ids.size), [0, 0, 0]])
    gt_r, res_r = resampled_documents(gt, a, ev.image_ids[row])
    assert ev.ap(row) == pytest.approx(evaluate_keypoints(gt_r, res_r)["AP"], abs=1e-12)
    # de-duplicated ids (what COCOeval.params.imgIds would do) give a different number here
    assert ev.ap(row) != pytest.approx(ev.ap(), abs=1e-9)


def test_identical_methods_have_zero_difference(case) -> None:
    gt, a, _ = case
    ev = evaluate_images(gt, a)
    (diff,) = paired_differences({"x": ev, "y": ev}, samples=30, seed=0)
    assert diff.difference == 0 and diff.low == 0 and diff.high == 0 and not diff.excludes_zero


def test_no_predictions_score_zero(case) -> None:
    gt, a, _ = case
    empty = evaluate_images(gt, [])
    assert empty.ap() == 0.0
    (diff,) = paired_differences({"a": evaluate_images(gt, a), "none": empty}, samples=20, seed=0)
    assert diff.difference == pytest.approx(evaluate_keypoints(gt, a)["AP"]) and diff.low > 0


def test_interval_covers_the_population_difference() -> None:
    """Simulation with a known answer: the true ΔAP is the difference on a large population of images;
    percentile intervals from small samples of it must cover that value in most replicates."""
    population = make_gt(num_images=1200, persons=1, seed=5)
    a = noisy_predictions(population, 4.0, 1)
    b = noisy_predictions(population, 5.5, 2)
    ev_a, ev_b = evaluate_images(population, a), evaluate_images(population, b)
    truth = ev_a.ap() - ev_b.ap()
    assert truth > 0.02  # a real, known difference
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    replicates = 12
    for _ in range(replicates):
        sample = rng.choice(ev_a.image_ids.size, size=150, replace=False)
        # the sample's images as a data set of their own
        sub_a = _subset(ev_a, sample)
        sub_b = _subset(ev_b, sample)
        (diff,) = paired_differences({"a": sub_a, "b": sub_b}, samples=300, seed=int(rng.integers(1 << 30)))
        covered += diff.low <= truth <= diff.high
        widths.append(diff.high - diff.low)
    assert covered >= replicates - 3  # nominal 95 %: allow a few misses
    assert 0 < np.mean(widths) < 0.2


def _subset(ev, positions):
    """An ImageEvaluation restricted to some images (per-image records are independent)."""
    from lrpose_bench.analysis.bootstrap import ImageEvaluation

    starts, counts = ev.start[positions], ev.count[positions]
    det = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
    new_start = np.cumsum(counts) - counts
    return ImageEvaluation(
        ev.image_ids[positions],
        ev.scores[det],
        ev.tp[:, det],
        ev.fp[:, det],
        new_start,
        counts,
        ev.positives[positions],
    )


def test_seed_summary() -> None:
    assert seed_summary([70.0, 72.0, 74.0]) == (72.0, 2.0, 3)
    assert seed_summary([70.0]) == (70.0, 0.0, 1)
    mean, sd, n = seed_summary([])
    assert n == 0 and np.isnan(mean)


def test_pooled_over_seeds_is_the_seed_mean_and_widens_with_seed_spread() -> None:
    """Two-level bootstrap: the point is the mean over seeds of the per-seed differences; a seed
    whose difference disagrees with the others widens the interval beyond the image-only one."""
    from lrpose_bench.analysis.bootstrap import pooled_differences

    gt = make_gt(num_images=30, persons=2, seed=5)
    ev = {noise: evaluate_images(gt, noisy_predictions(gt, noise, int(noise * 10))) for noise in (2.0, 3.0, 6.0, 9.0)}
    agree = {0: {"a": ev[2.0], "b": ev[6.0]}, 1: {"a": ev[2.0], "b": ev[6.0]}}
    (same,) = pooled_differences(agree, samples=200, seed=0)
    (one,) = paired_differences(agree[0], samples=200, seed=0)
    assert same.difference == pytest.approx(one.difference)
    assert same.low == pytest.approx(one.low) and same.high == pytest.approx(one.high)  # no seed spread
    spread = {0: {"a": ev[2.0], "b": ev[6.0]}, 1: {"a": ev[3.0], "b": ev[3.0]}, 2: {"a": ev[2.0], "b": ev[9.0]}}
    (pooled,) = pooled_differences(spread, samples=300, seed=0)
    per_seed = [paired_differences(spread[s], samples=300, seed=0)[0].difference for s in spread]
    assert pooled.difference == pytest.approx(np.mean(per_seed))
    assert pooled.high - pooled.low > max(
        d.high - d.low for s in spread for d in paired_differences(spread[s], samples=300, seed=0)
    )
    assert pooled_differences({0: agree[0]}, samples=10) == []


def test_pooled_pairs_use_the_seeds_both_methods_ran_and_keep_every_pair() -> None:
    """Methods run with different seed sets (extra seeds for two of them): every pair is pooled over
    the seeds it shares and says how many; a method with fewer seeds must not drop out of the table
    (it did: names were intersected over all seeds), and the full-overlap pairs are unchanged."""
    from lrpose_bench.analysis.bootstrap import pooled_differences

    gt = make_gt(num_images=30, persons=2, seed=5)
    ev = {noise: evaluate_images(gt, noisy_predictions(gt, noise, int(noise * 10))) for noise in (2.0, 3.0, 6.0)}
    full = {s: {"a": ev[2.0], "b": ev[3.0], "c": ev[6.0]} for s in (0, 1)}
    extra = {**full, 2: {"a": ev[3.0], "b": ev[2.0]}, 3: {"a": ev[2.0], "b": ev[6.0]}}
    by_pair = {(d.a, d.b): d for d in pooled_differences(extra, samples=200, seed=0)}
    assert set(by_pair) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert by_pair["a", "b"].seeds == 4 and by_pair["a", "c"].seeds == 2 and by_pair["b", "c"].seeds == 2
    only_shared = {(d.a, d.b): d for d in pooled_differences(full, samples=200, seed=0)}
    assert by_pair["a", "c"] == only_shared["a", "c"]  # the seeds c lacks change nothing for its pairs
    per_seed = [ev_s["a"].ap() - ev_s["b"].ap() for ev_s in extra.values()]
    assert by_pair["a", "b"].difference == pytest.approx(np.mean(per_seed))
    assert paired_differences(full[0], samples=50, seed=0)[0].seeds == 1
