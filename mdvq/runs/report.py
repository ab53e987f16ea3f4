"""A self-contained HTML report of run, experiment and sweep folders (no W&B, no network).

The library behind ``python -m mdvq.report RUN_OR_SWEEP_DIR... out=report.html``: every run
folder (a `summary.json`, read with `RunSummary`) found below the given folders gets a section
with its config highlights, final metrics, learning curves (from the Lightning CSV log), the
latest reconstruction / sample grids and the codebook-usage figure; then the tables across
runs: the runs compared (`mdvq.runs.sweeps`), every phase-1 decision (`decision.json`), every
routes table (`routes.json`: the verdict, the rows in two tables that fit a 1400 px page
(reconstruction and codebook; generation and cost), which factor explains the gap, the priors'
budget, per-class accuracy and the judge's vote shares per route, the steps each stage trained,
the data settings), every generation evaluation (`metrics.json`) and every samples folder's grid,
beside real examples: the routes folder's `real_examples.png`, else those of a `task=preview`
folder when there is one (listed as a data preview, not a run). Pictures are embedded as base64
PNGs, so the one file can be mailed, attached to an issue or opened offline.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from mdvq.core.errors import DataError
from mdvq.core.summary import RunSummary, find_runs
from mdvq.utils import metric_keys

log = logging.getLogger(__name__)

#: config keys shown per run (dotted paths into the resolved config), with their labels.
HIGHLIGHTS = [("model.num_vq_embeddings", "K"), ("model.commitment_cost", "commitment"),
              ("model.codebook.name", "codebook"), ("model.latent_channels", "latent channels"),
              ("model.optimizer.lr", "learning rate"), ("model.num_layers", "prior layers"),
              ("trainer.max_epochs", "max epochs"), ("data.datamodule.batch_size", "batch size"),
              ("data.image_size", "image size (F, T)"), ("seed", "seed")]
#: metrics plotted as learning curves when logged (PSNR in dB, usage a fraction of K).
CURVES = [("loss", [metric_keys.TRAIN_LOSS_EPOCH, metric_keys.TRAIN_LOSS, "val/loss"]),
          ("PSNR [dB]", [metric_keys.VAL_PSNR]),
          ("codebook usage (fraction of K)", [metric_keys.VAL_CODEBOOK_USAGE]),
          ("variational bound [nats/token]", [metric_keys.VAL_VB]),
          ("accuracy", [metric_keys.VAL_ACC])]
#: figure kinds of `figures/` shown per run, newest validation epoch and the test figure.
FIGURES = [("spectrograms", "reconstructions"), ("samples", "samples"),
           ("codebook", "codebook usage")]
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:3px 8px;
font-size:13px;text-align:left}th{background:#eee}table.routes th{max-width:9em;
overflow-wrap:break-word}img{max-width:100%;border:1px solid #ddd}
section.run{border-top:2px solid #888;margin-top:2em}figure{display:inline-block;margin:.5em}
figcaption{font-size:12px;color:#555}.pair{display:flex;gap:1em;align-items:flex-start}
.pair figure{flex:1 1 0;min-width:0}.bad{color:#a00}.good{color:#070}code{font-size:12px}
"""


# ---- small pieces ------------------------------------------------------------------------------
def png_data_uri(data: bytes) -> str:
    """`data:image/png;base64,...` of PNG bytes (checked by their signature)."""
    if not data.startswith(b"\x89PNG"):
        raise ValueError("not a PNG (missing the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img_tag(png: bytes, alt: str, caption: str | None = None) -> str:
    """An `<img>` holding `png` inline, in a `<figure>` with a caption."""
    tag = f'<img src="{png_data_uri(png)}" alt="{html.escape(alt)}">'
    return f"<figure>{tag}<figcaption>{html.escape(caption or alt)}</figcaption></figure>"


def fmt(value, digits: int = 4) -> str:
    """A table cell: numbers to `digits` significant digits, None blank, the rest as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence], css: str = "") -> str:
    """An HTML table; cells are escaped text (numbers via `fmt`)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def dotted(config: dict, key: str):
    """The value at a dotted `key` of a nested dict, else None."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_metrics_csv(run: RunSummary) -> dict[str, list[tuple[float, float]]]:
    """The epoch-level curves of a run's Lightning CSV log(s) (`csv/version_*/metrics.csv`,
    versions in order, so a resumed run continues): {metric: [(epoch, value), ...]}."""
    curves: dict[str, list[tuple[float, float]]] = {}
    versions = sorted((run.run_dir / "csv").glob("version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[-1]) if
                      p.parent.name.split("_")[-1].isdigit() else 0)
    for path in versions:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                epoch = row.get("epoch")
                if not epoch:
                    continue
                for key, value in row.items():
                    if key in ("epoch", "step") or value in ("", None):
                        continue
                    try:
                        curves.setdefault(key, []).append((float(epoch), float(value)))
                    except ValueError:
                        raise DataError(path, f"column {key!r}: {value!r} is not a number") from None
    return curves


def curves_png(curves: dict[str, list[tuple[float, float]]], title: str) -> bytes | None:
    """One panel per `CURVES` entry logged, value against epoch; PNG bytes, or None."""
    panels = [(label, [k for k in keys if k in curves]) for label, keys in CURVES]
    panels = [(label, keys) for label, keys in panels if keys]
    if not panels:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(panels), 2.8), layout="constrained")
    for ax, (label, keys) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key in keys:
            by_epoch: dict[float, list[float]] = {}
            for epoch, value in curves[key]:
                by_epoch.setdefault(epoch, []).append(value)
            xs = sorted(by_epoch)
            ax.plot(xs, [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs], marker="o", ms=3,
                    label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def latest_figures(run: RunSummary) -> list[tuple[Path, str]]:
    """(PNG, caption) of a run's figures: per kind the last validation epoch and the test one."""
    out = []
    folder = run.run_dir / "figures"
    for kind, label in FIGURES:
        vals = sorted(folder.glob(f"{kind}_val_epoch*.png"))
        if vals:
            out.append((vals[-1], f"{label}, {vals[-1].stem.rsplit('_', 1)[-1]} (validation)"))
        test = folder / f"{kind}_test.png"
        if test.is_file():
            out.append((test, f"{label}, test"))
    return out


# ---- what the folders hold -----------------------------------------------------------------
def discover(folders: Sequence[str | os.PathLike]) -> dict:
    """Everything reportable below `folders`: runs (RunSummary), decision.json, routes.json,
    metrics.json (generation evaluations) and samples folders (meta.json + samples.npy), and
    "unreadable": (summary.json path, why) for every run summary that could not be read (not
    JSON, with the parser's line and column; not an object). A folder that does not exist
    raises FileNotFoundError naming it."""
    roots = [Path(f) for f in folders]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"not a folder: {root}")

    def below(name: str) -> list[Path]:
        return sorted({p.resolve() for root in roots for p in root.rglob(name)})

    runs = {r.run_dir.resolve(): r for r in find_runs(roots)}
    unreadable = []
    for path in below("summary.json"):
        if path.parent not in runs:
            try:
                RunSummary.read(path)
            except DataError as err:
                unreadable.append((path, err.problem))
    return {
        "runs": sorted(runs.values(), key=lambda r: str(r.run_dir)),
        "unreadable": unreadable,
        "decisions": below("decision.json"),
        "routes": below("routes.json"),
        "evaluations": [p for p in below("metrics.json") if (p.parent / "metrics.md").is_file()],
        "samples": [p.parent for p in below("meta.json") if (p.parent / "samples.npy").is_file()],
        # `task=preview` folders: real examples (one per class), not runs (no summary.json)
        "previews": [p for p in below("preview.png") if not (p.parent / "summary.json").is_file()],
    }


def _label(path: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            return (Path(root.name) / path.resolve().relative_to(root.resolve())).as_posix()
        except ValueError:
            continue
    return str(path)


def run_section(run: RunSummary, label: str) -> str:
    """The HTML section of one run."""
    status = run.status
    css = "good" if run.finished else "bad"
    parts = [f'<section class="run"><h2>{html.escape(label)}</h2>',
             f'<p>model <b>{html.escape(str(run.model))}</b>, status '
             f'<b class="{css}">{html.escape(status)}</b>, data '
             f'<code>{html.escape(str(run.data_key))}</code>'
             + (f", wall time {fmt(run.data.get('wall_time_s'))} s" if run.data.get("wall_time_s")
                else "")
             + (f", trained {fmt(run.data.get('trained_steps'))} optimiser steps"
                if run.data.get("trained_steps") is not None else "") + "</p>"]
    if run.data.get("error"):
        parts.append(f'<p class="bad">error: {html.escape(str(run.data["error"]))}</p>')
    config = run.config
    seen, highlights = set(), []
    for key, name in HIGHLIGHTS:
        value = dotted(config, key)
        if value is not None and name not in seen:
            seen.add(name)
            highlights.append((name, value, key))
    if highlights:
        parts.append("<h3>Config highlights</h3>" + table(["setting", "value", "config key"],
                                                         highlights, "config"))
    metrics = run.metrics
    final = sorted(k for k in metrics if k.startswith(("test/", "val/")))
    if final:
        parts.append("<h3>Final metrics</h3>" + table(["metric", "value"],
                                                     [(k, metrics[k]) for k in final], "metrics"))
    try:
        png = curves_png(read_metrics_csv(run), f"{label}: learning curves")
    except DataError as err:
        log.warning("%s", err)
        png = None
    if png:
        parts.append("<h3>Learning curves</h3>" + img_tag(png, f"{label} learning curves"))
    figures = latest_figures(run)
    if figures:
        parts.append("<h3>Figures</h3>" + "".join(img_tag(p.read_bytes(), f"{label} {c}", c)
                                                  for p, c in figures))
    return "\n".join(parts) + "</section>"


def runs_table(runs: Sequence[RunSummary], labels: dict) -> str:
    """One row per run: model, status, the main test metrics and the data key."""
    keys = [metric_keys.TEST_PSNR, metric_keys.TEST_SSIM, metric_keys.TEST_CODEBOOK_USAGE,
            "test/perplexity", "test/vb", metric_keys.TEST_ACC]
    keys = [k for k in keys if any(k in r.metrics for r in runs)]
    rows = [(labels[r.run_dir], r.model, r.status, *(r.metrics.get(k) for k in keys), r.data_key)
            for r in runs]
    return table(["run", "model", "status", *keys, "data key"], rows, "runs")


def decision_table(paths: Sequence[Path], roots: Sequence[Path]) -> str:
    """One row per `decision.json`: verdict, PSNR (dB) of both routes, the PSNR to beat, usage."""
    from mdvq.evaluation.decision import read_decision

    rows = []
    for path in paths:
        try:
            d = read_decision(path)
        except ValueError as err:
            log.warning("%s", err)
            continue
        if d.get("data_key_forced"):  # decided with force=true on different data
            data = (f"different data, decided with force=true: VQ {d.get('vq_data_key')}, "
                    f"KL {d.get('kl_data_key')}")
        else:
            data = d.get("data_key")
        rows.append((_label(path.parent, roots), d["verdict"], d.get("psnr_vq"), d.get("psnr_kl"),
                     d.get("psnr_required"), d.get("usage_vq"), d.get("usage_threshold"), data,
                     "; ".join(d.get("reasons") or [])))
    return table(["experiment", "verdict", "PSNR VQ [dB]", "PSNR KL [dB]", "PSNR to beat [dB]",
                  "usage VQ", "usage threshold", "data key", "reasons"], rows, "decisions")


#: readable headers of the routes table's keys (units in brackets); a key not named here is
#: shown with its underscores as spaces. The rows are shown in two tables, as in routes.md: the
#: row (its latent + prior) with the reconstruction and codebook of its autoencoder
#: (`_RECONSTRUCTION`), then generation and cost (every other key), so each fits a 1400 px page.
ROUTE_HEADERS = {
    "route": "route", "label": "latent + prior", "latent": "latent",
    "prior_family": "prior family", "sampling_options": "sampling options",
    "autoencoder": "autoencoder", "prior": "prior",
    "test_psnr_db": "test PSNR [dB]", "test_ssim": "test SSIM",
    "codebook_usage": "codebook usage", "conditional_accuracy": "conditional accuracy",
    "top_vote_share": "judge's top vote share",
    "fd_samples_test": "FD samples/test", "fd_floor": "FD floor (train/test)",
    "fd_ratio_to_floor": "FD / floor", "tstr_acc": "TSTR acc.", "trtr_acc": "TRTR acc.",
    "tstr_trtr_ratio": "TSTR / TRTR",
    "samples_per_second": "samples/s", "sampling_steps": "sampling steps",
    "guidance": "guidance", "autoencoder_parameters": "autoencoder params",
    "prior_parameters": "prior params", "autoencoder_wall_s": "autoencoder wall [s]",
    "prior_wall_s": "prior wall [s]", "autoencoder_steps": "autoencoder optimiser steps",
    "prior_steps": "prior optimiser steps",
    "physics_median_ratio": "physics: median W1 ratio to floor",
    "physics_pass_rate": "physics: sifting pass rate",
    "token_entropy": "token entropy [nats]", "masked_accuracy": "masked-token acc.",
}
_RECONSTRUCTION = ("route", "label", "autoencoder", "prior", "sampling_options", "test_psnr_db",
                   "test_ssim", "codebook_usage", "token_entropy", "autoencoder_parameters",
                   "autoencoder_steps",
                   "autoencoder_wall_s")
#: row keys the label already says (kept in routes.json for the factor paragraph, not shown)
_NOT_SHOWN = ("latent", "prior_family")


def _header(key: str) -> str:
    return ROUTE_HEADERS.get(key, key.replace("_", " "))


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _per_class(folder: Path, rows: Sequence[dict]) -> str:
    """Per class and route: the conditional accuracy (fraction of the samples asked for the
    class that the judge puts in it) and the judge's vote share (fraction of all of a route's
    samples it assigns to the class; far above 1/K: the prior collapsed onto that class), from
    `eval_<route>/metrics.json` beside `routes.json`."""
    found = {}
    for row in rows:
        route = row.get("route")
        metrics = _read_json(folder / f"eval_{route}" / "metrics.json")
        accuracy = (metrics.get("conditional_accuracy") or {}).get("per_class")
        share = ((metrics.get("judge") or {}).get("samples") or {}).get("predicted_share") or {}
        if isinstance(accuracy, dict):
            found[route] = (accuracy, share)
    if not found:
        return ""
    classes = list(dict.fromkeys(c for acc, _ in found.values() for c in acc))
    header = ["class", *(f"{r.upper()} accuracy" for r in found),
              *(f"{r.upper()} vote share" for r in found)]
    cells = [[c, *(acc.get(c) for acc, _ in found.values()),
              *(share.get(c) for _, share in found.values())] for c in classes]
    return ("<p>Per class: conditional accuracy, and the share of each route's samples the "
            "judge votes for the class (1/K when balanced).</p>" + table(header, cells, "routes"))


def _stages(folder: Path, stages: dict) -> str:
    """One row per stage of a routes run: its folder, whether it was reused, the optimiser steps
    it trained (`trained_steps` of its summary when recorded, else its `trainer.max_epochs`), its
    wall time in s; then the data settings of the first stage (data set, image size, classes)."""
    rows, data = [], None
    for name, stage in stages.items():
        run_dir = Path(stage.get("dir") or name)
        summary = _read_json((run_dir if run_dir.is_absolute() else folder / run_dir)
                             / "summary.json")
        config = summary.get("config") or {}
        steps = summary.get("trained_steps")
        trained = (f"{steps} steps" if steps is not None else
                   f"max epochs {dotted(config, 'trainer.max_epochs')}" if config else "")
        rows.append((name, str(stage.get("dir") or name), stage.get("reused"), trained,
                     summary.get("wall_time_s")))
        if data is None and config:
            data = [("data key", summary.get("data_key")),
                    ("image size (F, T)", dotted(config, "data.image_size")),
                    ("classes", (summary.get("data") or {}).get("class_names")),
                    ("examples per split", ", ".join(
                        f"{k} {v}" for k, v in
                        ((summary.get("data") or {}).get("split_counts") or {}).items()) or None)]
    parts = [table(["stage", "folder", "reused", "trained", "wall time [s]"], rows, "routes")]
    if data:
        parts.append(table(["data setting", "value"], [d for d in data if d[1] is not None],
                           "routes"))
    return "".join(parts)


def routes_table(path: Path, label: str) -> str:
    """A `routes.json`: the phase-2 verdict (`routes_verdict`), then its rows as two tables
    with readable headers (reconstruction and codebook; generation and cost), which factor
    explains the gap, the priors' budget, the per-class accuracy and vote shares per route, the
    stages (steps trained) and the data settings."""
    from mdvq.runs.experiments import (
        factor_paragraph,
        priors_budget_line,
        read_routes,
        routes_verdict,
    )

    routes = read_routes(path)
    rows = routes["rows"]
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in _NOT_SHOWN))
    first = [c for c in columns if c in _RECONSTRUCTION]
    second = ["route", *(c for c in columns if c not in _RECONSTRUCTION)]
    if len(first) <= 1:  # rows of unknown keys only: one table
        first, second = columns, []
    parts = [f"<h3>{html.escape(label)}</h3>",
             f"<p class='verdict'><b>Verdict.</b> {html.escape(routes_verdict(routes))}</p>",
             "<h4>Reconstruction and codebook</h4>",
             table([_header(c) for c in first], [[r.get(c) for c in first] for r in rows],
                   "routes")]
    if len(second) > 1:
        parts.append("<h4>Generation and cost</h4>" + table(
            [_header(c) for c in second], [[r.get(c) for c in second] for r in rows], "routes"))
    if any("latent" in r for r in rows):
        text = factor_paragraph(routes).replace("**Which factor explains the gap.**", "").strip()
        parts.append(f"<p class='factor'><b>Which factor explains the gap.</b> "
                     f"{html.escape(text)}</p>")
    if routes.get("prior_budget") is not None:
        parts.append(f"<p>{html.escape(priors_budget_line(routes))}</p>")
    parts.append(_per_class(path.parent, rows))
    if isinstance(routes.get("stages"), dict):
        parts.append(_stages(path.parent, routes["stages"]))
    return "".join(parts)


def evaluation_table(paths: Sequence[Path], roots: Sequence[Path]) -> str:
    """One row per generation evaluation (`metrics.json` of `mdvq.evaluate`)."""
    # imported here, not at the top: it pulls in training (and its headless plotting backend),
    # which a notebook importing this module must not get
    from mdvq.evaluation.generation import read_metrics

    keys = ["conditional_accuracy", "chance_acc", "fd_samples_test", "fd_train_test_floor",
            "fd_ratio_to_floor", "tstr_acc", "trtr_acc", "tstr_trtr_ratio"]

    rows = []
    for path in paths:
        try:
            metrics = read_metrics(path)["metrics"]
        except ValueError as err:
            log.warning("skipping %s", err)
            continue
        rows.append((_label(path.parent, roots), *(metrics.get(k) for k in keys)))
    return table(["evaluation", *keys], rows, "evaluations")


def real_examples_for(directory: Path, previews: Sequence[Path]) -> tuple[Path, str] | None:
    """The real examples to show beside a samples folder, with their caption: the routes
    folder's `real_examples.png` (test split, laid out as the samples grid) when the samples
    sit in one, else the first `task=preview` picture (one per class), else None."""
    from mdvq.runs.experiments import REAL_EXAMPLES

    routes = directory.parent / REAL_EXAMPLES
    if routes.is_file():
        return routes, (f"real examples of the test split, one row per class "
                        f"({directory.parent.name}/{REAL_EXAMPLES})")
    if previews:
        return previews[0], (f"real examples, one per class "
                             f"({previews[0].parent.name}/preview.png)")
    return None


def samples_section(directory: Path, label: str,
                    real: tuple[Path, str] | None = None) -> str:
    """A samples folder: its grid (one row per class) and the sampler settings; `real` (a PNG
    of real examples and its caption, `real_examples_for`) is shown beside the grid."""
    from mdvq.core.samples import load_samples

    samples = load_samples(directory)
    settings = [(k, samples.meta.get(k)) for k in ("steps", "guidance", "seed", "prior_kind")
                if k in samples.meta]
    parts = [f"<h3>{html.escape(label)}</h3>",
             f"<p>{len(samples)} samples of {len(samples.class_names)} classes</p>",
             table(["setting", "value"], settings, "samples")]
    grid = directory / "grid.png"
    pictures = []
    if grid.is_file():
        pictures.append((grid.read_bytes(), f"{label} samples", "samples, one row per class"))
    if real is not None:
        pictures.append((real[0].read_bytes(), "real examples", real[1]))
    if pictures:  # side by side, each as wide as its PNG's share (same dpi: same panel size)
        parts.append("<div class='pair'>" + "".join(
            img_tag(data, alt, caption).replace(
                "<figure>", f"<figure style='flex-grow:{int.from_bytes(data[16:20], 'big')}'>")
            for data, alt, caption in pictures) + "</div>")
    return "".join(parts)


# ---- the page ----------------------------------------------------------------------------------
def build_report(folders: Sequence[str | os.PathLike], title: str = "mdvq report") -> str:
    """The HTML page of everything below `folders` (see the module docstring)."""
    roots = [Path(f) for f in folders]
    found = discover(roots)
    runs = found["runs"]
    labels = {r.run_dir: _label(r.run_dir, roots) for r in runs}
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>")
    sources = html.escape(", ".join(str(r) for r in roots))
    parts = [head, f"<p>{len(runs)} runs from {sources}; made {created}.</p>"]
    if runs:
        parts.append("<h2>Runs compared</h2>" + runs_table(runs, labels))
    if found["unreadable"]:
        parts.append("<h2 class='bad'>Unreadable run summaries</h2>" + table(
            ["run summary", "problem"],
            [(_label(path, roots), why) for path, why in found["unreadable"]], "bad"))
    if found["decisions"]:
        parts.append("<h2>Phase-1 decisions</h2>" + decision_table(found["decisions"], roots))
    if found["routes"]:
        parts.append("<h2>Routes</h2>")
        for path in found["routes"]:
            try:
                parts.append(routes_table(path, _label(path.parent, roots)))
            except ValueError as err:  # unreadable routes table (names the file)
                log.warning("%s", err)
    if found["evaluations"]:
        parts.append("<h2>Generation metrics</h2>" + evaluation_table(found["evaluations"], roots))
    if found["samples"]:
        parts.append("<h2>Samples</h2>")
        for directory in found["samples"]:
            try:
                parts.append(samples_section(directory, _label(directory, roots),
                                             real_examples_for(directory, found["previews"])))
            except (ValueError, FileNotFoundError) as err:
                log.warning("%s", err)
    if found["previews"]:  # listed as what they are, not as runs
        parts.append("<h2>Data previews (not runs)</h2>" + "".join(
            img_tag(p.read_bytes(), "data preview", f"{_label(p.parent, roots)}: real examples, "
                    "one per class (task=preview; not a run: no summary.json)")
            for p in found["previews"]))
    parts += [run_section(r, labels[r.run_dir]) for r in runs]
    if not runs and not any(found[k] for k in ("decisions", "routes", "evaluations", "samples",
                                               "unreadable", "previews")):
        parts.append("<p class='bad'>Nothing to report: no summary.json, decision.json, "
                     "routes.json, metrics.json or samples folder below these folders.</p>")
    return "\n".join(parts) + "</body></html>\n"


def write_report(folders: Sequence[str | os.PathLike], out: str | os.PathLike,
                 title: str = "mdvq report") -> Path:
    """Write `build_report(folders)` to `out` (UTF-8); returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(folders, title), encoding="utf-8")
    return out
