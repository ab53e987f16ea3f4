"""End to end: `mdvq.run experiment=vqdiffusion` on a tiny VQ-VAE run, then `python -m mdvq.sample`."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_cfg, data_overrides, run_cli, tiny_overrides
from PIL import Image

from mdvq.core.summary import RunSummary
from mdvq.models.vqdiffusion import VQDiffusionModule, load_transformer
from mdvq.runs.prior_sampling import load_prior
from mdvq.runs.training import train
from mdvq.sample import main as sample_main
from mdvq.utils.cli import UsageError

PRIOR = ["model.num_layers=1", "model.num_attention_heads=2", "model.attention_head_dim=16",
         "model.num_train_timesteps=10", "model.sample_steps=5", "model.val_samples_per_class=1",
         "model.scheduler.num_warmup_steps=2", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny VQ-VAE run (fit + export), then a tiny prior run on its code maps."""
    tmp = tmp_path_factory.mktemp("e2e")
    cache = tmp / "cache"
    vq_cfg = compose_cfg(tiny_overrides(tmp / "vq", data_cache=cache) + [
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "test=false", "~callbacks.spectrogram_grid", "callbacks.codebook_monitor.log_histogram=false"])
    vq_summary = train(vq_cfg)
    prior_cfg = compose_cfg(data_overrides(tmp / "prior", cache) + [
        "experiment=vqdiffusion", f"model.vqvae={tmp / 'vq' / 'run'}", *PRIOR])
    # the experiment selects the prior's callbacks (no phase-1 PSNR/codebook callbacks)
    assert prior_cfg.callbacks.model_checkpoint.monitor == "val/vb"
    assert "codebook_monitor" not in prior_cfg.callbacks
    prior_summary = train(prior_cfg)
    return {"tmp": tmp, "cache": cache, "vq": vq_summary, "prior": prior_summary,
            "run": tmp / "prior" / "run"}


def test_prior_run_trains_tests_exports_and_summarises(runs):
    run = runs["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model"] == "vqdiffusion"
    for key in ("val/vb", "test/vb", "test/aux", "test/masked_acc", "train/loss"):
        assert key in summary["metrics"], key
    # training lowered the bound (nats per code token) between the two validation epochs
    with open(next((run / "csv").glob("version_*/metrics.csv"))) as fh:
        val_vb = [float(r["val/vb"]) for r in csv.DictReader(fh) if r.get("val/vb")]
    assert len(val_vb) == 2 and val_vb[1] < val_vb[0], val_vb
    assert summary["metrics"]["test/vb"] > 0
    assert summary["data_key"] == runs["vq"]["data_key"], "same data and split as the VQ-VAE"
    assert summary["data"]["code_grid"] == [8, 8] and summary["data"]["num_codes"] == 16
    run_summary = RunSummary.read(run, model="vqdiffusion")
    assert run_summary.checkpoint("best").is_file() and run_summary.checkpoint("last").is_file()
    assert list(runs["cache"].glob("tokens-*.npz")), "code maps cached next to the spectrograms"
    assert list((run / "figures").glob("samples_val_epoch*.png"))
    assert (run / "figures" / "samples_test.png").exists()
    # the export reloads with diffusers alone and predicts like the module
    pretrained = run_summary.pretrained_dir
    meta = json.loads((pretrained / "prior.json").read_text())
    assert meta["null_class"] == 6 and len(meta["class_names"]) == 6 and meta["code_grid"] == [8, 8]
    transformer = load_transformer(pretrained / "transformer")
    assert all(b.norm1.emb.class_embedder.dropout_prob == 0 for b in transformer.transformer_blocks)
    module = VQDiffusionModule.load_from_checkpoint(run_summary.checkpoint("best"),
                                                    map_location="cpu").eval()
    x_t = torch.randint(0, 17, (2, 64))
    t, y = torch.tensor([0, 9]), torch.tensor([1, 6])
    # best checkpoint == weights after test (test loads the best checkpoint before export)
    torch.testing.assert_close(transformer(x_t, timestep=t, class_labels=y, return_dict=False)[0],
                               module(x_t, t, y))
    assert (pretrained / "vqvae" / "config.json").exists()
    assert (pretrained / "scheduler" / "scheduler_config.json").exists()


def test_sample_command_writes_the_sample_folder(runs):
    out = runs["tmp"] / "samples"
    proc = run_cli(["mdvq.sample", str(runs["run"]), "n_per_class=2", "guidance=2.0", "steps=3",
                    "seed=7", f"out={out}"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = np.load(out / "samples.npy")
    labels = np.load(out / "labels.npy")
    meta = json.loads((out / "meta.json").read_text())
    assert samples.dtype == np.float32 and samples.shape == (12, 1, 16, 16)
    assert samples.min() >= 0 and samples.max() <= 1 and samples.std() > 0
    assert labels.dtype == np.int64 and labels.tolist() == [c for c in range(6) for _ in range(2)]
    names = meta["class_names"]
    assert names[0] == "walking" and len(names) == 6
    assert len(meta["freqs_hz"]) == 16 and len(meta["times_s"]) == 16
    assert meta["freqs_hz"][0] < 0 < meta["freqs_hz"][-1]
    assert (meta["steps"], meta["guidance"], meta["seed"]) == (3, 2.0, 7)
    assert meta["prior"].endswith(".ckpt") and meta["prior_kind"] == "vqdiffusion"
    assert meta["autoencoder"] and meta["samples_per_second"] > 0
    pngs = sorted(p.name for p in (out / "png").glob("*.png"))
    assert pngs == sorted(f"{n}_{i}.png" for n in names for i in range(2))
    first = np.asarray(Image.open(out / "png" / f"{names[0]}_0.png"))
    # positive Doppler at the top of the picture: the last array row is the first picture row
    np.testing.assert_allclose(first[0] / 255, samples[0, 0, -1], atol=1 / 255 + 1e-6)
    grid = Image.open(out / "grid.png")
    assert grid.size[0] > 300 and grid.size[1] > 300


def test_sampling_is_reproducible_and_class_filtered(runs, tmp_path):
    _, ckpt = load_prior(runs["run"])
    a = sample_main([str(ckpt), "n_per_class=1", "steps=2", "seed=3", "classes=falling,walking",
                     f"out={tmp_path / 'a'}", "device=cpu"])
    b = sample_main([str(ckpt), "n_per_class=1", "steps=2", "seed=3", "classes=falling,walking",
                     f"out={tmp_path / 'b'}", "device=cpu"])
    np.testing.assert_array_equal(np.load(a / "samples.npy"), np.load(b / "samples.npy"))
    assert np.load(a / "labels.npy").tolist() == [5, 0]
    assert sorted(p.name for p in (a / "png").iterdir()) == ["falling_0.png", "walking_0.png"]


def test_sample_arguments_and_paths_are_checked(runs, tmp_path):
    with pytest.raises(UsageError, match="unknown argument 'step'"):
        sample_main([str(runs["run"]), "step=4"])
    with pytest.raises(UsageError, match="steps='four': expected int"):
        sample_main([str(runs["run"]), "steps=four"])
    with pytest.raises(UsageError, match="positional"):
        sample_main([])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_prior(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="'vqvae' run"):
        load_prior(runs["tmp"] / "vq" / "run")
    with pytest.raises(ValueError, match="classes: unknown"):
        sample_main([str(runs["run"]), "classes=dancing", f"out={tmp_path}"])
    for bad in ("steps=11", "steps=0"):  # T = 10
        with pytest.raises(ValueError, match=r"steps must lie in \[1, 10\]"):
            sample_main([str(runs["run"]), bad, f"out={tmp_path}"])
    with pytest.raises(ValueError, match="guidance must be a finite scale >= 0"):
        sample_main([str(runs["run"]), "guidance=-2", f"out={tmp_path}"])
    with pytest.raises(ValueError, match="n_per_class must be >= 1"):
        sample_main([str(runs["run"]), "n_per_class=0", f"out={tmp_path}"])
    with pytest.raises(ValueError, match=r"sampler must be one of \['ancestral', 'purity'\]"):
        sample_main([str(runs["run"]), "sampler=dpm", f"out={tmp_path}"])
    for bad in ("truncation=0", "truncation=1.5"):
        with pytest.raises(ValueError, match=r"truncation must lie in \(0, 1\]"):
            sample_main([str(runs["run"]), bad, f"out={tmp_path}"])
    assert not (tmp_path / "samples.npy").exists(), "nothing written for refused arguments"


def test_sample_command_exits_2_naming_the_argument(runs, tmp_path):
    proc = run_cli(["mdvq.sample", str(runs["run"]), "guidance=-2", f"out={tmp_path}"])
    assert proc.returncode == 2 and "guidance must be" in proc.stderr


def test_sampling_into_a_used_folder_is_refused_or_replaces_only_its_own_files(runs, tmp_path):
    out = tmp_path / "s"
    args = [str(runs["run"]), "steps=2", "seed=1", "classes=falling,walking", "device=cpu",
            f"out={out}"]
    sample_main([*args, "n_per_class=2"])
    assert sorted(p.name for p in (out / "png").iterdir()) == [
        "falling_0.png", "falling_1.png", "walking_0.png", "walking_1.png"]
    (out / "notes.txt").write_text("mine")
    (out / "png" / "walking_best.png").write_bytes(b"mine too")  # not a name mdvq.sample writes
    before = (out / "samples.npy").read_bytes()
    with pytest.raises(ValueError, match=rf"out={re.escape(str(out))} already holds samples.*"
                                         r"new folder.*overwrite=true"):
        sample_main([*args, "n_per_class=1"])
    assert (out / "samples.npy").read_bytes() == before, "a refused call changes nothing"
    sample_main([*args, "n_per_class=1", "overwrite=true"])
    assert len(np.load(out / "samples.npy")) == 2
    assert sorted(p.name for p in (out / "png").iterdir()) == [
        "falling_0.png", "walking_0.png", "walking_best.png"], "stale PNGs gone, others kept"
    assert (out / "notes.txt").read_text() == "mine"
