"""DDP on CPU (`trainer=ddp_cpu`: 2 spawned processes): every cache is built once on an empty
cache folder, and both processes train on the finished file. Build counts come from the
helpers in `ddp_worker` (a light module the spawned processes import)."""

from __future__ import annotations

import re

import pytest
from conftest import compose_cfg, data_overrides, tiny_overrides
from ddp_worker import read_lines

from mdvq.runs.training import train

DDP = ["trainer=ddp_cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
       "trainer.limit_val_batches=1", "test=false", "export=false",
       "data.datamodule.source._target_=ddp_worker.CountingSimulatorSource"]


def ranks_trained(path) -> dict[str, dict]:
    """{rank: {"batches", "train_examples", "key"}} from a RankLog file."""
    out = {}
    for line in read_lines(path):
        m = re.fullmatch(r"train (\S+) batches=(\d+) train_examples=(\d+) key=(\S+)", line)
        assert m, line
        out[m[1]] = {"batches": int(m[2]), "examples": int(m[3]), "key": m[4]}
    return out


@pytest.mark.slow  # several processes, 40-120 s: `make test-slow` (CI runs it)
def test_ddp_builds_the_simulated_cache_once_and_both_ranks_train_on_it(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=cache) + DDP + [
        "~callbacks.spectrogram_grid", "callbacks.codebook_monitor.log_histogram=false",
        "+callbacks.ranks._target_=ddp_worker.RankLog", f"+callbacks.ranks.path={tmp_path}/ranks"])
    summary = train(cfg)
    assert summary["status"] == "finished"
    assert read_lines(cache / "builds.log") == ["radar rank0"]  # built once, inside DDP
    assert len(list(cache.glob("radar-*.npz"))) == 1
    trained = ranks_trained(tmp_path / "ranks")
    assert set(trained) == {"rank0", "rank1"}
    assert [t["batches"] for t in trained.values()] == [2, 2]
    assert len({(t["examples"], t["key"]) for t in trained.values()}) == 1  # the same data


@pytest.mark.slow  # several processes, 40-120 s: `make test-slow` (CI runs it)
def test_ddp_builds_the_token_cache_once_and_both_ranks_train_on_it(tmp_path):
    from diffusers import VQModel

    vq = tmp_path / "vq"  # an untrained tiny VQModel (downsampling 2: 8x8 code maps)
    VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
            layers_per_block=1, latent_channels=4, num_vq_embeddings=16, norm_num_groups=4,
            vq_embed_dim=4, sample_size=8, mid_block_add_attention=False).save_pretrained(vq)
    cache = tmp_path / "cache"
    cfg = compose_cfg(data_overrides(tmp_path, cache) + DDP + [
        "experiment=vqdiffusion", f"model.vqvae={vq}", "model._target_=ddp_worker.CountingVQDiffusion",
        "model.num_layers=1", "model.num_attention_heads=2", "model.attention_head_dim=16",
        "model.num_train_timesteps=10", "model.sample_steps=5", "model.val_samples_per_class=0",
        "+callbacks.ranks._target_=ddp_worker.RankLog", f"+callbacks.ranks.path={tmp_path}/ranks"])
    assert train(cfg)["status"] == "finished"
    # the simulated data are made before DDP starts (the prior checks its classes on them)
    assert read_lines(cache / "builds.log") == ["radar main", "tokens rank0"]
    assert len(list(cache.glob("tokens-*.npz"))) == 1
    trained = ranks_trained(tmp_path / "ranks")
    assert set(trained) == {"rank0", "rank1"}
    assert [t["batches"] for t in trained.values()] == [2, 2]
    assert len({(t["examples"], t["key"]) for t in trained.values()}) == 1  # the same file
