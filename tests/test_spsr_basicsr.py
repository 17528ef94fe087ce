"""basicsr: it imports from the one wrapper module, gives the RRDB block SPSR uses, and
installing it did not move torch/torchvision outside the project's range."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from lrpose_bench.baselines.spsr import _basicsr

REPO = Path(__file__).resolve().parent.parent
#: the project's declared caps (pyproject.toml, pip constraint)
TORCH_MAX = (2, 14, 1)
TORCHVISION_MAX = (0, 29, 1)


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    assert match, version
    return tuple(int(g or 0) for g in match.groups())


def test_torch_versions_within_project_range() -> None:
    assert _release(metadata.version("torch")) <= TORCH_MAX
    assert _release(metadata.version("torchvision")) <= TORCHVISION_MAX
    # the installed basicsr did not replace them with another build
    assert _release(torch.__version__) == _release(metadata.version("torch"))


def test_the_chosen_basicsr_distribution_is_installed_alone() -> None:
    assert _basicsr.installed_version() == f"{_basicsr.DISTRIBUTION}=={_basicsr.DISTRIBUTION_VERSION}"
    names = {dist.metadata["Name"].lower() for dist in metadata.distributions()}
    assert not ({"basicsr", "basicsr-fixed"} <= names), "both basicsr packages write basicsr/: keep one"


def test_rrdb_block_from_basicsr() -> None:
    nf, gc = 8, 4
    block = _basicsr.rrdb_block(nf, gc)
    assert type(block).__module__ == "basicsr.archs.rrdbnet_arch"
    # 3 dense blocks of 5 convs: (nf + i*gc) -> gc for i < 4, then (nf + 4gc) -> nf
    rdb = sum((nf + i * gc) * gc * 9 + gc for i in range(4)) + (nf + 4 * gc) * nf * 9 + nf
    assert sum(p.numel() for p in block.parameters()) == 3 * rdb
    x = torch.randn(2, nf, 5, 7)
    assert block(x).shape == x.shape
    # no alias of the removed torchvision module was needed (basicsr-fixed imports cleanly)
    assert "torchvision.transforms.functional_tensor" not in sys.modules


def test_basicsr_is_imported_only_in_the_wrapper() -> None:
    offenders = []
    for path in list((REPO / "baselines").rglob("*.py")) + list((REPO / "lrpose_bench").rglob("*.py")):
        if path.name == "_basicsr.py":
            continue
        if re.search(r"^\s*(import|from)\s+basicsr\b", path.read_text(), re.MULTILINE):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_method_module_imports_without_basicsr() -> None:
    """Registering the SPSR methods must not import basicsr (it is needed only to build the generator)."""
    code = (
        "import sys; import lrpose_bench.baselines.spsr.method as m; "
        "assert 'basicsr' not in sys.modules, 'basicsr imported at registration'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
