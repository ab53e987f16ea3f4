"""The adversarial objective's trade-off: texture (speckle W1) against judge realism (decoder
floor) and PSNR, one point per autoencoder run (a table and a PNG).

    python experiments/autoencoders/tradeoff.py FLOOR.md [FLOOR.md ...] \
        [--out experiments/autoencoders/tradeoff.png]

Reads the tables `experiments/routes/decoder_floor.py` prints (saved to files), and for every
run in them its `summary.json`: test PSNR [dB] and the objective's settings (`model.loss`:
`disc_weight`, `disc_start`, `feature_weight`, `multires_weight`; plain when it has none). Prints
one markdown row per run and plots decoder floor (FD of reconstructions / real floor, log y)
against speckle W1 ([0, 1] units; 0 = real texture), KL-VAEs and VQ-VAEs apart, each point
labelled with its settings and PSNR. The goal region of issue 24 (floor <= 2x) is shaded.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROW = re.compile(r"^\| (kl|vq) `([^`]+)` \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) ")


def settings_label(config: dict) -> str:
    """A short label of a run's objective, e.g. 'plain' or 'adv w0.1 s0 fm2'."""
    loss = (config.get("model") or {}).get("loss") or {}
    if loss.get("name") != "adversarial":
        return "plain"
    label = f"adv w{loss.get('disc_weight')} s{loss.get('disc_start')}"
    if loss.get("feature_weight"):
        label += f" fm{loss['feature_weight']:g}"
    if loss.get("multires_weight"):
        label += f" mr{loss['multires_weight']:g}"
    return label


def read_points(tables: list[Path]) -> list[dict]:
    """One dict per run row of the decoder-floor tables (later tables win for the same run)."""
    points = {}
    for table in tables:
        for line in table.read_text().splitlines():
            m = ROW.match(line)
            if not m:
                continue
            kind, run = m.group(1), m.group(2)
            summary = json.loads((Path(run) / "summary.json").read_text())
            points[run] = {"kind": kind, "run": run, "label": settings_label(summary["config"]),
                           "floor": float(m.group(4)), "judge_acc": float(m.group(5)),
                           "speckle": float(m.group(6)),
                           "psnr": summary["metrics"].get("test/psnr"),
                           "usage": summary["metrics"].get("test/codebook_usage")}
    return list(points.values())


def main() -> None:
    """Print the table and draw the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tradeoff.png")
    args = parser.parse_args()
    points = read_points(args.tables)
    print("| autoencoder | objective | test PSNR [dB] | usage | decoder floor | speckle W1 | judge acc. on recon |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for p in points:
        usage = "-" if p["usage"] is None else f"{p['usage']:.3f}"
        print(f"| {'KL-VAE' if p['kind'] == 'kl' else 'VQ-VAE'} | {p['label']} | {p['psnr']:.2f} | "
              f"{usage} | {p['floor']:.2f} | {p['speckle']:.4f} | {p['judge_acc']:.3f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mdvq.utils.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.axhspan(0.5, 2.0, color="tab:green", alpha=0.08, label="goal: floor <= 2x")
    for kind, marker, name in (("kl", "o", "KL-VAE"), ("vq", "s", "VQ-VAE")):
        mine = [p for p in points if p["kind"] == kind]
        if not mine:
            continue
        ax.scatter([p["speckle"] for p in mine], [p["floor"] for p in mine], marker=marker,
                   label=name)
        for p in mine:
            ax.annotate(f"{p['label']} ({p['psnr']:.1f} dB)", (p["speckle"], p["floor"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("speckle W1 to real (lower = more real texture)")
    ax.set_ylabel("decoder floor: FD(recon) / FD(real train, test)")
    ax.set_title("Adversarial objective: texture vs judge realism (504 steps, CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    main()
