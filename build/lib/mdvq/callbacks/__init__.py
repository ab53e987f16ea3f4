"""Phase-1 Lightning callbacks: codebook health, reconstruction metrics, grids, decision rule."""

from mdvq.callbacks.codebook import CodebookMonitor
from mdvq.callbacks.decision import DecisionRule
from mdvq.callbacks.grids import SpectrogramGrid
from mdvq.callbacks.process_group import ReleaseProcessGroup
from mdvq.callbacks.reconstruction import ReconstructionMetrics

__all__ = [
    "CodebookMonitor",
    "DecisionRule",
    "ReconstructionMetrics",
    "ReleaseProcessGroup",
    "SpectrogramGrid",
]
