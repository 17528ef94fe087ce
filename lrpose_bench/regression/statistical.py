"""The statistical tier of ``lrpose-bench regress``: short CPU trainings over seeds, compared by a test.

Training on a CPU is deterministic on one machine but not across machines: another BLAS/oneDNN
kernel or thread count changes the summation order, and a few hundred Adam steps amplify a 1e-7
difference into another trajectory — statistically like another seed. So a cell is a *distribution*
(its seeds), not a number, and the rule compares means with the measured seed spread:

* per cell and metric, ``Δ = mean_now − mean_baseline`` over the seeds of each run;
* the spread is the **pooled relative standard deviation** of that metric over every cell and both
  runs (the seed-to-seed coefficient of variation is a property of the schedule, much the same in
  every cell; pooling gives it ``Σ (n_i − 1)`` degrees of freedom instead of 2 per cell);
* a cell fails when ``|Δ| > t · s_rel · |mean_baseline| · sqrt(1/n_now + 1/n_base)``, with ``t`` the
  two-sided Student-t quantile at family-wise level ``alpha`` split over all tested
  (cell, metric) pairs (Bonferroni).

Under the model (seed values normal with a common coefficient of variation) the probability that a
healthy tree fails is at most ``alpha`` per run, whatever the number of cells; the measured rate is in
``configs/regression.yaml``. What the rule detects follows from the same numbers: a shift of about
``t · s_rel · sqrt(2/n)`` of the mean (printed by ``regress`` as each metric's detectable change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class StatisticalRule:
    """``alpha``: family-wise false-alarm level; ``min_rel_sd``: floor of the pooled relative sd
    (guards a baseline whose seeds happen to agree closely)."""

    alpha: float = 0.01
    min_rel_sd: float = 0.01
    metrics: tuple[str, ...] = ("final_mean_px", "coarse_mean_px", "AP50")


@dataclass
class MetricTest:
    """The pooled spread and critical value for one metric."""

    metric: str
    rel_sd: float
    dof: int
    t_crit: float
    tests: int
    detectable_rel: dict[str, float] = field(default_factory=dict)


def summarise(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample sd and the values of one metric over seeds (None/NaN values dropped)."""
    clean = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    arr = np.asarray(clean)
    return {
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "n": len(arr),
        "values": clean,
    }


def pooled_rel_sd(groups: list[list[float]]) -> tuple[float, int]:
    """Pooled coefficient of variation over groups (each: one cell's seed values in one run)."""
    num, dof = 0.0, 0
    for values in groups:
        arr = np.asarray(values, dtype=float)
        if len(arr) < 2 or arr.mean() == 0:
            continue
        num += float(((arr - arr.mean()) ** 2).sum() / arr.mean() ** 2)
        dof += len(arr) - 1
    return (math.sqrt(num / dof), dof) if dof else (float("nan"), 0)


def metric_tests(
    rule: StatisticalRule, baseline: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]
) -> dict[str, MetricTest]:
    """One pooled spread and critical value per metric from both runs' seed values."""
    common = [c for c in baseline if c in now]
    tests_total = sum(
        1 for c in common for m in rule.metrics if baseline[c].get(m, {}).get("n") and now[c].get(m, {}).get("n")
    )
    out: dict[str, MetricTest] = {}
    for metric in rule.metrics:
        groups = [
            run[c][metric]["values"]
            for run in (baseline, now)
            for c in common
            if run[c].get(metric, {}).get("n", 0) >= 2
        ]
        rel_sd, dof = pooled_rel_sd(groups)
        if dof == 0:
            continue
        rel_sd = max(rel_sd, rule.min_rel_sd)
        t_crit = float(stats.t.ppf(1 - rule.alpha / (2 * max(tests_total, 1)), dof))
        test = MetricTest(metric, rel_sd, dof, t_crit, tests_total)
        for c in common:
            nb, nn = baseline[c].get(metric, {}).get("n", 0), now[c].get(metric, {}).get("n", 0)
            if nb and nn:
                test.detectable_rel[c] = t_crit * rel_sd * math.sqrt(1 / nb + 1 / nn)
        out[metric] = test
    return out


def compare_statistical(
    rule: StatisticalRule, baseline: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, MetricTest]]:
    """Problem rows and the per-metric tests. ``baseline``/``now``: {cell: {metric: summarise(...)}}."""
    problems: list[dict[str, Any]] = []
    for cell in sorted(set(baseline) - set(now)):
        problems.append(
            {"cell": cell, "metric": "(cell)", "baseline": "present", "now": "missing", "delta": "", "tolerance": ""}
        )
    tests = metric_tests(rule, baseline, now)
    for cell in sorted(c for c in baseline if c in now):
        for metric, test in tests.items():
            b, n = baseline[cell].get(metric, {}), now[cell].get(metric, {})
            if not b.get("n") and not n.get("n"):
                continue
            if not b.get("n") or not n.get("n"):
                problems.append(
                    {
                        "cell": cell,
                        "metric": metric,
                        "baseline": b.get("mean"),
                        "now": n.get("mean"),
                        "delta": float("nan"),
                        "tolerance": "present in both",
                    }
                )
                continue
            delta = n["mean"] - b["mean"]
            tolerance = test.detectable_rel[cell] * abs(b["mean"])
            if abs(delta) > tolerance:
                problems.append(
                    {
                        "cell": cell,
                        "metric": f"{metric} (mean of {n['n']} seeds)",
                        "baseline": b["mean"],
                        "now": n["mean"],
                        "delta": delta,
                        "tolerance": tolerance,
                    }
                )
    return problems, tests
