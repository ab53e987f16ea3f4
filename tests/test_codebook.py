"""Codebook health (mdvq.models.codebook): hand-checked updates, usage gains, export, DDP identity."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
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
    assert names == ["cosine", "ema", "healthy", "kmeans", "lowdim", "plain", "restart"]
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
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, options: dict, sync: bool, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        if not sync:  # negative control: no all-reduce, no shared sampling
            cb._distributed = lambda: False
        torch.manual_seed(0)  # same initial weights on both ranks
        q = CodebookQuantizer(4, 32, 0.25, CodebookOptions(**options))
        learned = [p for p in q.parameters() if p.requires_grad]
        ddp = torch.nn.parallel.DistributedDataParallel(q, broadcast_buffers=False) if learned else q
        opt = torch.optim.SGD(learned, lr=0.5) if learned else None
        torch.manual_seed(100 + rank)  # different data and sampling RNG on each rank
        identical = []
        for step in range(6):
            z = torch.randn(2, 4, 4, 4) * (1 + rank) + step
            z_q, _, loss, _ = ddp(z)
            loss = loss + z_q.square().mean()  # a stand-in decoder loss reaching project_out
            if opt is not None:  # a learned codebook / projections: DDP averages the gradients
                opt.zero_grad()
                loss.backward()
                opt.step()
            gathered = [torch.empty_like(q.embed.data) for _ in range(2)]
            torch.distributed.all_gather(gathered, q.embed.data.contiguous())
            identical.append(torch.equal(gathered[0], gathered[1]))
        out[rank] = (identical, int(q.restarts))
    finally:
        torch.distributed.destroy_process_group()


def run_two_ranks(options: dict, sync: bool = True) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), options, sync, out), nprocs=2, join=True)
        return dict(out)


DDP_OPTIONS = {
    "healthy": {"kmeans_init": True, "restart_after_steps": 2, "ema_decay": 0.9},
    "learned-restart-lowdim": {"kmeans_init": True, "restart_after_steps": 2, "lookup_dim": 3},
}


@pytest.mark.parametrize("name", list(DDP_OPTIONS))
def test_ddp_ranks_hold_the_identical_codebook_after_every_step(name):
    out = run_two_ranks(DDP_OPTIONS[name])
    for rank in (0, 1):
        identical, restarts = out[rank]
        assert identical == [True] * 6, (name, rank, identical)
        assert restarts > 0  # restarts did happen (and were shared)
    # the check can fail: without synchronisation the ranks drift apart
    unsynced = run_two_ranks(DDP_OPTIONS[name], sync=False)
    assert not all(unsynced[0][0])



def _ema_data(rank: int, step: int) -> torch.Tensor:
    """Rank `rank`'s batch at `step` (B=2, D=4, 4x4): different data on each rank."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(2, 4, 4, 4, generator=g) * (1 + rank) + step


def _ema_worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        q = CodebookQuantizer(4, 32, 0.25, CodebookOptions(ema_decay=0.9)).train()
        for step in range(4):
            q(_ema_data(rank, step))
        out[rank] = {k: getattr(q, k).clone() for k in ("embed", "cluster_size", "embed_avg")}
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ema_codebook_equals_one_process_on_the_pooled_batches():
    """Two ranks each seeing half of every batch end with the EMA codebook (cluster sizes, sums
    and codes) of one process seeing the whole batch: the EMA statistics are summed across
    ranks before the update, not averaged or kept per rank."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ema_worker, args=(_free_port(), out), nprocs=2, join=True)
        ranks = dict(out)
    torch.manual_seed(0)
    pooled = CodebookQuantizer(4, 32, 0.25, CodebookOptions(ema_decay=0.9)).train()
    start = pooled.embed.clone()
    for step in range(4):
        pooled(torch.cat([_ema_data(0, step), _ema_data(1, step)]))
    for rank in (0, 1):
        for key in ("embed", "cluster_size", "embed_avg"):
            torch.testing.assert_close(ranks[rank][key], getattr(pooled, key), rtol=1e-5,
                                       atol=1e-6, msg=f"rank {rank} {key}")
    assert not torch.allclose(pooled.embed, start), "the codebook moved"
    # the check can fail: one rank's half alone gives another codebook
    torch.manual_seed(0)
    half = CodebookQuantizer(4, 32, 0.25, CodebookOptions(ema_decay=0.9)).train()
    for step in range(4):
        half(_ema_data(0, step))
    assert not torch.allclose(half.embed, pooled.embed, atol=1e-4)
