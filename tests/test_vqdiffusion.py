"""Tests of mdvq.models.vqdiffusion.VQDiffusionModule: a toy prior that learns, guidance,
label dropout, checkpoints, config and errors."""

from __future__ import annotations

import functools
import math
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import VQModel
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from mdvq.models.vqdiffusion import VQDiffusionModule

CONF = Path(__file__).resolve().parents[1] / "conf"
K = 8  # codes of the toy VQ-VAE; 8x8 images -> 4x4 code maps


def save_tiny_vq(folder: Path, seed: int = 0) -> Path:
    """An untrained 2-level VQModel with K codes (downsampling 2), saved with save_pretrained."""
    torch.manual_seed(seed)
    VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
            layers_per_block=1, latent_channels=4, num_vq_embeddings=K, norm_num_groups=4,
            vq_embed_dim=4, sample_size=8, mid_block_add_attention=False).save_pretrained(folder)
    return folder


def tiny_prior(vq: Path, **kw) -> VQDiffusionModule:
    args = {"num_classes": 2, "image_size": (8, 8), "num_layers": 1, "num_attention_heads": 2,
            "attention_head_dim": 16, "num_train_timesteps": 10, "sample_steps": 10,
            "sample_guidance": 1.0, "val_samples_per_class": 0, "t_sampling": "uniform",
            "optimizer": functools.partial(torch.optim.AdamW, lr=3e-3)}
    args.update(kw)
    return VQDiffusionModule(str(vq), **args)


class ToyCodes(L.LightningDataModule):
    """Two classes, each always the same 4x4 code map (A for class 0, B for class 1)."""

    def __init__(self, n_per_class: int = 64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.maps = torch.randint(0, K, (2, 4, 4), generator=g)
        self.maps[1] = (self.maps[0] + 1 + torch.randint(0, K - 1, (4, 4), generator=g)) % K
        self.codes = self.maps.repeat_interleave(n_per_class, 0)
        self.labels = torch.arange(2).repeat_interleave(n_per_class)
        self.class_names = ["alpha", "beta"]
        self.freqs_hz, self.times_s, self.data_key = [-1.0, 1.0], [0.0, 1.0], "toy"

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.codes, self.labels), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.codes, self.labels), batch_size=64)


class History(L.Callback):
    """val/vb after every validation epoch (sanity check excluded)."""

    def __init__(self):
        self.vb = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.vb.append(float(trainer.callback_metrics["val/vb"]))


def trainer(**kw) -> L.Trainer:
    base = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False}
    base.update(kw)
    return L.Trainer(**base)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny prior trained on the toy code maps; its VQ-VAE folder is deleted afterwards, so
    loading the checkpoint proves it carries the VQ-VAE."""
    tmp = tmp_path_factory.mktemp("toy")
    vq = save_tiny_vq(tmp / "vq")
    torch.manual_seed(0)
    module = tiny_prior(vq, label_drop_prob=0.3)
    data = ToyCodes()
    history = History()
    t = trainer(max_epochs=30, check_val_every_n_epoch=10, callbacks=[history])
    t.fit(module, data)
    ckpt = tmp / "toy.ckpt"
    t.save_checkpoint(ckpt)
    shutil.rmtree(vq)
    return {"module": module.eval(), "data": data, "history": history, "ckpt": ckpt}


def agreement(codes: torch.Tensor, target: torch.Tensor) -> float:
    return float((codes == target).float().mean())


@pytest.mark.parametrize("steps", [10, 4])
def test_toy_prior_samples_the_map_of_each_class(toy, steps):
    module, maps = toy["module"], toy["data"].maps
    labels = torch.tensor([0] * 8 + [1] * 8)
    codes = module.generate(labels, steps=steps, guidance=1.0,
                            generator=torch.Generator().manual_seed(1))
    assert codes.shape == (16, 4, 4) and codes.dtype == torch.int64
    assert agreement(codes[:8], maps[0]) > 0.9, steps
    assert agreement(codes[8:], maps[1]) > 0.9, steps
    assert agreement(codes[:8], maps[1]) < 0.3


def class_map_scores(module, maps, **sampling) -> list[float]:
    """Agreement of 16 samples per class with that class's toy map."""
    labels = torch.tensor([0] * 16 + [1] * 16)
    codes = module.generate(labels, guidance=1.0, generator=torch.Generator().manual_seed(4),
                            **sampling)
    return [agreement(codes[:16], maps[0]), agreement(codes[16:], maps[1])]


@pytest.mark.parametrize("sampling", [{"sampler": "purity", "steps": 4},
                                      {"sampler": "purity", "steps": 10},
                                      {"truncation": 0.8, "steps": 4},
                                      {"sampler": "purity", "truncation": 0.8, "steps": 4}])
def test_every_sampler_draws_the_map_of_each_class(toy, sampling, monkeypatch):
    module, maps = toy["module"], toy["data"].maps
    assert min(class_map_scores(module, maps, **sampling)) > 0.9, sampling
    # the same check fails for a prior that ignores its labels (every call made unconditional)
    forward = module.forward
    monkeypatch.setattr(module, "forward", lambda x, t, y: forward(
        x, t, torch.full_like(y, module.null_class)))
    assert min(class_map_scores(module, maps, **sampling)) < 0.8, sampling


class MixtureCodes(ToyCodes):
    """Class 0 draws map A (3 in 4) or map B (1 in 4); class 1 is always map C."""

    def __init__(self, n_per_class: int = 64):
        super().__init__(n_per_class)
        g = torch.Generator().manual_seed(1)
        self.maps = torch.cat([self.maps, torch.randint(0, K, (1, 4, 4), generator=g)])
        which = torch.tensor([0, 0, 0, 2]).repeat(n_per_class // 4)  # A A A B ... (B = maps[2])
        self.codes = torch.cat([self.maps[which], self.maps[1].expand(n_per_class, 4, 4)])


def test_strided_and_full_scheduler_samplers_agree_in_distribution(tmp_path):
    """On a two-mode class (maps A : B = 3 : 1 in the data), the full T-step diffusers
    scheduler and the strided sampler draw the same distribution: the same token marginals
    (share of A's codes where A and B differ; the tiny prior puts about 0.6 on A after 600
    steps) and the same share of whole-map A samples. (The strided step's posterior itself is
    checked exactly against dense transition matrices in test_discrete_diffusion.py.)"""
    torch.manual_seed(0)
    module = tiny_prior(save_tiny_vq(tmp_path / "vq"), label_drop_prob=0.1)
    data = MixtureCodes()
    trainer(max_epochs=150, limit_val_batches=0).fit(module, data)
    module.eval()
    a_map, b_map = data.maps[0], data.maps[2]
    differ = a_map != b_map
    labels = torch.zeros(200, dtype=torch.long)
    stats = {}
    for steps in (10, 4):  # T = 10: VQDiffusionScheduler.step; 4: strided
        codes = module.generate(labels, steps=steps, guidance=1.0,
                                generator=torch.Generator().manual_seed(5))
        token_a = float((codes == a_map)[:, differ].float().mean())
        token_b = float((codes == b_map)[:, differ].float().mean())
        mode_a = float(((codes == a_map).flatten(1).float().mean(1) > 0.8).float().mean())
        stats[steps] = (token_a, token_b, mode_a)
    print("token share A, token share B, mode share A by steps:", stats)
    for token_a, token_b, mode_a in stats.values():
        assert token_a + token_b > 0.9 and token_a > token_b, stats  # the data's A over B
        assert mode_a > 0.3, stats
    full, strided = stats[10], stats[4]
    assert abs(full[0] - strided[0]) < 0.08 and abs(full[2] - strided[2]) < 0.15, stats


def test_validation_bound_falls_below_a_uniform_guess(toy):
    vb = toy["history"].vb
    assert len(vb) == 3
    assert vb[-1] < vb[0] and vb[-1] < 0.5 * math.log(K), vb


def test_guidance_scale_changes_the_samples(toy):
    module, maps = toy["module"], toy["data"].maps
    labels = torch.zeros(32, dtype=torch.long)
    scores = {}
    for scale in (0.0, 1.0, 3.0):
        codes = module.generate(labels, steps=10, guidance=scale,
                                generator=torch.Generator().manual_seed(2))
        scores[scale] = agreement(codes, maps[0])
    # s = 0 is the unconditional model (a mixture of both maps); s >= 1 follows the class
    assert scores[0.0] < 0.8 and scores[1.0] > 0.9 and scores[3.0] > 0.9, scores


def test_checkpoint_reloads_without_the_vqvae_folder(toy):
    module = toy["module"]
    loaded = VQDiffusionModule.load_from_checkpoint(toy["ckpt"], map_location="cpu").eval()
    assert loaded.vqvae.fingerprint == module.vqvae.fingerprint
    assert loaded.data_info["class_names"] == ["alpha", "beta"]
    x_t = torch.randint(0, K + 1, (3, 16), generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([0, 4, 9]), torch.tensor([0, 1, 2])
    torch.testing.assert_close(loaded(x_t, t, y), module(x_t, t, y))
    labels = torch.tensor([0, 1])
    a = loaded.generate(labels, steps=4, generator=torch.Generator().manual_seed(3))
    b = module.generate(labels, steps=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    images = loaded.decode(a)
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_labels_are_dropped_by_the_module_once_per_sample(tmp_path, monkeypatch):
    vq = save_tiny_vq(tmp_path / "vq")
    module = tiny_prior(vq, label_drop_prob=0.5)
    for block in module.transformer.transformer_blocks:
        embedder = block.norm1.emb.class_embedder
        assert embedder.dropout_prob == 0.0
        assert embedder.embedding_table.num_embeddings == 3  # 2 classes + null
    module.train()
    x_t = torch.randint(0, K + 1, (4, 16))
    t, y = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(module(x_t, t, y), module(x_t, t, y))  # no random drop inside
    null = torch.full_like(y, 2)
    assert not torch.allclose(module(x_t, t, y), module(x_t, t, null))
    seen = []
    original = module.forward
    monkeypatch.setattr(module, "forward", lambda x, tt, lab: (seen.append(lab), original(x, tt, lab))[1])
    module.log = lambda *a, **k: None
    torch.manual_seed(0)
    module.training_step((torch.randint(0, K, (2000, 4, 4)), torch.randint(0, 2, (2000,))), 0)
    dropped = (seen[0] == 2).float().mean().item()
    assert abs(dropped - 0.5) < 0.05


def test_model_yaml_is_commented_and_matches_the_constructor(tmp_path):
    text = (CONF / "model" / "vqdiffusion.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"no comment on {line!r}"
    for line in (CONF / "callbacks" / "prior.yaml").read_text().splitlines():
        if re.match(r"^\s+[A-Za-z_]+:", line):
            assert "#" in line, f"no comment on {line!r}"
    vq = save_tiny_vq(tmp_path / "vq")
    root = OmegaConf.create({"data": {"image_size": [8, 8]},
                             "paths": {"output_dir": str(tmp_path), "cache_dir": str(tmp_path)}})
    root.model = OmegaConf.load(CONF / "model" / "vqdiffusion.yaml")
    assert "defaults" not in root.model  # cross-group choices live in experiment/vqdiffusion.yaml
    root.model.vqvae = str(vq)
    module = instantiate(root.model)
    plain = VQDiffusionModule(str(vq), image_size=(8, 8), output_dir=str(tmp_path),
                              cache_dir=str(tmp_path))
    assert dict(module.hparams) == dict(plain.hparams)
    assert module.optimizer_factory.keywords == {"lr": 0.001, "weight_decay": 0.01}


def test_bad_settings_name_their_key(tmp_path):
    vq = save_tiny_vq(tmp_path / "vq")
    with pytest.raises(ValueError, match="data.image_size.*square"):
        tiny_prior(vq, image_size=(8, 16))
    with pytest.raises(ValueError, match="model.sample_steps"):
        tiny_prior(vq, sample_steps=11)
    with pytest.raises(ValueError, match="model.label_drop_prob"):
        tiny_prior(vq, label_drop_prob=1.0)
    with pytest.raises(ValueError, match="model.t_sampling"):
        tiny_prior(vq, t_sampling="sometimes")
    with pytest.raises(ValueError, match="model.vqvae"):
        VQDiffusionModule(None)
    with pytest.raises(FileNotFoundError, match="missing"):
        tiny_prior(tmp_path / "missing")


def test_class_count_is_checked_against_the_data(tmp_path):
    from conftest import InMemorySource, make_set

    from mdvq.data.datamodule import SpectrogramDataModule

    vq = save_tiny_vq(tmp_path / "vq")
    dm = SpectrogramDataModule(InMemorySource(make_set(n_classes=3, per_class=6, size=(16, 16))),
                               image_size=(8, 8), batch_size=4)
    with pytest.raises(ValueError, match=r"model.num_classes is 2 but the data has 3 classes"):
        tiny_prior(vq).wrap_datamodule(dm)
    tokens = tiny_prior(vq, num_classes=3, cache_dir=None).wrap_datamodule(dm)
    tokens.setup("fit")
    assert tokens.grid == (4, 4)


def test_phase1_callbacks_are_refused_with_a_hint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    vq = save_tiny_vq(tmp_path / "vq")
    t = trainer(max_steps=1, enable_checkpointing=True,
                callbacks=[ModelCheckpoint(dirpath=tmp_path, monitor="val/psnr")])
    with pytest.raises(ValueError, match="experiment=vqdiffusion"):
        t.fit(tiny_prior(vq), ToyCodes(4))


@pytest.mark.parametrize("n_per_class", [20, 64])
def test_prior_trains_the_budgeted_steps_on_a_small_set(tmp_path, n_per_class):
    """experiment=vqdiffusion carries a training budget (its own min_steps, here lowered to 30
    to stay quick): 40 examples (2 steps per epoch, 16 in 8 epochs) train at least 30 steps,
    128 examples (4 per epoch, 32 in 8 epochs) keep their 8 epochs."""
    from conftest import compose_cfg

    cfg = compose_cfg(["experiment=vqdiffusion"])
    budget = instantiate(cfg.callbacks.training_budget, min_steps=30)
    t = trainer(max_epochs=cfg.trainer.max_epochs, callbacks=[budget])
    t.fit(tiny_prior(save_tiny_vq(tmp_path / "vq")), ToyCodes(n_per_class))
    if n_per_class == 20:
        assert t.global_step >= 30 and t.current_epoch == budget.epochs > 8
    else:
        assert t.global_step == 32 and t.current_epoch == 8
