"""``lrpose-bench sweep``: choose every method's width constant on the tune split, with evidence.

The protocol (``configs/sweep.yaml``): each method gets the same number of grid points, the same
seeds and the same training budget; every cell is scored on the **tune** split
(``data.eval_split: tune``), never on val, the split reports score, so no reported number comes
from a constant chosen on it. The winner of a (method, resolution) is the grid point with the
highest mean metric over the seeds. ``--write`` records it in ``configs/methods/<method>.yaml``
(``per_resolution``) with a comment naming the sweep and its numbers; ``sweep.json``/``sweep.csv``
/``sweep.md`` in ``--out`` are the evidence the report cites.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lrpose_bench.config import config_dir
from lrpose_bench.errors import ConfigError
from lrpose_bench.store import read_json, write_json, write_text

HELP = "choose each method's width constant on the tune split (same grid size, seeds and budget for every method)"
DEFAULT_METHODS = "hrnet,dark,udp,cal,simcc"


@dataclass(frozen=True)
class SweepSpec:
    """``configs/sweep.yaml``: metric, seeds, budget overrides and the grids per method and resolution."""

    metric: str
    seeds: tuple[int, ...]
    budget: dict[str, Any]
    grids: dict[str, dict[str, list[dict[str, Any]]]]

    def grid(self, method: str, resolution: str) -> list[dict[str, Any]]:
        points = self.grids.get(method, {}).get(resolution)
        if not points:
            raise ConfigError(
                f"configs/sweep.yaml: no grid for {method} at {resolution}; add grids.{method}.{resolution}: "
                "a list of {key: value} points"
            )
        return points


def load_sweep_spec(path: Path) -> SweepSpec:
    """Read and check the sweep spec; one line naming the key for anything malformed."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"sweep spec {path}: cannot read it ({error.__class__.__name__}); pass --spec FILE") from None
    grids = raw.get("grids")
    if not isinstance(grids, dict) or not grids:
        raise ConfigError(f"sweep spec {path}: 'grids' must map method -> resolution -> list of points")
    for method, per_res in grids.items():
        for res, points in (per_res or {}).items():
            if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
                raise ConfigError(f"sweep spec {path}: grids.{method}.{res} must be a list of {{key: value}} points")
    seeds = raw.get("seeds") or [0, 1, 2]
    if len(set(seeds)) < 3:
        raise ConfigError(f"sweep spec {path}: seeds {seeds} — a width constant needs >= 3 seeds to be chosen")
    return SweepSpec(str(raw.get("metric", "AP")), tuple(int(s) for s in seeds), dict(raw.get("budget") or {}), grids)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"methods to sweep (default {DEFAULT_METHODS})")
    parser.add_argument("--res", default="64x48", help="resolutions HxW (default 64x48)")
    parser.add_argument("--out", default="runs/sweep", help="folder for the sweep's cells and sweep.json")
    parser.add_argument("--spec", default=None, help="sweep spec YAML (default configs/sweep.yaml)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the spec's, >= 3)")
    parser.add_argument(
        "--write", action="store_true", help="write each winner into configs/methods/<method>.yaml with its evidence"
    )
    parser.add_argument(
        "--method-configs", default=None, help="folder of the method YAML files --write edits (default configs/methods)"
    )
    parser.add_argument("--tune-split", type=int, default=None, metavar="N", help="COCO: hold out N train2017 images")
    parser.epilog = "example:\n  lrpose-bench sweep --methods hrnet,dark,udp,cal --res 64x48 --write"


def point_label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and sample sd over seeds (sd 0 for one value)."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def choose(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The point with the highest mean; a tie goes to the lower sd, then to the earlier grid point."""
    return max(enumerate(points), key=lambda ip: (round(ip[1]["mean"], 12), -ip[1]["sd"], -ip[0]))[1]


def run(args: argparse.Namespace) -> int:
    from lrpose_bench.cli import _bench_config, _check_backbone, _method_names, _run_cells
    from lrpose_bench.resolution import parse_resolution_list

    spec_path = Path(args.spec) if args.spec else config_dir() / "sweep.yaml"
    spec = load_sweep_spec(spec_path)
    for text in args.overrides:
        if text.replace(" ", "").startswith("data.eval_split="):
            raise ConfigError("--set data.eval_split: a sweep always scores the tune split; drop the override")
    args.overrides = [*(f"{k}={v}" for k, v in spec.budget.items()), *args.overrides, "data.eval_split=tune"]
    if args.tune_split is not None:
        args.overrides.append(f"data.tune_images={args.tune_split}")
    cfg = _bench_config(args)
    _check_backbone(cfg.model.backbone)
    methods = _method_names(args.methods)
    resolutions = parse_resolution_list(args.res)
    seeds = args.seeds or ",".join(str(s) for s in spec.seeds)
    out = Path(args.out)
    results = []
    for method in methods:
        for res in resolutions:
            # All grid points x seeds of one method in one pool of cells: with two cells at a time
            # and an odd number of seeds, a point-by-point loop left one core idle for each point.
            points = spec.grid(method, str(res))
            labels = "; ".join(point_label(point) for point in points)
            print(f"== sweep {method} {res}: {labels} (seeds {seeds})", flush=True)
            ablations = [tuple(point.items()) for point in points]
            code = _run_cells(cfg, [method], [res], ablations, out, not args.no_progress, report=False, seeds=seeds)
            if code != 0:
                raise ConfigError(f"sweep cells of {method} {res} failed; see the cells' logs in {out}")
            results.extend(collect(out, method, str(res), point, cfg, seeds, spec.metric) for point in points)
    record = build_record(results, spec, cfg, spec_path, seeds)
    write_outputs(out, record)
    for choice in record["chosen"]:
        if choice["at_edge"]:
            print(
                f"warning: {choice['method']} {choice['resolution']}: the winner {point_label(choice['point'])} is at "
                f"an edge of its grid; extend grids.{choice['method']}.{choice['resolution']} in {spec_path.name} "
                f"one step past it and rerun with the same --out (finished cells are kept)",
                flush=True,
            )
    if args.write:
        folder = Path(args.method_configs) if args.method_configs else config_dir() / "methods"
        for choice in record["chosen"]:
            write_choice(folder / f"{choice['method']}.yaml", choice, record["evidence"])
    print(render_markdown(record))
    return 0


def collect(out: Path, method: str, res: str, point: dict, cfg: Any, seeds: str, metric: str) -> dict[str, Any]:
    """One grid point's metric over seeds, read from its cells; refuses a cell scored on another split."""
    from lrpose_bench.engine.cell import CellSpec
    from lrpose_bench.resolution import Resolution

    values = []
    for seed in (int(s) for s in seeds.split(",")):
        cell = CellSpec(method, cfg.model.backbone, Resolution.parse(res), seed, tuple(point.items()))
        metrics = read_json(out / cell.cell_id / "metrics.json")
        split = str(metrics["cell"].get("eval_split", ""))
        if "tune" not in split:
            raise ConfigError(f"sweep cell {cell.cell_id} was scored on {split!r}, not the tune split; use a new --out")
        value = metrics["metrics"].get(metric)
        values.append(float("nan") if value is None else float(value))
    return {"method": method, "resolution": res, "point": point, "values": values, "eval_split": split,
            **summarise(values)}  # fmt: skip


def at_edge(best: dict[str, Any], group: list[dict[str, Any]]) -> bool:
    """Whether the winner is the first or last point of a grid of three or more: its optimum may lie
    past that edge, so the grid should be extended one step there before the constant is trusted
    (the rule configs/sweep.yaml applies to every method alike)."""
    return len(group) >= 3 and (best is group[0] or best is group[-1])


def build_record(results: list[dict], spec: SweepSpec, cfg: Any, spec_path: Path, seeds: str) -> dict[str, Any]:
    chosen = []
    for key in dict.fromkeys((r["method"], r["resolution"]) for r in results):
        group = [r for r in results if (r["method"], r["resolution"]) == key]
        if any(math.isnan(v) for r in group for v in r["values"]):
            raise ConfigError(f"sweep {key[0]} {key[1]}: a cell has no {spec.metric}; rerun it")
        best = choose(group)
        chosen.append({**best, "others": [r for r in group if r is not best], "at_edge": at_edge(best, group)})
    return {
        "metric": spec.metric,
        "seeds": [int(s) for s in seeds.split(",")],
        "budget": spec.budget,
        "profile": cfg.profile,
        "backbone": cfg.model.backbone,
        "eval_split": results[0]["eval_split"] if results else None,
        "spec": str(spec_path.name),
        "results": results,
        "chosen": chosen,
        "evidence": f"lrpose-bench sweep ({cfg.profile} profile + {spec_path.name} budget, {cfg.model.backbone}, "
        f"seeds {seeds}, scored on {results[0]['eval_split'] if results else '?'})",
    }


def render_markdown(record: dict[str, Any]) -> str:
    lines = [
        f"Width-constant sweep: {record['evidence']}; {record['metric']} x100, mean ± sd over seeds.",
        "",
        f"| method | input | point | {record['metric']} | seeds | chosen |",
        "|---|---|---|---|---|---|",
    ]
    winners = {(c["method"], c["resolution"], point_label(c["point"])) for c in record["chosen"]}
    edges = {(c["method"], c["resolution"], point_label(c["point"])) for c in record["chosen"] if c.get("at_edge")}
    for r in record["results"]:
        key = (r["method"], r["resolution"], point_label(r["point"]))
        mark = ("**yes** (grid edge)" if key in edges else "**yes**") if key in winners else ""
        values = " / ".join(f"{100 * v:.1f}" for v in r["values"])
        lines.append(
            f"| {r['method']} | {r['resolution']} | {point_label(r['point'])} | "
            f"{100 * r['mean']:.1f} ± {100 * r['sd']:.1f} | {values} | {mark} |"
        )
    return "\n".join(lines)


def write_outputs(out: Path, record: dict[str, Any]) -> None:
    import pandas as pd

    write_json(out / "sweep.json", record)
    rows = [{"method": r["method"], "resolution": r["resolution"], "point": point_label(r["point"]),
             "mean": r["mean"], "sd": r["sd"], "values": " ".join(f"{v:.6f}" for v in r["values"])}
            for r in record["results"]]  # fmt: skip
    write_text(out / "sweep.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text(out / "sweep.md", render_markdown(record) + "\n")


def write_choice(path: Path, choice: dict[str, Any], evidence: str) -> None:
    """Merge the winning point into ``per_resolution.<res>`` of a method YAML, keeping every other
    line and comment, with one comment line above it naming the sweep and its numbers."""
    res = choice["resolution"]
    lines = Path(path).read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("per_resolution:"))
    except StopIteration:
        raise ConfigError(f"{path}: no per_resolution: block to record the sweep's {res} choice in") from None
    key = f"  {res}:"
    index = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(key)), None)
    current: dict[str, Any] = {}
    if index is not None:
        body = lines[index][len(key) :].split("#", 1)[0].strip()
        current = yaml.safe_load(body) or {}
        del lines[index]
    else:
        index = len(lines)
    while index > start + 1 and lines[index - 1].startswith(f"  # sweep {res}:"):
        index -= 1
        del lines[index]
    merged = {**current, **choice["point"]}
    others = "; ".join(
        f"{point_label(o['point'])}: {100 * o['mean']:.1f} ± {100 * o['sd']:.1f}" for o in choice["others"]
    )
    comment = (
        f"  # sweep {res}: chosen by {evidence}: {point_label(choice['point'])} {100 * choice['mean']:.1f} ± "
        f"{100 * choice['sd']:.1f} AP x100 (others {others}); evidence reports/sweep/sweep.md"
    )
    flow = ", ".join(f"{k}: {v}" for k, v in merged.items())
    lines[index:index] = [comment, f"{key} {{{flow}}}"]
    write_text(path, "\n".join(lines) + "\n")
