"""`RunSummary`: the one reader and writer of a run folder's `summary.json`.

Every run of `python -m mdvq.run` (finished, failed or interrupted) leaves
`<run folder>/summary.json`:

    model            the model kind, one field ("vqvae", "klvae", "vqdiffusion",
                     "latentdiffusion", "classifier", ...): `RunSummary.model`
    status           running | finished | failed | interrupted
    error            the error text of a failed or interrupted run
    signal           the signal that stopped an interrupted run ("SIGTERM", "SIGINT"), else null
    metrics          final metrics {name: float}, e.g. "test/psnr" (dB)
    data_key         the data + split fingerprint (same key = same held-out split)
    data             what the data was (classes, sizes, axes)
    skipped_files    data files skipped as unreadable (`data.on_error=skip`); 0 when none
    checkpoints      {"best": path, "last": path} relative to the run folder (absolute paths of
                     older summaries are read too)
    pretrained_dir   the exported diffusers folder, relative to the run folder
    wall_time_s, started_at, finished_at, config (the resolved config)
    attempts         the other attempts in this folder, oldest first (each a summary like this
                     one): a failed or interrupted resume of a finished run keeps the finished
                     record on top and lands here, and a later attempt keeps the earlier ones

Paths are stored relative to the run folder so a run folder can be moved, copied to another
machine or committed, and still be read. Everything that reads run folders (the decision rule,
sweep tables, frozen autoencoders, samplers, the classifier judge, reports, notebooks) goes
through this class.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mdvq.core.errors import DataError

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"


def relative_to_run(path: str | os.PathLike | None, run_dir: Path) -> str | None:
    """`path` relative to `run_dir` (POSIX), or absolute when it lies outside it; None stays."""
    if not path:
        return None
    path = Path(path).resolve()
    try:
        return path.relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


@dataclass
class RunSummary:
    """A run folder's summary: the parsed JSON (`data`) and the folder it describes (`run_dir`).

    Build one with `RunSummary.read(path)` (a run folder or its summary.json) or
    `RunSummary.new(run_dir, model)`; `write()` stores it atomically.
    """

    run_dir: Path
    data: dict = field(default_factory=dict)
    earlier: list[dict] = field(default_factory=list)
    """Earlier attempts' records in this folder (oldest first), kept by every `write()`."""

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def path_of(cls, run_dir_or_file: str | os.PathLike) -> Path:
        """`<run>/summary.json` for a run folder, or the path itself when it names a file."""
        path = Path(run_dir_or_file).expanduser()
        return path if path.suffix == ".json" or path.is_file() else path / SUMMARY_NAME

    @classmethod
    def exists(cls, run_dir_or_file: str | os.PathLike) -> bool:
        """True when `run_dir_or_file` is (or holds) a summary.json."""
        return cls.path_of(run_dir_or_file).is_file()

    @classmethod
    def read(cls, run_dir_or_file: str | os.PathLike, model: str | tuple[str, ...] | None = None,
             key: str | None = None) -> RunSummary:
        """Read a run's summary.json; with `model`, check the run's kind (one or several allowed).

        Raises DataError naming the file when it is missing, not JSON, not a JSON object, or of
        another model kind (`key`, e.g. "model.vqvae", names the config key the path came from).
        """
        path = cls.path_of(run_dir_or_file)
        if not path.is_file():
            raise DataError(path, "no run summary here (every mdvq.run run writes summary.json)")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(path, f"unreadable run summary ({err})") from err
        if not isinstance(data, dict):
            raise DataError(path, f"run summary must be a JSON object, got {type(data).__name__}")
        summary = cls(path.parent, data)
        if model is not None:
            summary.expect_model(model, key)
        return summary

    @classmethod
    def new(cls, run_dir: str | os.PathLike, model: str) -> RunSummary:
        """A fresh summary (status "running") for a run about to start in `run_dir`."""
        return cls(Path(run_dir), {"model": model, "status": "running"})

    @classmethod
    def start(cls, run_dir: str | os.PathLike, model: str) -> RunSummary:
        """A new attempt (status "running", `started_at` now) in `run_dir` that keeps whatever
        record the folder already holds: its attempts become `earlier`, and an unreadable
        summary.json is kept aside as `summary.json.unreadable-<n>` (with a warning)."""
        summary = cls.new(run_dir, model)
        summary.update(started_at=datetime.now().astimezone().isoformat())
        if not summary.path.is_file():
            return summary
        try:
            previous = cls.read(summary.path)
        except DataError as err:
            aside = free_name(summary.path, ".unreadable")
            summary.path.replace(aside)
            log.warning("%s; kept aside as %s", err, aside.name)
            return summary
        record = dict(previous.data)
        summary.earlier = [*(record.pop("attempts", None) or []), record]
        return summary

    def record(self) -> dict:
        """What `write()` stores: this attempt on top, the earlier ones under `attempts`; but
        while this attempt is not finished and an earlier one is, the newest finished record
        stays on top (so `decide`, `report` and `sweep` keep finding its metrics)."""
        if not self.earlier:
            return dict(self.data)
        kept = None if self.finished else next(
            (r for r in reversed(self.earlier) if r.get("status") == "finished"), None)
        if kept is None:
            return {**self.data, "attempts": list(self.earlier)}
        others = [r for r in self.earlier if r is not kept]
        return {**kept, "attempts": [*others, self.data]}

    def expect_model(self, model: str | tuple[str, ...], key: str | None = None) -> RunSummary:
        """Raise DataError unless this run's kind is `model` (or one of them)."""
        wanted = (model,) if isinstance(model, str) else tuple(model)
        if self.model not in wanted:
            where = f"{key}: " if key else ""
            raise DataError(self.path, f"{where}this is a {self.model!r} run, expected "
                            f"{' or '.join(repr(w) for w in wanted)}")
        return self

    # ---- fields ----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The summary.json file."""
        return self.run_dir / SUMMARY_NAME

    @property
    def model(self) -> str | None:
        """The model kind ("vqvae", "klvae", "vqdiffusion", "latentdiffusion", "classifier")."""
        return self.data.get("model")

    @property
    def status(self) -> str:
        """running | finished | failed | interrupted (unknown when absent)."""
        return self.data.get("status", "unknown")

    @property
    def finished(self) -> bool:
        """True when the run finished (fit, test and export all done)."""
        return self.status == "finished"

    @property
    def metrics(self) -> dict[str, float]:
        """The final metrics (numbers only)."""
        metrics = self.data.get("metrics") or {}
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    @property
    def signal(self) -> str | None:
        """The signal that stopped an interrupted run ("SIGTERM", "SIGINT"), else None."""
        return self.data.get("signal")

    @property
    def skipped_files(self) -> int:
        """How many data files were skipped as unreadable (`data.on_error=skip`)."""
        return int(self.data.get("skipped_files") or 0)

    @property
    def data_key(self) -> str | None:
        """Fingerprint of the data and split the run used."""
        return self.data.get("data_key")

    @property
    def config(self) -> dict:
        """The run's resolved config ({} when absent), with class paths of earlier versions
        (`LEGACY_TARGETS`) renamed to today's, so an old run folder still rebuilds its data."""
        config = self.data.get("config")
        return _renamed_targets(config) if isinstance(config, dict) else {}

    @property
    def finished_at(self) -> datetime:
        """When the run finished (timezone-aware); the file's modification time if unrecorded."""
        stamp = self.data.get("finished_at")
        if isinstance(stamp, str):
            try:
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                return when if when.tzinfo else when.astimezone()
            except ValueError:
                log.warning("%s: finished_at %r is not an ISO time; using the file time",
                            self.path, stamp)
        return datetime.fromtimestamp(self.path.stat().st_mtime).astimezone()

    def metric(self, key: str) -> float:
        """The float metric `key` (e.g. "test/psnr"); DataError naming the file when absent."""
        metrics = self.data.get("metrics")
        if not isinstance(metrics, dict):
            raise DataError(self.path, "run summary has no 'metrics' object")
        value = metrics.get(key)
        if value is None:
            raise DataError(self.path, f"run summary has no metric {key!r} under 'metrics' "
                            f"(has {sorted(metrics)})")
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise DataError(self.path, f"metric {key!r} is not a number: {value!r}") from err

    def resolve(self, stored: str | None) -> Path | None:
        """A path stored in the summary as an absolute path (relative ones are under the run)."""
        if not stored:
            return None
        path = Path(stored)
        return path if path.is_absolute() else self.run_dir / path

    def checkpoint(self, which: str = "best") -> Path | None:
        """The existing `best` or `last` checkpoint file inside the run folder, else None.
        `best` falls back to `last`, and `last` to `checkpoints/last.ckpt`, when the recorded
        one is missing or lies outside the run folder."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        ckpts = self.data.get("checkpoints") or {}
        order = ["best", "last"] if which == "best" else ["last"]
        candidates = [self.resolve(ckpts.get(k)) for k in order]
        candidates.append(self.run_dir / "checkpoints" / "last.ckpt")
        return next((c for c in candidates
                     if c is not None and c.is_file() and self.contains(c)), None)

    def contains(self, path: str | os.PathLike) -> bool:
        """True when `path` lies inside this run folder (a path recorded by a copied run may
        point into the folder it was copied from: such a path is never used)."""
        root = self.run_dir.resolve()
        resolved = Path(path).resolve()
        return resolved == root or root in resolved.parents

    @property
    def pretrained_dir(self) -> Path | None:
        """The exported diffusers folder (with config.json), else None."""
        for folder in (self.resolve(self.data.get("pretrained_dir")), self.run_dir / "pretrained"):
            if folder is not None and (folder / "config.json").is_file():
                return folder
            if folder is not None and folder.is_dir() and any(folder.glob("*/config.json")):
                return folder  # a pipeline-style export (unet/, scheduler/, vae/)
        return None

    def relative(self, path: str | os.PathLike | None) -> str | None:
        """`path` as it is stored in the summary: relative to the run folder when inside it."""
        return relative_to_run(path, self.run_dir)

    # ---- writing ---------------------------------------------------------------------------
    def update(self, **fields) -> RunSummary:
        """Set top-level fields (e.g. status, error, metrics); returns self."""
        self.data.update(fields)
        return self

    def write(self) -> Path:
        """Write summary.json (`record()`) atomically: a temporary file, then a rename. On an
        OSError (a full disk) the temporary file is removed and the earlier summary.json stays
        as it was; the error is raised."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.record(), indent=2, default=str))
            tmp.replace(self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return self.path


LEGACY_TARGETS = {
    "mdvq.data.formats.GlasgowSource": "mdvq.data.glasgow.GlasgowSource",
    "mdvq.data.formats.IQSource": "mdvq.data.iq.IQSource",
    "mdvq.data.formats.ImageFolderSource": "mdvq.data.images.ImageFolderSource",
    "mdvq.data.formats.ArraySource": "mdvq.data.arrays.ArraySource",
}
"""`_target_` class paths recorded by earlier versions -> where the class lives now."""


def _renamed_targets(node):
    """A copy of `node` (nested dicts/lists) with every legacy `_target_` renamed."""
    if isinstance(node, dict):
        return {k: (LEGACY_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str)
                    else _renamed_targets(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed_targets(v) for v in node]
    return node


def free_name(path: Path, suffix: str) -> Path:
    """`<path><suffix>-<n>` (a file or folder name) for the first n >= 1 that does not exist yet:
    where an earlier file is kept aside instead of overwritten."""
    n = 1
    while path.with_name(f"{path.name}{suffix}-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}{suffix}-{n}")


def find_runs(root: str | os.PathLike | list, model: str | None = None,
              data_key: str | None = None, finished_only: bool = False) -> list[RunSummary]:
    """Every run folder below `root` (a folder or a list of folders), newest first, optionally
    only of `model`, of `data_key` and finished. Unreadable summaries are skipped with a warning."""
    roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    runs = []
    for folder in roots:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in folder.rglob(SUMMARY_NAME):
            try:
                run = RunSummary.read(path)
            except DataError as err:
                log.warning("skipping %s", err)
                continue
            if model is not None and run.model != model:
                continue
            if data_key is not None and run.data_key != data_key:
                continue
            if finished_only and not run.finished:
                continue
            runs.append(run)
    return sorted(runs, key=lambda r: r.finished_at, reverse=True)
