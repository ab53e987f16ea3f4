"""Tests of the hybrid route: the latent-diffusion prior on a frozen VQ-VAE's pre-quantisation
latents (mdvq.models.latent_diffusion with mdvq.models.frozen_vqvae / frozen_autoencoder and
mdvq.data.latents): the latent cache and its measured scale, snapped decoding, a toy prior that
samples the right code map per class, checkpoint / export reload, and the refusals."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import InMemorySource, make_set
from diffusers import AutoencoderKL, VQModel
from torch.utils.data import DataLoader, TensorDataset

from mdvq.core.samples import write_samples
from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.latents import LatentDataModule
from mdvq.models.frozen_autoencoder import load_frozen_autoencoder
from mdvq.models.frozen_klvae import FrozenKLVAE
from mdvq.models.frozen_vqvae import FrozenVQVAE
from mdvq.models.latent_diffusion import LatentDiffusionModule, load_exported_latent_prior
from mdvq.runs.prior_sampling import load_prior, sample_prior
from mdvq.utils.pixels import to_unit

D = 4  # code dimension (= pre-quantisation latent channels)
# The codebook of the toy VQ-VAE: +-e_i for i < D (8 codes, pairwise distance >= sqrt(2)).
CODEBOOK = torch.cat([torch.eye(D), -torch.eye(D)])
# The class maps of the toy problem, 4x4 code indices: class 0 is +e0 left / +e1 right,
# class 1 is -e2 on top / -e3 below.
MAPS = torch.stack([
    torch.tensor([[0, 0, 1, 1]] * 4),
    torch.tensor([[6] * 4] * 2 + [[7] * 4] * 2),
])


def tiny_vqmodel(seed: int = 0) -> VQModel:
    """An untrained 2-level VQModel (downsampling 2, 4-dim codes) whose codebook is CODEBOOK."""
    torch.manual_seed(seed)
    model = VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                    layers_per_block=1, latent_channels=D, num_vq_embeddings=len(CODEBOOK),
                    norm_num_groups=4, sample_size=8, mid_block_add_attention=False)
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(CODEBOOK)
    return model.eval()


def save_tiny_vq(folder: Path, seed: int = 0) -> Path:
    tiny_vqmodel(seed).save_pretrained(folder)
    return folder


def tiny_prior(autoencoder, **kw) -> LatentDiffusionModule:
    args = {"num_classes": 2, "image_size": (8, 8), "block_out_channels": (16, 32),
            "down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2,
            "norm_num_groups": 8, "num_train_timesteps": 100, "sample_steps": 10,
            "sample_guidance": 1.0, "val_samples_per_class": 0, "ema_decay": 0.99,
            "optimizer": functools.partial(torch.optim.AdamW, lr=3e-3)}
    args.update(kw)
    return LatentDiffusionModule(str(autoencoder), **args)


def spectrograms(per_class: int = 12) -> SpectrogramDataModule:
    return SpectrogramDataModule(InMemorySource(make_set(n_classes=2, per_class=per_class,
                                                         size=(8, 8))),
                                 image_size=(8, 8), batch_size=4)


class ToyCodeLatents(L.LightningDataModule):
    """Two classes, each always the latents of its code map (MAPS), announced with a latent
    scale of 1 and shift 0 as LatentDataModule does."""

    scaling_factor, shift_factor = 1.0, 0.0

    def __init__(self, n_per_class: int = 64):
        super().__init__()
        maps = CODEBOOK[MAPS].permute(0, 3, 1, 2)  # (2, D, 4, 4)
        self.z = maps.repeat_interleave(n_per_class, 0).contiguous()
        self.labels = torch.arange(2).repeat_interleave(n_per_class)
        self.class_names = ["alpha", "beta"]
        self.freqs_hz, self.times_s, self.data_key = [-1.0, 1.0], [0.0, 1.0], "toy"

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.z, self.labels), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.z, self.labels), batch_size=128)


def trainer(**kw) -> L.Trainer:
    base = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False}
    base.update(kw)
    return L.Trainer(**base)


def nearest_codes(h: torch.Tensor) -> torch.Tensor:
    """Indices (B, h, w) of the nearest CODEBOOK vectors of latents (B, D, h, w), by hand."""
    flat = h.permute(0, 2, 3, 1).reshape(-1, D)
    return torch.cdist(flat, CODEBOOK).argmin(1).reshape(h.shape[0], *h.shape[2:])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny prior trained on the two code maps; its VQ-VAE folder is deleted afterwards, so
    loading the checkpoint proves it carries the VQ-VAE."""
    tmp = tmp_path_factory.mktemp("hybrid")
    vq = save_tiny_vq(tmp / "vq")
    torch.manual_seed(0)
    module = tiny_prior(vq, label_drop_prob=0.3)
    t = trainer(max_epochs=40, check_val_every_n_epoch=20)
    t.fit(module, ToyCodeLatents())
    ckpt = tmp / "toy.ckpt"
    t.save_checkpoint(ckpt)
    shutil.rmtree(vq)
    return {"module": module.eval(), "ckpt": ckpt, "tmp": tmp}


# ---------------------------------------------------------------------------- latents and scale
def test_pre_quantisation_latents_are_cached_and_scaled_to_unit_variance(tmp_path):
    vq = save_tiny_vq(tmp_path / "vq")
    module = tiny_prior(vq, cache_dir=str(tmp_path / "cache"))
    assert isinstance(module.autoencoder, FrozenVQVAE) and module.autoencoder_kind == "vqvae"
    assert module.latent_shape == (D, 4, 4)
    dm = spectrograms()
    latents = module.wrap_datamodule(dm)
    latents.setup("fit")
    files = list((tmp_path / "cache").glob("latents-*.npz"))
    assert len(files) == 1
    x, _ = dm.datasets["train"].tensors
    with torch.no_grad():
        expected = tiny_vqmodel().encode(x).latents  # after quant_conv, before the quantiser
    with np.load(files[0], allow_pickle=False) as npz:
        assert "latents_train" in npz and "std_train" not in npz and "mean_train" not in npz
        torch.testing.assert_close(torch.from_numpy(npz["latents_train"]), expected)
        assert json.loads(str(npz["meta"]))["vqvae"] == module.autoencoder.fingerprint
    # the scale is measured, not assumed: 1 / std of the training latents, which it whitens
    std = float(expected.double().std())
    assert latents.latent_stats["std"] == pytest.approx(std, rel=1e-5)
    assert latents.scaling_factor == pytest.approx(1 / std, rel=1e-5)
    assert std != pytest.approx(1.0, abs=0.05)  # this VQ-VAE's latents are not unit-variance
    scaled = torch.stack([latents.datasets["train"][i][0] for i in range(len(x))])
    assert float(scaled.std()) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(scaled, expected * latents.scaling_factor)  # deterministic
    assert len(latents.latent_stats["channel_std"]) == D
    described = latents.describe()
    assert described["autoencoder_kind"] == "vqvae" and described["sample_posterior"] is False
    assert described["latent_std"] == pytest.approx(std, rel=1e-5)
    # the prior takes the measured scale when it trains; its checkpoint keeps the statistics
    trainer(max_steps=1, limit_val_batches=1).fit(module, latents)
    assert float(module.latent_scale) == pytest.approx(latents.scaling_factor)
    assert module.latent_stats["std"] == pytest.approx(std, rel=1e-5)
    # the same VQ-VAE on the same data reads the cache; other weights get another file
    again = LatentDataModule(spectrograms(), module.autoencoder, cache_dir=tmp_path / "cache")
    again.autoencoder.encode_latents = None  # would fail if called
    again.setup("fit")
    assert again.scaling_factor == pytest.approx(latents.scaling_factor)
    other = LatentDataModule(spectrograms(), FrozenVQVAE(tiny_vqmodel(seed=1)),
                             cache_dir=tmp_path / "cache")
    other.setup("fit")
    assert len(list((tmp_path / "cache").glob("latents-*.npz"))) == 2


# ---------------------------------------------------------------------------- decoding
def test_snapped_decoding_equals_decoding_the_nearest_codes():
    ae = FrozenVQVAE(tiny_vqmodel())
    h = torch.randn(3, D, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.7
    idx = nearest_codes(h)
    snapped = ae.decode_latents(h)
    torch.testing.assert_close(snapped, ae.decode_indices(idx))
    torch.testing.assert_close(ae.snap(h), CODEBOOK[idx].permute(0, 3, 1, 2))
    # the ablation decodes the latents as they are, which differs
    raw = ae.decode_latents(h, quantize=False)
    torch.testing.assert_close(raw, ae.model.decode(h, force_not_quantize=True).sample.clamp(-1, 1))
    assert not torch.allclose(raw, snapped, atol=1e-3)
    with pytest.raises(ValueError, match=r"latents must be \(B, 4, h, w\)"):
        ae.decode_latents(torch.zeros(1, 3, 4, 4))


def test_the_prior_decodes_snapped_or_not_as_configured(tmp_path):
    vq = save_tiny_vq(tmp_path / "vq")
    z = torch.randn(2, D, 4, 4, generator=torch.Generator().manual_seed(1))
    snapped, raw = tiny_prior(vq), tiny_prior(vq, decode_quantized=False)
    assert snapped.decode_quantized and not raw.decode_quantized
    for m in (snapped, raw):
        m.set_latent_scale(2.0, 0.1)
    h = z / 2.0 + 0.1  # unscaled
    ae = snapped.autoencoder
    torch.testing.assert_close(snapped.decode(z), to_unit(ae.decode_indices(nearest_codes(h))))
    torch.testing.assert_close(raw.decode(z), to_unit(ae.decode_latents(h, quantize=False)))
    # one trained prior serves both rows of the ablation: switch after training
    snapped.set_decode_quantized(False)
    torch.testing.assert_close(snapped.decode(z), raw.decode(z))
    assert snapped.hparams.decode_quantized is False


# ---------------------------------------------------------------------------- the toy prior
def test_toy_prior_samples_the_code_map_of_each_class(toy):
    module = toy["module"]
    labels = torch.tensor([0] * 8 + [1] * 8)
    for sampler in ("dpm", "ddim"):
        z = module.generate(labels, steps=10, sampler=sampler,
                            generator=torch.Generator().manual_seed(1))
        assert z.shape == (16, D, 4, 4)
        codes = nearest_codes(z / float(module.latent_scale))
        assert torch.equal(codes, MAPS[labels]), sampler  # every position, every sample
        # decoding snaps to exactly those codes
        torch.testing.assert_close(module.decode(z),
                                   to_unit(module.autoencoder.decode_indices(MAPS[labels])))


def test_checkpoint_and_export_reproduce_the_samples(toy, tmp_path):
    module = toy["module"]
    labels = torch.tensor([0, 1, 1, 0])
    z = module.generate(labels, steps=8, generator=torch.Generator().manual_seed(4))
    images = module.decode(z)
    # the checkpoint carries the VQ-VAE (its folder is gone)
    loaded = LatentDiffusionModule.load_from_checkpoint(toy["ckpt"], map_location="cpu").eval()
    assert loaded.autoencoder_kind == "vqvae" and loaded.decode_quantized
    assert loaded.autoencoder.fingerprint == module.autoencoder.fingerprint
    torch.testing.assert_close(loaded.generate(labels, steps=8,
                                               generator=torch.Generator().manual_seed(4)), z)
    # the export alone
    out = module.export_pretrained(tmp_path / "prior")
    assert sorted(p.name for p in out.iterdir()) == ["prior.json", "scheduler", "unet", "vqvae"]
    meta = json.loads((out / "prior.json").read_text())
    assert meta["autoencoder_kind"] == "vqvae" and meta["autoencoder_folder"] == "vqvae"
    assert meta["decode_quantized"] is True and meta["scaling_factor"] == 1.0
    assert json.loads((out / "vqvae" / "config.json").read_text())["_class_name"] == "VQModel"
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    again = load_exported_latent_prior(moved)
    assert again.autoencoder_kind == "vqvae"
    assert again.autoencoder.fingerprint == module.autoencoder.fingerprint  # same latent cache
    assert again.decode_quantized is True
    z2 = again.generate(labels, steps=8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(z2, z)
    torch.testing.assert_close(again.decode(z2), images)
    # the unsnapped ablation, switched after training, survives the export
    module.set_decode_quantized(False)
    try:
        unsnapped = load_exported_latent_prior(module.export_pretrained(tmp_path / "raw"))
    finally:
        module.set_decode_quantized(True)
    assert unsnapped.decode_quantized is False
    torch.testing.assert_close(unsnapped.decode(z), to_unit(
        module.autoencoder.decode_latents(z / float(module.latent_scale), quantize=False)))
    # mdvq.sample's path: load_prior on the export folder, sample, write a samples folder
    prior, _ = load_prior(moved)
    imgs, labs, info = sample_prior(prior, n_per_class=2, steps=8, seed=0)
    assert imgs.shape == (4, 1, 8, 8) and info["autoencoder_kind"] == "vqvae"
    assert info["prior_kind"] == "latentdiffusion"
    write_samples(tmp_path / "samples", imgs, labs, info, pictures=False)
    assert json.loads((tmp_path / "samples" / "meta.json").read_text())["autoencoder_kind"] \
        == "vqvae"


# ---------------------------------------------------------------------------- bad input
def test_decode_quantized_with_a_klvae_is_refused(tmp_path):
    torch.manual_seed(0)
    AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                  layers_per_block=1, latent_channels=4, norm_num_groups=4,
                  mid_block_add_attention=False).save_pretrained(tmp_path / "kl")
    for value in (True, False):
        with pytest.raises(ValueError, match=r"model\.decode_quantized.*VQ-VAE.*KL-VAE"):
            tiny_prior(tmp_path / "kl", decode_quantized=value)
    module = tiny_prior(tmp_path / "kl")  # left null: accepted
    assert isinstance(module.autoencoder, FrozenKLVAE) and module.autoencoder_kind == "klvae"
    with pytest.raises(ValueError, match=r"model\.decode_quantized.*VQ-VAE.*KL-VAE"):
        module.set_decode_quantized(False)


def test_a_classifier_or_prior_as_autoencoder_is_refused_naming_the_key(toy, tmp_path):
    both = r"model\.autoencoder.*KL-VAE.*VQ-VAE"
    with pytest.raises(ValueError, match=r"model\.autoencoder: .*toy\.ckpt is a latent-diffusion "
                                         r"prior checkpoint; give a KL-VAE .* or a VQ-VAE"):
        load_frozen_autoencoder(toy["ckpt"])
    run = tmp_path / "cls"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"model": "classifier"}))
    with pytest.raises(ValueError, match=r"model\.autoencoder: this is a 'classifier' run, "
                                         r"expected 'klvae' or 'vqvae'.*KL-VAE.*VQ-VAE"):
        tiny_prior(run)
    export = toy["module"].export_pretrained(tmp_path / "exported")
    with pytest.raises(ValueError, match=r"model\.autoencoder: .*exported is an exported prior "
                                         r"\(prior\.json\).*give a KL-VAE .* or a VQ-VAE"):
        tiny_prior(export)
    with pytest.raises(ValueError, match=both):
        LatentDiffusionModule(None)


# ---------------------------------------------------------------------------- the command
PRIOR_TINY = ["model.block_out_channels=[8,16]", "model.down_block_types=[DownBlock2D,DownBlock2D]",
              "model.up_block_types=[UpBlock2D,UpBlock2D]", "model.norm_num_groups=4",
              "model.val_samples_per_class=0", "model.batch_size=8", "trainer.max_epochs=2",
              "callbacks.training_budget.min_steps=0"]


@pytest.mark.slow
def test_the_run_command_trains_the_hybrid_on_a_vqvae_run(tmp_path, data_cache):
    """`python -m mdvq.run experiment=latentdiffusion model.autoencoder=<VQ-VAE run>` (composed
    in-process): the summary names the autoencoder kind and the measured latent std, the
    export holds vqvae/, and `mdvq.sample` draws from the run folder."""
    from conftest import compose_cfg, data_overrides, tiny_overrides

    from mdvq.runs.training import train
    from mdvq.sample import main as sample_main

    vq = train(compose_cfg(tiny_overrides(tmp_path / "vq", "vqvae", data_cache)
                           + ["trainer.max_epochs=1", "callbacks.training_budget.min_steps=0"]))
    vq_dir = Path(vq["run_dir"]) if vq.get("run_dir") else tmp_path / "vq" / "run"
    classes = vq["data"]["class_names"]
    prior = train(compose_cfg(["experiment=latentdiffusion",
                               *data_overrides(tmp_path / "ld", data_cache),
                               f"model.autoencoder={vq_dir}", f"model.num_classes={len(classes)}",
                               "model.decode_quantized=false", *PRIOR_TINY]))
    assert prior["status"] == "finished"
    data = prior["data"]
    assert data["autoencoder_kind"] == "vqvae" and data["latent_shape"] == [4, 8, 8]
    assert data["scaling_factor"] == pytest.approx(1 / data["latent_std"])
    run = tmp_path / "ld" / "run"
    meta = json.loads(next(run.rglob("prior.json")).read_text())
    assert meta["autoencoder_kind"] == "vqvae" and meta["decode_quantized"] is False
    assert meta["latent_stats"]["std"] == pytest.approx(data["latent_std"])
    out = sample_main([str(run), "n_per_class=1", "steps=3", f"out={tmp_path / 'samples'}"])
    info = json.loads((out / "meta.json").read_text())
    assert info["autoencoder_kind"] == "vqvae" and len(info["class_names"]) == len(classes)
