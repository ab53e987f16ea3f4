"""`python -m mdvq.report`: one self-contained HTML page of runs, decisions and routes, checked
as text and rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from matplotlib.figure import Figure

from mdvq.core.summary import RunSummary
from mdvq.evaluation.decision import decide, write_decision
from mdvq.report import main as report_main
from mdvq.runs.report import build_report, read_metrics_csv
from mdvq.utils.cli import UsageError

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def png(path: Path, colour: str) -> Path:
    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().imshow([[0, 1], [1, 0]], cmap=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def fake_run(folder: Path, model: str, psnr: list[float], usage: float | None = None) -> Path:
    """A run folder as `mdvq.run` leaves it: summary.json, the CSV log (one val row per epoch,
    PSNR in dB), figures/."""
    metrics = {"test/psnr": psnr[-1] - 0.5, "val/psnr": psnr[-1]}
    if usage is not None:
        metrics["test/codebook_usage"] = usage
    config = {"model": {"num_vq_embeddings": 64, "commitment_cost": 0.25} if usage else
              {"latent_channels": 4}, "trainer": {"max_epochs": len(psnr)}, "seed": 7}
    RunSummary.new(folder, model).update(status="finished", metrics=metrics, config=config,
                                         data_key="radar-abc-16x16-split1").write()
    log = folder / "csv" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    lines = ["epoch,step,train/loss,val/psnr"]
    lines += [f"{e},{10 * e + 9},,{p}" for e, p in enumerate(psnr)]
    lines += [f"{e},{10 * e + 5},{1.0 / (e + 1)}," for e in range(len(psnr))]
    log.write_text("\n".join(lines) + "\n")
    png(folder / "figures" / "spectrograms_val_epoch0000.png", "gray")
    png(folder / "figures" / "spectrograms_val_epoch0001.png", "viridis")
    png(folder / "figures" / "spectrograms_test.png", "magma")
    if usage is not None:
        png(folder / "figures" / "codebook_test.png", "plasma")
    return folder


@pytest.fixture
def experiment(tmp_path) -> Path:
    """A phase-1 folder (klvae/, vqvae/, decision.json) and a routes.json."""
    out = tmp_path / "phase1"
    fake_run(out / "klvae", "klvae", [20.0, 22.0])
    fake_run(out / "vqvae", "vqvae", [21.0, 25.0], usage=0.9)
    write_decision(decide(24.5, 0.9, 21.5, psnr_margin=0.1, usage_threshold=0.8), out)
    (out / "routes.json").write_text(json.dumps({"rows": [
        {"route": "vq+vqdiffusion", "test/psnr": 24.5, "cond_acc": 0.71},
        {"route": "kl+ldm", "test/psnr": 21.5, "fd_ratio": 3.2}]}))
    return out


def test_learning_curves_come_from_the_csv_log(experiment):
    curves = read_metrics_csv(RunSummary.read(experiment / "vqvae"))
    assert curves["val/psnr"] == [(0.0, 21.0), (1.0, 25.0)]
    assert curves["train/loss"] == [(0.0, 1.0), (1.0, 0.5)]


def test_report_holds_runs_decision_routes_and_embedded_pictures(experiment, tmp_path):
    page = build_report([experiment])
    assert "http://" not in page and "https://" not in page, "nothing loaded from the network"
    # per run: highlights, metrics, learning curves, the newest val grid and the test figures
    for text in ("phase1/klvae", "phase1/vqvae", "model.num_vq_embeddings", "commitment",
                 "Learning curves", "epoch0001 (validation)", "codebook usage, test"):
        assert text in page, text
    assert "epoch0000" not in page, "only the newest validation grid"
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 * 3 + 1, "2 x (curves, val grid, test grid) + codebook"
    # decision: 24.5 dB > 1.1 x 21.5 dB = 23.65 dB and usage 0.9 > 0.8: continue the VQ route
    assert re.search(r"<td>phase1</td><td>vqvae</td><td>24.5</td><td>21.5</td><td>23.65</td>",
                     page), "the decision row"
    # routes: the union of the rows' columns, blanks where a route lacks one
    # readable headers: a key the report does not know shows with spaces for underscores
    assert "<th>route</th><th>test/psnr</th><th>cond acc</th><th>fd ratio</th>" in page
    assert "<td>kl+ldm</td><td>21.5</td><td></td><td>3.2</td>" in page


ROUTE_ROWS = [  # five routes as experiment=routes writes them (units in the key names)
    {"route": route, "label": label, "latent": "kl" if ae == "klvae" else "vq",
     "prior_family": family, "autoencoder": ae, "prior": prior, "sampling_options": options,
     "test_psnr_db": psnr, "test_ssim": 0.81, "codebook_usage": usage,
     "conditional_accuracy": acc, "top_vote_share": 0.715, "fd_samples_test": 12.3456, "fd_floor": 1.2345,
     "fd_ratio_to_floor": fd, "tstr_acc": 0.5, "trtr_acc": 1.0, "tstr_trtr_ratio": 0.5,
     "samples_per_second": speed, "sampling_steps": 50, "guidance": 2.0,
     "autoencoder_parameters": 1234567, "prior_parameters": 7654321, "autoencoder_wall_s": 100.0,
     "prior_wall_s": wall, "autoencoder_steps": 504, "prior_steps": 1920}
    for route, label, ae, prior, family, options, psnr, usage, acc, fd, speed, wall in (
        ("kl", "KL latent + latent diffusion", "klvae", "latentdiffusion", "continuous", None,
         24.13, None, 0.91, 1.5, 12.0, 200.0),
        ("vq", "VQ latent + VQ-Diffusion", "vqvae", "vqdiffusion", "discrete", None, 23.77, 0.975,
         0.375, 67.7, 40.5, 30.0),
        ("hybrid", "VQ latent + continuous prior (hybrid)", "vqvae", "hybrid", "continuous",
         None, 23.77, 0.975, 0.30, 3.0, 11.0, 210.0),
        ("hybrid_unsnapped", "VQ latent + continuous prior (hybrid, decoded unsnapped)", "vqvae",
         "hybrid", "continuous", {"decode_quantized": False}, 23.77, 0.975, 0.28, 3.3, 11.5,
         210.0),
        ("maskedtokens", "VQ latent + masked-token prior", "vqvae", "maskedtokens", "discrete",
         None, 23.77, 0.975, 0.20, 20.0, 60.0, 50.0))]


@pytest.fixture
def routes_folder(tmp_path) -> Path:
    """A routes folder as experiment=routes leaves it, made by hand (no training): the stage
    runs (klvae with `trained_steps`, the others without), routes.json and eval_*/metrics.json
    with per-class accuracy and the judge's vote shares."""
    out = tmp_path / "routes"
    for stage, model in (("klvae", "klvae"), ("vqvae", "vqvae"), ("classifier", "classifier"),
                         ("latentdiffusion", "latentdiffusion"), ("vqdiffusion", "vqdiffusion")):
        fake_run(out / stage, model, [20.0, 22.0], usage=0.9 if stage == "vqvae" else None)
    summary = RunSummary.read(out / "klvae")
    summary.update(trained_steps=504, data={"class_names": ["walking", "falling"]}).write()
    shares = {"kl": {"walking": 0.52, "falling": 0.48}, "vq": {"walking": 0.715, "falling": 0.285}}
    accuracy = {"kl": {"walking": 0.92, "falling": 0.9}, "vq": {"walking": 0.7, "falling": 0.05}}
    for route in ("kl", "vq"):
        (out / f"eval_{route}").mkdir()
        (out / f"eval_{route}" / "metrics.json").write_text(json.dumps({
            "metrics": {"conditional_accuracy": 0.5},
            "conditional_accuracy": {"per_class": accuracy[route]},
            "judge": {"samples": {"predicted_share": shares[route]}}}))
    (out / "routes.json").write_text(json.dumps({
        "rows": ROUTE_ROWS, "decision": {"verdict": "klvae", "reasons": []},
        "classifier": {"test_acc": 1.0}, "data_key": "radar-abc-16x16-split1",
        "prior_budget": {"shared": 2000, "min_steps": {"latentdiffusion": 2000,
                                                       "vqdiffusion": 2000}},
        "real_examples": "real_examples.png",
        "stages": {s: {"dir": s, "reused": False, "status": "finished"}
                   for s in ("klvae", "vqvae", "classifier", "latentdiffusion", "vqdiffusion")}}))
    png(out / "real_examples.png", "cividis")
    return out


def test_report_of_routes_has_verdict_readable_headers_per_class_and_stage_steps(routes_folder):
    page = build_report([routes_folder])
    assert ("<b>Verdict.</b> The KL route (KL latent + latent diffusion) generates") in page
    assert "+53.5 points" in page and "it agrees." in page
    # two tables: reconstruction and codebook, then generation and cost
    recon = page.split("<h4>Reconstruction and codebook</h4>")[1].split("</table>")[0]
    gen = page.split("<h4>Generation and cost</h4>")[1].split("</table>")[0]
    assert ("<th>route</th><th>latent + prior</th><th>autoencoder</th><th>prior</th>"
            "<th>sampling options</th><th>test PSNR [dB]</th>") in recon
    assert "<th>latent</th>" not in page, "the label says it"
    assert "<th>conditional accuracy</th><th>judge&#x27;s top vote share</th>" in gen
    assert "<th>samples/s</th>" in gen
    assert "conditional accuracy" not in recon and "test PSNR" not in gen
    assert "<td>hybrid_unsnapped</td><td>VQ latent + continuous prior (hybrid, decoded " in recon
    assert "conditional_accuracy</th>" not in page, "no raw snake_case header"
    # which factor: latent kl 0.910 vs hybrid 0.300 = 61.0 points, FD 3.0/1.5 = x2.0; prior:
    # hybrid 0.300 vs the best discrete (vq 0.375) = 7.5 points, FD 67.7/3.0 = x22.6
    assert ("<b>Which factor explains the gap.</b> Latent (same continuous prior): kl 0.910 "
            "against hybrid 0.300 conditional accuracy (61.0 points), FD/floor 1.5 against 3.0 "
            "(x2.0).") in page
    assert ("In conditional accuracy the latent explains more of the gap (7.5 points for the "
            "prior against 61.0 for the latent); in FD/floor the prior does (x22.6 for the prior "
            "against x2.0 for the latent).") in page
    assert ("Priors trained to: one shared budget, at least 2000 optimiser steps each "
            "(routes.prior_budget=2000") in page
    # per class: accuracies, then vote shares, per route
    assert ("<th>class</th><th>KL accuracy</th><th>VQ accuracy</th><th>KL vote share</th>"
            "<th>VQ vote share</th>") in page
    assert "<td>falling</td><td>0.9</td><td>0.05</td><td>0.48</td><td>0.285</td>" in page
    # stage steps: trained_steps when recorded, else max epochs; and the data settings
    assert "<td>klvae</td><td>klvae</td><td>no</td><td>504 steps</td>" in page
    assert "<td>vqvae</td><td>vqvae</td><td>no</td><td>max epochs 2</td>" in page
    assert "<td>data key</td><td>radar-abc-16x16-split1</td>" in page
    assert "trained 504 optimiser steps" in page, "the klvae run's own section says so too"


def test_routes_real_examples_sit_beside_its_samples(routes_folder, tmp_path):
    import numpy as np

    from mdvq.core.samples import write_samples

    images = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    write_samples(routes_folder / "samples_kl", images, np.array([0, 0, 1, 1]),
                  {"class_names": ["walking", "falling"], "steps": 4})
    png(tmp_path / "preview" / "preview.png", "gray")  # a preview elsewhere: the routes' own win
    page = build_report([routes_folder, tmp_path / "preview"])
    samples = page.split("<h2>Samples</h2>")[1].split("<h2>")[0]
    assert "real examples of the test split, one row per class (routes/real_examples.png)" in samples
    assert samples.count("<img ") == 2, "the samples grid and the real examples beside it"
    assert "preview/preview.png" not in samples


def test_report_command_takes_several_folders(experiment, tmp_path):
    other = fake_run(tmp_path / "more" / "run", "vqvae", [18.0], usage=0.5)
    out = report_main([str(experiment), str(other.parent), f"out={tmp_path / 'r.html'}",
                       "title=two folders"])
    page = out.read_text()
    assert "<title>two folders</title>" in page and "3 runs from" in page and "more/run" in page
    with pytest.raises(UsageError, match="at least 1 positional"):
        report_main([])
    with pytest.raises(UsageError, match="unknown argument 'outfile'"):
        report_main([str(experiment), "outfile=x.html"])
    proc = run_cli(["mdvq.report", str(tmp_path / "nowhere"), f"out={tmp_path / 'x.html'}"])
    assert proc.returncode == 2 and "not a folder" in proc.stderr and "nowhere" in proc.stderr


def test_report_renders_in_headless_chromium(experiment, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    page = tmp_path / "report.html"
    page.write_text(build_report([experiment]))
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
              "--window-size=1300,1800"]
    shot = tmp_path / "shot.png"
    proc = subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    assert pixels.size == (1300, 1800)
    low, high = pixels.getextrema()
    assert high - low > 100, "the screenshot is blank"
    # the DOM after loading: every table and every embedded image decoded (naturalWidth > 0)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', imgs.length + '/' + ok);
  document.body.setAttribute('data-tables', document.querySelectorAll('table').length);
});</script></body>"""))
    proc = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    images = re.search(r'data-images="(\d+)/(\d+)"', proc.stdout)
    tables = re.search(r'data-tables="(\d+)"', proc.stdout)
    assert images and tables, proc.stdout[:2000]
    assert images.group(1) == images.group(2) == "7", "every embedded PNG decoded"
    # runs compared, decisions, routes, and per run: config highlights + final metrics
    assert int(tables.group(1)) == 3 + 2 * 2


def test_routes_tables_fit_a_1400_px_page_in_headless_chromium(routes_folder, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    probe = tmp_path / "probe.html"
    probe.write_text(build_report([routes_folder]).replace("</body>", """<script>
window.addEventListener('load', () => {
  const widths = [...document.querySelectorAll('table.routes')].map(t => t.getBoundingClientRect().right);
  document.body.setAttribute('data-routes', widths.length + ':' + Math.ceil(Math.max(...widths)));
  document.body.setAttribute('data-page', document.documentElement.scrollWidth);
});</script></body>"""))
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--window-size=1400,1800", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    routes = re.search(r'data-routes="(\d+):(\d+)"', proc.stdout)
    page = re.search(r'data-page="(\d+)"', proc.stdout)
    assert routes and page, proc.stdout[:2000]
    assert int(routes.group(2)) <= 1400, f"a routes table ends at {routes.group(2)} px"
    assert int(routes.group(1)) >= 4, "reconstruction, generation and cost, per class, stages"
    assert int(page.group(1)) <= 1400, f"the page is {page.group(1)} px wide"


def test_a_corrupt_summary_is_reported_as_unreadable_with_the_json_error(tmp_path):
    run = tmp_path / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"model": "vqvae",\n "status": "finished",\n "metrics": {')
    out = report_main([str(tmp_path / "runs"), f"out={tmp_path / 'r.html'}"])
    page = out.read_text()
    assert "no summary.json" not in page, "the file is there; it is unreadable"
    assert "Unreadable run summaries" in page and "runs/broken/summary.json" in page
    assert re.search(r"unreadable run summary \(Expecting .*line 3 column \d+", page), page[-800:]


def test_real_examples_of_a_preview_folder_sit_beside_the_samples_and_it_is_not_a_run(tmp_path):
    import numpy as np

    from mdvq.core.samples import write_samples

    out = tmp_path / "exp"
    png(out / "preview" / "preview.png", "gray")  # task=preview leaves no summary.json
    images = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    write_samples(out / "samples_kl", images, np.array([0, 0, 1, 1]),
                  {"class_names": ["walking", "falling"], "steps": 4})
    page = build_report([out])
    assert "Data previews (not runs)" in page and "0 runs from" in page
    samples = page.split("<h2>Samples</h2>")[1].split("<h2>")[0]
    assert "real examples, one per class (preview/preview.png)" in samples
