"""Tests of the phase-1 autoencoder modules (mdvq.models): configs, losses, contract, export."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL, VQModel
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from mdvq.models import KLVAEModule, VQVAEModule, check_autoencoder_config
from mdvq.models.codebook import PLAIN, RECOMMENDED
from mdvq.models.losses import log_spectrum, reconstruction_terms

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
TINY = {"block_out_channels": (8, 16, 16), "norm_num_groups": 4, "image_size": (32, 32)}


def make_trainer(**kw) -> L.Trainer:
    """A quiet CPU trainer."""
    base = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    base.update(kw)
    return L.Trainer(**base)


class RandomData(L.LightningDataModule):
    """Tiny datamodule of random (x in [-1, 1] (N, 1, F, T), y int64) batches."""

    def __init__(self, n: int = 8, size=(32, 32), batch_size: int = 4, nan: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, *size, generator=g) * 2 - 1
        if nan:
            self.x[:, :, 0, 0] = float("nan")
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.batch_size = batch_size

    def _loader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class Outputs(L.Callback):
    """Keeps the first train/val/test step outputs."""

    def __init__(self):
        self.out = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.out.setdefault("train", outputs)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl=0):
        self.out.setdefault("val", outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl=0):
        self.out.setdefault("test", outputs)


def ridges(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) in [-1, 1]: 1-3 smooth sinusoidal ridges (micro-Doppler-like) each."""
    g = torch.Generator().manual_seed(seed)
    f = torch.linspace(0, 1, size)[:, None]
    t = torch.linspace(0, 1, size)[None, :]
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            c, a, p, ph, w = torch.rand(5, generator=g).tolist()
            centre = (
                0.3 + 0.4 * c + (0.05 + 0.2 * a) * torch.sin(2 * math.pi * ((1 + 2 * p) * t + ph))
            )
            ridge = torch.exp(-((f - centre) ** 2) / (2 * (0.05 + 0.05 * w) ** 2))
            out[i, 0] = torch.maximum(out[i, 0], ridge)
    return out * 2 - 1


def psnr01(recon01: torch.Tensor, target01: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of (B, C, F, T) images in [0, 1] (docs/metrics.md)."""
    mse = (recon01 - target01).square().flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse)).mean())


# --------------------------------------------------------------------------- yaml configs
def load_model_cfg(name: str, image_size=(32, 32), **overrides):
    """``conf/model/<name>.yaml`` with ``data.image_size`` filled in and keys overridden."""
    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={name}", "data=radar"])
    cfg.data.image_size = list(image_size)
    cfg.model = OmegaConf.merge(cfg.model, overrides)
    return cfg.model


@pytest.mark.parametrize("name", ["vqvae.yaml", "klvae.yaml", "vqvae_large.yaml"])
def test_every_yaml_key_has_a_comment(name):
    for line in (CONF / name).read_text().splitlines():
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"{name}: no comment on {line!r}"


def test_default_yamls_match_constructor_defaults_and_downsampling():
    vq = instantiate(load_model_cfg("vqvae", (64, 64)))
    kl = instantiate(load_model_cfg("klvae", (64, 64)))
    assert dict(vq.hparams) == dict(VQVAEModule().hparams)
    assert dict(kl.hparams) == dict(KLVAEModule().hparams)
    assert isinstance(vq.optimizer_factory, functools.partial)
    assert vq.optimizer_factory.keywords == {"lr": 0.001, "weight_decay": 0.0}
    # same number of levels -> same 64x64 -> 16x16 grid for a fair comparison
    assert vq.latent_shape((64, 64)) == (16, 16, 16)
    assert kl.latent_shape((64, 64)) == (4, 16, 16)
    assert vq.num_codes == 512 and vq.model.quantize.legacy is False
    assert 0.5e6 < sum(p.numel() for p in vq.parameters()) < 1.0e6  # CPU-sized


def test_large_yaml_is_the_plan_configuration():
    cfg = load_model_cfg("vqvae_large", (128, 128))
    assert list(cfg.block_out_channels) == [128, 256, 512, 512]
    assert cfg.layers_per_block == 2 and cfg.latent_channels == 3
    assert cfg.num_vq_embeddings == 8192 and cfg.vq_embed_dim == 3
    # the 84M-parameter network is not built here (slow); its shape arithmetic is checked
    assert (
        check_autoencoder_config(
            block_out_channels=cfg.block_out_channels,
            down_block_types=cfg.down_block_types,
            up_block_types=cfg.up_block_types,
            norm_num_groups=cfg.norm_num_groups,
            image_size=cfg.image_size,
        )
        == 8
    )


SHRINK = {
    "vqvae": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4, "num_vq_embeddings": 32},
    "klvae": {"block_out_channels": [8, 16, 16], "norm_num_groups": 4},
    "vqvae_large": {
        "block_out_channels": [8, 8, 16, 16],
        "norm_num_groups": 4,
        "layers_per_block": 1,
    },
}


@pytest.mark.parametrize("name", ["vqvae", "klvae", "vqvae_large"])
def test_yaml_fast_dev_run_contract_and_checkpoint(name, tmp_path):
    model = instantiate(load_model_cfg(name, (32, 32), **SHRINK[name]))
    assert model.hparams.image_size == (32, 32)
    is_vq = name.startswith("vq")
    assert model.model_kind == ("vqvae" if is_vq else "klvae")
    outputs = Outputs()
    trainer = make_trainer(fast_dev_run=True, callbacks=[outputs])
    data = RandomData()
    expected = {"loss", "recon_loss"} | ({"commit_loss", "codebook_loss"} if is_vq else {"kl"})
    trainer.fit(model, datamodule=data)
    logged = set(trainer.callback_metrics)
    trainer.test(model, datamodule=data)
    logged |= set(trainer.callback_metrics)
    assert logged == {f"{stage}/{key}" for stage in ("train", "val", "test") for key in expected}

    _, h, w = model.latent_shape((32, 32))
    f = 8 if name == "vqvae_large" else 4
    assert (h, w) == (32 // f, 32 // f)
    train = outputs.out["train"]
    assert train["loss"].ndim == 0
    for stage in ("val", "test"):
        out = outputs.out[stage]
        assert out["target"].shape == out["recon"].shape == (4, 1, 32, 32)
        assert out["recon"].min() >= 0 and out["recon"].max() <= 1
        torch.testing.assert_close(out["target"], (data.x[:4] + 1) / 2)
    if is_vq:
        for out in (train, outputs.out["val"], outputs.out["test"]):
            assert out["indices"].shape == (4, h, w) and out["indices"].dtype == torch.long
            assert 0 <= int(out["indices"].min()) and int(out["indices"].max()) < model.num_codes
    else:
        assert "indices" not in outputs.out["val"]

    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    cls = VQVAEModule if is_vq else KLVAEModule
    loaded = cls.load_from_checkpoint(ckpt)  # torch's default safe (weights-only) loading
    assert dict(loaded.hparams) == dict(model.hparams)
    model.eval()
    loaded.eval()
    torch.testing.assert_close(loaded.reconstruct(data.x), model.reconstruct(data.x))


# --------------------------------------------------------------------------- VQ loss terms
def test_vq_terms_follow_the_paper_commitment_cost():
    """codebook ||sg(z) - e||^2 has weight 1, commitment ||z - sg(e)||^2 weight beta (hand values)."""
    m = VQVAEModule(
        codebook=PLAIN,
        block_out_channels=(8,),
        norm_num_groups=4,
        latent_channels=2,
        vq_embed_dim=2,
        num_vq_embeddings=4,
        commitment_cost=0.4,
        image_size=(8, 8),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
    )
    with torch.no_grad():
        m.quantizer.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [3, 3], [-3, 3], [10, 10]]))
    # two positions (B=1, D=2, h=1, w=2): (1, 0.5) -> code 0, (2, 2.5) -> code 1
    z = torch.tensor([[1.0, 2.0], [0.5, 2.5]]).reshape(1, 2, 1, 2).requires_grad_(True)
    z_q, idx, vq_loss, terms = m.quantize(z)
    assert idx.tolist() == [[[0, 1]]]
    torch.testing.assert_close(
        z_q.detach(), torch.tensor([[0.0, 3.0], [0.0, 3.0]]).reshape(1, 2, 1, 2)
    )
    # squared distances 1 + 0.25 at both positions over N = 4 elements: mean 0.625
    assert terms["codebook_loss"].item() == pytest.approx(0.625)
    assert terms["commit_loss"].item() == pytest.approx(0.4 * 0.625)
    assert vq_loss.item() == pytest.approx(0.625 + 0.25)
    vq_loss.backward()
    # commitment gradient reaches the encoder with weight 0.4: 0.4 * 2 (z - e) / 4
    torch.testing.assert_close(z.grad, torch.tensor([[0.2, -0.2], [0.1, -0.1]]).reshape(1, 2, 1, 2))
    # codebook gradient reaches the codes with weight 1: 2 (e - z) / 4 for the used codes
    expected = torch.tensor([[-0.5, -0.25], [0.5, 0.25], [0, 0], [0, 0]])
    torch.testing.assert_close(m.quantizer.embedding.weight.grad, expected)


@pytest.mark.parametrize("codebook", [PLAIN, RECOMMENDED], ids=["plain", "recommended"])
def test_quantize_is_float32_under_autocast(codebook):
    m = VQVAEModule(**TINY, num_vq_embeddings=16, codebook=codebook).eval()  # eval: no updates
    z = torch.randn(2, 16, 8, 8)
    ref = m.quantize(z)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, idx, vq_loss, terms = m.quantize(z.bfloat16())
        out = m.training_step((torch.rand(2, 1, 32, 32) * 2 - 1, torch.zeros(2).long()), 0)
    assert z_q.dtype == vq_loss.dtype == terms["commit_loss"].dtype == torch.float32
    assert (idx == m.quantize(z.bfloat16().float())[1]).all()
    assert (ref == m.quantize(z)[1]).all()
    assert torch.isfinite(out["loss"]) and out["indices"].shape == (2, 8, 8)


# --------------------------------------------------------------------------- NaN guard
def test_nan_loss_raises_in_trainer():
    model = VQVAEModule(**TINY, num_vq_embeddings=16)
    with pytest.raises(FloatingPointError, match=r"train step 0 \(batch 0\).*recon_loss=nan"):
        make_trainer(fast_dev_run=True).fit(model, datamodule=RandomData(nan=True))


def test_nan_loss_raises_kl_and_names_component():
    model = KLVAEModule(**TINY)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"val step 0 \(batch 5\).*recon_loss=nan"):
        model._step((x, None), 5, "val")
    # a finite batch passes
    assert torch.isfinite(model._step((x.nan_to_num(0.0), None), 0, "val")[2])


# --------------------------------------------------------------------------- config checks
BASE = {
    "block_out_channels": (8, 16, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "norm_num_groups": 4,
    "image_size": (64, 64),
}
BAD = [
    ({"norm_num_groups": 3}, r"model\.norm_num_groups=3 must divide .*model\.block_out_channels"),
    ({"down_block_types": ("DownEncoderBlock2D",) * 2}, r"same length.*got 2, 3 and 3"),
    ({"up_block_types": ("UpDecoderBlock2D",) * 4}, r"same length.*got 3, 4 and 3"),
    (
        {"down_block_types": ("DownEncoderBlock2D", "DownBlock2D", "DownEncoderBlock2D")},
        r"model\.down_block_types: unknown block type 'DownBlock2D'.*AttnDownEncoderBlock2D",
    ),
    (
        {"up_block_types": ("UpDecoderBlock2D", "UpBlock2D", "UpDecoderBlock2D")},
        r"model\.up_block_types: unknown block type 'UpBlock2D'.*AttnUpDecoderBlock2D",
    ),
    (
        {"image_size": (64, 62)},
        r"data\.image_size=\[64, 62\].*factor 4.*model\.block_out_channels",
    ),
    ({"image_size": (64,)}, r"data\.image_size must be a 2-list"),
    ({"commitment_cost": -0.1}, r"model\.commitment_cost must be >= 0"),
    ({"num_vq_embeddings": 1}, r"model\.num_vq_embeddings must be >= 2"),
    ({"kl_weight": -1.0}, r"model\.kl_weight must be >= 0"),
    ({"recon_loss": "huber"}, r"model\.recon_loss must be one of \['l1', 'l2'\]"),
    ({"spectral_weight": -1.0}, r"model\.spectral_weight must be >= 0"),
    ({"norm_type": "spatial"}, r"model\.norm_type='spatial'.*multiple of 32"),
    ({"norm_type": "batch"}, r"model\.norm_type must be one of"),
    ({"layers_per_block": 0}, r"model\.layers_per_block must be a positive integer"),
]


@pytest.mark.parametrize("bad, message", BAD)
def test_config_check_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        check_autoencoder_config(**{**BASE, **bad})


def test_config_check_ok_returns_factor():
    assert check_autoencoder_config(**BASE, commitment_cost=0.0, num_vq_embeddings=2) == 4
    one_level = {
        "block_out_channels": (8,),
        "down_block_types": ("DownEncoderBlock2D",),
        "up_block_types": ("UpDecoderBlock2D",),
    }
    assert check_autoencoder_config(**{**BASE, **one_level, "image_size": (7, 9)}) == 1


def test_constructors_run_the_checks():
    with pytest.raises(ValueError, match=r"data\.image_size=\[30, 32\].*model\.block_out_channels"):
        VQVAEModule(**{**TINY, "image_size": [30, 32]})
    with pytest.raises(ValueError, match=r"model\.commitment_cost"):
        VQVAEModule(**TINY, commitment_cost=-1)
    with pytest.raises(ValueError, match=r"model\.num_vq_embeddings"):
        VQVAEModule(**TINY, num_vq_embeddings=1)
    with pytest.raises(ValueError, match=r"model\.kl_weight"):
        KLVAEModule(**TINY, kl_weight=-1e-6)
    with pytest.raises(ValueError, match=r"model\.recon_loss"):
        KLVAEModule(**TINY, recon_loss="l3")


def test_attention_block_types_accepted_by_the_check_run():
    m = VQVAEModule(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        image_size=(16, 16),
        num_vq_embeddings=8,
        down_block_types=("AttnDownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "AttnUpDecoderBlock2D"),
    )
    assert m.reconstruct(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)


# --------------------------------------------------------------------------- export, indices
@pytest.mark.parametrize("codebook", [PLAIN, RECOMMENDED], ids=["plain", "recommended"])
def test_vq_export_pretrained_and_index_round_trip(tmp_path, codebook):
    torch.manual_seed(0)
    m = VQVAEModule(**TINY, num_vq_embeddings=64, codebook=codebook).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    m.export_pretrained(tmp_path / "vq")
    loaded = VQModel.from_pretrained(tmp_path / "vq").eval()
    with torch.no_grad():
        # same codes; diffusers' quantiser adds z + (e - z) even at inference (rounding ~1e-6)
        assert torch.equal(loaded.quantize(loaded.encode(x).latents)[2][2].reshape(3, 8, 8),
                           m.encode_indices(x))
        torch.testing.assert_close(
            loaded(x).sample.clamp(-1, 1), m.reconstruct(x), rtol=0, atol=1e-5
        )

    out = m.validation_step((x, torch.zeros(3).long()), 0)
    idx = m.encode_indices(x)
    assert idx.shape == (3, 8, 8) and idx.dtype == torch.long
    assert torch.equal(idx, out["indices"])
    with torch.no_grad():
        round_trip = ((m.decode_indices(idx) + 1) / 2).clamp(0, 1)
    # equal up to the float rounding of the straight-through z + (e - z) in the forward
    torch.testing.assert_close(round_trip, out["recon"], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        m.decode_indices(torch.full((1, 8, 8), 64, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        m.decode_indices(idx.float())


def test_kl_export_pretrained_and_scaling_factor(tmp_path):
    torch.manual_seed(0)
    m = KLVAEModule(**TINY).eval()
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    loader = DataLoader(TensorDataset(x, torch.zeros(6).long()), batch_size=4)
    torch.manual_seed(1)
    factor = m.estimate_scaling_factor(loader)
    torch.manual_seed(1)  # same global-RNG use as the method: loader iterator, then samples
    z = torch.cat([m.model.encode(b[0]).latent_dist.sample() for b in loader])
    assert factor == pytest.approx(1 / z.double().std().item(), rel=1e-5)
    assert m.hparams.scaling_factor == factor
    m.export_pretrained(tmp_path / "kl")
    loaded = AutoencoderKL.from_pretrained(tmp_path / "kl").eval()
    assert loaded.config.scaling_factor == pytest.approx(factor)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x).sample.clamp(-1, 1), m.reconstruct(x), rtol=0, atol=1e-6
        )
    # eval decodes the posterior mode: deterministic
    torch.testing.assert_close(
        m.validation_step((x, None), 0)["recon"],
        m.validation_step((x, None), 0)["recon"],
        rtol=0,
        atol=0,
    )


# --------------------------------------------------------------------------- losses
def test_reconstruction_terms_hand_values():
    target = torch.zeros(1, 1, 2, 2)
    recon = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]]])
    total, terms = reconstruction_terms(recon, target, "l1", 0.0, 1e-2)
    assert total.item() == pytest.approx(0.5) and set(terms) == {"recon_loss"}
    total, terms = reconstruction_terms(recon, target, "l2", 0.0, 1e-2)
    assert total.item() == pytest.approx((0.25 + 0.25 + 1) / 4)
    # spectral: [0,1] images 0.5 everywhere vs recon/2+0.5; orthonormal FFT of a constant c on
    # 2x2 is 2c at DC and 0 elsewhere
    const = torch.full((1, 1, 2, 2), 0.3)
    spec = log_spectrum(const, 1e-2)
    assert spec.shape == (1, 1, 2, 2)
    assert spec[0, 0, 0, 0].item() == pytest.approx(0.5 * math.log(0.6**2 + 1e-4))
    assert spec[0, 0, 1, 1].item() == pytest.approx(math.log(1e-2))
    total, terms = reconstruction_terms(recon, target, "l1", 2.0, 1e-2)
    expected_spec = (
        (log_spectrum((recon + 1) / 2, 1e-2) - log_spectrum((target + 1) / 2, 1e-2)).abs().mean()
    )
    assert terms["spectral_loss"].item() == pytest.approx(expected_spec.item())
    assert total.item() == pytest.approx(0.5 + 2 * expected_spec.item())


# --------------------------------------------------------------------------- real training
def _train_and_measure(model, steps: int, lr: float):
    x = ridges(64, 32, seed=1)
    y = torch.zeros(64, dtype=torch.long)
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    model.optimizer_factory = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)
    from diffusers.optimization import get_cosine_schedule_with_warmup

    model.scheduler_factory = functools.partial(get_cosine_schedule_with_warmup, num_warmup_steps=4)

    def evaluate():  # eval forward: L1 reconstruction loss and PSNR on the training images
        model.eval()
        with torch.no_grad():
            recon = model(x)[0]
        return (recon - x).abs().mean().item(), psnr01((recon.clamp(-1, 1) + 1) / 2, (x + 1) / 2)

    before = evaluate()
    trainer = make_trainer(max_steps=steps, limit_val_batches=0)
    trainer.fit(model, train)
    after = evaluate()
    lr_end = trainer.optimizers[0].param_groups[0]["lr"]
    return before, after, lr_end


def _mean_prediction_psnr() -> float:
    """PSNR of predicting every pixel as the data mean: the bar a trained model must clear."""
    x01 = (ridges(64, 32, seed=1) + 1) / 2
    return psnr01(x01.mean().expand_as(x01), x01)


def test_short_training_lowers_loss_and_raises_psnr_vq():
    torch.manual_seed(0)
    model = VQVAEModule(
        block_out_channels=(16, 32, 32),
        norm_num_groups=8,
        image_size=(32, 32),
        latent_channels=8,
        num_vq_embeddings=128,
        codebook=PLAIN,  # the techniques are tested in test_codebook.py
    )
    (loss0, psnr0), (loss1, psnr1), lr_end = _train_and_measure(model, steps=100, lr=2e-3)
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    assert psnr1 > psnr0 + 4.0, (psnr0, psnr1)
    assert psnr1 > _mean_prediction_psnr() + 3.0, psnr1
    assert lr_end < 1e-6  # the cosine schedule reached its end: num_training_steps was filled in


def test_short_training_lowers_loss_and_raises_psnr_kl():
    torch.manual_seed(0)
    model = KLVAEModule(block_out_channels=(16, 32, 32), norm_num_groups=8, image_size=(32, 32))
    (loss0, psnr0), (loss1, psnr1), _ = _train_and_measure(model, steps=60, lr=2e-3)
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    assert psnr1 > psnr0 + 4.0, (psnr0, psnr1)
    assert psnr1 > _mean_prediction_psnr() + 3.0, psnr1


def test_kl_term_is_the_gaussian_kl_per_image_element_weighted_by_kl_weight():
    """KL(N(mu, var) || N(0, I)) = 0.5 * sum(mu^2 + var - 1 - log var) over the latent, per image,
    averaged over the batch and divided by C * F * T; the loss adds kl_weight times it."""
    torch.manual_seed(0)
    m = KLVAEModule(**TINY, kl_weight=0.0).eval()
    x = ridges(3)
    with torch.no_grad():
        _, kl = m(x)
        moments = m.model.quant_conv(m.model.encoder(x))
        mu, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp
        per_image = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))
        expected = per_image.mean() / (1 * 32 * 32)
        assert mu.shape == (3, 4, 8, 8)
        torch.testing.assert_close(kl, expected, rtol=1e-5, atol=0)
        assert kl > 0
        batch = (x, torch.zeros(3, dtype=torch.long))
        loss0 = m._step(batch, 0, "val")[2]  # (x, recon, loss)
        m.hparams.kl_weight = 0.25
        loss1 = m._step(batch, 0, "val")[2]
    torch.testing.assert_close(loss1 - loss0, 0.25 * kl, rtol=1e-4, atol=1e-7)
