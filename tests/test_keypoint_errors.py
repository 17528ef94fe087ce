"""Keypoint error taxonomy (Ronchi & Perona 2017, coco-analyze): similarity against pycocotools'
OKS, each error type on a constructed case, the fix keeping a joint's similarity, the end-to-end
breakdown and the report table."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.analysis.keypoint_errors import (
    ERROR_TYPES,
    GOOD,
    INVERSION,
    JITTER,
    MISS,
    SWAP,
    UNLABELLED,
    Thresholds,
    classify_detection,
    collapsed_partners,
    corrected_keypoints,
    error_breakdown,
    keypoint_similarity,
    nearer_mirror,
)
from lrpose_bench.data.coco import coco_from_dict
from lrpose_bench.keypoints import NUM_JOINTS, OKS_SIGMAS, flip_index
from lrpose_bench.report import tables as tbl
from lrpose_bench.report.build import build_report, keypoint_error_breakdowns
from lrpose_bench.report.run_folder import load_run
from tests.test_report_factory import CellSpec, make_run

AREA = 4000.0


def _person(x0: float = 100.0, y0: float = 50.0, width: float = 40.0) -> np.ndarray:
    """A person whose left joints sit ``width`` px left of its right joints (pairs well apart)."""
    kpts = np.zeros((NUM_JOINTS, 3))
    for j in range(NUM_JOINTS):
        kpts[j] = (x0 + (width if j % 2 == 0 else 0.0) + 2.0 * j, y0 + 6.0 * j, 2.0)
    kpts[0, 0] = x0 + width / 2  # the nose, unpaired
    return kpts


def _distance_for(ks: float, joint: int, area: float = AREA) -> float:
    """Pixel distance at which joint ``joint`` has keypoint similarity ``ks``."""
    return float(np.sqrt(-np.log(ks) * 2.0 * area * (2.0 * OKS_SIGMAS[joint]) ** 2))


def test_similarity_averages_to_pycocotools_oks() -> None:
    gt = _person()
    rng = np.random.default_rng(0)
    pred = gt[:, :2] + rng.normal(0, 3.0, (NUM_JOINTS, 2))
    gt[3, 2] = 0  # an unlabelled joint does not count
    doc = {
        "images": [{"id": 1, "width": 300, "height": 300}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "keypoints": gt.reshape(-1).tolist(),
                "num_keypoints": int((gt[:, 2] > 0).sum()),
                "area": AREA,
                "bbox": [90.0, 40.0, 100.0, 120.0],
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    from pycocotools.cocoeval import COCOeval

    coco = coco_from_dict(doc)
    result = {"image_id": 1, "category_id": 1, "score": 1.0}
    result["keypoints"] = np.column_stack([pred, np.ones(NUM_JOINTS)]).reshape(-1).tolist()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes([result]), iouType="keypoints")
        evaluator._prepare()
        oks = float(evaluator.computeOks(1, 1)[0, 0])
    ks = keypoint_similarity(pred, gt[:, :2], AREA)
    assert ks[gt[:, 2] > 0].mean() == pytest.approx(oks, rel=1e-9)


def test_each_error_type_on_a_constructed_person() -> None:
    own, other = _person(), _person(x0=200.0)
    mirror = flip_index()
    pred = own[:, :2].copy()  # 0: exactly on its joint → good
    pred[1] = own[1, :2] + (_distance_for(0.7, 1), 0.0)  # ks 0.7 on its own joint → jitter
    pred[5] = own[mirror[5], :2]  # on the mirror joint of the same person → inversion
    pred[7] = other[7, :2]  # on another person's joint → swap
    pred[9] = other[mirror[9], :2]  # on another person's mirror joint → swap too
    pred[11] = own[11, :2] + (0.0, 500.0)  # far from everyone → miss
    own[13, 2] = 0  # unlabelled on the matched person → not classified
    labels = classify_detection(pred, [(own, AREA), (other, AREA)])
    assert labels[0] == GOOD and labels[1] == JITTER and labels[5] == INVERSION
    assert labels[7] == SWAP and labels[9] == SWAP and labels[11] == MISS and labels[13] == UNLABELLED
    untouched = [j for j in range(NUM_JOINTS) if j not in (1, 5, 7, 9, 11, 13)]
    assert np.all(labels[untouched] == GOOD)


def test_nearer_mirror_counts_left_right_confusion_at_any_distance() -> None:
    """A joint placed on its partner is confused; so is one far from both but nearer the partner,
    which the taxonomy calls a miss; the nose and joints with an unlabelled partner are not eligible."""
    own = _person()
    mirror = flip_index()
    pred = own[:, :2].copy()
    pred[5] = own[mirror[5], :2]  # on the partner: an inversion, and confused
    far = own[mirror[7], :2] + (0.0, 300.0)  # 300 px below the partner: nearer it than its own joint
    pred[7] = far
    own[mirror[9], 2] = 0  # partner unlabelled: joint 9 not eligible
    pred[9] = own[mirror[9], :2]
    eligible, confused = nearer_mirror(pred, own)
    labels = classify_detection(pred, [(own, AREA)])
    assert labels[5] == INVERSION and labels[7] == MISS
    assert np.flatnonzero(confused).tolist() == [5, 7]
    assert not eligible[0] and not eligible[9] and not eligible[mirror[9]]
    assert eligible.sum() == NUM_JOINTS - 1 - 2


def test_collapsed_partners_are_pairs_predicted_on_one_point() -> None:
    """Both ankles predicted at their midpoint: a collapse (each side's prediction lies at 0 × the true
    gap from its partner's); a wrist pair swapped keeps its gap: confused, not collapsed; an
    unlabelled partner or two true joints on one point are not eligible."""
    own = _person()
    mirror = flip_index()
    left_ankle, left_wrist, left_knee = 15, 9, 13
    pred = own[:, :2].copy()
    middle = (own[left_ankle, :2] + own[mirror[left_ankle], :2]) / 2
    pred[left_ankle] = pred[mirror[left_ankle]] = middle
    pred[left_wrist], pred[mirror[left_wrist]] = own[mirror[left_wrist], :2], own[left_wrist, :2]
    own[mirror[left_knee], 2] = 0
    own[3, :2] = own[mirror[3], :2]  # ears labelled on one point: no gap to collapse
    eligible, collapsed = collapsed_partners(pred, own, ratio=0.25)
    assert np.flatnonzero(collapsed).tolist() == sorted([left_ankle, mirror[left_ankle]])
    assert not eligible[0] and not eligible[left_knee] and not eligible[mirror[left_knee]] and not eligible[3]
    assert eligible[left_wrist] and nearer_mirror(pred, own)[1][left_wrist]
    # just inside and just outside the ratio
    gap = np.linalg.norm(own[left_ankle, :2] - own[mirror[left_ankle], :2])
    unit = (own[left_ankle, :2] - own[mirror[left_ankle], :2]) / gap
    for factor, expected in ((0.249, True), (0.251, False)):
        pred[left_ankle] = middle + unit * factor * gap / 2
        pred[mirror[left_ankle]] = middle - unit * factor * gap / 2
        assert collapsed_partners(pred, own, ratio=0.25)[1][left_ankle] == expected


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(0.05, 20.0),
    shift=st.tuples(st.floats(-500.0, 500.0), st.floats(-500.0, 500.0)),
    noise=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**16),
)
def test_collapse_is_the_same_at_any_position_and_scale(scale, shift, noise, seed) -> None:
    """A ratio of two distances: moving and scaling prediction and ground truth together changes
    nothing (the same person at 64×48 or 384×288)."""
    own = _person()
    rng = np.random.default_rng(seed)
    pred = own[:, :2] + rng.normal(0.0, noise, (NUM_JOINTS, 2))
    pred[15] = pred[16] = (own[15, :2] + own[16, :2]) / 2 + rng.normal(0.0, 0.1, 2)
    moved = own.copy()
    moved[:, :2] = own[:, :2] * scale + shift
    before = collapsed_partners(pred, own, 0.25)
    after = collapsed_partners(pred * scale + shift, moved, 0.25)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_band_edges_follow_coco_analyze() -> None:
    """good needs ks > high; a joint at exactly the lower bound is still a hit (jitter)."""
    own = _person()
    thresholds = Thresholds(low=0.5, high=0.85)
    pred = own[:, :2].copy()
    pred[2] = own[2, :2] + (_distance_for(0.85, 2) * (1 + 1e-9), 0.0)
    pred[4] = own[4, :2] + (_distance_for(0.5, 4) * (1 - 1e-9), 0.0)
    pred[6] = own[6, :2] + (_distance_for(0.5, 6) * (1 + 1e-6), 0.0)
    labels = classify_detection(pred, [(own, AREA)], thresholds)
    assert labels[2] == JITTER and labels[4] == JITTER and labels[6] == MISS


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="low < high"):
        Thresholds(low=0.9, high=0.5)
    with pytest.raises(ValueError, match="match_oks"):
        Thresholds(match_oks=0.0)
    with pytest.raises(ValueError, match="collapse_ratio"):
        Thresholds(collapse_ratio=1.0)
    with pytest.raises(ValueError, match="cannot fix"):
        corrected_keypoints(np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS, int), [(_person(), AREA)], ("good",))


@settings(max_examples=60, deadline=None)
@given(
    joint=st.sampled_from([j for j in range(NUM_JOINTS) if flip_index()[j] != j]),
    dx=st.floats(-4.0, 4.0),
    dy=st.floats(-4.0, 4.0),
)
def test_fixing_an_inversion_keeps_its_similarity(joint: int, dx: float, dy: float) -> None:
    own = _person()
    mirror = flip_index()
    pred = own[:, :2].copy()
    pred[joint] = own[mirror[joint], :2] + (dx, dy)
    labels = classify_detection(pred, [(own, AREA)])
    hit = keypoint_similarity(pred[joint], own[mirror[joint], :2], AREA, OKS_SIGMAS[joint])
    if hit < 0.5:
        assert labels[joint] == MISS
        return
    assert labels[joint] == INVERSION
    fixed = corrected_keypoints(pred, labels, [(own, AREA)], ("inversion",))
    after = keypoint_similarity(fixed[joint], own[joint, :2], AREA, OKS_SIGMAS[joint])
    assert after == pytest.approx(hit, rel=1e-9)
    others = np.arange(NUM_JOINTS) != joint
    np.testing.assert_array_equal(fixed[others], pred[others])


def _swapped_doc(tmp_path: Path) -> tuple[dict, list[dict]]:
    """Two images, one person each; the detection of image 2 has left and right exchanged (pairs
    12 px apart, close enough that the exchanged detection still matches its person at OKS 0.1)."""
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    results = []
    for image_id in (1, 2):
        person = _person(x0=60.0 * image_id, width=12.0)
        doc["images"].append({"id": image_id, "width": 300, "height": 300})
        doc["annotations"].append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": 1,
                "keypoints": person.reshape(-1).tolist(),
                "num_keypoints": NUM_JOINTS,
                "area": AREA,
                "bbox": [50.0, 40.0, 150.0, 130.0],
                "iscrowd": 0,
            }
        )
        pred = person[flip_index()] if image_id == 2 else person
        results.append(
            {"image_id": image_id, "category_id": 1, "score": 1.0 / image_id, "keypoints": pred.reshape(-1).tolist()}
        )
    return doc, results


def test_breakdown_counts_inversions_and_fixing_them_restores_ap(tmp_path: Path) -> None:
    doc, results = _swapped_doc(tmp_path)
    breakdown = error_breakdown(doc, results)
    pairs = NUM_JOINTS - 1  # every joint but the nose has a partner
    assert breakdown.counts["inversion"] == pairs
    assert breakdown.counts["good"] == NUM_JOINTS + 1
    assert breakdown.counts["jitter"] == breakdown.counts["swap"] == breakdown.counts["miss"] == 0
    assert breakdown.matched == 2 and breakdown.labelled == 2 * NUM_JOINTS
    assert breakdown.ap < 1.0
    assert breakdown.ap_fixed["inversion"] == pytest.approx(1.0)
    assert breakdown.ap_fixed["miss"] == pytest.approx(breakdown.ap)  # nothing to fix
    assert breakdown.share("inversion") == pytest.approx(pairs / (2 * NUM_JOINTS))
    assert set(breakdown.counts) == set(ERROR_TYPES)
    assert breakdown.lateral == 2 * pairs and breakdown.nearer_mirror == pairs  # image 2: every lateral joint
    assert breakdown.nearer_mirror_share == pytest.approx(0.5)


def test_breakdown_counts_left_right_confusion_per_joint(tmp_path: Path) -> None:
    """Only the ankles of image 2 exchanged: the per-joint counts put every confusion there."""
    doc, results = _swapped_doc(tmp_path)
    ankles = (15, 16)
    person = np.asarray(doc["annotations"][1]["keypoints"], float).reshape(-1, 3)
    pred = person.copy()
    pred[list(ankles)] = person[list(ankles[::-1])]
    results[1]["keypoints"] = pred.reshape(-1).tolist()
    breakdown = error_breakdown(doc, results)
    lateral = [0] + [2] * (NUM_JOINTS - 1)  # two matched people, every joint but the nose paired
    assert breakdown.lateral_by_joint == tuple(lateral)
    assert breakdown.nearer_mirror_by_joint == tuple(1 if j in ankles else 0 for j in range(NUM_JOINTS))
    assert breakdown.lateral == sum(lateral) and breakdown.nearer_mirror == 2
    assert breakdown.nearer_mirror_share_of(ankles) == pytest.approx(0.5)
    assert breakdown.nearer_mirror_share_of((5, 6)) == 0.0
    assert np.isnan(breakdown.nearer_mirror_share_of((0,)))  # the nose has no partner
    assert np.isnan(breakdown.nearer_mirror_share_of((17, 18)))  # joints a 17-joint skeleton lacks


def test_report_has_the_keypoint_error_table(tmp_path: Path) -> None:
    root = make_run(
        tmp_path / "run",
        [CellSpec("udp", noise=2.0), CellSpec("udp", seed=1, noise=2.5), CellSpec("hrnet", noise=9.0)],
        num_images=12,
    )
    run = load_run(root)
    breakdowns = keypoint_error_breakdowns(run, Thresholds())
    assert set(breakdowns) == {c.id for c in run.cells}
    table = tbl.keypoint_error_table(run, breakdowns)
    assert table is not None
    rows = table.values.set_index(("", "Method"))
    assert rows.loc["udp", ("", "Seeds")] == "2"
    shares = rows[[("Labelled joints (%)", name) for name in ERROR_TYPES]].sum(axis=1)
    np.testing.assert_allclose(shares.to_numpy(dtype=float), 100.0)
    assert rows.loc["udp", ("Labelled joints (%)", "good")] > rows.loc["hrnet", ("Labelled joints (%)", "good")]
    confusion = rows[("Left/right (%)", "nearer mirror")].to_numpy(dtype=float)
    assert np.all((confusion >= 0) & (confusion <= 100))
    udp_ap = np.mean([json.loads((c.folder / "metrics.json").read_text())["metrics"]["AP"] for c in run.cells[:2]])
    assert rows.loc["udp", ("AP ×100", "as scored")] == pytest.approx(100 * udp_ap)
    udp_row = int(np.flatnonzero(table.values[("", "Method")] == "udp")[0])
    assert table.sd is not None and np.isfinite(table.sd.loc[udp_row, ("AP ×100", "as scored")])
    hrnet_row = 1 - udp_row
    assert np.isnan(table.sd.loc[hrnet_row, ("AP ×100", "as scored")])  # one seed: no ±
    paths = build_report(root, ["csv"])
    assert (paths["csv"].parent / "tables" / "keypoint_errors.csv").is_file()


def test_report_has_the_left_right_table_per_joint_pair(tmp_path: Path) -> None:
    """One column per left/right pair and 'all' (= the error table's 'nearer mirror'), mean over seeds."""
    import pandas as pd

    from lrpose_bench.keypoints import FLIP_PAIR_NAMES, FLIP_PAIRS

    specs = [CellSpec("udp", noise=4.0), CellSpec("udp", seed=1, noise=5.0), CellSpec("hrnet", noise=9.0)]
    root = make_run(tmp_path / "run", specs, num_images=12)
    run = load_run(root)
    breakdowns = keypoint_error_breakdowns(run, Thresholds())
    table = tbl.left_right_table(run, breakdowns)
    assert table is not None and table.key == "left_right_by_pair"
    rows = table.values.set_index(("", "Method"))
    assert [c[1] for c in rows.columns if c[0] == "Nearer mirror (%)"] == [*FLIP_PAIR_NAMES, "all"]
    udp = [breakdowns[f"udp__hrnet-w8__64x48__s{s}"] for s in (0, 1)]
    for name, pair in zip(FLIP_PAIR_NAMES, FLIP_PAIRS, strict=True):
        expected = np.nanmean([100 * b.nearer_mirror_share_of(pair) for b in udp])
        assert rows.loc["udp", ("Nearer mirror (%)", name)] == pytest.approx(expected)
    errors = tbl.keypoint_error_table(run, breakdowns).values.set_index(("", "Method"))
    assert rows.loc["hrnet", ("Nearer mirror (%)", "all")] == pytest.approx(
        errors.loc["hrnet", ("Left/right (%)", "nearer mirror")]
    )
    assert any(b.nearer_mirror for b in breakdowns.values())  # the fixture confuses some joints
    frame = pd.read_csv(build_report(root, ["csv"])["csv"].parent / "tables" / "left_right_by_pair.csv")
    assert len(frame) == 2


def test_pooled_bootstrap_of_the_inversion_fixed_ap(tmp_path: Path) -> None:
    """Its point estimate is the mean over seeds of the fixed-AP difference; only pooled rows."""
    import pandas as pd

    specs = [CellSpec(m, seed=s, noise=n + s) for s in (0, 1) for m, n in (("udp", 2.0), ("hrnet", 8.0))]
    root = make_run(tmp_path / "run", specs, num_images=12)
    run = load_run(root)
    breakdowns = keypoint_error_breakdowns(run, Thresholds())
    paths = build_report(root, ["csv"])
    frame = pd.read_csv(paths["csv"].parent / "tables" / "bootstrap_inversion_fixed.csv")
    assert list(frame["Seed"]) == ["pooled (2)"]
    a, b = frame.loc[0, "A"], frame.loc[0, "B"]
    expected = np.mean(
        [
            breakdowns[f"{a}__hrnet-w8__64x48__s{s}"].ap_fixed["inversion"]
            - breakdowns[f"{b}__hrnet-w8__64x48__s{s}"].ap_fixed["inversion"]
            for s in (0, 1)
        ]
    )
    assert frame.loc[0, "AP(A) − AP(B) ×100: Δ"] == pytest.approx(100 * expected)
    low, high = frame.loc[0, "AP(A) − AP(B) ×100: CI low"], frame.loc[0, "AP(A) − AP(B) ×100: CI high"]
    assert low <= 100 * expected <= high


def test_bad_thresholds_in_run_config_are_one_line(tmp_path: Path) -> None:
    from lrpose_bench.errors import ConfigError

    root = make_run(
        tmp_path / "run",
        [CellSpec("udp")],
        num_images=4,
        config={"report": {"keypoint_error_ks": [0.9, 0.5]}},
    )
    with pytest.raises(ConfigError, match="report.keypoint_error_ks"):
        build_report(root, ["csv"])


def test_bootstrap_table_pools_each_pair_over_the_seeds_it_shares(tmp_path: Path) -> None:
    """Two methods with extra seeds: the pooled rows name each pair's own seed count, and the method
    run with fewer seeds keeps its pooled rows (it lost them when names were intersected over seeds)."""
    import pandas as pd

    noise = {"udp": 2.0, "cal": 2.5, "hrnet": 8.0}
    specs = [CellSpec(m, seed=s, noise=noise[m] + s) for s in (0, 1) for m in noise]
    specs += [CellSpec(m, seed=s, noise=noise[m] + s) for s in (2, 3) for m in ("udp", "cal")]
    root = make_run(tmp_path / "run", specs, num_images=12)
    paths = build_report(root, ["csv"])
    frame = pd.read_csv(paths["csv"].parent / "tables" / "bootstrap.csv")
    pooled = frame[frame["Seed"].astype(str).str.startswith("pooled")]
    counts = {frozenset((a, b)): seed for a, b, seed in zip(pooled["A"], pooled["B"], pooled["Seed"])}
    assert counts == {
        frozenset(("udp", "cal")): "pooled (4)",
        frozenset(("udp", "hrnet")): "pooled (2)",
        frozenset(("cal", "hrnet")): "pooled (2)",
    }


def test_errors_by_seed_table_has_one_row_per_cell_and_the_ap_confusion_correlation(tmp_path: Path) -> None:
    """Each row is one cell's own breakdown (no averaging); the notes give, per method with ≥ 3
    seeds, the Pearson correlation over seeds of AP as scored with the 'all' nearer-mirror share."""
    import pandas as pd

    specs = [CellSpec("udp", seed=s, noise=3.0 + 2 * s) for s in (0, 1, 2)] + [CellSpec("hrnet", noise=9.0)]
    root = make_run(tmp_path / "run", specs, num_images=12)
    run = load_run(root)
    breakdowns = keypoint_error_breakdowns(run, Thresholds())
    table = tbl.errors_by_seed_table(run, breakdowns)
    assert table is not None and table.key == "errors_by_seed"
    values = table.values
    assert list(zip(values[("", "Method")], values[("", "Seed")])) == [
        ("hrnet", "0"),
        ("udp", "0"),
        ("udp", "1"),
        ("udp", "2"),
    ]
    for row in range(len(values)):
        cell = breakdowns[f"{values.loc[row, ('', 'Method')]}__hrnet-w8__64x48__s{values.loc[row, ('', 'Seed')]}"]
        assert values.loc[row, ("AP ×100", "as scored")] == pytest.approx(100 * cell.ap)
        assert values.loc[row, ("AP ×100", "inversion fixed")] == pytest.approx(100 * cell.ap_fixed["inversion"])
        assert values.loc[row, ("Nearer mirror (%)", "all")] == pytest.approx(100 * cell.nearer_mirror_share)
    udp = [breakdowns[f"udp__hrnet-w8__64x48__s{s}"] for s in (0, 1, 2)]
    expected = np.corrcoef([b.ap for b in udp], [b.nearer_mirror_share for b in udp])[0, 1]
    (note,) = [n for n in table.notes if "correlation" in n]
    assert f"udp (hrnet-w8, 64×48) {expected:+.2f}" in note and "hrnet (" not in note  # one seed: none
    frame = pd.read_csv(build_report(root, ["csv"])["csv"].parent / "tables" / "errors_by_seed.csv")
    assert len(frame) == 4


def test_a_cell_with_unreadable_predictions_is_named_on_the_console_with_the_fix(tmp_path: Path) -> None:
    """A complete cell whose predictions.json is cut short drops out of the bootstrap and keypoint
    tables; the report says so in one console warning naming the cell and how to re-evaluate it
    (it used to say nothing outside a note in the HTML)."""
    import pandas as pd

    root = make_run(tmp_path / "run", [CellSpec("udp", noise=2.0), CellSpec("cal", noise=2.5)], num_images=8)
    run = load_run(root)
    broken = next(cell for cell in run.cells if cell.method == "cal")
    text = (broken.folder / "predictions.json").read_text()
    (broken.folder / "predictions.json").write_text(text[: len(text) // 2])
    with pytest.warns(UserWarning) as caught:
        paths = build_report(root, ["csv"])
    messages = [str(w.message) for w in caught if "predictions.json unusable" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith(f"{broken.id}: predictions.json unusable (JSONDecodeError)")
    assert "rerun the run command" in messages[0] and "not retrained" in messages[0]
    errors = pd.read_csv(paths["csv"].parent / "tables" / "errors_by_seed.csv")
    assert list(errors["Method"]) == ["udp"]  # the broken cell has no row; its AP stays in cells.csv
    assert broken.id in set(pd.read_csv(paths["csv"])["cell"])


def test_budget_table_breaks_down_each_snapshot_from_its_saved_predictions(tmp_path: Path) -> None:
    """A snapshot whose predictions have every person's left and right exchanged: at that budget
    point the budget table shows near-total left/right confusion and an inversion-fixed AP far above
    the AP as scored; at 'final' (the untouched predictions) little confusion. Every value equals
    the breakdown of that point's own file."""
    from lrpose_bench.evaluation.coco_metric import evaluate_keypoints

    root = make_run(tmp_path / "run", [CellSpec("udp", noise=2.0), CellSpec("udp", seed=1, noise=2.5)], num_images=12)
    gt = json.loads((root / "gt.json").read_text())
    expected = {}
    for cell in load_run(root).cells:
        final = json.loads((cell.folder / "predictions.json").read_text())
        swapped = [
            dict(r, keypoints=np.asarray(r["keypoints"]).reshape(-1, 3)[flip_index()].ravel().tolist()) for r in final
        ]
        (cell.folder / "predictions_epoch0003.json").write_text(json.dumps(swapped))
        info = json.loads((cell.folder / "metrics.json").read_text())
        info["snapshots"] = [{"fraction": 0.5, "epochs": 3, "metrics": evaluate_keypoints(gt, [dict(r) for r in swapped]),
                              "errors": {}, "predictions": "predictions_epoch0003.json"}]  # fmt: skip
        (cell.folder / "metrics.json").write_text(json.dumps(info))
        expected[cell.seed] = (error_breakdown(gt, swapped, fix=("inversion",)), error_breakdown(gt, final))
    paths = build_report(root, ["json"])
    (row,) = json.loads(paths["json"].read_text())["tables"]["budget"]["rows"]
    at_half = [pair[0] for pair in expected.values()]
    at_end = [pair[1] for pair in expected.values()]
    mean = lambda values: float(np.mean(values))  # noqa: E731
    assert row["Left/right confusion (%): 0.5× ep"] == pytest.approx(
        mean([100 * b.nearer_mirror_share for b in at_half])
    )
    assert row["Left/right confusion (%): final"] == pytest.approx(mean([100 * b.nearer_mirror_share for b in at_end]))
    assert row["AP, inversions fixed: 0.5× ep"] == pytest.approx(mean([100 * b.ap_fixed["inversion"] for b in at_half]))
    assert row["AP, inversions fixed: final"] == pytest.approx(mean([100 * b.ap_fixed["inversion"] for b in at_end]))
    assert row["Left/right confusion (%): 0.5× ep"] > 90 > 10 > row["Left/right confusion (%): final"]
    assert row["AP, inversions fixed: 0.5× ep"] > row["AP: 0.5× ep"] + 20


def test_a_report_reads_each_ground_truth_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bootstrap, its inversion-fixed twin and both keypoint breakdowns score against one
    annotation file; the build reads it once (it read it four times, ~10 MB each on COCO val)."""
    from lrpose_bench.data import coco

    reads: list[int] = []
    real = coco.coco_from_dict
    monkeypatch.setattr(coco, "coco_from_dict", lambda doc: reads.append(1) or real(doc))
    specs = [CellSpec(m, seed=s, noise=n) for s in (0, 1) for m, n in (("udp", 2.0), ("cal", 3.0))]
    root = make_run(tmp_path / "run", specs, num_images=6)
    tables = build_report(root, ["csv"])["csv"].parent / "tables"
    assert {"bootstrap.csv", "bootstrap_inversion_fixed.csv", "keypoint_errors.csv"} <= {
        p.name for p in tables.iterdir()
    }
    assert len(reads) == 1


def test_the_left_right_tables_show_which_pairs_collapse(tmp_path: Path) -> None:
    """A method whose ankle predictions sit on one point (as CAL's on SynthPose) shows ankles
    collapsed 100 %, the other method ~0 %; the error table's 'collapsed' is the all-pairs share."""
    from lrpose_bench.keypoints import FLIP_PAIR_NAMES

    specs = [CellSpec("udp", noise=2.0), CellSpec("cal", noise=2.0)]
    root = make_run(tmp_path / "run", specs, num_images=12)
    predictions = root / "cal__hrnet-w8__64x48__s0" / "predictions.json"
    results = json.loads(predictions.read_text())
    for result in results:
        k = np.asarray(result["keypoints"], float).reshape(-1, 3)
        k[15, :2] = k[16, :2] = (k[15, :2] + k[16, :2]) / 2
        result["keypoints"] = k.reshape(-1).tolist()
    predictions.write_text(json.dumps(results))
    run = load_run(root)
    breakdowns = keypoint_error_breakdowns(run, Thresholds())
    rows = tbl.left_right_table(run, breakdowns).values.set_index(("", "Method"))
    assert [c[1] for c in rows.columns if c[0] == "Collapsed (%)"] == [*FLIP_PAIR_NAMES, "all"]
    assert rows.loc["cal", ("Collapsed (%)", "ankles")] == pytest.approx(100.0)
    assert rows.loc["udp", ("Collapsed (%)", "ankles")] < 5.0
    errors = tbl.keypoint_error_table(run, breakdowns).values.set_index(("", "Method"))
    cal = breakdowns["cal__hrnet-w8__64x48__s0"]
    assert errors.loc["cal", ("Left/right (%)", "collapsed")] == pytest.approx(100 * cal.collapsed_share)
    ankles_only = [cal.separable_by_joint[j] if j in (15, 16) else 0 for j in range(len(cal.separable_by_joint))]
    assert list(cal.collapsed_by_joint) == ankles_only and sum(ankles_only) > 0
