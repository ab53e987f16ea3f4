"""Lightning callbacks: codebook health, reconstruction metrics, grids, decision rule, plain
per-epoch lines without a terminal, W&B review tags."""

from mdvq.callbacks.codebook import CodebookMonitor
from mdvq.callbacks.decision import DecisionRule
from mdvq.callbacks.grids import SpectrogramGrid
from mdvq.callbacks.process_group import ReleaseProcessGroup
from mdvq.callbacks.progress import EpochLines
from mdvq.callbacks.reconstruction import ReconstructionMetrics
from mdvq.callbacks.wandb_review import WandbReview

__all__ = [
    "CodebookMonitor",
    "DecisionRule",
    "EpochLines",
    "ReconstructionMetrics",
    "ReleaseProcessGroup",
    "SpectrogramGrid",
    "WandbReview",
]
