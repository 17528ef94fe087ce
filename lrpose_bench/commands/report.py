"""``lrpose-bench report RUN_DIR``: rebuild the report of a run folder (HTML, LaTeX, CSV, JSON)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "build the report (HTML, LaTeX, CSV, JSON and figures) of a run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by 'lrpose-bench run --out RUN_DIR'")
    parser.add_argument(
        "--format",
        default=None,
        dest="formats",
        metavar="LIST",
        help="comma-separated formats among html,latex,csv,json (default: report.formats of the "
        "run's config, normally all four)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN_DIR/report)")
    parser.add_argument(
        "--bootstrap-samples",
        type=int,
        default=None,
        metavar="N",
        help="resamples of the paired bootstrap (default: eval.bootstrap_samples of the run's config); "
        "rebuilds the intervals from the saved predictions, no retraining",
    )


def run(args: argparse.Namespace) -> int:
    from lrpose_bench.report.build import build_report

    start = time.perf_counter()
    formats = [f for f in args.formats.split(",") if f.strip()] if args.formats else None
    paths = build_report(
        Path(args.run_dir),
        formats=formats,
        out=Path(args.out) if args.out else None,
        bootstrap_samples=args.bootstrap_samples,
    )
    for name, path in paths.items():
        print(f"{name:>5}: {path}")
    print(f"report built in {time.perf_counter() - start:.1f} s")
    return 0
