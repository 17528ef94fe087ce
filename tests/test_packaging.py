"""The built wheel installs into a fresh virtual environment and every registered method and
backbone imports from there (not from the source tree)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _envs import make_child_venv

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_registers_everything(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
    )
    wheels = list(dist.glob("lrpose_bench-*.whl"))
    assert len(wheels) == 1
    venv = tmp_path / "venv"
    # the test environment's packages provide torch & co. (a CUDA torch is 5 GB); the wheel itself is
    # installed into the venv with --no-deps and must shadow the editable checkout
    python = make_child_venv(venv)
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheels[0])], check=True, timeout=600)
    script = textwrap.dedent(
        """
        import sys, lrpose_bench
        from pathlib import Path
        assert str(Path(lrpose_bench.__file__).resolve()).startswith(sys.prefix), lrpose_bench.__file__
        import lrpose_bench.methods, lrpose_bench.baselines
        assert 'site-packages' in lrpose_bench.methods.__file__ and 'site-packages' in lrpose_bench.baselines.__file__
        from lrpose_bench.registry import METHODS, BACKBONES, load_builtins
        from lrpose_bench.config import load_config, config_dir
        from lrpose_bench.method import MethodContext
        from lrpose_bench.config import resolve_method_params
        from lrpose_bench.resolution import Resolution
        load_builtins()
        assert 'site-packages' in str(config_dir()), config_dir()
        cfg = load_config('quick')
        for name in METHODS.names():
            cls = METHODS.get(name)
            res = Resolution(64, 48)
            cls(resolve_method_params(cls.Params, name, res), MethodContext(res))
        from lrpose_bench.models import build_model
        for name in BACKBONES.names():
            BACKBONES.get(name)
        build_model('hrnet-w8', 17)
        print('methods', ','.join(METHODS.names()))
        print('backbones', ','.join(BACKBONES.names()))
        """
    )
    proc = subprocess.run([str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hrnet" in proc.stdout and "hrnet-w32" in proc.stdout
    console = venv / "bin" / "lrpose-bench"
    proc = subprocess.run([str(console), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "lrpose-bench" in proc.stdout
