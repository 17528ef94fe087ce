"""The ONE place ``basicsr`` is imported (its RRDB block and, for tests, its reference metrics).

Which package: ``basicsr-fixed==1.4.2`` (a 2025 repackaging of XPixelGroup/BasicSR master under the
same import name ``basicsr``; its ``archs/rrdbnet_arch.py`` is identical to upstream's). Upstream
``basicsr==1.4.2`` (2022) fails on import with torchvision >= 0.17 because
``basicsr/data/degradations.py`` imports the removed ``torchvision.transforms.functional_tensor``;
the known work-around aliases that module in ``sys.modules`` for the whole process, which would
also change what every other library sees. ``basicsr-fixed`` imports cleanly, so no alias is used.
Never install both: they write the same ``basicsr/`` folder.

Install (the declared dependencies of either package add ~300 MB and pull ``opencv-python``, which
clashes with the project's ``opencv-python-headless``; ``basicsr.archs.rrdbnet_arch`` only needs
numpy, torch, torchvision, opencv, scipy, tqdm, pyyaml, all project dependencies, plus setuptools'
``distutils`` shim on Python >= 3.12)::

    pip install "setuptools>=68"
    pip install --no-deps --no-build-isolation "basicsr-fixed==1.4.2"

``--no-build-isolation`` because the package declares torch as a *build* requirement; an isolated
build would download a second torch.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from importlib import metadata
from types import ModuleType

from torch import nn

from lrpose_bench.errors import UserError

#: the distribution this project installs (see the module docstring)
DISTRIBUTION = "basicsr-fixed"
DISTRIBUTION_VERSION = "1.4.2"
INSTALL_COMMAND = (
    'pip install "setuptools>=68" && '
    f'pip install --no-deps --no-build-isolation "{DISTRIBUTION}=={DISTRIBUTION_VERSION}"'
)


def _import(module: str) -> ModuleType:
    """Import a basicsr module, turning the known install problems into one readable line."""
    try:
        with warnings.catch_warnings():
            # basicsr imports distutils (deprecated) and registers many archs; keep the log clean
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing == "distutils" or missing.startswith("distutils."):
            raise UserError(
                "basicsr needs setuptools' distutils shim on this Python; run: pip install 'setuptools>=68'"
            ) from None
        if "functional_tensor" in missing:
            raise UserError(
                "the installed basicsr is upstream 1.4.2, which cannot import with this torchvision; "
                f"replace it: pip uninstall -y basicsr && {INSTALL_COMMAND}"
            ) from None
        if missing == "basicsr" or missing.startswith("basicsr."):
            raise UserError(
                f"SPSR needs basicsr's RRDB blocks, which are not installed; run: {INSTALL_COMMAND}"
            ) from None
        raise UserError(
            f"basicsr failed to import because module {missing!r} is missing; install it "
            f"(pip install {missing.split('.')[0]}) or reinstall with: {INSTALL_COMMAND}"
        ) from None


def rrdb_block(num_feat: int, num_grow_ch: int) -> nn.Module:
    """basicsr's ``RRDB(num_feat, num_grow_ch)``: three residual dense blocks, residual scale 0.2
    (ESRGAN; the block SPSR's ``B.RRDB`` implements with ``mode='CNA'``, no norm, leaky ReLU 0.2)."""
    module = _import("basicsr.archs.rrdbnet_arch")
    return module.RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch)


def reference_metrics() -> tuple[Callable[..., float], Callable[..., float]]:
    """basicsr's ``calculate_psnr`` and ``calculate_ssim`` (``basicsr/metrics/psnr_ssim.py``),
    the reference our :mod:`~lrpose_bench.baselines.spsr.metrics` is tested against."""
    module = _import("basicsr.metrics.psnr_ssim")
    return module.calculate_psnr, module.calculate_ssim


def installed_version() -> str | None:
    """Version of the installed basicsr distribution (``basicsr-fixed`` or upstream), or None."""
    for name in (DISTRIBUTION, "basicsr"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None
