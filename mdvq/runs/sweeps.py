"""Tabulate, rank and plot the jobs of a sweep (a Hydra multirun or an Optuna search).

The library behind ``python -m mdvq.sweep SWEEP_DIR [out=DIR] [sort=test/psnr]``: it reads every `summary.json` below SWEEP_DIR (one per job, written by `mdvq.run`), ranks the jobs
by a declared key and writes `sweep.md` (markdown table, failed jobs with their error),
`sweep.csv` (one row per job, full precision) and `sweep.png` (codebook usage and PSNR against
codebook size K, log-x, one line per codebook technique), then prints the markdown table.
A job folder without a readable summary.json (a killed job, a corrupt file) gives a warning
naming the file and is listed as `missing`. Run folders are written relative to the table's
folder, so a committed table names no path of the machine that made it.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from mdvq.core.errors import DataError
from mdvq.core.summary import RunSummary
from mdvq.utils.metric_keys import TEST_PSNR
from mdvq.utils.tables import markdown_table

SUMMARY = "summary.json"
#: metric columns, as (column, metric name without the split prefix); PSNR in dB, SSIM, usage
#: (fraction of K in [0,1]) and perplexity (exp of the code entropy, 1..K) over an evaluation pass,
#: dead codes = codes not selected in the last N training steps (a count).
METRICS = [("psnr_db", "psnr"), ("ssim", "ssim"), ("usage", "codebook_usage"),
           ("perplexity", "perplexity"), ("dead_codes", "dead_codes")]
#: CSV columns in order (the markdown table shows a subset, see `to_markdown`).
COLUMNS = ["rank", "job", "status", "model", "K", "commitment_cost", "technique",
           *[c for c, _ in METRICS], "usage_ok", "wall_time_s", "objective", "error", "run_dir"]
#: keys ranked smallest first unless told otherwise (losses, dead codes, time).
ASCENDING_HINTS = ("loss", "dead_codes", "wall_time", "fid", "frechet")


class SweepWarning(UserWarning):
    """A job of a sweep that could not be read (the message names the file)."""


def collect_runs(sweep_dir: str | Path, split: str = "test", min_usage: float = 0.8) -> list[dict]:
    """One row (a dict with the `COLUMNS` keys plus `metrics`) per job below `sweep_dir`.

    Jobs are the folders holding a `summary.json` (any depth: multirun jobs, Optuna trials,
    phase-1 sub-runs) and the Hydra job folders (with `.hydra/`) that lack one; unreadable or
    missing summaries warn (SweepWarning, naming the file) and give a row with status
    `missing` (K, commitment cost and technique then come from `.hydra/config.yaml`).
    Metric columns come from `<split>/...` (e.g. `test/psnr`, in dB); `usage_ok` says whether
    the usage exceeds `min_usage` (the decision rule's 0.80). VQ-VAE rows take K and the
    commitment cost from the resolved config and the technique from
    `config.model.codebook.name` (absent = "plain"); KL-VAE rows leave those empty.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {root}")
    job_dirs = {p.parent for p in root.rglob(SUMMARY)}
    # Hydra job folders without any summary.json at or below them (a phase-1 job keeps its
    # summaries in klvae/ and vqvae/ sub-folders)
    job_dirs |= {p.parent for p in root.rglob(".hydra")
                 if p.is_dir() and not any(d == p.parent or p.parent in d.parents for d in job_dirs)}
    rows = []
    for job_dir in sorted(job_dirs, key=lambda p: _natural_key(p.relative_to(root))):
        path = job_dir / SUMMARY
        problem = None
        try:
            summary = RunSummary.read(job_dir).data
        except DataError as err:
            problem = ("no summary.json (job killed or still running?)" if not path.exists()
                       else err.problem)
        if problem:
            warnings.warn(f"{path}: {problem}", SweepWarning, stacklevel=2)
            summary = {"status": "missing", "error": problem, "config": _hydra_config(job_dir)}
        rows.append(_row(summary, job_dir, root, split, min_usage))
    return rows


def _hydra_config(job_dir: Path) -> dict:
    """The job's composed config as Hydra saved it (`.hydra/config.yaml`, unresolved), or {}."""
    try:
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _natural_key(rel: Path) -> list:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in rel.parts]


def _row(summary: dict, job_dir: Path, root: Path, split: str, min_usage: float) -> dict:
    config = summary.get("config") or {}
    model_cfg = config.get("model") or {}
    is_vq = "num_vq_embeddings" in model_cfg or summary.get("model") == "vqvae"
    codebook = model_cfg.get("codebook")
    technique = codebook.get("name") if isinstance(codebook, dict) else codebook
    metrics = {k: v for k, v in (summary.get("metrics") or {}).items() if isinstance(v, (int, float))}
    row = {
        "job": job_dir.relative_to(root).as_posix(),
        "status": summary.get("status", "unknown"),
        "model": summary.get("model") or _model_from_target(model_cfg),
        "K": model_cfg.get("num_vq_embeddings") if is_vq else None,
        "commitment_cost": model_cfg.get("commitment_cost") if is_vq else None,
        "technique": (technique or "plain") if is_vq else None,
        "wall_time_s": summary.get("wall_time_s"),
        "started_at": summary.get("started_at"),
        "error": summary.get("error"),
        "run_dir": str(job_dir.resolve()),
        "metrics": metrics,
    }
    for column, name in METRICS:
        row[column] = metrics.get(f"{split}/{name}")
    row["usage_ok"] = None if row["usage"] is None or not is_vq else row["usage"] > min_usage
    return row


def _model_from_target(model_cfg: dict) -> str | None:
    target = model_cfg.get("_target_")
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else None


def value_of(row: dict, key: str):
    """The value `key` names in a row: a metric such as `val/psnr` or a column such as `K`."""
    if key in row.get("metrics", {}):
        return row["metrics"][key]
    return row.get(key)


def rank(rows: list[dict], key: str = TEST_PSNR, descending: bool | None = None) -> list[dict]:
    """Rows sorted by `key` (a metric name or a column) with `rank` (1 = best) and `objective`
    set; failed or missing jobs and rows without a finite value come last, unranked.

    `descending=None` decides from the key: ascending for losses, dead codes, wall time and
    Frechet distances, descending (higher is better) otherwise.
    """
    if descending is None:
        descending = not any(hint in key for hint in ASCENDING_HINTS)
    if rows and not any(_finite(value_of(r, key)) for r in rows):
        known = sorted({k for r in rows for k in r.get("metrics", {})} | set(COLUMNS))
        warnings.warn(f"no job has a value for sort key {key!r}; known keys: {known}",
                      SweepWarning, stacklevel=2)
    good = [r for r in rows if r["status"] == "finished" and _finite(value_of(r, key))]
    bad = [r for r in rows if not (r["status"] == "finished" and _finite(value_of(r, key)))]
    good.sort(key=lambda r: float(value_of(r, key)), reverse=descending)
    out = []
    for i, r in enumerate(good + bad):
        r = dict(r, objective=value_of(r, key))
        r["rank"] = i + 1 if i < len(good) else None
        out.append(r)
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value, digits: int | None = None) -> str:
    """A table cell: blank for None, yes/no for booleans, numbers with `digits` decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if digits is not None and isinstance(value, (int, float)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def to_markdown(rows: list[dict], key: str = TEST_PSNR, split: str = "test",
                min_usage: float = 0.8) -> str:
    """The ranked markdown table (rows from `rank`), then the failed/missing jobs with errors."""
    head = ["rank", "job", "model", "K", "commitment", "technique", f"{split} PSNR [dB]",
            f"{split} SSIM", f"{split} usage", f"{split} perplexity", f"{split} dead codes",
            f"usage > {min_usage:g}", "wall time [s]", "status"]
    cells = [[_fmt(c) for c in (
        r.get("rank"), r["job"], r["model"], r["K"], _fmt(r["commitment_cost"], 3),
        r["technique"], _fmt(r["psnr_db"], 2), _fmt(r["ssim"], 3), _fmt(r["usage"], 3),
        _fmt(r["perplexity"], 1), _fmt(r["dead_codes"], 0), r["usage_ok"],
        _fmt(r["wall_time_s"], 1), r["status"])] for r in rows]
    lines = [f"Jobs ranked by `{key}` ({len(rows)} jobs).", "", markdown_table(head, cells)]
    failed = [r for r in rows if r["status"] != "finished"]
    if failed:
        lines += ["", f"Failed or missing jobs ({len(failed)}):", ""]
        for r in failed:
            what = ", ".join(f"{n}={r[c]}" for n, c in
                             (("K", "K"), ("commitment", "commitment_cost"), ("technique", "technique"))
                             if r[c] is not None)
            unknown = (f"no final status since it started at {r.get('started_at') or '?'} "
                       "(killed, or still running)" if r["status"] == "running"
                       else "no error recorded")
            error = (r["error"] or unknown).replace("\n", " ")
            lines.append(f"- job {r['job']} ({r['status']}{'; ' + what if what else ''}): {error}")
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out_dir: str | Path, key: str = TEST_PSNR,
                split: str = "test", min_usage: float = 0.8) -> tuple[Path, Path]:
    """Write `sweep.md` (from `to_markdown`) and `sweep.csv` (every `COLUMNS` field, full
    precision) into `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "sweep.md"
    md.write_text(to_markdown(rows, key, split, min_usage))
    path = out / "sweep.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            r = {**r, "run_dir": _relative(r.get("run_dir"), out)}
            writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in COLUMNS})
    return md, path


def _relative(run_dir: str | None, table_dir: Path) -> str | None:
    """`run_dir` relative to the table's folder (POSIX)."""
    if not run_dir:
        return run_dir
    return Path(os.path.relpath(Path(run_dir).resolve(), table_dir.resolve())).as_posix()


def plot(rows: list[dict], path: str | Path, split: str = "test", min_usage: float = 0.8,
         psnr_margin: float = 1.10) -> Path:
    """`sweep.png`: codebook usage and PSNR [dB] against K (log-x), one line per technique.

    Each point is the mean over the technique's finished jobs at that K (other settings, e.g.
    the commitment cost, vary), the bar spans their min..max. The usage panel marks the
    decision rule's threshold; the PSNR panel marks the best KL-VAE job of the sweep, if any,
    and `psnr_margin` times its PSNR (the rule's PSNR bar).
    """
    done = [r for r in rows if r["status"] == "finished"]
    vq = [r for r in done if r["K"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    panels = ((axes[0], "usage", f"{split} codebook usage (fraction of K)"),
              (axes[1], "psnr_db", f"{split} PSNR [dB]"))
    for technique in sorted({r["technique"] for r in vq}):
        mine = [r for r in vq if r["technique"] == technique]
        for ax, column, _ in panels:
            ks = sorted({r["K"] for r in mine if _finite(r[column])})
            if not ks:
                continue
            groups = [[r[column] for r in mine if r["K"] == k and _finite(r[column])] for k in ks]
            mean = [sum(g) / len(g) for g in groups]
            err = [[m - min(g) for m, g in zip(mean, groups)], [max(g) - m for m, g in zip(mean, groups)]]
            ax.errorbar(ks, mean, yerr=err, marker="o", capsize=3, label=technique)
    axes[0].axhline(min_usage, color="k", ls=":", lw=1, label=f"rule: usage > {min_usage:g}")
    kl = [r["psnr_db"] for r in done if r["model"] == "klvae" and _finite(r["psnr_db"])]
    if kl:
        best = max(kl)
        axes[1].axhline(best, color="grey", ls="--", lw=1, label=f"KL-VAE {best:.2f} dB")
        axes[1].axhline(psnr_margin * best, color="k", ls=":", lw=1,
                        label=f"rule: {psnr_margin:g} x KL-VAE")
    ks = sorted({r["K"] for r in vq})
    for ax, _, ylabel in panels:
        ax.set_xscale("log", base=2)
        if ks:
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("codebook size K")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("mean over each technique's finished jobs at each K (bars: min..max)"
                 if vq else "no finished VQ-VAE job", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarise(sweep_dir: str | Path, out_dir: str | Path | None = None, key: str = TEST_PSNR,
              split: str | None = None, descending: bool | None = None,
              min_usage: float = 0.8) -> tuple[list[dict], str]:
    """collect_runs + rank + write_table + plot; returns the ranked rows and the markdown.

    `split` (test | val) picks the metric columns; None takes the sort key's prefix when it is
    a split (`val/psnr` -> val), else test. Outputs go to `out_dir` (default `sweep_dir`).
    """
    if split is None:
        split = key.split("/", 1)[0] if key.split("/", 1)[0] in ("train", "val", "test") else "test"
    rows = rank(collect_runs(sweep_dir, split, min_usage), key, descending)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir)
    md, _ = write_table(rows, out, key, split, min_usage)
    plot(rows, out / "sweep.png", split, min_usage)
    return rows, md.read_text()
