"""No function in ``lrpose_bench/engine/`` is longer than 60 lines (from the ``def`` line to its last
line, docstring included; methods and nested functions each count): the engine is read more often
than it is written, so it stays small named pieces with one job each."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "lrpose_bench" / "engine"
MAX_LINES = 60


def long_functions(folder: Path, limit: int) -> list[str]:
    """``file:line name (N lines)`` for every function or method in ``folder/*.py`` over ``limit``."""
    found = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_engine_functions_are_at_most_60_lines() -> None:
    assert ENGINE.is_dir()
    offenders = long_functions(ENGINE, MAX_LINES)
    assert not offenders, f"functions longer than {MAX_LINES} lines in lrpose_bench/engine/: {offenders}"


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "module.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path, MAX_LINES) == [f"module.py:5 long ({MAX_LINES + 1} lines)"]
