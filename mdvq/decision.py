"""The phase-1 decision rule (DESIGN.md section 4): continue with the VQ-VAE or choose the KL-VAE.

Continue the VQ-VAE route only if `PSNR_vq > (1 + psnr_margin) * PSNR_kl` and
`usage_vq > usage_threshold` (defaults 10 % and 0.80), both on the same held-out split;
otherwise (also when the two are comparable) choose the KL-VAE. Comparisons are strict: a
value equal to its threshold (to 1e-9 relative) does not pass. Plain Python, no torch, so
the `mdvq.decide` command line starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from datetime import datetime
from pathlib import Path

from mdvq.data.errors import DataError

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
DECISION_NAME = "decision.json"
PSNR_KEY = "test/psnr"
USAGE_KEY = "test/codebook_usage"


@dataclasses.dataclass(frozen=True)
class Decision:
    """Outcome of the rule: the figures compared, the thresholds, the verdict and why.

    psnr_vq, psnr_kl in dB (test split, [0,1] images); usage_vq a fraction in [0,1];
    verdict "vqvae" (continue the VQ route) or "klvae". vq_run/kl_run are the run folders the
    figures came from and data_key the data + split they were measured on, when known.
    """

    verdict: str
    psnr_vq: float
    usage_vq: float
    psnr_kl: float
    psnr_margin: float
    usage_threshold: float
    reasons: tuple[str, ...]
    vq_run: str | None = None
    kl_run: str | None = None
    data_key: str | None = None

    @property
    def continue_vq(self) -> bool:
        """True when the VQ-VAE route continues."""
        return self.verdict == "vqvae"

    @property
    def psnr_required(self) -> float:
        """The VQ PSNR (dB) to beat: `(1 + psnr_margin) * psnr_kl`."""
        return (1.0 + self.psnr_margin) * self.psnr_kl

    def to_dict(self) -> dict:
        """JSON-ready dict of every field plus `continue_vq`, `psnr_required` and the rule."""
        out = dataclasses.asdict(self)
        out["reasons"] = list(self.reasons)
        out.update(
            continue_vq=self.continue_vq,
            psnr_required=self.psnr_required,
            rule=(
                f"continue VQ-VAE iff PSNR_vq > (1 + {self.psnr_margin:g}) * PSNR_kl "
                f"and usage_vq > {self.usage_threshold:g}; otherwise KL-VAE"
            ),
        )
        return out


def _exceeds(value: float, threshold: float) -> bool:
    """Strictly above `threshold`; equal up to float rounding (1e-9 relative) does not count."""
    return value > threshold and not math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def decide(
    psnr_vq: float,
    usage_vq: float,
    psnr_kl: float,
    psnr_margin: float = 0.10,
    usage_threshold: float = 0.80,
) -> Decision:
    """Apply the rule to the VQ-VAE's test PSNR (dB) and usage [0,1] and the KL-VAE's PSNR (dB)."""
    for name, value in (("psnr_vq", psnr_vq), ("usage_vq", usage_vq), ("psnr_kl", psnr_kl)):
        if value is None or math.isnan(float(value)):
            raise ValueError(f"{name} must be a number, got {value}")
    if not 0.0 <= usage_vq <= 1.0:
        raise ValueError(f"usage_vq is a fraction in [0,1], got {usage_vq}")
    if not (psnr_kl > 0 and math.isfinite(psnr_kl)):
        raise ValueError(f"psnr_kl must be a finite PSNR > 0 dB, got {psnr_kl}")
    if not psnr_margin >= 0:
        raise ValueError(f"psnr_margin must be >= 0 (0.10 = 10 %), got {psnr_margin}")
    if not 0.0 <= usage_threshold <= 1.0:
        raise ValueError(f"usage_threshold is a fraction in [0,1], got {usage_threshold}")
    psnr_vq, usage_vq, psnr_kl = float(psnr_vq), float(usage_vq), float(psnr_kl)
    required = (1.0 + psnr_margin) * psnr_kl
    psnr_ok = _exceeds(psnr_vq, required)
    usage_ok = _exceeds(usage_vq, usage_threshold)
    reasons = (
        (
            f"PSNR: VQ-VAE {psnr_vq:.2f} dB {'>' if psnr_ok else 'is not >'} "
            f"(1 + {psnr_margin:g}) x KL-VAE {psnr_kl:.2f} dB = {required:.2f} dB"
        ),
        f"codebook usage: {usage_vq:.3f} {'>' if usage_ok else 'is not >'} {usage_threshold:g}",
        "both conditions hold: continue the VQ-VAE route"
        if psnr_ok and usage_ok
        else "the rule is not met: choose the KL-VAE",
    )
    return Decision(
        verdict="vqvae" if psnr_ok and usage_ok else "klvae",
        psnr_vq=psnr_vq,
        usage_vq=usage_vq,
        psnr_kl=psnr_kl,
        psnr_margin=float(psnr_margin),
        usage_threshold=float(usage_threshold),
        reasons=reasons,
    )


def format_decision(decision: Decision) -> str:
    """A few lines for people: the figures, the thresholds and the verdict."""
    lines = [
        f"decision: {decision.verdict}" + (" (continue VQ-VAE)" if decision.continue_vq else "")
    ]
    lines += [f"  - {r}" for r in decision.reasons]
    if decision.vq_run or decision.kl_run:
        lines.append(f"  VQ run: {decision.vq_run}\n  KL run: {decision.kl_run}")
    return "\n".join(lines)


def summary_path(run_dir_or_file: str | os.PathLike) -> Path:
    """`<run>/summary.json` for a run folder, or the path itself when it names a file."""
    path = Path(run_dir_or_file)
    return path / SUMMARY_NAME if path.is_dir() else path


def load_summary(run_dir_or_file: str | os.PathLike) -> dict:
    """Read a run's summary.json (from its run folder or the file itself).

    Raises DataError naming the file when it is missing, not JSON or not a JSON object.
    """
    path = summary_path(run_dir_or_file)
    if not path.is_file():
        raise DataError(path, "no run summary here (a run writes summary.json after fit + test)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, f"unreadable run summary ({err})") from err
    if not isinstance(summary, dict):
        raise DataError(path, f"run summary must be a JSON object, got {type(summary).__name__}")
    return summary


def summary_metric(summary: dict, key: str, path: str | os.PathLike) -> float:
    """The float `summary["metrics"][key]`; DataError naming `path` and `key` when absent."""
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict):
        raise DataError(path, "run summary has no 'metrics' object")
    value = metrics.get(key)
    if value is None:
        raise DataError(
            path, f"run summary has no metric {key!r} under 'metrics' (has {sorted(metrics)})"
        )
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise DataError(path, f"metric {key!r} is not a number: {value!r}") from err


def load_run_summary(run_dir_or_file: str | os.PathLike, model: str) -> tuple[dict, Path]:
    """A run's summary and its path, checked to come from a `model` ("vqvae"/"klvae") run."""
    path = summary_path(run_dir_or_file)
    summary = load_summary(path)
    if summary.get("model") != model:
        raise DataError(
            path,
            f"run summary has model {summary.get('model')!r}, expected {model!r}"
            " (are the VQ-VAE and KL-VAE runs swapped?)",
        )
    return summary, path


def run_dir_of(summary: dict, path: Path) -> str:
    """The run folder a summary describes: its `run_dir`, else the folder holding the file."""
    return str(summary.get("run_dir") or path.parent)


def decide_runs(
    vq_run: str | os.PathLike,
    kl_run: str | os.PathLike,
    psnr_margin: float = 0.10,
    usage_threshold: float = 0.80,
) -> Decision:
    """Apply the rule to two finished runs (folders or summary.json files).

    Reads `test/psnr` and `test/codebook_usage` of the VQ-VAE run and `test/psnr` of the
    KL-VAE run; warns when their `data_key` (data + split) differ.
    """
    vq, vq_path = load_run_summary(vq_run, "vqvae")
    kl, kl_path = load_run_summary(kl_run, "klvae")
    if vq.get("data_key") != kl.get("data_key"):
        log.warning(
            "the runs used different data or splits (data_key %r in %s, %r in %s): "
            "the comparison is not on the same held-out split",
            vq.get("data_key"),
            vq_path,
            kl.get("data_key"),
            kl_path,
        )
    decision = decide(
        summary_metric(vq, PSNR_KEY, vq_path),
        summary_metric(vq, USAGE_KEY, vq_path),
        summary_metric(kl, PSNR_KEY, kl_path),
        psnr_margin=psnr_margin,
        usage_threshold=usage_threshold,
    )
    return dataclasses.replace(
        decision,
        vq_run=run_dir_of(vq, vq_path),
        kl_run=run_dir_of(kl, kl_path),
        data_key=vq.get("data_key"),
    )


def _finished_at(summary: dict, path: Path) -> datetime:
    """When the run finished (timezone-aware); the file's modification time when not recorded."""
    stamp = summary.get("finished_at")
    if isinstance(stamp, str):
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            return when if when.tzinfo else when.astimezone()
        except ValueError:
            log.warning("%s: finished_at %r is not an ISO time; using the file time", path, stamp)
    return datetime.fromtimestamp(path.stat().st_mtime).astimezone()


def search_roots(search_root) -> list[str] | None:
    """A folder or an iterable of folders (e.g. a Hydra ListConfig) as a list of str; None stays."""
    if search_root is None:
        return None
    if isinstance(search_root, (str, os.PathLike)):
        return [os.fspath(search_root)]
    return [os.fspath(root) for root in search_root]


def find_latest_baseline(search_root, data_key: str, model: str = "klvae") -> Path | None:
    """The newest (by `finished_at`) summary.json under `search_root` with `model` and `data_key`.

    `search_root` is a folder or a list of folders. Returns None when no run matches;
    unreadable summaries are skipped with a warning.
    """
    best: tuple[datetime, Path] | None = None
    for root in search_roots(search_root):
        root = Path(root)
        if not root.is_dir():
            log.debug("baseline search root %s does not exist", root)
            continue
        for path in root.rglob(SUMMARY_NAME):
            try:
                summary = load_summary(path)
            except DataError as err:
                log.warning("skipping %s", err)
                continue
            if summary.get("model") != model or summary.get("data_key") != data_key:
                continue
            when = _finished_at(summary, path)
            if best is None or when > best[0]:
                best = (when, path)
    return None if best is None else best[1]


def write_decision(decision: Decision, path: str | os.PathLike) -> Path:
    """Write `decision.to_dict()` as JSON to `path` (a folder gets `decision.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / DECISION_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(decision.to_dict(), indent=2) + "\n")
    return path
