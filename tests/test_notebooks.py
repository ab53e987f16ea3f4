"""The notebooks run top to bottom on tiny real runs, and are committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY_DATA, compose_cfg, data_overrides, tiny_overrides

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PRIOR = ["model.num_layers=1", "model.num_attention_heads=2", "model.attention_head_dim=16",
         "model.num_train_timesteps=10", "model.sample_steps=2", "model.val_samples_per_class=1",
         "model.scheduler.num_warmup_steps=1", "trainer.max_epochs=1",
         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"]


def test_the_four_notebooks_exist_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["01_data.ipynb", "02_phase1.ipynb", "03_sweeps.ipynb",
                                           "04_phase2.ipynb"]
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        for i, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, (
                    f"{path.name} cell {i} has outputs: clear them before committing")
        assert "pandas" not in path.read_text(), f"{path.name}: pandas is not a dependency"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Tiny real runs: a phase-1 experiment (KL-VAE, VQ-VAE, decision.json), a prior on its
    VQ-VAE and a samples folder of that prior (16x16 data, one epoch of 2 batches)."""
    from mdvq.runs.experiments import phase1
    from mdvq.runs.training import train
    from mdvq.sample import main as sample_main

    tmp = tmp_path_factory.mktemp("notebook-runs")
    cache = tmp / "cache"
    common = [o for o in tiny_overrides(tmp, model="klvae", data_cache=cache)
              if not o.startswith(("model=", "paths.output_dir"))]
    common += ["trainer.max_epochs=2", "trainer.limit_train_batches=2",
               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
               "~callbacks.epoch_lines"]
    out = tmp / "runs" / "phase1"
    phase1(compose_cfg([*common, "experiment=phase1", f"paths.output_dir={out}"]), overrides=common)
    train(compose_cfg(data_overrides(tmp / "runs" / "prior", cache) + [
        "experiment=vqdiffusion", f"model.vqvae={out / 'vqvae'}", *PRIOR]))
    sample_main([str(tmp / "runs" / "prior" / "run"), "n_per_class=1", "steps=2", "seed=0",
                 f"out={tmp / 'runs' / 'samples'}", "device=cpu"])
    return tmp


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, runs, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="pip install mdvq[notebooks]")
    import nbformat

    monkeypatch.setenv("MDVQ_RUNS", str(runs / "runs"))
    monkeypatch.setenv("MDVQ_SWEEP", str(runs / "runs" / "phase1"))
    monkeypatch.setenv("MDVQ_DATA_OVERRIDES", " ".join(
        [*TINY_DATA, f"paths.cache_dir={runs / 'cache'}"]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
    text = "".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                   for o in outputs)
    expected = {"01_data": "walking", "02_phase1": "PSNR to beat", "03_sweeps": "Jobs ranked by",
                "04_phase2": "test vb"}[path.stem]
    assert expected in text, f"{path.name}: {expected!r} not in its outputs"
    assert "No decision.json" not in text and "No samples folder" not in text
    if path.stem == "02_phase1":
        verdict = json.loads((runs / "runs" / "phase1" / "decision.json").read_text())["verdict"]
        assert f"| {verdict} |" in text


