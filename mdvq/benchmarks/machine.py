"""The machine and code a benchmark ran on (printed above its tables)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def git_commit(path: Path | None = None) -> str | None:
    """`git rev-parse --short HEAD` (plus "-dirty" with uncommitted changes) of the checkout
    holding `path` (default: this package), or None outside a checkout."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """Device, CPU, cores, torch threads, load averages (1, 5, 15 min), versions, commit."""
    import diffusers
    import lightning

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_avg": None if load is None else [round(v, 2) for v in load],
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": lightning.__version__, "diffusers": diffusers.__version__,
        "commit": git_commit(),
    }
