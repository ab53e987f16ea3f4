"""Tests of mdvq.models.latent_diffusion.LatentDiffusionModule: a toy prior that learns, both
samplers, guidance, EMA, checkpoints, export and reload, config and errors."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL, VQModel
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from mdvq.models.latent_diffusion import LatentDiffusionModule, load_exported_latent_prior

CONF = Path(__file__).resolve().parents[1] / "conf"
# The two class maps of the toy problem: constant per channel, opposite signs.
SIGNS = torch.tensor([1.0, -1.0, 1.0, -1.0])


def save_tiny_kl(folder: Path, seed: int = 0) -> Path:
    """An untrained 2-level AutoencoderKL (4 latent channels, downsampling 2), saved."""
    torch.manual_seed(seed)
    AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                  layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=8,
                  mid_block_add_attention=False).save_pretrained(folder)
    return folder


def tiny_prior(kl: Path, **kw) -> LatentDiffusionModule:
    args = {"num_classes": 2, "image_size": (8, 8), "block_out_channels": (16, 32),
            "down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2,
            "norm_num_groups": 8, "num_train_timesteps": 100, "sample_steps": 10,
            "sample_guidance": 1.0, "val_samples_per_class": 0, "ema_decay": 0.99,
            "optimizer": functools.partial(torch.optim.AdamW, lr=3e-3)}
    args.update(kw)
    return LatentDiffusionModule(str(kl), **args)


class ToyLatents(L.LightningDataModule):
    """Two classes, each always the same 4x4 latent map (+-SIGNS per channel), already scaled;
    announces a latent scale of 1 and shift 0 as LatentDataModule does."""

    scaling_factor, shift_factor = 1.0, 0.0

    def __init__(self, n_per_class: int = 64):
        super().__init__()
        self.maps = torch.stack([SIGNS, -SIGNS])[:, :, None, None].expand(2, 4, 4, 4)
        self.z = self.maps.repeat_interleave(n_per_class, 0).contiguous()
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


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny prior trained on the toy latents; its KL-VAE folder is deleted afterwards, so
    loading the checkpoint proves it carries the KL-VAE."""
    tmp = tmp_path_factory.mktemp("toy")
    kl = save_tiny_kl(tmp / "kl")
    torch.manual_seed(0)
    module = tiny_prior(kl, label_drop_prob=0.3)
    data = ToyLatents()
    t = trainer(max_epochs=40, check_val_every_n_epoch=20)
    t.fit(module, data)
    ckpt = tmp / "toy.ckpt"
    t.save_checkpoint(ckpt)
    shutil.rmtree(kl)
    return {"module": module.eval(), "data": data, "ckpt": ckpt, "tmp": tmp,
            "val_loss": float(t.callback_metrics["val/loss"])}


def class_of(z: torch.Tensor) -> torch.Tensor:
    """Which toy map each latent ``(B, 4, h, w)`` is closer to (0 or 1)."""
    score = (z.mean(dim=(2, 3)) * SIGNS).sum(1)
    return (score < 0).long()


def map_error(z: torch.Tensor, labels: torch.Tensor) -> float:
    target = torch.stack([SIGNS, -SIGNS])[labels][:, :, None, None]
    return float((z - target).abs().mean())


@pytest.mark.parametrize("sampler,steps", [("dpm", 10), ("dpm", 25), ("ddim", 10), ("ddim", 25)])
def test_toy_prior_samples_the_map_of_each_class(toy, sampler, steps):
    module = toy["module"]
    labels = torch.tensor([0] * 8 + [1] * 8)
    z = module.generate(labels, steps=steps, guidance=1.0, sampler=sampler,
                        generator=torch.Generator().manual_seed(1))
    assert z.shape == (16, 4, 4, 4) and z.dtype == torch.float32
    assert torch.equal(class_of(z), labels), (sampler, steps)
    assert map_error(z, labels) < 0.3, (sampler, steps)
    images = module.decode(z)
    assert images.shape == (16, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_validation_loss_is_low(toy):
    # v-prediction on two constant maps: a model that ignored the data would sit near 1
    assert toy["val_loss"] < 0.2


def test_guidance_scale_changes_the_samples(toy):
    module = toy["module"]
    labels = torch.zeros(64, dtype=torch.long)
    picked = {}
    for scale in (0.0, 1.0, 3.0):
        z = module.generate(labels, steps=10, guidance=scale,
                            generator=torch.Generator().manual_seed(2))
        picked[scale] = float(class_of(z).float().mean())  # share that came out as class 1
    # s = 0 is the unconditional model (a mixture of both maps); s >= 1 follows the class
    assert 0.0 < picked[0.0] < 1.0 and picked[1.0] == 0.0 and picked[3.0] == 0.0, picked
    # ... and the unconditional model ignores the label altogether
    other = module.generate(torch.ones(64, dtype=torch.long), steps=10, guidance=0.0,
                            generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(other, module.generate(labels, steps=10, guidance=0.0,
                                                      generator=torch.Generator().manual_seed(2)))


def test_seeds_reproduce_and_differ(toy):
    module, labels = toy["module"], torch.tensor([0, 1, 0, 1])
    a = module.generate(labels, generator=torch.Generator().manual_seed(5))
    b = module.generate(labels, generator=torch.Generator().manual_seed(5))
    c = module.generate(labels, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_sampling_uses_the_ema_weights(toy):
    module = toy["module"]
    raw = [p.detach().clone() for p in module.unet.parameters()]
    with module.ema_weights():
        ema = [p.detach().clone() for p in module.unet.parameters()]
    assert any(not torch.equal(r, e) for r, e in zip(raw, ema))
    for r, e, s in zip(raw, ema, module.ema.shadow_params):
        torch.testing.assert_close(e, s)
    assert all(torch.equal(r, p) for r, p in zip(raw, module.unet.parameters())), "restored"


def test_checkpoint_reloads_without_the_autoencoder_folder(toy):
    module = toy["module"]
    loaded = LatentDiffusionModule.load_from_checkpoint(toy["ckpt"], map_location="cpu").eval()
    assert loaded.autoencoder.fingerprint == module.autoencoder.fingerprint
    assert loaded.data_info["class_names"] == ["alpha", "beta"]
    assert float(loaded.latent_scale) == 1.0 and float(loaded.latent_shift) == 0.0
    labels = torch.tensor([0, 1])
    a = loaded.generate(labels, steps=5, generator=torch.Generator().manual_seed(3))
    b = module.generate(labels, steps=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_a_checkpoint_from_before_the_hybrid_route_loads_as_kl(toy, tmp_path):
    """Checkpoints written before `autoencoder_kind` existed hold a KL-VAE."""
    ckpt = torch.load(toy["ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"].pop("autoencoder_kind") == "klvae"
    ckpt["hyper_parameters"].pop("decode_quantized")
    torch.save(ckpt, tmp_path / "old.ckpt")
    loaded = LatentDiffusionModule.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    assert loaded.autoencoder_kind == "klvae"
    assert loaded.autoencoder.fingerprint == toy["module"].autoencoder.fingerprint


def test_export_reloads_from_the_folder_alone(toy, tmp_path):
    module = toy["module"]
    module.set_latent_scale(0.8, 0.1)  # as if measured on real latents
    try:
        out = module.export_pretrained(tmp_path / "prior")
        labels = torch.tensor([0, 1, 1])
        z = module.generate(labels, steps=8, sampler="dpm",
                            generator=torch.Generator().manual_seed(4))
        images = module.decode(z)
    finally:
        module.set_latent_scale(1.0, 0.0)
    vae_cfg = json.loads((out / "vae" / "config.json").read_text())
    assert vae_cfg["_class_name"] == "AutoencoderKL"
    assert vae_cfg["scaling_factor"] == pytest.approx(0.8) and vae_cfg["shift_factor"] == 0.1
    sched_cfg = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched_cfg["_class_name"] == "DPMSolverMultistepScheduler"
    assert sched_cfg["prediction_type"] == "v_prediction"
    meta = json.loads((out / "prior.json").read_text())
    assert meta["class_names"] == ["alpha", "beta"] and meta["freqs_hz"] == [-1.0, 1.0]
    assert meta["sample_steps"] == 10 and meta["null_class"] == 2
    assert (meta["autoencoder_kind"], meta["autoencoder_folder"]) == ("klvae", "vae")
    assert meta["decode_quantized"] is None
    moved = tmp_path / "moved"
    shutil.move(out, moved)  # nothing outside the folder is needed
    loaded = load_exported_latent_prior(moved)
    assert not loaded.training and loaded.ema is None
    assert loaded.data_info["class_names"] == ["alpha", "beta"]
    assert loaded.autoencoder.fingerprint == module.autoencoder.fingerprint
    z2 = loaded.generate(labels, steps=8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(z2, z)  # unet/ holds the EMA weights the module samples with
    torch.testing.assert_close(loaded.decode(z2), images)
    # a diffusers user gets the same decoding from vae/ alone
    vae = AutoencoderKL.from_pretrained(moved / "vae")
    direct = vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample
    torch.testing.assert_close(((direct.clamp(-1, 1) + 1) / 2), images)


def test_labels_are_dropped_to_the_null_class(tmp_path, monkeypatch):
    kl = save_tiny_kl(tmp_path / "kl")
    module = tiny_prior(kl, label_drop_prob=0.5)
    assert module.unet.class_embedding.num_embeddings == 3  # 2 classes + null
    seen = []
    original = module.forward
    monkeypatch.setattr(module, "forward",
                        lambda z, t, lab: (seen.append(lab), original(z, t, lab))[1])
    module.log = lambda *a, **k: None
    torch.manual_seed(0)
    module.training_step((torch.randn(2000, 4, 4, 4), torch.randint(0, 2, (2000,))), 0)
    assert abs((seen[0] == 2).float().mean().item() - 0.5) < 0.05
    assert set(seen[0].tolist()) == {0, 1, 2}


def test_min_snr_weights_match_their_definition(tmp_path):
    kl = save_tiny_kl(tmp_path / "kl")
    t = torch.tensor([0, 100, 500, 999])
    acp = None
    for pred in ("epsilon", "v_prediction"):
        module = tiny_prior(kl, prediction_type=pred, min_snr_gamma=5.0, beta_schedule="linear",
                            num_train_timesteps=1000)
        acp = module.noise_scheduler.alphas_cumprod[t].double()
        snr = acp / (1 - acp)
        expected = snr.clamp(max=5) / (snr if pred == "epsilon" else snr + 1)
        torch.testing.assert_close(module._loss_weights(t).double(), expected, rtol=1e-4, atol=1e-6)
    assert float(acp[0] / (1 - acp[0])) > 5  # the clip is active at small t
    off = tiny_prior(kl, min_snr_gamma=None)
    assert torch.equal(off._loss_weights(t), torch.ones(4))


def test_epsilon_prediction_learns_its_target_and_samples(tmp_path):
    kl = save_tiny_kl(tmp_path / "kl")
    torch.manual_seed(0)
    # epsilon needs a schedule whose last step keeps some signal (refused otherwise, below)
    module = tiny_prior(kl, prediction_type="epsilon", label_drop_prob=0.0,
                        beta_schedule="scaled_linear", num_train_timesteps=1000, ema_decay=0.0)
    data = ToyLatents()
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (128,), generator=g)
    noise = torch.randn(data.z.shape, generator=g)
    with torch.no_grad():
        z_t = module.noise_scheduler.add_noise(data.z, noise, t)
        # the target is the noise itself: predicting it exactly gives zero loss
        module.forward = lambda z, tt, lab: (z_t - module.noise_scheduler.alphas_cumprod[tt]
                                             .sqrt()[:, None, None, None] * data.z) / (
            1 - module.noise_scheduler.alphas_cumprod[tt]).sqrt()[:, None, None, None]
        assert float(module._loss(data.z, data.labels, t, noise)["mse"]) < 1e-8
        del module.forward
        before = float(module._loss(data.z, data.labels, t, noise)["mse"])
    trainer(max_epochs=20, limit_val_batches=0).fit(module, data)
    with torch.no_grad():
        after = float(module._loss(data.z, data.labels, t, noise)["mse"])
    assert after < 0.5 * before, (before, after)
    for sampler in ("dpm", "ddim"):
        z = module.eval().generate(torch.tensor([0, 1]), steps=5, sampler=sampler)
        assert z.shape == (2, 4, 4, 4) and torch.isfinite(z).all()


def test_model_yaml_is_commented_and_matches_the_constructor(tmp_path):
    text = (CONF / "model" / "latentdiffusion.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"no comment on {line!r}"
    for line in (CONF / "callbacks" / "latent_prior.yaml").read_text().splitlines():
        if re.match(r"^\s+[A-Za-z_]+:", line):
            assert "#" in line, f"no comment on {line!r}"
    assert OmegaConf.load(CONF / "callbacks" / "latent_prior.yaml").model_checkpoint.monitor \
        == "val/loss"
    kl = save_tiny_kl(tmp_path / "kl")
    root = OmegaConf.create({"data": {"image_size": [16, 16]},
                             "paths": {"output_dir": str(tmp_path), "cache_dir": str(tmp_path)}})
    root.model = OmegaConf.load(CONF / "model" / "latentdiffusion.yaml")
    assert "defaults" not in root.model  # cross-group choices live in experiment/latentdiffusion.yaml
    root.model.autoencoder = str(kl)
    module = instantiate(root.model)
    plain = LatentDiffusionModule(str(kl), image_size=(16, 16), output_dir=str(tmp_path),
                                  cache_dir=str(tmp_path))
    assert dict(module.hparams) == dict(plain.hparams)
    assert module.optimizer_factory.keywords == {"lr": 0.001, "weight_decay": 0.01}
    assert 0.5e6 < sum(p.numel() for p in module.unet.parameters()) < 1.5e6


def test_a_vqvae_is_accepted_and_nothing_is_refused_silently(tmp_path):
    """Since the hybrid route (tests/test_hybrid.py) a VQ-VAE is a valid autoencoder: the prior
    then models its pre-quantisation latents (vq_embed_dim channels)."""
    VQModel(in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4, vq_embed_dim=3, num_vq_embeddings=8).save_pretrained(tmp_path / "vq")
    module = tiny_prior(tmp_path / "vq")
    assert module.autoencoder_kind == "vqvae" and module.latent_shape == (3, 4, 4)
    assert module.unet.config.in_channels == 3
    with pytest.raises(ValueError, match="model.autoencoder"):
        LatentDiffusionModule(None)


def test_bad_settings_name_their_key(tmp_path):
    kl = save_tiny_kl(tmp_path / "kl")
    with pytest.raises(ValueError, match="model.sample_steps"):
        tiny_prior(kl, sample_steps=101)
    with pytest.raises(ValueError, match="model.sampler"):
        tiny_prior(kl, sampler="euler")
    with pytest.raises(ValueError, match="model.prediction_type"):
        tiny_prior(kl, prediction_type="sample")
    with pytest.raises(ValueError, match="model.prediction_type=epsilon.*model.beta_schedule"):
        tiny_prior(kl, prediction_type="epsilon")  # cosine: zero SNR at the last step
    with pytest.raises(ValueError, match="model.label_drop_prob"):
        tiny_prior(kl, label_drop_prob=1.0)
    with pytest.raises(ValueError, match="model.norm_num_groups"):
        tiny_prior(kl, norm_num_groups=12)
    with pytest.raises(ValueError, match="one entry per level"):
        tiny_prior(kl, block_out_channels=(16, 32, 32))
    with pytest.raises(ValueError, match=r"latent grid \[3, 4\].*divisible by 2"):
        tiny_prior(kl, image_size=(6, 8))
    with pytest.raises(RuntimeError, match="latent scale is not set"):
        tiny_prior(kl).generate(torch.tensor([0]))


def test_class_count_and_image_size_are_checked_before_training(tmp_path):
    from conftest import InMemorySource, make_set

    from mdvq.data.datamodule import SpectrogramDataModule

    kl = save_tiny_kl(tmp_path / "kl")
    dm = SpectrogramDataModule(InMemorySource(make_set(n_classes=3, per_class=6, size=(16, 16))),
                               image_size=(8, 8), batch_size=4)
    with pytest.raises(ValueError, match=r"model.num_classes is 2 but the data has 3 classes"):
        tiny_prior(kl).wrap_datamodule(dm)
    with pytest.raises(ValueError, match=r"data.image_size \[8, 8\] differs from model.image_size"):
        tiny_prior(kl, num_classes=3, image_size=(16, 16)).wrap_datamodule(dm)
    # a KL-VAE run trained on 8x8 images refuses a prior on 16x16 images
    run = tmp_path / "run"
    shutil.copytree(kl, run / "pretrained")
    (run / "summary.json").write_text(json.dumps({"model": "klvae",
                                                  "config": {"data": {"image_size": [8, 8]}}}))
    with pytest.raises(ValueError, match=r"data.image_size \[16, 16\] does not match the KL-VAE"):
        tiny_prior(run, image_size=(16, 16))
    module = tiny_prior(run, num_classes=3, cache_dir=None)
    latents = module.wrap_datamodule(dm)
    latents.setup("fit")
    assert latents.latent_shape == (4, 4, 4)


def test_training_takes_the_measured_scale_and_refuses_phase1_callbacks(tmp_path):
    from conftest import InMemorySource, make_set
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mdvq.data.datamodule import SpectrogramDataModule

    kl = save_tiny_kl(tmp_path / "kl")
    dm = SpectrogramDataModule(InMemorySource(make_set(n_classes=2, per_class=8, size=(8, 8))),
                               image_size=(8, 8), batch_size=4)
    module = tiny_prior(kl, cache_dir=str(tmp_path / "cache"))
    latents = module.wrap_datamodule(dm)
    trainer(max_steps=2, limit_val_batches=1).fit(module, latents)
    assert float(module.latent_scale) == pytest.approx(latents.scaling_factor)
    assert module.data_info["class_names"] == ["class0", "class1"]
    assert list((tmp_path / "cache").glob("latents-*.npz"))
    t = trainer(max_steps=1, enable_checkpointing=True,
                callbacks=[ModelCheckpoint(dirpath=tmp_path, monitor="val/psnr")])
    with pytest.raises(ValueError, match="experiment=latentdiffusion"):
        t.fit(tiny_prior(kl), ToyLatents(4))


@pytest.mark.parametrize("n_per_class", [20, 64])
def test_prior_trains_the_budgeted_steps_on_a_small_set(tmp_path, n_per_class):
    """experiment=latentdiffusion carries a training budget (its own min_steps, here lowered to
    150 to stay quick): 40 latents (2 steps per epoch, 120 in 60 epochs) train at least 150
    steps, 128 (4 per epoch, 240 in 60 epochs) keep their 60 epochs."""
    from conftest import compose_cfg

    cfg = compose_cfg(["experiment=latentdiffusion"])
    budget = instantiate(cfg.callbacks.training_budget, min_steps=150)
    t = trainer(max_epochs=cfg.trainer.max_epochs, callbacks=[budget], limit_val_batches=0)
    t.fit(tiny_prior(save_tiny_kl(tmp_path / "kl")), ToyLatents(n_per_class))
    if n_per_class == 20:
        assert t.global_step >= 150 and t.current_epoch == budget.epochs > 60
    else:
        assert t.global_step == 240 and t.current_epoch == 60
