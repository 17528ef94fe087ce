"""``lrpose-bench docs config``: write (or check) the generated configuration reference.

``docs/configuration.md`` is generated from the config dataclasses and the YAML files
(:mod:`lrpose_bench.commands.docs_reference`), so it cannot drift from the code: ``--check`` exits with
status 1 when the file differs from what would be generated now (the test suite runs it).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

HELP = "generate the documentation that is derived from the code (docs config: the configuration reference)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["config"], help="which document: config (the configuration reference)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="file to write, e.g. docs/configuration.md (default: print to standard output)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 (with a diff) when FILE is not what would be generated now",
    )
    parser.epilog = (
        "examples:\n  lrpose-bench docs config --out docs/configuration.md\n"
        "  lrpose-bench docs config --out docs/configuration.md --check"
    )


def run(args: argparse.Namespace) -> int:
    from lrpose_bench.commands.docs_reference import generate_reference
    from lrpose_bench.errors import ConfigError
    from lrpose_bench.store import atomic_write

    text = generate_reference()
    if args.check:
        if not args.out:
            raise ConfigError("docs config --check needs --out FILE (the file to compare, e.g. docs/configuration.md)")
        path = Path(args.out)
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current == text:
            print(f"{path} is up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), f"{path} (committed)", f"{path} (generated)", lineterm="", n=1
        )
        sys.stdout.write("\n".join(list(diff)[:60]) + "\n")
        print(f"{path} is stale: run 'lrpose-bench docs config --out {path}' and commit the result", file=sys.stderr)
        return 1
    if not args.out:
        sys.stdout.write(text)
        return 0
    path = Path(args.out)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    print(f"written: {path}")
    return 0
