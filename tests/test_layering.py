"""The layering of docs/architecture.md, checked on the import graph (static, every module's
``import`` statements, function-level imports included): methods and baselines are numbers in,
numbers out and never import the engine; data and synthpose (the SynthPose generator) know no network,
and synthpose no engine either; reports read run folders only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: installed package name -> source folder (pyproject's package-dir)
FOLDERS = {"lrpose_bench.methods": ROOT / "methods", "lrpose_bench.baselines": ROOT / "baselines"}


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


RULES = [
    ("lrpose_bench.methods", "lrpose_bench.engine"),
    ("lrpose_bench.baselines", "lrpose_bench.engine"),
    ("lrpose_bench.data", "lrpose_bench.models"),
    ("lrpose_bench.synthpose", "lrpose_bench.models"),
    ("lrpose_bench.synthpose", "lrpose_bench.engine"),
    ("lrpose_bench.report", "lrpose_bench.engine"),
    ("lrpose_bench.codecs", "lrpose_bench.engine"),
    ("lrpose_bench.codecs", "lrpose_bench.baselines"),
]


@pytest.mark.parametrize("package, forbidden", RULES)
def test_package_does_not_import(package, forbidden):
    folder = FOLDERS.get(package, ROOT / package.replace(".", "/"))
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        for name in sorted(imports_of(path))
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert not offenders, offenders


def test_comm_is_a_leaf():
    """The collectives methods use import nothing of the project but its errors."""
    names = imports_of(ROOT / "lrpose_bench" / "comm.py")
    assert {n for n in names if n.startswith("lrpose_bench")} <= {
        "lrpose_bench.errors",
        "lrpose_bench.errors.ConfigError",
    }


def test_the_checker_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lrpose_bench.engine import distributed\n")
    assert "lrpose_bench.engine" in imports_of(source)
