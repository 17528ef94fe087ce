"""``lrpose-bench regress [--update]``: guard the suite's AP numbers in CI.

Runs the fixed, small, deterministic benchmark of ``configs/regression.yaml`` on the CPU in a fresh
folder, compares every metric of every cell with ``reports/regression/baseline.json`` under
per-metric tolerances, checks each cell against the mean-pose floor and the method ordering at the
configured resolution, and exits non-zero with a readable table on any difference. ``--update``
rewrites the baseline (to be reviewed and committed deliberately).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lrpose_bench.config import BenchConfig, config_dir, load_config, read_yaml
from lrpose_bench.environment import environment
from lrpose_bench.errors import ConfigError, UserError
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import now, read_json, write_json

HELP = "run the fixed CPU regression benchmark and compare it with the committed baseline"
DEFAULT_BASELINE = Path("reports/regression/baseline.json")
METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "coarse_mean_px", "final_mean_px")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--update", action="store_true", help="rewrite the baseline with this run's numbers "
                        "(review the printed diff, then commit the file)")
    parser.add_argument("--baseline", default=None, help=f"baseline file (default {DEFAULT_BASELINE} in the checkout)")
    parser.add_argument("--spec", default=None, help="regression spec YAML (default configs/regression.yaml)")
    parser.add_argument("--work", default=None, help="folder for the benchmark's run (default: a fresh temp folder)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.epilog = "example:\n  lrpose-bench regress            # in CI\n  lrpose-bench regress --update   # after an intended change"


@dataclass
class RegressionSpec:
    cfg: BenchConfig
    cells: list[tuple[str, Resolution]]
    tolerances: dict[str, float]
    floor_margin: float
    floor_error_ratio: float
    ordering: dict[str, Any]
    digest: str


def load_spec(path: Path | None = None) -> RegressionSpec:
    path = path or config_dir() / "regression.yaml"
    data = read_yaml(path)
    unknown = set(data) - {"profile", "overrides", "cells", "tolerances", "floor_margin", "floor_error_ratio", "ordering"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    cfg = load_config(data.get("profile", "quick"), overrides=data.get("overrides") or {})
    cells = [(c["method"], Resolution.parse(c["res"])) for c in data["cells"]]
    tolerances = {k: float(v) for k, v in (data.get("tolerances") or {}).items()}
    ordering = data.get("ordering") or {}
    payload = json.dumps({"config": cfg.to_dict(), "cells": [[m, str(r)] for m, r in cells]}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return RegressionSpec(cfg, cells, tolerances, float(data.get("floor_margin", 0.0)),
                          float(data.get("floor_error_ratio", 0.0)), ordering, digest)


def run_benchmark(spec: RegressionSpec, work: Path, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Train and evaluate every regression cell; {cell_id: {metrics..., "floor_AP": ...}}."""
    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.sources import load_data
    from lrpose_bench.engine.cell import CellSpec, run_cell

    bundle = load_data(spec.cfg.data, progress=progress)
    cache = ImageCache(spec.cfg.data.image_cache_mb)
    results: dict[str, dict[str, Any]] = {}
    for method, res in spec.cells:
        cell = CellSpec(method, spec.cfg.model.backbone, res, spec.cfg.seed)
        print(f"regress: cell {cell.cell_id}", flush=True)
        result = run_cell(cell, spec.cfg, bundle, work, progress=progress, image_cache=cache, force=True)
        if result.state == "failed":
            results[cell.cell_id] = {"failed": result.reason, "method": method, "resolution": str(res)}
            continue
        metrics = result.metrics["metrics"]
        results[cell.cell_id] = {"method": method, "resolution": str(res),
                                 **{k: metrics.get(k) for k in METRICS},
                                 **result.metrics.get("errors", {}),
                                 "floor_AP": result.metrics["floor"]["AP"],
                                 "floor_final_mean_px": result.metrics["floor"].get("final_mean_px")}
    return results


def compare(spec: RegressionSpec, baseline: dict[str, Any], now_cells: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows describing every violation (empty when the run matches the baseline)."""
    problems: list[dict[str, Any]] = []
    base_cells = baseline["cells"]
    for cell_id, base in base_cells.items():
        current = now_cells.get(cell_id)
        if current is None:
            problems.append({"cell": cell_id, "metric": "(cell)", "baseline": "present", "now": "missing", "delta": "", "tolerance": ""})
            continue
        if "failed" in current:
            problems.append({"cell": cell_id, "metric": "(cell)", "baseline": "complete", "now": f"failed: {current['failed']}", "delta": "", "tolerance": ""})
            continue
        for metric, tol in spec.tolerances.items():
            b, n = _number(base.get(metric)), _number(current.get(metric))
            if b is None and n is None:
                continue
            if b is None or n is None or abs(n - b) > tol:
                delta = (n - b) if (b is not None and n is not None) else float("nan")
                problems.append({"cell": cell_id, "metric": metric, "baseline": b, "now": n, "delta": delta, "tolerance": tol})
    for cell_id, current in now_cells.items():
        if "failed" in current:
            if cell_id not in base_cells:
                problems.append({"cell": cell_id, "metric": "(cell)", "baseline": "-", "now": "failed", "delta": "", "tolerance": ""})
            continue
        if current["AP"] < current["floor_AP"] + spec.floor_margin:
            problems.append({"cell": cell_id, "metric": "AP vs mean-pose floor", "baseline": f"floor {current['floor_AP']:.4f} + {spec.floor_margin}",
                             "now": current["AP"], "delta": current["AP"] - current["floor_AP"], "tolerance": spec.floor_margin})
        floor_px, final_px = current.get("floor_final_mean_px"), current.get("final_mean_px")
        if spec.floor_error_ratio and floor_px and final_px is not None and final_px > spec.floor_error_ratio * floor_px:
            problems.append({"cell": cell_id, "metric": "final error vs mean-pose floor (px)",
                             "baseline": f"<= {spec.floor_error_ratio} x floor {floor_px:.3f}", "now": final_px,
                             "delta": final_px - spec.floor_error_ratio * floor_px, "tolerance": spec.floor_error_ratio})
    problems.extend(ordering_problems(spec, base_cells, now_cells))
    return problems


def ordering_problems(spec: RegressionSpec, base_cells: dict[str, Any], now_cells: dict[str, Any]) -> list[dict[str, Any]]:
    """Pairs of methods clearly ordered in the baseline (by more than the margin) must keep their order."""
    if not spec.ordering:
        return []
    res = str(Resolution.parse(spec.ordering.get("resolution", "64x48")))
    metric = spec.ordering.get("metric", "AP")
    margin = float(spec.ordering.get("margin", 0.0))
    sign = 1.0 if spec.ordering.get("higher_is_better", True) else -1.0
    base = {c["method"]: sign * c[metric] for c in base_cells.values() if c.get("resolution") == res and c.get(metric) is not None}
    cur = {c["method"]: sign * c[metric] for c in now_cells.values() if c.get("resolution") == res and c.get(metric) is not None}
    problems = []
    for a in base:
        for b in base:
            if a in cur and b in cur and base[a] - base[b] > margin and not cur[a] > cur[b]:
                better = ">" if sign > 0 else "<"
                problems.append({"cell": f"ordering at {res}", "metric": f"{metric}({a}) {better} {metric}({b})",
                                 "baseline": f"{sign * base[a]:.4f} vs {sign * base[b]:.4f}",
                                 "now": f"{sign * cur[a]:.4f} vs {sign * cur[b]:.4f}",
                                 "delta": sign * (cur[a] - cur[b]), "tolerance": margin})
    return problems


def _number(value: Any) -> float | None:
    """A metric value, or None when missing (JSON null or NaN: e.g. APL with no large persons)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def find_baseline(path: str | None) -> Path:
    if path:
        return Path(path)
    repo = config_dir().parent
    return repo / DEFAULT_BASELINE


def run(args: argparse.Namespace) -> int:
    spec = load_spec(Path(args.spec) if args.spec else None)
    baseline_path = find_baseline(args.baseline)
    baseline = None
    if not args.update:
        if not baseline_path.is_file():
            raise UserError(f"no regression baseline at {baseline_path}; create it with 'lrpose-bench regress --update' and commit it")
        baseline = read_json(baseline_path)
        if baseline.get("config_hash") != spec.digest:
            raise UserError(
                f"baseline {baseline_path} is for another configuration (hash {baseline.get('config_hash')}, "
                f"this spec {spec.digest}); run with --update after review"
            )
    if args.work:
        work = Path(args.work)
        results = run_benchmark(spec, work, progress=not args.no_progress)
    else:
        with tempfile.TemporaryDirectory(prefix="lrpose-regress-") as tmp:
            results = run_benchmark(spec, Path(tmp), progress=not args.no_progress)
    table = pd.DataFrame([{"cell": k, **{m: v.get(m) for m in ("AP", "AP50", "AR", "floor_AP", "final_mean_px", "floor_final_mean_px")}}
                          for k, v in results.items()])
    print(table.to_string(index=False))
    if args.update:
        old = read_json(baseline_path) if baseline_path.is_file() else {"cells": {}}
        write_json(baseline_path, {"config_hash": spec.digest, "created": now(), "environment": environment(), "cells": results})
        print(f"baseline written: {baseline_path}")
        for cell_id, values in results.items():
            before = old.get("cells", {}).get(cell_id, {})
            diffs = ", ".join(f"{m} {_fmt(before.get(m))} -> {_fmt(values.get(m))}" for m in METRICS if _number(before.get(m)) != _number(values.get(m)))
            print(f"  {cell_id}: {diffs or 'unchanged'}")
        return 0
    problems = compare(spec, baseline, results)
    if problems:
        print()
        print("REGRESSION: numbers moved beyond tolerance (cell, metric, baseline, now, delta, tolerance):")
        print(pd.DataFrame(problems).to_string(index=False))
        print("If the change is intended, run 'lrpose-bench regress --update' and commit reports/regression/baseline.json.")
        return 1
    print(f"regress: {len(results)} cells match the baseline within tolerance")
    return 0
