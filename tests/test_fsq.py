"""FSQ (mdvq.models.codebook.FSQQuantizer): nearest-grid rounding, exact export to a plain
diffusers VQModel, token entropy and usage in the codebook monitor, bad levels, a model that learns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import VQModel
from hydra import compose, initialize_config_dir
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset
from vector_quantize_pytorch import FSQ

from mdvq.callbacks import CodebookMonitor
from mdvq.callbacks.codebook import map_entropies, token_entropy
from mdvq.models import VQVAEModule
from mdvq.models.codebook import CodebookOptions, FSQQuantizer, check_levels, decorrelation_penalty
from mdvq.models.frozen_vqvae import FrozenVQVAE

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = {
    "block_out_channels": (8, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "mid_block_add_attention": False,
    "image_size": (16, 16),
}


def fsq_vqvae(levels, vq_embed_dim: int) -> VQVAEModule:
    return VQVAEModule(**TINY, vq_embed_dim=vq_embed_dim, num_vq_embeddings=math.prod(levels),
                       codebook={"name": "fsq", "levels": levels})


# --------------------------------------------------------------------------- rounding = nearest grid point
def test_fsq_rounding_hand_checked_for_odd_and_even_levels():
    q = FSQQuantizer(2, [3, 4]).eval()
    # dim 0, L=3: grid -1, 0, 1 (a = 1.001); dim 1, L=4: grid -1, -0.5, 0, 0.5 (offset 0.5)
    assert q.grid().tolist()[:4] == [[-1, -1], [0, -1], [1, -1], [-1, -0.5]]
    z = torch.tensor([[0.3, 0.1], [0.6, -0.9], [5.0, -5.0], [-5.0, 5.0]])  # (N, 2)
    z_q, idx, loss, terms = q(z.t()[None, :, None, :])  # (1, 2, 1, 4)
    assert z_q[0, :, 0].t().tolist() == [[0, 0], [1, -0.5], [1, -1], [-1, 0.5]]
    # index = k0' + 3 k1' with k' the level index (0 .. L-1)
    assert idx[0, 0].tolist() == [1 + 3 * 2, 2 + 3 * 1, 2 + 3 * 0, 0 + 3 * 3]
    assert float(loss) == 0 and float(terms["commit_loss"]) == 0


@pytest.mark.parametrize("levels", [[5, 5, 5], [8, 5, 5, 5], [8, 6, 5], [3, 4]])
def test_fsq_is_the_nearest_grid_point_in_the_scaled_space(levels):
    torch.manual_seed(0)
    q = FSQQuantizer(len(levels), levels).eval()
    z = 0.8 * torch.randn(1, len(levels), 50, 40)
    _, idx, _, _ = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, len(levels))
    nearest = torch.cdist(flat * q.lookup_scale, q.grid()).argmin(1)
    assert torch.equal(idx.reshape(-1), nearest)
    # and the library's own FSQ (hard clamp) gives the same indices
    _, ref = FSQ(levels, bound_hard_clamp=True)(flat[None])
    assert torch.equal(idx.reshape(-1), ref[0].long())
    assert idx.unique().numel() > 0.5 * math.prod(levels)  # many cells exercised, ends included


def test_clamp_gradient_changes_gradients_only():
    z = torch.tensor([[0.3, 0.1], [3.0, -0.9], [-4.0, 5.0]]).t()[None, :, None, :].contiguous()
    codes, grads = [], []
    for on in (False, True):
        q = FSQQuantizer(2, [3, 4], clamp_gradient=on).train()
        zz = z.clone().requires_grad_(True)
        z_q, idx, _, _ = q(zz)
        z_q.sum().backward()
        codes.append((z_q.detach(), idx))
        grads.append(zz.grad[0, :, 0].t())
    assert torch.equal(codes[0][1], codes[1][1]) and torch.equal(codes[0][0], codes[1][0])
    # inside the clamp the straight-through gradient is a / w either way; beyond it only with the option
    assert grads[0][0].tolist() == pytest.approx([1.001, 1.5015 / 2])
    assert grads[0][1, 0] == 0 and grads[0][2].tolist() == [0, 0]
    torch.testing.assert_close(grads[1], torch.tensor([[1.001, 0.75075]] * 3))
    with pytest.raises(ValueError, match=r"model\.codebook\.clamp_gradient is for FSQ only"):
        CodebookOptions.from_mapping({"clamp_gradient": True})


# --------------------------------------------------------------------------- export round trip
@pytest.mark.parametrize("levels, vq_embed_dim", [([5, 5, 5], 3), ([8, 5, 5], 4)],
                         ids=["no-projection", "projection-even-level"])
def test_export_round_trip_is_exact(levels, vq_embed_dim, tmp_path):
    torch.manual_seed(0)
    module = fsq_vqvae(levels, vq_embed_dim).eval()
    with torch.no_grad():  # spread the fresh latents over the whole grid (ends clamped too)
        module.model.quant_conv.weight.mul_(30.0)
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    module.export_pretrained(tmp_path / "vq")
    frozen = FrozenVQVAE(VQModel.from_pretrained(tmp_path / "vq"))
    assert frozen.num_codes == math.prod(levels) and frozen.code_dim == len(levels)
    with torch.no_grad():
        idx = module.encode_indices(x)
        recon = module(x)[0]
        assert torch.equal(frozen.encode_indices(x), idx)
        assert idx.unique().numel() > 0.3 * math.prod(levels)
        torch.testing.assert_close(module.decode_indices(idx), recon, rtol=0, atol=0)
        from_export = frozen.decode_indices(idx)
        from_module = module.decode_indices(idx).clamp(-1, 1)
        if vq_embed_dim == len(levels):  # no projection to fold: bit-identical decoder path
            assert torch.equal(from_export, from_module)
        else:  # projections folded into the 1x1 convolutions: float rounding only
            torch.testing.assert_close(from_export, from_module, rtol=0, atol=1e-5)
        # diffusers' own snapping decode of the pre-quantisation latents lands on the same codes
        vq = frozen.model
        snapped = vq.decode(vq.encode(x).latents).sample
        torch.testing.assert_close(snapped, recon, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- entropy and usage
class CodeMapModule(LightningModule):
    """Returns fixed code maps from its validation step (K = 4)."""

    num_codes = 4

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.maps = maps
        self.w = torch.nn.Parameter(torch.zeros(()))

    def validation_step(self, batch, batch_idx):
        return {"indices": self.maps[batch[0]]}


def test_usage_and_token_entropy_hand_checked_on_a_known_code_map(tmp_path):
    maps = torch.tensor([[[0, 0], [1, 2]], [[0, 0], [0, 0]]])  # pooled counts 6, 1, 1, 0
    pooled = -(0.75 * math.log(0.75) + 2 * 0.125 * math.log(0.125))  # 0.7356 nats
    per_map = (-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)) + 0.0) / 2  # (1.0397 + 0) / 2
    assert token_entropy(torch.tensor([6, 1, 1, 0])) == pytest.approx(pooled, abs=1e-12)
    assert map_entropies(maps, 4).tolist() == pytest.approx([2 * per_map, 0.0], abs=1e-12)
    monitor = CodebookMonitor(log_histogram=False, output_dir=str(tmp_path))
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    data = DataLoader(TensorDataset(torch.arange(2)), batch_size=1)  # one map per batch
    trainer.validate(CodeMapModule(maps), dataloaders=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val/codebook_usage"] == 0.75
    assert logged["val/token_entropy"] == pytest.approx(pooled, abs=1e-6)
    assert logged["val/perplexity"] == pytest.approx(math.exp(pooled), abs=1e-5)
    assert logged["val/token_entropy_per_map"] == pytest.approx(per_map, abs=1e-6)
    # a uniform use of the K codes gives log K
    assert token_entropy(torch.full((512,), 3)) == pytest.approx(math.log(512))


# --------------------------------------------------------------------------- bad levels
@pytest.mark.parametrize("levels, message", [
    ([], r"model\.codebook\.levels must not be empty"),
    ([1, 5], r"model\.codebook\.levels must all be >= 3"),
    ([2, 5], r"model\.codebook\.levels must all be >= 3"),
    ([5.5, 5], r"model\.codebook\.levels must hold integers, got 5\.5"),
    (["8", 5], r"model\.codebook\.levels must hold integers"),
    (8, r"model\.codebook\.levels must be a list of integers"),
    ([64, 64, 64], r"model\.codebook\.levels \[64, 64, 64\] make 262144 codes, more than the 65536"),
])
def test_bad_levels_name_the_key(levels, message):
    with pytest.raises(ValueError, match=message):
        VQVAEModule(**TINY, vq_embed_dim=4, codebook={"levels": levels})


def test_inconsistent_fsq_settings_name_the_keys():
    with pytest.raises(ValueError, match=r"model\.num_vq_embeddings is 512 but model\.codebook\."
                                         r"levels \[5, 5, 5\] make 125 codes"):
        VQVAEModule(**TINY, vq_embed_dim=4, num_vq_embeddings=512, codebook={"levels": [5, 5, 5]})
    with pytest.raises(ValueError, match=r"model\.codebook\.num_codes is 100 but"):
        CodebookOptions.from_mapping({"levels": [5, 5, 5], "num_codes": 100})
    with pytest.raises(ValueError, match=r"model\.codebook\.kmeans_init cannot be combined"):
        CodebookOptions.from_mapping({"levels": [5, 5, 5], "kmeans_init": True})
    assert check_levels([8.0, 5]) == (8, 5)


def test_fsq_presets_set_the_codebook_size_and_refuse_bad_levels_through_hydra():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name, k in (("fsq", 1000), ("fsq_8k", 8000), ("fsq_125", 125)):
            cfg = compose(config_name="config", overrides=["model=vqvae", f"model/codebook={name}"])
            assert cfg.model.num_vq_embeddings == k
            assert math.prod(CodebookOptions.from_mapping(cfg.model.codebook).levels) == k
        assert compose(config_name="config", overrides=["model=vqvae"]).model.num_vq_embeddings == 512
        bad = compose(config_name="config",
                      overrides=["model=vqvae", "model/codebook=fsq", "model.codebook.levels=[8,1]"])
    with pytest.raises(ValueError, match=r"model\.codebook\.levels must all be >= 3"):
        CodebookOptions.from_mapping(bad.model.codebook)


# --------------------------------------------------------------------------- learning
def test_a_tiny_fsq_vqvae_learns_and_logs_usage_under_the_vq_keys(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 16)
    freq = torch.randint(1, 4, (64, 1, 1, 1), generator=g).float()  # smooth striped images
    x = torch.sin(2 * math.pi * freq * t[None, None, :, None] + t[None, None, None, :] * 3)
    data = TensorDataset(x.clamp(-1, 1), torch.zeros(64, dtype=torch.long))
    module = fsq_vqvae([5, 5, 5], 3)
    with torch.no_grad():
        before = (module(x)[0] - x).abs().mean().item()
    monitor = CodebookMonitor(log_histogram=False, output_dir=str(tmp_path))
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, max_epochs=6,
                      callbacks=[monitor], num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(data, batch_size=16, shuffle=True),
                DataLoader(data, batch_size=32))
    module.eval()
    with torch.no_grad():
        after = (module(x)[0] - x).abs().mean().item()
    assert after < 0.6 * before, (before, after)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("val/codebook_usage", "val/perplexity", "val/token_entropy",
                "val/token_entropy_per_map", "val/codebook_selections"):
        assert key in logged, key
    assert 0 < logged["val/codebook_usage"] <= 1
    assert logged["val/token_entropy"] == pytest.approx(math.log(logged["val/perplexity"]), abs=1e-4)


# --------------------------------------------------------------------------- decorrelation term
def test_decorrelation_penalty_hand_checked():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 3.0, 2.0, 4.0])  # deviations (-1.5,-.5,.5,1.5)/(-1.5,.5,-.5,1.5): r = 4/5
    assert float(decorrelation_penalty(torch.stack([x, y], 1))) == pytest.approx(0.64)
    assert float(decorrelation_penalty(torch.stack([x, 2 * x + 1, -x], 1))) == pytest.approx(1.0)
    orthogonal = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(decorrelation_penalty(orthogonal)) == pytest.approx(0.0)
    # three columns: r12 = 0.8, r13 = 0 (constant), r23 = 0 -> 2 * 0.64 / 6
    three = torch.stack([x, y, torch.ones(4)], 1)
    assert float(decorrelation_penalty(three)) == pytest.approx(2 * 0.64 / 6, abs=1e-6)
    assert float(decorrelation_penalty(x[:, None])) == 0.0


def test_decorrelation_term_decorrelates_fsq_dimensions():
    torch.manual_seed(0)
    base = torch.randn(4096, 2)  # a 6-channel latent of rank 2: FSQ's 3 dimensions start correlated
    z = (base @ torch.randn(2, 6)).t().reshape(1, 6, 64, 64)
    q = FSQQuantizer(6, [5, 5, 5], decorrelation_weight=1.0).train()
    u0 = q._project_in(z).permute(0, 2, 3, 1).reshape(-1, 3)
    start = float(decorrelation_penalty(u0.detach()))
    optim = torch.optim.Adam(q.parameters(), lr=1e-2)
    for _ in range(200):
        _, _, loss, terms = q(z)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert float(terms["decorrelation_loss"]) == pytest.approx(float(loss.detach()))
    end = float(decorrelation_penalty(q._project_in(z).permute(0, 2, 3, 1).reshape(-1, 3).detach()))
    assert start > 0.2 and end < 0.5 * start
    q.eval()  # no term at inference, and none without the option
    assert float(q(z)[2]) == 0.0
    assert "decorrelation_loss" not in FSQQuantizer(6, [5, 5, 5]).train()(z)[3]


def test_decorrelation_weight_checked():
    with pytest.raises(ValueError, match=r"model\.codebook\.decorrelation_weight is for FSQ only"):
        CodebookOptions.from_mapping({"decorrelation_weight": 0.1})
    with pytest.raises(ValueError, match=r"model\.codebook\.decorrelation_weight must be"):
        CodebookOptions.from_mapping({"levels": [5, 5, 5], "decorrelation_weight": -1})


def test_vqvae_adds_the_decorrelation_term_to_its_training_loss():
    torch.manual_seed(0)
    codebook = {"name": "fsq_decorrelated", "levels": [5, 5, 5], "decorrelation_weight": 10.0}
    module = VQVAEModule(**TINY, vq_embed_dim=8, num_vq_embeddings=125, codebook=codebook).train()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    _, _, vq_loss, terms = module(x)
    assert float(vq_loss.detach()) > 0 and vq_loss.requires_grad
    assert float(terms["decorrelation_loss"]) == pytest.approx(float(vq_loss.detach()))
    module.eval()
    assert float(module(x)[2]) == 0.0
