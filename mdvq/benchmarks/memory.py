"""Peak memory of a stage: process RSS on the CPU, the CUDA caching allocator on a GPU.

On Linux the peak resident set (`VmHWM` of /proc/self/status) is reset at the start of a stage
by writing 5 to /proc/self/clear_refs, so each stage reports its own peak; where that is not
possible the process-wide `ru_maxrss` so far is reported (and `rss_peak_scope` says "process").
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_mb(key: str = "VmHWM") -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class PeakMemory(contextlib.AbstractContextManager):
    """`with PeakMemory() as m: ...` then `m.result()`: `{"rss_start_mb" (resident at the
    start: interpreter, libraries, data already loaded), "rss_peak_mb", "rss_peak_scope"
    ("stage" | "process"), "cuda_peak_mb" (None without CUDA)}` in MiB."""

    def __enter__(self):
        self.start = _status_mb("VmRSS")
        self.stage_scope = _reset_hwm() and _status_mb() is not None
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        self.rss = _status_mb() if self.stage_scope else _maxrss_mb()
        self.cuda_peak = (torch.cuda.max_memory_allocated() / 2**20) if self.cuda else None
        return False

    def result(self) -> dict:
        """The peaks measured over the `with` block."""
        return {"rss_start_mb": None if self.start is None else round(self.start, 1),
                "rss_peak_mb": round(self.rss, 1),
                "rss_peak_scope": "stage" if self.stage_scope else "process",
                "cuda_peak_mb": None if self.cuda_peak is None else round(self.cuda_peak, 1)}
