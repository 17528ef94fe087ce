"""Throw-away virtual environments that see exactly the packages of the environment the tests run in.

``python -m venv --system-site-packages`` (what these tests used before) makes the new environment
see the *base* interpreter's site-packages. Run from inside a venv (what most users do: Debian's and
Ubuntu's system Pythons refuse ``pip install`` outside one), that is the wrong set: no torch, no
editable lrpose-bench. Instead, the child venv is created empty (no system site, no pip of its own)
and given one ``.pth`` file that adds the running interpreter's own site directories with
``site.addsitedir`` — so their ``.pth`` files (editable installs) are processed too — *after* the
child's site-packages: what a test installs into the child shadows the parent's copy.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path


def parent_site_dirs() -> list[str]:
    """The site directories of the running interpreter (venv, conda env or base), in path order."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and Path(site.getusersitepackages()).is_dir():
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def make_child_venv(path: Path) -> Path:
    """Create a venv at ``path`` that sees this environment's packages; return its python.

    ``pip`` comes from the parent environment (visible through the ``.pth`` file) and installs into
    the child (its ``sys.prefix``). ``pip install --no-build-isolation`` in the child needs the
    parent to have setuptools and wheel: both are in the project's ``test`` extra.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=300)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})" for d in parent_site_dirs()]
    (Path(purelib) / "_lrpose_parent_env.pth").write_text("\n".join(lines) + "\n")
    return python


__all__ = ["make_child_venv", "parent_site_dirs"]
