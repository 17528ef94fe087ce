"""The HTML report in a real headless Chromium: it renders, tables and figures are there, nothing is
loaded from outside. The screenshot is kept as a test artifact (``tests/artifacts/`` or
``$LRPOSE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report_factory import make_run, standard_specs

from lrpose_bench.report.build import build_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="headless Chromium not installed "
        "(apt-get install -y chromium); the HTML itself is checked in test_report_render.py",
    ),
]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _artifacts() -> Path:
    folder = Path(os.environ.get("LRPOSE_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(profile)},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = make_run(tmp_path_factory.mktemp("run"), standard_specs(), num_images=10)
    return build_report(run_dir, formats=["html"])["html"]


def test_dom_has_tables_and_embedded_images(report: Path, tmp_path: Path) -> None:
    proc = _chromium(["--dump-dom", report.resolve().as_uri()], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert dom.count("<table") >= 6
    assert "Table 1/2/8 layout: input 64×48" in dom and "T3 layout" in dom
    images = re.findall(r'<img[^>]*src="([^"]+)"', dom)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    # no resource the page could try to fetch from elsewhere
    assert not re.search(r"""(src|href)="(?!data:|#)""", dom)


def test_screenshot_shows_content(report: Path, tmp_path: Path) -> None:
    shot = _artifacts() / "report_screenshot.png"
    shot.unlink(missing_ok=True)
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=1280,3000", report.resolve().as_uri()], tmp_path / "profile"
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1280)
    assert pixels.std() > 20  # not a blank page
    # dark text/table rules in the upper part, and colour (figures) further down
    assert (pixels[:1500] < 80).mean() > 0.005
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 80).mean() > 0.002
