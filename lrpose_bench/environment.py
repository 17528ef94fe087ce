"""Environment facts recorded with every result (versions, device, threads, CPU kernels)."""

from __future__ import annotations

import os
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
    info.update(cpu_kernels())
    return info


#: environment variables that choose the CPU kernels (and so a training's float summation order)
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS")


def cpu_kernels() -> dict[str, Any]:
    """The CPU model and the kernel family torch dispatches to: two machines (or two settings of
    ``KERNEL_VARIABLES``) differ here exactly when CPU training may follow another trajectory."""
    import torch

    model = None
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        model = platform.processor() or None
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)()
    return {
        "cpu_model": model,
        "cpu_capability": capability,
        "kernel_env": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
    }
