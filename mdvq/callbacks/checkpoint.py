"""`RunFolderCheckpoint`: Lightning's ModelCheckpoint that keeps its record when the run
folder is moved or copied.

Lightning restores `best_model_score`, `best_k_models` and `last_model_path` only when the
checkpoint's saved `dirpath` equals the current one, but always restores `best_model_path`.
After `mv run run2` and a resume, no best score was known (the first epoch after the resume
became "best": test PSNR 17.69 instead of 18.95 dB); in a copied folder `test(ckpt_path="best")`
restored the *original* folder's file. This callback rebases every recorded path from the saved
folder onto its own, keeps only files that exist there, and forgets the best score when the
best file is not in this folder (so a checkpoint from elsewhere cannot be named best).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def rebase(path: str | None, old_dir: str, new_dir: str) -> str:
    """`path` moved from `old_dir` to `new_dir` when it lies inside `old_dir` and the moved file
    exists, else "" (Lightning's "no path")."""
    if not path:
        return ""
    try:
        rel = Path(path).relative_to(old_dir)
    except ValueError:
        rel = None
    moved = Path(new_dir) / rel if rel is not None else Path(path)
    inside = Path(new_dir).resolve() in moved.resolve().parents
    return str(moved) if inside and moved.is_file() else ""


class RunFolderCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose restored state always points into its own `dirpath`
    (module docstring). Same arguments as Lightning's."""

    def load_state_dict(self, state_dict: dict) -> None:
        """Rebase the saved paths onto this callback's folder, then restore as Lightning does."""
        old = state_dict.get("dirpath")
        if not old or self.dirpath is None or os.path.normpath(old) == os.path.normpath(self.dirpath):
            super().load_state_dict(state_dict)
            return
        new = str(self.dirpath)
        state = dict(state_dict, dirpath=self.dirpath)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = rebase(state_dict.get(key), old, new)
        best_k = {}
        for path, score in (state_dict.get("best_k_models") or {}).items():
            moved = rebase(path, old, new)
            if moved:
                best_k[moved] = score
        state["best_k_models"] = best_k
        if not state["best_model_path"]:
            state["best_model_score"] = None  # the best file is not in this folder
        log.info("checkpoint state rebased from %s to %s (best: %s)", old, new,
                 state["best_model_path"] or "none in this folder")
        super().load_state_dict(state)
