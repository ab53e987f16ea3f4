"""Tests of the frozen KL-VAE loader (mdvq.models.frozen_klvae) and the latent cache and scale
(mdvq.data.latents)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import InMemorySource, make_set
from diffusers import VQModel
from torch.utils.data import DataLoader, TensorDataset

from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.latents import LatentDataModule
from mdvq.models import KLVAEModule, VQVAEModule
from mdvq.models.frozen_klvae import FrozenKLVAE, klvae_fingerprint, load_frozen_klvae

TINY = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 4, "latent_channels": 4,
        "mid_block_add_attention": False, "image_size": (16, 24)}


def fit_one_step(module, path: Path) -> Path:
    """Train ``module`` one step on random [-1, 1] images and save a Lightning checkpoint."""
    x = torch.rand(8, 1, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loader = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, loader)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def kl_files(tmp_path_factory):
    """A tiny trained KLVAEModule as a checkpoint, a diffusers folder and a run folder."""
    tmp = tmp_path_factory.mktemp("kl")
    torch.manual_seed(0)
    module = KLVAEModule(**TINY)
    ckpt = fit_one_step(module, tmp / "kl.ckpt")
    exported = module.export_pretrained(tmp / "exported")
    run = tmp / "run"
    module.export_pretrained(run / "pretrained")
    (run / "summary.json").write_text(json.dumps({
        "model": "klvae", "pretrained_dir": str(tmp / "moved-away"),  # stale path: falls back
        "config": {"data": {"image_size": [16, 24]}}, "checkpoints": {"best": str(ckpt)}}))
    return {"module": module.eval(), "ckpt": ckpt, "exported": exported, "run": run, "tmp": tmp}


def test_every_source_loads_the_same_frozen_klvae(kl_files):
    module = kl_files["module"]
    x = torch.rand(3, 1, 16, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    dist = module.model.encode(x).latent_dist
    expected_img = module.model.decode(dist.mean).sample.clamp(-1, 1)
    loaded = {name: load_frozen_klvae(kl_files[name]) for name in ("ckpt", "exported", "run")}
    prints = {v.fingerprint for v in loaded.values()}
    assert len(prints) == 1 and len(prints.pop()) == 16
    for name, ae in loaded.items():
        assert isinstance(ae, FrozenKLVAE)
        assert ae.latent_channels == 4 and ae.downsampling == 2
        assert ae.latent_shape((16, 24)) == (4, 8, 12)
        mean, std = ae.encode_posterior(x)
        assert mean.shape == std.shape == (3, 4, 8, 12), name
        torch.testing.assert_close(mean, dist.mean, msg=name)
        torch.testing.assert_close(std, dist.std, msg=name)
        assert bool((std > 0).all())
        torch.testing.assert_close(ae.decode_latents(mean), expected_img, msg=name)
        assert not any(p.requires_grad for p in ae.parameters())
        ae.train()
        assert not ae.model.training, "stays in eval mode"
    assert loaded["run"].image_size == (16, 24) and loaded["ckpt"].image_size == (16, 24)
    assert loaded["run"].source.endswith("pretrained")


def test_fingerprint_ignores_the_latent_scale_but_not_the_weights(kl_files):
    ae = load_frozen_klvae(kl_files["exported"])
    before = klvae_fingerprint(ae.model)
    ae.model.register_to_config(scaling_factor=0.37, shift_factor=0.1)
    assert klvae_fingerprint(ae.model) == before
    assert klvae_fingerprint(KLVAEModule(**TINY).model) != before


def test_scale_and_unscale_are_the_diffusers_convention():
    z = torch.tensor([2.0, -1.0])
    scaled = FrozenKLVAE.scale(z, 0.5, 1.0)
    assert scaled.tolist() == [0.5, -1.0]  # (z - shift) * scale
    assert FrozenKLVAE.unscale(scaled, 0.5, 1.0).tolist() == [2.0, -1.0]


def test_a_vqvae_is_refused_naming_the_key_and_the_kind(tmp_path):
    expected = r"model\.autoencoder.*KL-VAE"
    VQModel(in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=4,
            latent_channels=2, num_vq_embeddings=8).save_pretrained(tmp_path / "vq")
    with pytest.raises(ValueError, match=expected) as err:
        load_frozen_klvae(tmp_path / "vq")
    assert "VQModel" in str(err.value)
    (tmp_path / "vqrun").mkdir()
    (tmp_path / "vqrun" / "summary.json").write_text(json.dumps({"model": "vqvae"}))
    with pytest.raises(ValueError, match=r"model\.autoencoder.*'vqvae' run.*KL-VAE"):
        load_frozen_klvae(tmp_path / "vqrun")
    vq_ckpt = fit_one_step(VQVAEModule(**TINY, num_vq_embeddings=16), tmp_path / "vq.ckpt")
    with pytest.raises(ValueError, match=r"model\.autoencoder.*VQ-VAE checkpoint.*KL-VAE"):
        load_frozen_klvae(vq_ckpt)


def test_load_frozen_autoencoder_takes_either_kind_from_every_form(kl_files, tmp_path):
    from mdvq.models.frozen_autoencoder import load_frozen_autoencoder
    from mdvq.models.frozen_vqvae import FrozenVQVAE

    for name in ("ckpt", "exported", "run"):
        ae = load_frozen_autoencoder(kl_files[name])
        assert isinstance(ae, FrozenKLVAE) and ae.kind == "klvae", name
    torch.manual_seed(0)
    vq = VQVAEModule(**TINY, num_vq_embeddings=16)
    ckpt = fit_one_step(vq, tmp_path / "vq.ckpt")
    exported = vq.export_pretrained(tmp_path / "vq-exported")
    run = tmp_path / "vqrun"
    vq.export_pretrained(run / "pretrained")
    (run / "summary.json").write_text(json.dumps({
        "model": "vqvae", "config": {"data": {"image_size": [16, 24]}},
        "checkpoints": {"best": str(ckpt)}}))
    loaded = {p: load_frozen_autoencoder(p) for p in (ckpt, exported, run)}
    assert all(isinstance(ae, FrozenVQVAE) and ae.kind == "vqvae" for ae in loaded.values())
    assert len({ae.fingerprint for ae in loaded.values()}) == 1
    assert loaded[run].image_size == (16, 24)
    assert loaded[ckpt].latent_shape((16, 24)) == (4, 8, 12)


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.autoencoder.*nowhere"):
        load_frozen_klvae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*neither"):
        load_frozen_klvae(tmp_path / "empty")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.pt.*\.ckpt"):
        load_frozen_klvae(tmp_path / "w.pt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"model\.autoencoder.*bad\.ckpt.*readable"):
        load_frozen_klvae(tmp_path / "bad.ckpt")
    (tmp_path / "badrun").mkdir()
    (tmp_path / "badrun" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"summary\.json.*unreadable"):
        load_frozen_klvae(tmp_path / "badrun")


def spectrogram_dm(**kw) -> SpectrogramDataModule:
    source = InMemorySource(make_set(n_classes=3, per_class=12, n_subjects=6, size=(16, 24)))
    return SpectrogramDataModule(source, image_size=(16, 24), batch_size=5, eval_batch_size=7, **kw)


def test_latents_are_encoded_once_cached_and_reused(kl_files, tmp_path, monkeypatch):
    ae = load_frozen_klvae(kl_files["exported"])
    cache = tmp_path / "cache"
    dm = LatentDataModule(spectrogram_dm(), ae, cache_dir=cache, sample_posterior=False,
                          encode_batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    files = list(cache.glob("latents-*.npz"))
    assert len(files) == 1
    spec = dm.spectrograms
    assert dm.split_counts == spec.split_counts and sum(dm.split_counts.values()) == 36
    for split in ("train", "val", "test"):
        x, y = spec.datasets[split].tensors
        mean, std = ae.encode_posterior(x)
        ds = dm.datasets[split]
        torch.testing.assert_close(ds.mean, mean, msg=split)
        torch.testing.assert_close(ds.std, std, msg=split)
        assert torch.equal(ds.labels, y), split
        z, label = ds[0]
        torch.testing.assert_close(z, (mean[0] - dm.shift_factor) * dm.scaling_factor)
        assert int(label) == int(y[0])
    assert dm.latent_shape == (4, 8, 12) and dm.class_names == ["class0", "class1", "class2"]
    np.testing.assert_allclose(dm.freqs_hz, spec.freqs_hz)
    assert dm.data_key == spec.data_key and dm.latent_key
    desc = dm.describe()
    assert desc["latent_shape"] == [4, 8, 12] and desc["scaling_factor"] == dm.scaling_factor
    z, labels = next(iter(dm.train_dataloader()))
    assert z.shape == (5, 4, 8, 12) and z.dtype == torch.float32 and labels.dtype == torch.int64

    def refuse(*a, **k):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(FrozenKLVAE, "encode_posterior", refuse)
    again = LatentDataModule(spectrogram_dm(), load_frozen_klvae(kl_files["run"]), cache_dir=cache,
                             sample_posterior=False)
    again.prepare_data()
    again.setup("fit")
    torch.testing.assert_close(again.datasets["val"].mean, dm.datasets["val"].mean)
    assert again.scaling_factor == pytest.approx(dm.scaling_factor)
    monkeypatch.undo()
    # another KL-VAE or another split: another file
    other = FrozenKLVAE(KLVAEModule(**TINY).model)
    LatentDataModule(spectrogram_dm(), other, cache_dir=cache).setup("fit")
    LatentDataModule(spectrogram_dm(split_seed=3), ae, cache_dir=cache).setup("fit")
    assert len(list(cache.glob("latents-*.npz"))) == 3
    assert not list(cache.glob(".*tmp")), "atomic writes leave no temporary files"
    # an unreadable cache file is rebuilt
    files[0].write_bytes(b"garbage")
    fresh = LatentDataModule(spectrogram_dm(), ae, cache_dir=cache, sample_posterior=False)
    fresh.setup("fit")
    torch.testing.assert_close(fresh.datasets["train"].mean, dm.datasets["train"].mean)


@pytest.mark.parametrize("sample_posterior", [False, True])
def test_scaling_factor_makes_the_training_latents_unit_variance(kl_files, sample_posterior):
    ae = load_frozen_klvae(kl_files["exported"])
    # an untrained encoder's posterior std (~1) is comparable to its means' spread: both count
    dm = LatentDataModule(spectrogram_dm(), FrozenKLVAE(KLVAEModule(**TINY).model),
                          sample_posterior=sample_posterior, use_shift=True)
    dm.setup("fit")
    train = dm.datasets["train"]
    torch.manual_seed(0)
    z = torch.stack([train[i][0] for i in range(len(train)) for _ in range(20 if sample_posterior
                                                                              else 1)])
    assert float(z.std()) == pytest.approx(1.0, abs=0.03)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.03)
    raw_std = float((train.mean.std() ** 2 + (train.std.square().mean() if sample_posterior
                                              else 0)) ** 0.5)
    assert dm.scaling_factor == pytest.approx(1 / raw_std, rel=1e-4)
    assert dm.scaling_factor != pytest.approx(0.18215, rel=0.1)
    # validation noise is fixed per example; training noise is fresh
    val = dm.datasets["val"]
    assert torch.equal(val[0][0], val[0][0])
    assert torch.equal(train[0][0], train[0][0]) != sample_posterior
    # fixed values are used as given; a shift is measured only when asked for
    fixed = LatentDataModule(spectrogram_dm(), ae, scaling_factor=0.5, shift_factor=0.25)
    fixed.setup("fit")
    assert (fixed.scaling_factor, fixed.shift_factor) == (0.5, 0.25)
    plain = LatentDataModule(spectrogram_dm(), ae)
    plain.setup("fit")
    assert plain.shift_factor == 0.0
    with pytest.raises(ValueError, match="model.scaling_factor"):
        LatentDataModule(spectrogram_dm(), ae, scaling_factor=0.0)
