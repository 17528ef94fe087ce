"""Third-party methods through entry points, using the tutorial's package
``docs/examples/softargmax_plugin`` (a soft-argmax / integral-regression method, Sun et al. 2018).

Fast tests import the tutorial's module from the docs folder and check its codec, loss and the
registry's entry-point loading (with the entry points faked in-process). The slow tests install the
package for real (``pip install --no-deps --no-build-isolation`` into a virtual environment made by
the test that sees the test environment's packages, ``tests/_envs.py``, so the test environment is
never changed) next to a package
whose import fails, and run ``lrpose-bench methods``, ``run`` and ``report`` from there.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _envs import make_child_venv
from conftest import make_coco_fixture
from lrpose_bench import registry
from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.method import MethodContext, TrainingStage
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "docs" / "examples" / "softargmax_plugin"
MODULE = "lrpose_softargmax"
BUILTINS = ("hrnet", "dark", "udp", "cal")


def _forget_plugin() -> None:
    METHODS.items.pop("softargmax", None)
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def sam():
    """The tutorial's module, imported from the docs folder (registers ``softargmax``; undone after)."""
    registry.load_builtins()
    _forget_plugin()
    spec = importlib.util.spec_from_file_location(MODULE, PLUGIN_DIR / f"{MODULE}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    yield module
    _forget_plugin()


def _method(sam, res: str = "64x48", **params):
    resolution = Resolution.parse(res)
    return sam.SoftArgmaxMethod(sam.SoftArgmaxParams(**params), MethodContext(resolution))


# ------------------------------------------------------------------------------- the codec
@settings(max_examples=40, deadline=None)
@given(h=st.integers(4, 24), w=st.integers(4, 24), data=st.data())
def test_decode_of_a_sharp_peak_is_the_peak(sam, h, w, data):
    x = data.draw(st.integers(0, w - 1))
    y = data.draw(st.integers(0, h - 1))
    logits = torch.zeros(1, 17, h, w)
    logits[:, :, y, x] = 40.0
    method = _method(sam)
    coords, scores = method.decode(logits)
    assert torch.allclose(coords, torch.tensor([float(x), float(y)]).expand(1, 17, 2), atol=1e-4)
    assert torch.all(scores > 0.999)


@settings(max_examples=40, deadline=None)
@given(cx=st.floats(6.0, 17.0), cy=st.floats(6.0, 25.0), sigma=st.floats(0.7, 1.2))
def test_decode_is_sub_pixel_for_a_log_gaussian(sam, cx, cy, sigma):
    """Logits −d²/2σ² centred between pixels: the expectation recovers the centre (no grid
    quantisation, the point of integral regression at low resolution)."""
    h, w = 32, 24
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    logits = -((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)
    coords, _ = sam.soft_argmax(logits[None, None], beta=1.0)
    assert abs(coords[0, 0, 0].item() - cx) < 1e-3 and abs(coords[0, 0, 1].item() - cy) < 1e-3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), beta=st.floats(0.2, 5.0))
def test_mirrored_logits_decode_to_mirrored_x(sam, seed, beta):
    """Unbiased convention: mirroring the map sends x to W-1-x exactly (no flip-test shift)."""
    logits = torch.randn(2, 17, 16, 12, generator=torch.Generator().manual_seed(seed)) * 3
    method = _method(sam, beta=beta)
    identity = torch.arange(17)
    coords, scores = method.decode(logits)
    mirrored, mirrored_scores = method.decode(method.flip_outputs(logits, identity))
    assert torch.allclose(mirrored[..., 0], 11 - coords[..., 0], atol=1e-4)
    assert torch.allclose(mirrored[..., 1], coords[..., 1], atol=1e-4)
    assert torch.allclose(scores, mirrored_scores, atol=1e-5)


def test_confidence_orders_sharp_above_flat(sam):
    method = _method(sam)
    sharp = torch.zeros(1, 1, 16, 12)
    sharp[..., 5, 5] = 10.0
    _, score_sharp = method.decode(sharp)
    _, score_flat = method.decode(torch.zeros(1, 1, 16, 12))
    assert score_flat.item() == pytest.approx(9 / (16 * 12), rel=1e-5)
    assert score_sharp.item() > 0.99


def test_encode_gives_the_coordinates(sam):
    method = _method(sam)
    joints = np.random.default_rng(0).uniform(0, 11, (17, 2))
    visible = (np.arange(17) % 3 > 0).astype(np.float32)
    targets = method.encode(joints, visible)
    assert set(targets) == {"coords", "coord_weight"}
    assert targets["coords"].dtype == np.float32 and np.allclose(targets["coords"], joints, atol=1e-6)
    assert np.array_equal(targets["coord_weight"], visible)
    assert method.head_channels() == 17


def test_loss_is_l1_on_labelled_joints_and_learns(sam):
    """L1 in heatmap px over labelled joints; optimising free logits drives it to ~0 (it trains)."""
    method = _method(sam)
    stage = TrainingStage("train", 1)
    target = torch.tensor([[[3.25, 7.5], [8.0, 2.75]]])
    weight = torch.tensor([[1.0, 0.0]])
    logits = torch.zeros(1, 2, 16, 12, requires_grad=True)
    batch = {"coords": target, "coord_weight": weight}
    start = method.loss(logits, batch, stage)
    expected = (torch.tensor([5.5, 7.5]) - target[0, 0]).abs().mean()  # uniform map: mean = centre
    assert start["loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    moved = {"coords": target.clone(), "coord_weight": weight}
    moved["coords"][0, 1] = torch.tensor([0.0, 0.0])  # an unlabelled joint does not count
    assert method.loss(logits, moved, stage)["loss"].item() == pytest.approx(start["loss"].item())
    optimiser = torch.optim.Adam([logits], lr=0.5)
    for _ in range(150):
        optimiser.zero_grad()
        loss = method.loss(logits, batch, stage)["loss"]
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.05
    coords, _ = method.decode(logits.detach())
    assert torch.allclose(coords[0, 0], target[0, 0], atol=0.1)


# ----------------------------------------------------------------------------- constants
def test_plugin_constants_are_its_params_defaults(sam):
    """A plugin ships no configs/methods/<name>.yaml: its Params defaults are its constants."""
    for res in ("64x48", "256x192"):
        assert (
            resolve_method_params(sam.SoftArgmaxParams, "softargmax", Resolution.parse(res)) == sam.SoftArgmaxParams()
        )
    tuned = resolve_method_params(sam.SoftArgmaxParams, "softargmax", Resolution(64, 48), {"beta": 2})
    assert tuned.beta == 2.0 and tuned.score_window == 3
    with pytest.raises(ConfigError, match="unknown ablation key 'sigma' for method 'softargmax'"):
        resolve_method_params(sam.SoftArgmaxParams, "softargmax", Resolution(64, 48), {"sigma": 1})
    with pytest.raises(ConfigError, match="beta"):
        resolve_method_params(sam.SoftArgmaxParams, "softargmax", Resolution(64, 48), {"beta": 0})


# ------------------------------------------------------------------ entry points in-process
BROKEN_MODULE = "lrpose_broken_plugin"
BROKEN_SOURCE = textwrap.dedent(
    """
    \"\"\"A plugin whose import fails: it needs a package that is not installed.\"\"\"
    import lrpose_no_such_dependency  # noqa: F401
    """
)


def test_entry_points_register_the_plugin_and_skip_a_broken_one(tmp_path, monkeypatch):
    from lrpose_bench.method_catalog import describe_methods

    registry.load_builtins()
    _forget_plugin()
    (tmp_path / f"{BROKEN_MODULE}.py").write_text(BROKEN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    group = registry.ENTRY_POINT_GROUPS["methods"]
    fake = [metadata.EntryPoint("broken", BROKEN_MODULE, group), metadata.EntryPoint("softargmax", MODULE, group)]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None: fake if group == fake[0].group else [])
    saved_errors = list(registry.PLUGIN_ERRORS)
    monkeypatch.setattr(registry, "_loaded", False)
    registry.PLUGIN_ERRORS.clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = METHODS.names()
        assert "softargmax" in names and all(b in names for b in BUILTINS)
        assert registry.PLUGIN_ERRORS == [
            (f"{group}:broken", "ModuleNotFoundError: No module named 'lrpose_no_such_dependency'")
        ]
        assert any("plugin 'broken'" in str(w.message) and "skipped" in str(w.message) for w in caught)
        text = describe_methods()
        assert "softargmax: Integral regression" in text
        assert "codec: soft-argmax (expected coordinate)" in text and "loss: L1 on coordinates" in text
        assert "    beta: 1.0  1.0  1.0  1.0" in text
        assert all(f"\n{b}: " in "\n" + text for b in BUILTINS)
        assert f"plugin {group}:broken failed to load and was skipped: ModuleNotFoundError" in text
    finally:
        registry.PLUGIN_ERRORS[:] = saved_errors
        _forget_plugin()
        sys.modules.pop(BROKEN_MODULE, None)


# -------------------------------------------------------------- installed for real (slow)
BROKEN_PYPROJECT = textwrap.dedent(
    """
    [build-system]
    requires = ["setuptools>=68"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "lrpose-broken-plugin"
    version = "0.0.1"

    [project.entry-points."lrpose_bench.methods"]
    broken = "lrpose_broken_plugin"

    [tool.setuptools]
    py-modules = ["lrpose_broken_plugin"]
    """
)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(tmp / "mpl"),
            "PYTHONNOUSERSITE": "1",
        }
    )
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    """A venv that sees the test environment's packages (torch, the editable lrpose-bench) and has
    the tutorial's package and a broken plugin installed into it, not into the test environment."""
    tmp = tmp_path_factory.mktemp("plugins")
    good = tmp / "softargmax_plugin"
    shutil.copytree(PLUGIN_DIR, good, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    broken = tmp / "broken_plugin"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / f"{BROKEN_MODULE}.py").write_text(BROKEN_SOURCE)
    venv = tmp / "venv"
    # sees exactly the test environment's packages; its pip installs into the venv (tests/_envs.py)
    python = make_child_venv(venv)
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            str(good),
            str(broken),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(tmp),
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python, tmp


def _cli(python: Path, tmp: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "lrpose_bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(tmp),
        cwd=tmp,
    )


@pytest.mark.slow
def test_installed_plugin_is_listed_and_broken_one_named(plugin_venv):
    python, tmp = plugin_venv
    here = subprocess.run(
        [sys.executable, "-c", f"import importlib.util; print(importlib.util.find_spec('{MODULE}'))"],
        capture_output=True,
        text=True,
        env=_env(tmp),
        cwd=tmp,
    )
    assert here.stdout.strip() == "None", "the plugin leaked into the test environment"
    proc = _cli(python, tmp, "methods")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "softargmax: Integral regression (Sun et al. 2018)" in out
    assert all(f"\n{b}: " in "\n" + out for b in BUILTINS)
    assert "plugin lrpose_bench.methods:broken failed to load and was skipped" in out
    assert "lrpose_no_such_dependency" in out
    assert "plugin 'broken' (lrpose_bench.methods) failed to load" in proc.stderr
    proc = _cli(python, tmp, "run", "--methods", "broken", "--res", "64x48", "--out", str(tmp / "never"))
    assert proc.returncode == 2 and "unknown method 'broken'" in proc.stderr and "Traceback" not in proc.stderr


def _coco_layout(root: Path) -> Path:
    """The COCO 2017 layout (annotations/person_keypoints_*2017.json, train2017/, val2017/) built
    from ``conftest.make_coco_fixture``."""
    (root / "annotations").mkdir(parents=True)
    for split, seed, images in (("train2017", 0, 6), ("val2017", 1, 3)):
        part = root / f"_{split}"
        make_coco_fixture(part, num_images=images, seed=seed)
        shutil.move(str(part / "images"), str(root / split))
        shutil.move(str(part / "annotations.json"), str(root / "annotations" / f"person_keypoints_{split}.json"))
        part.rmdir()
    return root


@pytest.mark.slow
def test_installed_plugin_runs_end_to_end(plugin_venv):
    """``run --methods softargmax`` trains, flip-tests, evaluates and reports like a built-in."""
    python, tmp = plugin_venv
    coco = _coco_layout(tmp / "coco")
    out = tmp / "run"
    proc = _cli(
        python,
        tmp,
        "run",
        "--methods",
        "softargmax",
        "--res",
        "64x48",
        "--data",
        "coco",
        "--coco-root",
        str(coco),
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=4",
        "--set",
        "model.backbone=hrnet-w8",
        "--no-report",
        "--no-progress",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "softargmax__hrnet-w8__64x48__s0 complete" in proc.stdout
    cell = out / "softargmax__hrnet-w8__64x48__s0"
    assert json.loads((cell / "status.json").read_text())["state"] == "complete"
    info = json.loads((cell / "metrics.json").read_text())
    assert info["method"]["codec"] == "soft-argmax (expected coordinate)"
    assert info["method"]["params"] == {"beta": 1.0, "score_window": 3}
    assert info["model"]["head_channels"] == 17
    assert info["cell"]["eval_split"] == "COCO val2017"
    assert 0.0 <= info["metrics"]["AP"] <= 1.0
    predictions = json.loads((cell / "predictions.json").read_text())
    assert predictions and all(len(p["keypoints"]) == 51 for p in predictions)
    with open(cell / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    # one epoch, then the budget-matched continuation (train.match_budget) of max(1, round(1 * 40/210))
    assert [r["stage"] for r in rows] == ["train", "matched_extra"] and float(rows[0]["l1"]) > 0
    displacements = np.load(cell / "displacements.npz")
    assert displacements["final"].shape[1:] == (17, 2)
    proc = _cli(python, tmp, "report", str(out), "--format", "csv,json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "softargmax" in (out / "report" / "cells.csv").read_text()
