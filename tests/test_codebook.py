"""Codebook health (mdvq.models.codebook): hand-checked updates, usage gains, export, DDP identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import VQModel
from hydra import compose, initialize_config_dir

from mdvq.models import VQVAEModule
from mdvq.models import codebook as cb
from mdvq.models.codebook import PLAIN, CodebookOptions, CodebookQuantizer

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = {
    "block_out_channels": (8, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "norm_num_groups": 4,
    "latent_channels": 4,
    "vq_embed_dim": 4,
    "mid_block_add_attention": False,
    "image_size": (16, 16),
}


def quantizer(k=4, d=2, **options) -> CodebookQuantizer:
    return CodebookQuantizer(d, k, commitment_cost=0.25, options=CodebookOptions(**options))


def as_map(vectors: list[list[float]]) -> torch.Tensor:
    """(N, d) vectors -> latents (1, d, 1, N)."""
    return torch.tensor(vectors).t()[None, :, None, :].contiguous()


# --------------------------------------------------------------------------- options, configs
def test_presets_load_and_all_but_plain_switch_something_on():
    names = sorted(p.stem for p in (CONF / "model" / "codebook").glob("[!_]*.yaml"))
    assert names == ["cosine", "ema", "fsq", "fsq_125", "fsq_8k", "fsq_decorrelated", "healthy", "healthy_large",
                     "kmeans", "lowdim", "plain", "restart"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            cfg = compose(config_name="config", overrides=["model=vqvae", f"model/codebook={name}"])
            opts = CodebookOptions.from_mapping(cfg.model.codebook)
            assert opts.name == name and opts.is_plain == (name == "plain")
        default = compose(config_name="config", overrides=["model=vqvae"]).model.codebook
    assert CodebookOptions.from_mapping(default) == cb.RECOMMENDED


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ema_decay": 1.5}, r"model\.codebook\.ema_decay must lie in \(0, 1\)"),
        ({"restart_after_steps": -1}, r"model\.codebook\.restart_after_steps must be >= 0"),
        ({"lookup_dim": 0}, r"model\.codebook\.lookup_dim must be >= 1"),
        ({"kmeans_batches": 0}, r"model\.codebook\.kmeans_batches must be >= 1"),
        ({"emma_decay": 0.9}, r"model\.codebook has unknown key\(s\) \['emma_decay'\]"),
    ],
)
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        VQVAEModule(**TINY, codebook=options)


# --------------------------------------------------------------------------- hand-checked updates
def test_loss_terms_follow_the_paper_convention():
    q = quantizer(k=2, d=2)
    with torch.no_grad():
        q.embed.copy_(torch.tensor([[0.0, 0.0], [3.0, 3.0]]))
    z = as_map([[1.0, 0.5], [2.0, 2.5]]).requires_grad_(True)
    z_q, idx, loss, terms = q.train()(z)
    assert idx.tolist() == [[[0, 1]]]
    # squared distances 1.25 and 1.25 over 4 elements: mean 0.625
    assert terms["codebook_loss"].item() == pytest.approx(0.625)
    assert terms["commit_loss"].item() == pytest.approx(0.25 * 0.625)
    loss.backward()
    expected = torch.tensor([[-0.5, -0.25], [0.5, 0.25]])  # 2 (e - z) / 4, weight 1
    torch.testing.assert_close(q.embed.grad, expected)
    # straight-through: the output equals the codes, the encoder gets 0.25 * 2 (z - e) / 4
    torch.testing.assert_close(z_q.detach(), as_map([[0.0, 0.0], [3.0, 3.0]]))
    torch.testing.assert_close(z.grad, 0.125 * (z.detach() - z_q.detach()))


def test_ema_matches_a_hand_computed_update():
    q = quantizer(k=2, d=1, ema_decay=0.5, ema_eps=1e-5).train()
    with torch.no_grad():
        q.embed.copy_(torch.tensor([[0.0], [10.0]]))
        q.embed_avg.copy_(q.embed)
    _, idx, loss, terms = q(as_map([[1.0], [2.0], [9.0]]))
    assert idx.tolist() == [[[0, 0, 1]]]
    # N = 0.5 * [1, 1] + 0.5 * [2, 1] = [1.5, 1];  m = 0.5 * [0, 10] + 0.5 * [3, 9] = [1.5, 9.5]
    torch.testing.assert_close(q.cluster_size, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(q.embed_avg, torch.tensor([[1.5], [9.5]]))
    # e = m / N (Laplace smoothing with eps 1e-5 is negligible here)
    torch.testing.assert_close(q.embed, torch.tensor([[1.0], [9.5]]), rtol=1e-4, atol=1e-4)
    assert terms["codebook_loss"].item() == 0.0  # no codebook loss with EMA updates
    assert not q.embed.requires_grad and loss.requires_grad is False


def test_restarts_move_only_dead_codes():
    torch.manual_seed(0)
    q = quantizer(k=4, d=2, restart_after_steps=2).train()
    codes = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [50.0, 50.0]])
    with torch.no_grad():
        q.embed.copy_(codes)
    batch = [[0.1, 0.0], [0.0, 0.1], [5.1, 5.0], [4.9, 5.0]]  # only codes 0 and 1 are used
    q(as_map(batch))
    assert torch.equal(q.embed.detach(), codes)  # one unused step: nothing restarted yet
    assert q.steps_unused.tolist() == [0, 0, 1, 1]
    q(as_map(batch))
    new = q.embed.detach()
    assert torch.equal(new[:2], codes[:2])  # live codes untouched
    for row in new[2:]:  # dead codes re-seeded from this batch's vectors
        assert any(torch.equal(row, torch.tensor(v)) for v in batch)
    assert q.steps_unused.tolist() == [0, 0, 0, 0] and int(q.restarts) == 2


def test_kmeans_init_finds_the_clusters_after_the_configured_batches():
    torch.manual_seed(0)
    q = quantizer(k=2, d=2, kmeans_init=True, kmeans_batches=2).train()
    blobs = [[-4.0, 0.0], [4.0, 0.0]]

    def batch():
        return as_map([[c[0] + 0.1 * torch.randn(()).item(), c[1]] for c in blobs for _ in range(8)])

    q(batch())
    assert not bool(q.initted)  # waits for the second batch
    q(batch())
    assert bool(q.initted)
    centres = sorted(q.embed[:, 0].tolist())
    assert centres == pytest.approx([-4.0, 4.0], abs=0.1)


def test_cosine_lookup_ignores_scale_and_keeps_unit_codes():
    q = quantizer(k=3, d=2, cosine=True, ema_decay=0.9).train()
    z = as_map([[1.0, 0.1], [-2.0, 0.3], [0.2, 3.0]])
    idx1 = q.eval()(z)[1]
    idx2 = q(z * 7.0)[1]
    assert torch.equal(idx1, idx2)
    q.train()(z)
    torch.testing.assert_close(q.embed.norm(dim=1), torch.ones(3))


# --------------------------------------------------------------------------- usage on a tiny model
def ridge_batch(n=16, size=16, seed=0) -> torch.Tensor:
    """Spectrogram-like images in [-1, 1]: a bright sinusoidal ridge on a dark floor."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    rows = torch.arange(size)[:, None].float()
    out = []
    for _ in range(n):
        f0, amp, ph = torch.rand(3, generator=g)
        centre = size * (0.2 + 0.6 * f0) + 3 * amp * torch.sin(2 * torch.pi * (2 * t + ph))
        out.append(torch.exp(-0.5 * ((rows - centre[None]) / 1.2) ** 2))
    return torch.stack(out)[:, None] * 2 - 1


def usage_after_training(options: dict | CodebookOptions, steps: int = 30) -> float:
    """Fraction of 128 codes (dimension 8) a tiny VQ-VAE uses on a fixed batch after training.

    With diffusers' plain quantiser this collapses to a few codes (4-8% over seeds 0-2)."""
    torch.manual_seed(0)
    model = VQVAEModule(**{**TINY, "vq_embed_dim": 8}, num_vq_embeddings=128, codebook=options)
    x = ridge_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        recon, _, vq_loss, _ = model(x)
        loss = (recon - x).abs().mean() + vq_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return len(model.encode_indices(x).unique()) / 128


@pytest.fixture(scope="module")
def plain_usage() -> float:
    return usage_after_training(PLAIN)


@pytest.mark.parametrize(
    "options",
    [
        {"name": "kmeans", "kmeans_init": True},
        {"name": "restart", "restart_after_steps": 5},
        {"name": "ema", "ema_decay": 0.8},
        {"name": "cosine", "cosine": True, "ema_decay": 0.8},
        {"name": "lowdim", "lookup_dim": 2},
        {"name": "healthy", "kmeans_init": True, "restart_after_steps": 5, "ema_decay": 0.8},
    ],
    ids=lambda o: o["name"],
)
def test_each_technique_uses_more_codes_than_plain(options, plain_usage):
    usage = usage_after_training(options)
    assert usage > plain_usage + 0.05, (options["name"], usage, plain_usage)


# --------------------------------------------------------------------------- diffusers export
@pytest.mark.parametrize(
    "options",
    [
        {"name": "lowdim-cosine", "cosine": True, "ema_decay": 0.9, "lookup_dim": 2},
        {"name": "lowdim", "lookup_dim": 3, "restart_after_steps": 2},
        {"name": "healthy", "kmeans_init": True, "restart_after_steps": 2, "ema_decay": 0.9},
    ],
    ids=lambda o: o["name"],
)
def test_export_to_diffusers_keeps_codes_and_reconstructions(tmp_path, options):
    torch.manual_seed(0)
    model = VQVAEModule(**TINY, num_vq_embeddings=16, codebook=options)
    x = ridge_batch(8)
    model.train()
    for _ in range(3):  # move every part (projections, codebook, EMA state) off its init
        model(x)
    model.eval()
    model.export_pretrained(tmp_path / "vq")
    loaded = VQModel.from_pretrained(tmp_path / "vq").eval()
    assert loaded.config.vq_embed_dim == model.quantizer.lookup_dim
    with torch.no_grad():
        h = loaded.encode(x).latents
        idx = loaded.quantize(h)[2][2].reshape(8, 8, 8)
        assert torch.equal(idx, model.encode_indices(x))
        torch.testing.assert_close(loaded.decode(h).sample, model(x)[0], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- DDP codebook identity
@pytest.fixture(scope="module")
def two_ranks() -> dict:
    """Every two-rank case of tests/codebook_ddp_worker.py, from one `mp.spawn` of 2 gloo ranks."""
    from codebook_ddp_worker import run_two_ranks

    return run_two_ranks()


@pytest.mark.slow  # several processes (DDP on CPU): `make test-slow` (CI runs it)
@pytest.mark.parametrize("name", ["healthy", "learned-restart-lowdim"])
def test_ddp_ranks_hold_the_identical_codebook_after_every_step(two_ranks, name):
    for rank in (0, 1):
        identical, restarts = two_ranks[rank]["identity"][name][True]
        assert identical == [True] * 6, (name, rank, identical)
        assert restarts > 0  # restarts did happen (and were shared)
    # the check can fail: without synchronisation the ranks drift apart
    unsynced, _ = two_ranks[0]["identity"][name][False]
    assert not all(unsynced)


@pytest.mark.slow  # several processes (DDP on CPU): `make test-slow` (CI runs it)
def test_ddp_ema_codebook_equals_one_process_on_the_pooled_batches(two_ranks):
    """Two ranks each seeing half of every batch end with the EMA codebook (cluster sizes, sums
    and codes) of one process seeing the whole batch: the EMA statistics are summed across
    ranks before the update, not averaged or kept per rank."""
    from codebook_ddp_worker import EMA_STEPS, ema_data

    torch.manual_seed(0)
    pooled = CodebookQuantizer(4, 32, 0.25, CodebookOptions(ema_decay=0.9)).train()
    start = pooled.embed.clone()
    for step in range(EMA_STEPS):
        pooled(torch.cat([ema_data(0, step), ema_data(1, step)]))
    for rank in (0, 1):
        for key in ("embed", "cluster_size", "embed_avg"):
            torch.testing.assert_close(two_ranks[rank]["ema"][key], getattr(pooled, key),
                                       rtol=1e-5, atol=1e-6, msg=f"rank {rank} {key}")
    assert not torch.allclose(pooled.embed, start), "the codebook moved"
    # the check can fail: one rank's half alone gives another codebook
    torch.manual_seed(0)
    half = CodebookQuantizer(4, 32, 0.25, CodebookOptions(ema_decay=0.9)).train()
    for step in range(EMA_STEPS):
        half(ema_data(0, step))
    assert not torch.allclose(half.embed, pooled.embed, atol=1e-4)
