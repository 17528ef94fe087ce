"""``lrpose-bench regress [--update]``: a regression guard that holds on every machine.

Two tiers, as trusted benchmark suites separate what must be exact from what is statistical
(``configs/regression.yaml``):

* **exact** (``lrpose_bench/regression/exact.py``): every registered method's evaluation path —
  fixture outputs → decode → inverse affine → COCO results → pycocotools AP — on seeded, rounded
  outputs that no CPU's float noise can move; compared to ``1e-9``.
* **statistical** (``lrpose_bench/regression/statistical.py``): short CPU trainings over several
  seeds; a cell fails only when its mean moved by more than the pooled seed spread allows
  (Bonferroni-corrected t-test at family-wise level ``alpha``).

The baseline and the spec are those of the project in the current directory (found by walking up to
its ``pyproject.toml``), falling back to the installed checkout; ``regress`` prints which files it uses.
``--update`` rewrites the baseline (review the printed diff, then commit it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lrpose_bench.config import BenchConfig, config_dir, load_config, read_yaml
from lrpose_bench.environment import environment
from lrpose_bench.errors import ConfigError, UserError
from lrpose_bench.regression.exact import EXACT_METRICS, ExactSpec, compare_exact, exact_rows
from lrpose_bench.regression.statistical import StatisticalRule, compare_statistical, summarise
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import now, write_json

HELP = "run the regression guard (exact evaluation tier + statistical training tier) against the committed baseline"
DEFAULT_BASELINE = Path("reports/regression/baseline.json")
DEFAULT_SPEC = Path("configs/regression.yaml")
#: metrics recorded per training cell (mean, sd and values over seeds)
TRAIN_METRICS = ("AP", "AP50", "AP75", "AR", "coarse_mean_px", "final_mean_px", "floor_final_mean_px")
SPEC_KEYS = {"exact", "statistical"}
EXACT_KEYS = {"resolutions", "num_images", "seed", "noise_px", "mantissa_bits", "tolerance"}
STAT_KEYS = {"profile", "overrides", "seeds", "cells", "rule", "floor_error_ratio"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--update",
        action="store_true",
        help="rewrite the baseline with this run's numbers (review the printed diff, then commit the file)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help=f"baseline file (default {DEFAULT_BASELINE} of the project in the current directory)",
    )
    parser.add_argument("--spec", default=None, help=f"regression spec YAML (default {DEFAULT_SPEC} of that project)")
    parser.add_argument(
        "--tier",
        choices=("all", "exact", "statistical"),
        default="all",
        help="which tier to run (default all; --update writes both, except --update --tier exact, which "
        "rewrites only the exact tier and keeps the baseline's statistical tier: a decoder change needs no retraining)",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds for the statistical tier "
        "(default: the spec's; --update may use more to measure the spread better)",
    )
    parser.add_argument("--work", default=None, help="folder for the training runs (default: a fresh temp folder)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.epilog = (
        "example:\n  lrpose-bench regress            # in CI\n"
        "  lrpose-bench regress --update   # after an intended change"
    )


@dataclass
class RegressionSpec:
    path: Path
    exact: ExactSpec
    exact_tolerance: float
    cfg: BenchConfig
    seeds: list[int]
    cells: list[tuple[str, Resolution]]
    rule: StatisticalRule
    floor_error_ratio: float
    digest: str


def _require(mapping: Any, keys: set[str], required: set[str], where: str, path: Path) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: '{where}' must be a mapping with keys {sorted(required)}")
    unknown = set(mapping) - keys
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} in '{where}'; known: {sorted(keys)}")
    missing = required - set(mapping)
    if missing:
        raise ConfigError(f"{path}: '{where}' lacks {sorted(missing)}; see configs/regression.yaml for the format")
    return mapping


def load_spec(path: Path | None = None) -> RegressionSpec:
    """Read and validate the spec completely, before any work."""
    path = path or config_dir() / "regression.yaml"
    data = read_yaml(path)
    _require(data, SPEC_KEYS, SPEC_KEYS, "(top level)", path)
    ex = _require(data["exact"], EXACT_KEYS, {"resolutions"}, "exact", path)
    st = _require(data["statistical"], STAT_KEYS, {"seeds", "cells"}, "statistical", path)
    try:
        exact = ExactSpec(
            resolutions=tuple(Resolution.parse(str(r)) for r in ex["resolutions"]),
            num_images=int(ex.get("num_images", 24)),
            seed=int(ex.get("seed", 0)),
            noise_px=float(ex.get("noise_px", 0.6)),
            mantissa_bits=int(ex.get("mantissa_bits", 12)),
        )
        tolerance = float(ex.get("tolerance", 1e-9))
        seeds = [int(s) for s in st["seeds"]]
        cells = [(str(c["method"]), Resolution.parse(str(c["res"]))) for c in st["cells"]]
        rule_data = dict(st.get("rule") or {})
        rule = StatisticalRule(
            alpha=float(rule_data.get("alpha", 0.01)),
            min_rel_sd=float(rule_data.get("min_rel_sd", 0.01)),
            metrics=tuple(rule_data.get("metrics", StatisticalRule.metrics)),
        )
    except (TypeError, KeyError, ValueError) as error:
        raise ConfigError(
            f"{path}: malformed regression spec ({error}); each cell needs 'method' and 'res', "
            "seeds and resolutions are lists"
        ) from None
    if not seeds or not cells or not exact.resolutions:
        raise ConfigError(f"{path}: 'statistical.seeds', 'statistical.cells' and 'exact.resolutions' must not be empty")
    if len(seeds) < 2:
        raise ConfigError(f"{path}: statistical.seeds needs at least 2 seeds to measure a spread (3 or more advised)")
    unknown_metrics = set(rule.metrics) - set(TRAIN_METRICS)
    if unknown_metrics:
        raise ConfigError(
            f"{path}: statistical.rule.metrics {sorted(unknown_metrics)} unknown; choose from {list(TRAIN_METRICS)}"
        )
    cfg = load_config(st.get("profile", "quick"), overrides=st.get("overrides") or {})
    payload = json.dumps(
        {
            "config": numbers_config(cfg.to_dict()),
            "cells": [[m, str(r)] for m, r in cells],
            # the tolerance is how numbers are compared, not how they are made: outside the hash
            "exact": {k: str(v) for k, v in sorted(ex.items()) if k != "tolerance"},
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return RegressionSpec(
        path, exact, tolerance, cfg, seeds, cells, rule, float(st.get("floor_error_ratio", 1.0)), digest
    )


# Sections of the resolved config that cannot move a guarded number: the guard never renders a
# report, so a new report table or threshold must not invalidate the baseline (it did once: adding
# report.keypoint_error_ks changed the hash and failed CI with numbers that had not moved).
NOT_HASHED_SECTIONS: tuple[str, ...] = ("report",)


def numbers_config(config: dict) -> dict:
    """The part of a resolved config that the guarded numbers depend on (what the hash covers)."""
    return {key: value for key, value in config.items() if key not in NOT_HASHED_SECTIONS}


# ------------------------------------------------------------------------------------ baseline
def project_root(start: Path | None = None) -> Path | None:
    """The lrpose-bench project containing ``start`` (default: the current directory), if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "lrpose-bench"' in pyproject.read_text(errors="replace"):
            return folder
    return None


def resolve_paths(baseline: str | None, spec: str | None) -> tuple[Path, Path]:
    """Baseline and spec of the project being tested: explicit paths, else the current directory's
    project, else the installed checkout (where config_dir() lives)."""
    root = project_root() or config_dir().parent
    spec_path = (
        Path(spec)
        if spec
        else (root / DEFAULT_SPEC if (root / DEFAULT_SPEC).is_file() else config_dir() / "regression.yaml")
    )
    return (Path(baseline) if baseline else root / DEFAULT_BASELINE), spec_path


def read_baseline(path: Path, spec: RegressionSpec) -> dict[str, Any]:
    """The baseline, validated: readable JSON of the right shape, written for this spec."""
    if not path.is_file():
        raise UserError(
            f"no regression baseline at {path}; create it with 'lrpose-bench regress --update' and commit it"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"baseline {path} is not valid JSON ({error}); restore it with 'git checkout -- {path}' "
            "or rewrite it with 'lrpose-bench regress --update'"
        ) from None
    shape = isinstance(data, dict) and isinstance(data.get("exact"), dict) and isinstance(data.get("statistical"), dict)
    if shape:
        shape = all(isinstance(c, dict) for c in (*data["exact"].values(), *data["statistical"].values()))
    if not shape:
        raise UserError(
            f"baseline {path} has the wrong shape (needs 'config_hash', 'exact' and 'statistical' "
            "mappings); rewrite it with 'lrpose-bench regress --update'"
        )
    if data.get("config_hash") != spec.digest:
        raise UserError(
            f"baseline {path} is for another configuration (hash {data.get('config_hash')}, "
            f"this spec {spec.digest}); run with --update after review"
        )
    return data


# ---------------------------------------------------------------------------------- the tiers
def run_exact(spec: RegressionSpec) -> dict[str, dict[str, Any]]:
    from lrpose_bench.registry import METHODS

    return exact_rows(spec.exact, spec.cfg, METHODS.names())


def run_statistical(
    spec: RegressionSpec, seeds: list[int], work: Path, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Train and evaluate every cell for every seed; {cell: {metric: summarise(values over seeds)}}."""
    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.sources import load_data
    from lrpose_bench.engine.cell import CellSpec, run_cell

    bundle = load_data(spec.cfg.data, progress=progress)
    cache = ImageCache(spec.cfg.data.image_cache_mb)
    per_cell: dict[str, dict[str, list[Any]]] = {}
    for method, res in spec.cells:
        key = f"{method}@{res}"
        values: dict[str, list[Any]] = {m: [] for m in TRAIN_METRICS}
        for seed in seeds:
            cell = CellSpec(method, spec.cfg.model.backbone, res, seed)
            print(f"regress: training {cell.cell_id}", flush=True)
            result = run_cell(cell, spec.cfg, bundle, work, progress=progress, image_cache=cache, force=True)
            if result.state == "failed":
                values.setdefault("failed", []).append(f"seed {seed}: {result.reason}")
                continue
            found = {
                **result.metrics["metrics"],
                **result.metrics.get("errors", {}),
                "floor_final_mean_px": result.metrics["floor"].get("final_mean_px"),
            }
            for metric in TRAIN_METRICS:
                values[metric].append(found.get(metric))
        per_cell[key] = values
    return {
        key: ({"failed": v["failed"]} if "failed" in v else {m: summarise(v[m]) for m in TRAIN_METRICS})
        for key, v in per_cell.items()
    }


def floor_problems(spec: RegressionSpec, cells: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every cell must localise clearly better than the mean pose (it has learned)."""
    problems = []
    for key, cell in cells.items():
        if "failed" in cell:
            problems.append(
                {
                    "cell": key,
                    "metric": "(cell)",
                    "baseline": "complete",
                    "now": "; ".join(cell["failed"]),
                    "delta": "",
                    "tolerance": "",
                }
            )
            continue
        final, floor = cell["final_mean_px"]["mean"], cell["floor_final_mean_px"]["mean"]
        if final is not None and floor and final > spec.floor_error_ratio * floor:
            problems.append(
                {
                    "cell": key,
                    "metric": "final error vs mean-pose floor (px)",
                    "baseline": f"<= {spec.floor_error_ratio} x floor {floor:.3f}",
                    "now": final,
                    "delta": final - spec.floor_error_ratio * floor,
                    "tolerance": spec.floor_error_ratio,
                }
            )
    return problems


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def _print_problems(title: str, problems: list[dict[str, Any]]) -> None:
    print()
    print(f"REGRESSION ({title}): cell, metric, baseline, now, delta, tolerance:")
    print(
        pd.DataFrame(problems).to_string(
            index=False, formatters={c: _fmt for c in ("baseline", "now", "delta", "tolerance")}
        )
    )


def _statistical_table(cells: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key, cell in cells.items():
        if "failed" in cell:
            rows.append({"cell": key, "state": "failed"})
            continue
        row: dict[str, Any] = {"cell": key}
        for metric in ("AP", "AP50", "final_mean_px", "floor_final_mean_px"):
            s = cell[metric]
            row[metric] = "-" if s["mean"] is None else f"{s['mean']:.4g} ± {s['sd']:.2g}"
        rows.append(row)
    return pd.DataFrame(rows).to_string(index=False)


def _updated_baseline(
    previous: dict[str, Any] | None, results: dict[str, Any], spec: RegressionSpec, seeds: list[int]
) -> dict[str, Any]:
    """The baseline to write: this run's tiers; with only the exact tier run (``--update --tier
    exact``), the previous baseline's statistical tier, its seeds and where it was measured are kept."""
    fresh = {"config_hash": spec.digest, "created": now(), "environment": environment(), "seeds": seeds, **results}
    if previous is None or "statistical" in results:
        return fresh
    kept = {
        "seeds": previous.get("seeds", seeds),
        "statistical": previous["statistical"],
        "statistical_created": previous.get("statistical_created", previous.get("created")),
        "statistical_environment": previous.get("statistical_environment", previous.get("environment")),
    }
    return {**fresh, **kept}


def run(args: argparse.Namespace) -> int:
    baseline_path, spec_path = resolve_paths(args.baseline, args.spec)
    spec = load_spec(spec_path)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else spec.seeds
    print(f"regress: spec {spec_path}, baseline {baseline_path}", flush=True)
    exact_only_update = args.update and args.tier == "exact"
    baseline = read_baseline(baseline_path, spec) if exact_only_update or not args.update else None
    tiers = ("exact", "statistical") if args.tier == "all" or (args.update and not exact_only_update) else (args.tier,)
    results: dict[str, Any] = {}
    if "exact" in tiers:
        results["exact"] = run_exact(spec)
        print(f"regress: exact tier scored {len(results['exact'])} (method, resolution) pairs", flush=True)
    if "statistical" in tiers:
        if args.work:
            results["statistical"] = run_statistical(spec, seeds, Path(args.work), progress=not args.no_progress)
        else:
            with tempfile.TemporaryDirectory(prefix="lrpose-regress-") as tmp:
                results["statistical"] = run_statistical(spec, seeds, Path(tmp), progress=not args.no_progress)
        print(_statistical_table(results["statistical"]))
    if args.update:
        write_json(baseline_path, _updated_baseline(baseline, results, spec, seeds))
        print(f"baseline written: {baseline_path}" + (" (exact tier only)" if exact_only_update else ""))
        return 0
    assert baseline is not None
    failed = False
    if "exact" in results:
        tolerances = {m: spec.exact_tolerance for m in EXACT_METRICS}
        problems = compare_exact(tolerances, baseline["exact"], results["exact"])
        if problems:
            _print_problems("exact tier", problems)
            failed = True
    if "statistical" in results:
        problems, tests = compare_statistical(spec.rule, baseline["statistical"], results["statistical"])
        problems += floor_problems(spec, results["statistical"])
        for metric, test in tests.items():
            worst = max(test.detectable_rel.values(), default=float("nan"))
            print(
                f"regress: {metric}: pooled seed spread {100 * test.rel_sd:.1f} % ({test.dof} dof), "
                f"t = {test.t_crit:.2f} over {test.tests} tests -> detects a mean shift of {100 * worst:.0f} %"
            )
        if problems:
            _print_problems("statistical tier", problems)
            failed = True
    if failed:
        print(f"If the change is intended, run 'lrpose-bench regress --update' and commit {baseline_path}.")
        return 1
    print(f"regress: {', '.join(tiers)} tier(s) match the baseline")
    return 0
