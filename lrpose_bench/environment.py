"""Environment facts recorded with every result (versions, device, threads)."""

from __future__ import annotations

import platform
import sys
from typing import Any


def environment() -> dict[str, Any]:
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import pycocotools

        info["pycocotools"] = getattr(pycocotools, "__version__", "unknown")
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return info
