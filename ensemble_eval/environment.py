"""What a result was computed with: package versions, Python, CUDA/cuDNN, the device, the CPU.

Every summary.json carries `environment()` (a result is reproducible only with it); the
benchmark and the batch-size cache use the same facts. The host name is left out: results are
shared.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("ensemble-eval", "torch", "torchvision", "numpy", "pillow", "safetensors", "timm")


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "?"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None  # not installed (timm is optional)


def environment(device=None) -> dict:
    """JSON-ready facts of this process: versions (None: not installed), Python, the platform,
    CUDA and cuDNN as torch was built with them, the device's name, the CPU and its threads."""
    import torch

    packages = {p: _version(p) for p in PACKAGES}
    packages["torch"] = torch.__version__  # with its build (+cu130, +cpu), which the metadata leaves out
    info = {
        "packages": packages,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "gpu": None,
    }
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


__all__ = ["cpu_model", "environment"]
