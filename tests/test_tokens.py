"""Tests of the frozen VQ-VAE loader (mdvq.models.frozen_vqvae) and the token cache (mdvq.data.tokens)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import InMemorySource, make_set
from diffusers import AutoencoderKL
from torch.utils.data import DataLoader, TensorDataset

from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.tokens import TokenDataModule
from mdvq.models import VQVAEModule
from mdvq.models.frozen_vqvae import FrozenVQVAE, load_frozen_vqvae

TINY = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 4, "latent_channels": 4,
        "vq_embed_dim": 4, "num_vq_embeddings": 16, "mid_block_add_attention": False,
        "image_size": (16, 24)}


def fit_one_step(module, tmp: Path) -> Path:
    """Train ``module`` one step on random [-1, 1] images and save a Lightning checkpoint."""
    x = torch.rand(8, 1, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loader = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, loader)
    path = tmp / "vq.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def vq_files(tmp_path_factory):
    """A tiny trained VQVAEModule as a checkpoint, a diffusers folder and two run folders."""
    tmp = tmp_path_factory.mktemp("vq")
    module = VQVAEModule(**TINY)
    ckpt = fit_one_step(module, tmp)
    exported = module.export_pretrained(tmp / "exported")
    run = tmp / "run"
    (run / "pretrained").mkdir(parents=True)
    module.export_pretrained(run / "pretrained")
    (run / "summary.json").write_text(json.dumps({
        "model": "vqvae", "pretrained_dir": str(tmp / "moved-away"),  # stale path: falls back
        "config": {"data": {"image_size": [16, 24]}}, "checkpoints": {"best": str(ckpt)}}))
    ckpt_run = tmp / "ckpt_run"  # recorded checkpoints lie inside the run folder
    (ckpt_run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, ckpt_run / "checkpoints" / "epoch_000.ckpt")
    (ckpt_run / "summary.json").write_text(json.dumps({"model": "vqvae", "checkpoints": {
        "best": None, "last": "checkpoints/epoch_000.ckpt"}}))
    return {"module": module.eval(), "ckpt": ckpt, "exported": exported, "run": run,
            "ckpt_run": ckpt_run, "tmp": tmp}


def test_every_source_loads_the_same_frozen_model(vq_files):
    module = vq_files["module"]
    x = torch.rand(3, 1, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected_idx = module.encode_indices(x)
    expected_img = module.decode_indices(expected_idx).clamp(-1, 1)
    loaded = {name: load_frozen_vqvae(vq_files[name])
              for name in ("ckpt", "exported", "run", "ckpt_run")}
    prints = {v.fingerprint for v in loaded.values()}
    assert len(prints) == 1 and len(prints.pop()) == 16  # same weights, same fingerprint
    for name, vq in loaded.items():
        assert isinstance(vq, FrozenVQVAE)
        assert vq.num_codes == 16 and vq.code_dim == 4 and vq.downsampling == 2
        assert vq.latent_grid((16, 24)) == (8, 12)
        idx = vq.encode_indices(x)
        assert idx.dtype == torch.int64 and idx.shape == (3, 8, 12), name
        assert torch.equal(idx, expected_idx), name
        torch.testing.assert_close(vq.decode_indices(idx), expected_img, msg=name)
        assert not any(p.requires_grad for p in vq.parameters())
        vq.train()
        assert not vq.model.training, "stays in eval mode"
    assert loaded["run"].image_size == (16, 24) and loaded["ckpt"].image_size == (16, 24)
    assert loaded["run"].source.endswith("pretrained")


def test_fingerprint_changes_with_the_weights(vq_files):
    a = load_frozen_vqvae(vq_files["exported"])
    other = VQVAEModule(**TINY).to_diffusers()
    assert FrozenVQVAE(other).fingerprint != a.fingerprint


def test_bad_paths_are_named(vq_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_frozen_vqvae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*neither"):
        load_frozen_vqvae(tmp_path / "empty")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.pt.*\.ckpt"):
        load_frozen_vqvae(tmp_path / "w.pt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.ckpt.*VQVAEModule"):
        load_frozen_vqvae(tmp_path / "bad.ckpt")
    AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=4,
                  latent_channels=2).save_pretrained(tmp_path / "kl")
    with pytest.raises(ValueError, match="AutoencoderKL, not a VQModel"):
        load_frozen_vqvae(tmp_path / "kl")
    (tmp_path / "klrun").mkdir()
    (tmp_path / "klrun" / "summary.json").write_text(json.dumps({"model": "klvae"}))
    with pytest.raises(ValueError, match="'klvae' run"):
        load_frozen_vqvae(tmp_path / "klrun")
    with pytest.raises(ValueError, match="divisible"):
        load_frozen_vqvae(vq_files["exported"]).latent_grid((15, 24))


def spectrogram_dm(**kw) -> SpectrogramDataModule:
    source = InMemorySource(make_set(n_classes=3, per_class=12, n_subjects=6, size=(16, 24)))
    return SpectrogramDataModule(source, image_size=(16, 24), batch_size=5, eval_batch_size=7, **kw)


def test_token_datamodule_encodes_each_split_and_caches_it(vq_files, tmp_path, monkeypatch):
    vq = load_frozen_vqvae(vq_files["exported"])
    cache = tmp_path / "cache"
    dm = TokenDataModule(spectrogram_dm(), vq, cache_dir=cache, encode_batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    files = list(cache.glob("tokens-*.npz"))
    assert len(files) == 1
    spec = dm.spectrograms
    assert dm.split_counts == spec.split_counts and sum(dm.split_counts.values()) == 36
    for split in ("train", "val", "test"):
        x, y = spec.datasets[split].tensors
        codes, labels = dm.datasets[split].tensors
        assert torch.equal(codes, vq.encode_indices(x)), split
        assert torch.equal(labels, y), split
    assert dm.grid == (8, 12) and dm.num_codes == 16
    assert dm.class_names == ["class0", "class1", "class2"]
    np.testing.assert_allclose(dm.freqs_hz, spec.freqs_hz)
    np.testing.assert_allclose(dm.times_s, spec.times_s)
    assert dm.data_key == spec.data_key and dm.token_key
    desc = dm.describe()
    assert desc["data_key"] == spec.data_key and desc["code_grid"] == [8, 12]
    assert desc["vqvae"] == vq.fingerprint
    codes, labels = next(iter(dm.train_dataloader()))
    assert codes.shape == (5, 8, 12) and codes.dtype == torch.int64 and labels.dtype == torch.int64
    assert len(next(iter(dm.val_dataloader()))[0]) == min(7, dm.split_counts["val"])

    # a second datamodule with the same VQ-VAE and data loads the cache without encoding
    def refuse(*a, **k):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(FrozenVQVAE, "encode_indices", refuse)
    again = TokenDataModule(spectrogram_dm(), load_frozen_vqvae(vq_files["run"]), cache_dir=cache)
    again.prepare_data()
    again.setup("fit")
    assert torch.equal(again.datasets["val"].tensors[0], dm.datasets["val"].tensors[0])
    monkeypatch.undo()
    # another VQ-VAE or another split: another file
    other = FrozenVQVAE(VQVAEModule(**TINY).to_diffusers())
    TokenDataModule(spectrogram_dm(), other, cache_dir=cache).setup("fit")
    TokenDataModule(spectrogram_dm(split_seed=3), vq, cache_dir=cache).setup("fit")
    assert len(list(cache.glob("tokens-*.npz"))) == 3
    assert not list(cache.glob(".*tmp")), "atomic writes leave no temporary files"


def test_the_token_key_is_described_where_only_the_spectrograms_were_set_up(vq_files, tmp_path):
    """The main process of `ddp_spawn` sets up the spectrograms (the prior checks its data) but
    the token datamodule only in its workers: its summary still names the token cache."""
    vq = load_frozen_vqvae(vq_files["exported"])
    spec = spectrogram_dm()
    spec.prepare_data()
    spec.setup("fit")
    main_process = TokenDataModule(spec, vq, cache_dir=tmp_path)
    worker = TokenDataModule(spectrogram_dm(), vq, cache_dir=tmp_path)
    worker.setup("fit")
    assert main_process.describe()["token_key"] == worker.describe()["token_key"] == worker.token_key


def test_unreadable_token_cache_is_rebuilt(vq_files, tmp_path):
    vq = load_frozen_vqvae(vq_files["exported"])
    dm = TokenDataModule(spectrogram_dm(), vq, cache_dir=tmp_path)
    dm.setup("fit")
    path = dm.cache_path()
    path.write_bytes(b"garbage")
    fresh = TokenDataModule(spectrogram_dm(), vq, cache_dir=tmp_path)
    fresh.setup("fit")
    assert torch.equal(fresh.datasets["train"].tensors[0], dm.datasets["train"].tensors[0])
    with np.load(path) as z:
        assert "codes_train" in z.files


def test_altered_token_cache_is_rebuilt_with_a_warning_naming_it(vq_files, tmp_path, caplog):
    vq = load_frozen_vqvae(vq_files["exported"])
    dm = TokenDataModule(spectrogram_dm(), vq, cache_dir=tmp_path)
    dm.setup("fit")
    path = dm.cache_path()
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels_train"] = (arrays["labels_train"] + 1) % 3  # a valid .npz, altered labels
    np.savez(path, **arrays)
    fresh = TokenDataModule(spectrogram_dm(), vq, cache_dir=tmp_path)
    fresh.setup("fit")
    assert torch.equal(fresh.datasets["train"].tensors[1], dm.datasets["train"].tensors[1])
    assert re.search(rf"rebuilding tokens cache: .*{re.escape(path.name)}: content checksum "
                     "mismatch", caplog.text)
