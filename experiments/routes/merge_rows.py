"""One table from the rows of several ``experiment=routes`` runs (same data, split and judge).

    python experiments/routes/merge_rows.py LABEL=ROUTES_DIR:ROW LABEL=EVAL_DIR [...] [--out FILE.md]

Each argument names a row of a finished routes run: ``k64=outputs/routes/k64:maskedtokens``
takes the ``maskedtokens`` row of that run's ``routes.json`` and calls it ``k64``; or the
folder of a ``python -m mdvq.evaluate`` call (``g3=outputs/eval_g3``: its metrics.json, the
samples' meta and the prior run and autoencoder they name). The runs
must share the data key and the judge (the in-domain classifier's test accuracy and data key
are checked; a mismatch stops with the two values), so the rows compare as the rows of one
routes call. Printed per row: conditional accuracy with its per-class values (order of the
class names), the judge's top vote share, FD/floor, TSTR, TRTR and their ratio, the physics
ratio / pass rate, the autoencoder's test PSNR [dB], codebook usage and token entropy [nats]
(``ln`` of the test perplexity where the run did not log it: the same quantity), the masked
accuracy, samples/s, the number of samples scored, prior steps and prior wall time [s].
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _summary(run: Path) -> dict:
    """A run folder's summary.json (empty when there is none)."""
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_entropy(ae_metrics: dict) -> float | None:
    """Test token entropy (nats) of a VQ-VAE's summary metrics: logged, or ln(perplexity)."""
    entropy = ae_metrics.get("test/token_entropy")
    if entropy is None and ae_metrics.get("test/perplexity"):
        entropy = math.log(ae_metrics["test/perplexity"])
    return entropy


def load_evaluation(label: str, folder: Path) -> dict:
    """A row from an ``mdvq.evaluate`` folder: its metrics, the samples' settings, the prior
    run (steps, wall time, masked accuracy) and its autoencoder (PSNR, usage, token entropy)."""
    result = json.loads((folder / "metrics.json").read_text())
    m, samples = result["metrics"], result["samples"]
    checkpoint = (folder / samples["prior"]).resolve() if samples.get("prior") else None
    prior_run = checkpoint.parent.parent if checkpoint and checkpoint.parent.name == "checkpoints" \
        else checkpoint
    prior = _summary(prior_run) if prior_run else {}
    model = prior.get("config", {}).get("model", {})
    ae_path = model.get("vqvae") or model.get("autoencoder")
    ae = _summary(Path(ae_path)).get("metrics", {}) if ae_path else {}
    settings = ", ".join(f"{k} {samples[k]}" for k in ("guidance", "temperature", "steps")
                         if samples.get(k) is not None)
    vq = "test/codebook_usage" in ae
    prior_name = {"latentdiffusion": "continuous prior (hybrid)" if vq else "latent diffusion",
                  "vqdiffusion": "VQ-Diffusion", "maskedtokens": "masked-token prior"}.get(
                      samples.get("prior_kind"), samples.get("prior_kind"))
    description = f"{'VQ' if vq else 'KL'} latent + {prior_name} ({settings})"
    return {"label": label, "description": description,
            "data_key": result.get("classifier", {}).get("data_key"),
            "judge": {"test_acc": result.get("classifier", {}).get("summary_test_acc")},
            "conditional_accuracy": m["conditional_accuracy"],
            "per_class": result["conditional_accuracy"]["per_class"],
            "top_vote_share": m.get("judge_top_share"),
            "fd_ratio_to_floor": m.get("fd_ratio_to_floor"), "tstr_acc": m.get("tstr_acc"),
            "trtr_acc": m.get("trtr_acc"), "tstr_trtr_ratio": m.get("tstr_trtr_ratio"),
            "physics_median_ratio": m.get("physics_median_ratio"),
            "physics_pass_rate": m.get("physics_pass_rate"),
            "test_psnr_db": ae.get("test/psnr"), "codebook_usage": ae.get("test/codebook_usage"),
            "token_entropy": _token_entropy(ae) if "test/codebook_usage" in ae else None,
            "masked_accuracy": prior.get("metrics", {}).get(
                "test/masked_accuracy", prior.get("metrics", {}).get("test/masked_acc")),
            "samples_per_second": samples.get("samples_per_second"),
            "samples": result["counts"]["samples"], "prior_steps": prior.get("trained_steps"),
            "prior_wall_s": prior.get("wall_time_s")}


def load_row(spec: str) -> dict:
    """``LABEL=DIR:ROW`` -> that row of ``DIR/routes.json`` with the evaluation's per-class
    accuracy, sample count, the judge and the autoencoder's token entropy added;
    ``LABEL=EVAL_DIR`` -> :func:`load_evaluation`."""
    label, sep, rest = spec.partition("=")
    if sep and label and (Path(rest) / "metrics.json").is_file():
        return load_evaluation(label, Path(rest))
    folder, sep2, name = rest.rpartition(":")
    if not (sep and sep2 and label and folder and name):
        raise SystemExit(f"{spec!r}: expected LABEL=ROUTES_DIR:ROW or LABEL=EVAL_DIR "
                         "(a folder with metrics.json)")
    path = Path(folder) / "routes.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no routes.json (is {folder} a finished experiment=routes run?)")
    table = json.loads(path.read_text())
    rows = {r["route"]: r for r in table["rows"]}
    if name not in rows:
        raise SystemExit(f"{path}: no row {name!r}; rows: {sorted(rows)}")
    row = dict(rows[name], description=rows[name]["label"], label=label, folder=folder,
               data_key=table.get("data_key"), judge=table.get("classifier") or {})
    metrics_path = Path(folder) / f"eval_{name}" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        row["per_class"] = metrics["conditional_accuracy"]["per_class"]
        row["samples"] = metrics["counts"]["samples"]
    if row.get("token_entropy") is None:
        row["token_entropy"] = _token_entropy(_summary(Path(folder) / row["autoencoder"])
                                              .get("metrics", {}))
    return row


def check_comparable(rows: list[dict]) -> None:
    """Stop when two rows differ in data key or judge (its test accuracy), where both state it."""
    first = rows[0]
    for row in rows[1:]:
        for key, value in (("data_key", row["data_key"]),
                           ("judge test accuracy", row["judge"].get("test_acc"))):
            ref = first["data_key"] if key == "data_key" else first["judge"].get("test_acc")
            if value is not None and ref is not None and value != ref:
                raise SystemExit(f"rows {first['label']} and {row['label']} differ in {key}: "
                                 f"{ref} vs {value}")


def fmt(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals, '-' for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    """The merged table (one line per row)."""
    head = ("| row | latent + prior | cond. acc. | per class | top vote | FD/floor | TSTR | TRTR "
            "| TSTR/TRTR | physics ratio / pass | AE PSNR [dB] | usage | token entropy [nats] "
            "| masked acc. | samples/s | samples | prior steps | prior wall [s] |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        per_class = " / ".join(f"{v:.2f}" for v in r.get("per_class", {}).values()) or "-"
        physics = ("-" if r.get("physics_median_ratio") is None else
                   f"{r['physics_median_ratio']:.2f} / {r['physics_pass_rate']:.2f}")
        lines.append(
            f"| {r['label']} | {r['description']} "
            f"| {fmt(r['conditional_accuracy'])} | {per_class} | {fmt(r['top_vote_share'], 2)} "
            f"| {fmt(r['fd_ratio_to_floor'], 1)} | {fmt(r['tstr_acc'])} | {fmt(r['trtr_acc'])} "
            f"| {fmt(r['tstr_trtr_ratio'], 2)} | {physics} | {fmt(r['test_psnr_db'], 2)} "
            f"| {fmt(r['codebook_usage'])} | {fmt(r['token_entropy'], 2)} "
            f"| {fmt(r['masked_accuracy'])} | {fmt(r['samples_per_second'], 1)} "
            f"| {r.get('samples', '-')} | {r.get('prior_steps', '-')} "
            f"| {fmt(r.get('prior_wall_s'), 0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", help="LABEL=ROUTES_DIR:ROW")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    rows = [load_row(spec) for spec in args.rows]
    check_comparable(rows)
    text = markdown(rows)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
