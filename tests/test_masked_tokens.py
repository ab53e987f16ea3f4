"""Tests of the masked-token prior (mdvq.models.masked_tokens, mdvq.models.mask_schedule): the
cosine schedule by hand, a loss on masked positions only, the decoding schedule, a toy prior that
needs its labels, export/reload, registration with mdvq.sample, and bad inputs."""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, data_overrides, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_latent_diffusion import save_tiny_kl
from test_vqdiffusion import K, ToyCodes, save_tiny_vq, trainer

from mdvq.core.artifacts import checkpoint_kind, load_checkpoint, resolve_artifact
from mdvq.models.mask_schedule import (
    decode_schedule,
    mask_count,
    mask_ratio,
    mask_timestep,
    mask_tokens,
)
from mdvq.models.masked_tokens import (
    MaskedTokenModule,
    load_exported_masked_prior,
    masked_terms,
)
from mdvq.runs.prior_sampling import load_prior, sample_prior

CONF = Path(__file__).resolve().parents[1] / "conf"
N = 16  # tokens of the toy 4x4 code maps


def tiny_prior(vq: Path, cls=MaskedTokenModule, **kw) -> MaskedTokenModule:
    args = {"num_classes": 2, "image_size": (8, 8), "num_layers": 1, "num_attention_heads": 2,
            "attention_head_dim": 16, "sample_steps": 4, "val_samples_per_class": 0,
            "optimizer": functools.partial(torch.optim.AdamW, lr=3e-3)}
    args.update(kw)
    return cls(str(vq), **args)


class LabelBlind(MaskedTokenModule):
    """The same prior made to ignore its labels: every pass sees the null class."""

    def forward(self, x_t, labels):
        return super().forward(x_t, torch.full_like(labels, self.null_class))


# ------------------------------------------------------------------------------- schedule
def test_mask_schedule_is_hand_checked():
    # cos(u pi / 2): 1 at u=0, cos(pi/6)=0.8660 at 1/3, cos(pi/4)=0.7071 at 1/2, 0.5 at 2/3, 0 at 1
    u = torch.tensor([0.0, 1 / 3, 0.5, 2 / 3, 1.0])
    torch.testing.assert_close(mask_ratio(u), torch.tensor(
        [1.0, 0.8660254, 0.7071068, 0.5, 0.0], dtype=torch.float64), atol=1e-7, rtol=0)
    # 16 tokens: round(16, 13.86, 11.31, 8, 0) -> 16, 14, 11, 8, and at least one masked
    assert mask_count(u, N).tolist() == [16, 14, 11, 8, 1]
    codes = torch.arange(N).repeat(5, 1)
    x, mask = mask_tokens(codes, K, u, torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [16, 14, 11, 8, 1]
    assert torch.equal(x[mask], torch.full((int(mask.sum()),), K))
    assert torch.equal(x[~mask], codes[~mask])
    # the masked positions are random, not a fixed prefix
    assert not torch.equal(mask[3], torch.arange(N) < 8)
    # drawn u: the share of masked tokens averages E[cos(u pi/2)] = 2/pi ~ 0.637
    _, mask = mask_tokens(torch.zeros(4000, N, dtype=torch.long), K,
                          generator=torch.Generator().manual_seed(1))
    assert abs(mask.float().mean().item() - 2 / math.pi) < 0.02
    # time step = round(1000 * masked share)
    assert mask_timestep(torch.tensor([16, 8, 1, 0]), N).tolist() == [1000, 500, 62, 0]
    # decoding (AmusedScheduler's cosine rule), 16 tokens in 4 steps: after step i,
    # floor(16 cos(pi/2 (i+1)/4)) stay masked = floor(14.78, 11.31, 6.12) = 14, 11, 6, then 0
    assert decode_schedule(N, 4) == [14, 11, 6, 0]
    # 4 tokens in 6 steps: floor(4 cos(pi/2 i/6)) = 3, 3, 2, 1, 1 for i = 1..5, but every step
    # reveals at least one token while two or more are masked, and one stays masked to the end
    assert decode_schedule(4, 6) == [3, 2, 1, 1, 1, 0]
    # in float32 (as the scheduler computes) cos(pi/3) < 0.5: floor(4 cos(pi/3)) = 1, not 2
    assert decode_schedule(4, 3) == [3, 1, 0]


def test_masked_terms_average_over_masked_positions_only():
    # 1 sample, K=4 codes, 3 positions; position 0 unmasked and predicted badly
    probs = torch.tensor([[[0.01, 0.5, 0.25],
                           [0.97, 0.5, 0.25],
                           [0.01, 0.0, 0.25],
                           [0.01, 0.0, 0.25]]])
    log_probs = probs.clamp_min(1e-12).log()
    x0 = torch.tensor([[0, 0, 1]])
    mask = torch.tensor([[False, True, True]])
    out = masked_terms(log_probs, x0, mask)
    # masked: -log 0.5 and -log 0.25 -> mean (log 2 + log 4) / 2 = 1.5 log 2
    assert out["loss"].item() == pytest.approx(1.5 * math.log(2), abs=1e-5)
    # position 1 ties 0.5/0.5 (argmax takes code 0 = right), position 2 ties -> code 0 (wrong)
    assert out["masked_accuracy"].item() == pytest.approx(0.5)
    # entropies log 2 and log 4
    assert out["masked_entropy"].item() == pytest.approx(1.5 * math.log(2), abs=1e-5)


def test_training_loss_counts_only_masked_positions(tmp_path, monkeypatch):
    """A network right (p = 1/2) where tokens are masked and sure of a wrong code elsewhere: the
    loss is log 2 only if the unmasked positions do not count."""
    module = tiny_prior(save_tiny_vq(tmp_path / "vq"))
    codes = torch.randint(0, K, (64, 4, 4), generator=torch.Generator().manual_seed(0))
    x0 = codes.flatten(1)

    def fake(x_t, labels):
        masked = x_t == module.mask_id
        probs = torch.full((x_t.shape[0], K, N), 1e-6)
        probs.scatter_(1, ((x0 + 1) % K)[:, None], 1.0)  # a wrong code, sure, where unmasked
        half = torch.full_like(probs, 0.5 / (K - 1))
        half.scatter_(1, x0[:, None], 0.5)  # the right code with p = 1/2 where masked
        probs = torch.where(masked[:, None], half, probs)
        return (probs / probs.sum(1, keepdim=True)).log().requires_grad_()

    monkeypatch.setattr(module, "forward", fake)
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    loss = module.training_step((codes, torch.randint(0, 2, (64,))), 0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-4)
    assert logged["train/masked_accuracy"] == 1.0
    module._eval_step((codes, torch.zeros(64, dtype=torch.long)), 0, "val")
    assert logged["val/loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_each_decoding_step_reveals_the_scheduled_number_of_tokens(tmp_path, monkeypatch):
    module = tiny_prior(save_tiny_vq(tmp_path / "vq")).eval()
    seen = []
    original = module.forward
    monkeypatch.setattr(module, "forward", lambda x, y: (
        seen.append((x == module.mask_id).sum(1).tolist()), original(x, y))[1])
    for steps in (4, 8, 12):
        seen.clear()
        codes = module.generate(torch.tensor([0, 1, 1]), steps=steps, guidance=1.0,
                                generator=torch.Generator().manual_seed(steps))
        masked_before = [N, *decode_schedule(N, steps)[:-1]]
        assert seen == [[m] * 3 for m in masked_before], steps
        assert codes.shape == (3, 4, 4) and int(codes.max()) < K and int(codes.min()) >= 0


# ------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """The tiny prior and its label-blind twin, trained alike on the two-class toy maps."""
    tmp = tmp_path_factory.mktemp("masked_toy")
    vq = save_tiny_vq(tmp / "vq")
    data = ToyCodes()
    out = {"data": data, "vq": vq, "tmp": tmp}
    for name, cls in (("prior", MaskedTokenModule), ("blind", LabelBlind)):
        torch.manual_seed(0)
        module = tiny_prior(vq, cls=cls, label_drop_prob=0.2)
        t = trainer(max_epochs=25, check_val_every_n_epoch=25)
        t.fit(module, data)
        out[name] = module.eval()
        out[f"{name}_metrics"] = {k: float(v) for k, v in t.callback_metrics.items()}
        if name == "prior":
            t.save_checkpoint(tmp / "prior.ckpt")
    return out


def right_class_share(module, maps, per_class: int = 16, seed: int = 0) -> float:
    """Share of samples closer (in matching tokens) to their own class's map than the other's."""
    labels = torch.arange(2).repeat_interleave(per_class)
    codes = module.generate(labels, generator=torch.Generator().manual_seed(seed)).flatten(1)
    flat = maps.flatten(1)
    own = (codes == flat[labels]).float().mean(1)
    other = (codes == flat[1 - labels]).float().mean(1)
    return float((own > other).float().mean())


def test_toy_prior_samples_the_map_of_each_class(toys):
    maps = toys["data"].maps
    assert right_class_share(toys["prior"], maps) >= 0.95
    labels = torch.tensor([0, 1])
    codes = toys["prior"].generate(labels, generator=torch.Generator().manual_seed(5))
    assert (codes == maps).float().mean() >= 0.9
    assert toys["prior_metrics"]["val/masked_accuracy"] >= 0.9


def test_the_toy_test_fails_for_a_prior_that_ignores_its_labels(toys):
    assert right_class_share(toys["blind"], toys["data"].maps) <= 0.75
    # it still learned the maps' tokens (only the label is missing): not an untrained network
    assert toys["blind_metrics"]["val/masked_accuracy"] > 0.6


def test_guidance_and_temperature_change_the_samples(toys):
    module, labels = toys["prior"], torch.arange(2).repeat(8)
    base = module.generate(labels, generator=torch.Generator().manual_seed(1))
    hot = module.generate(labels, temperature=5.0, generator=torch.Generator().manual_seed(1))
    guided = module.generate(labels, guidance=0.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(base, hot) and not torch.equal(base, guided)


# ------------------------------------------------------------------------------- export
def test_export_and_checkpoint_reload_reproduce_the_samples(toys, tmp_path):
    module = toys["prior"]
    labels = torch.tensor([0, 1, 1, 0])
    ref = module.generate(labels, steps=6, guidance=1.5, generator=torch.Generator().manual_seed(2))
    folder = module.export_pretrained(tmp_path / "export")
    meta = json.loads((folder / "prior.json").read_text())
    assert meta["model_kind"] == "maskedtokens" and meta["mask_token_id"] == K
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())[
        "_class_name"] == "AmusedScheduler"
    reloaded = load_exported_masked_prior(folder)
    assert reloaded.data_info["class_names"] == ["alpha", "beta"]
    assert reloaded.vqvae.fingerprint == module.vqvae.fingerprint
    again = reloaded.generate(labels, steps=6, guidance=1.5,
                              generator=torch.Generator().manual_seed(2))
    assert torch.equal(ref, again)
    # registered with the prior loaders: the export, the checkpoint (kind from its keys)
    assert resolve_artifact(folder, ("vqdiffusion", "maskedtokens"), "prior").form == "export"
    ckpt = toys["tmp"] / "prior.ckpt"
    assert checkpoint_kind(load_checkpoint(ckpt, "prior")) == "maskedtokens"
    for source in (folder, ckpt):
        loaded, _ = load_prior(source)
        out = loaded.generate(labels, steps=6, guidance=1.5,
                              generator=torch.Generator().manual_seed(2))
        assert torch.equal(out, ref), source


def test_sample_command_serves_the_masked_prior(toys, tmp_path):
    from mdvq.sample import main as sample_main

    folder = toys["prior"].export_pretrained(tmp_path / "export")
    out = sample_main([str(folder), "n_per_class=2", "seed=1", f"out={tmp_path / 'samples'}"])
    images = np.load(out / "samples.npy", allow_pickle=False)
    meta = json.loads((out / "meta.json").read_text())
    assert images.shape == (4, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert meta["prior_kind"] == "maskedtokens" and meta["sampler"] == "confidence"
    assert meta["steps"] == 4 and meta["samples_per_second"] > 0
    with pytest.raises(ValueError, match="sampler must be one of \\['confidence'\\]"):
        sample_prior(toys["prior"], 1, sampler="purity")
    with pytest.raises(ValueError, match=r"steps must lie in \[1, 16\]"):
        sample_prior(toys["prior"], 1, steps=17)
    assert meta["temperature"] == toys["prior"].hparams.sample_temperature
    # with the re-masking order fixed (choice temperature 0), a near-zero token temperature
    # draws the most likely token: two seeds agree; a warm one does not
    hparams = toys["prior"].hparams
    choice, hparams.choice_temperature = hparams.choice_temperature, 0.0
    try:
        sharp = [sample_prior(toys["prior"], 2, seed=s, temperature=1e-4)[0] for s in (1, 2)]
        warm = [sample_prior(toys["prior"], 2, seed=s, temperature=5.0)[0] for s in (1, 2)]
    finally:
        hparams.choice_temperature = choice
    assert np.array_equal(sharp[0], sharp[1])
    assert not np.array_equal(warm[0], warm[1])
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got 0.0"):
        sample_prior(toys["prior"], 1, temperature=0)


# ------------------------------------------------------------------------------- config, errors
def test_a_kl_vae_is_refused_naming_the_key(tmp_path):
    kl = save_tiny_kl(tmp_path / "kl")
    with pytest.raises(ValueError, match=r"model\.vqvae: .*KL-VAE.*experiment=latentdiffusion"):
        tiny_prior(kl)


def test_bad_settings_name_their_key(tmp_path):
    vq = save_tiny_vq(tmp_path / "vq")
    for kw, key in (({"sample_steps": 17}, "model.sample_steps"),
                    ({"sample_steps": 0}, "model.sample_steps"),
                    ({"sample_temperature": 0.0}, "model.sample_temperature"),
                    ({"choice_temperature": 20.0}, "model.choice_temperature"),
                    ({"sample_guidance": -1.0}, "model.sample_guidance"),
                    ({"label_drop_prob": 1.0}, "model.label_drop_prob"),
                    ({"sampler": "purity"}, "model.sampler"),
                    ({"image_size": (8, 16)}, "data.image_size")):
        with pytest.raises(ValueError, match=re.escape(key)):
            tiny_prior(vq, **kw)
    with pytest.raises(ValueError, match="model.vqvae"):
        MaskedTokenModule(None)


def test_model_yaml_is_commented_and_matches_the_constructor(tmp_path):
    for path in (CONF / "model" / "maskedtokens.yaml", CONF / "experiment" / "maskedtokens.yaml"):
        for line in path.read_text().splitlines():
            if re.match(r"^\s*[A-Za-z_]+:", line):
                assert "#" in line, f"no comment on {line!r} in {path.name}"
    vq = save_tiny_vq(tmp_path / "vq")
    root = OmegaConf.create({"data": {"image_size": [8, 8]},
                             "paths": {"output_dir": str(tmp_path), "cache_dir": str(tmp_path)}})
    root.model = OmegaConf.load(CONF / "model" / "maskedtokens.yaml")
    root.model.vqvae = str(vq)
    module = instantiate(root.model)
    plain = MaskedTokenModule(str(vq), image_size=(8, 8), output_dir=str(tmp_path),
                              cache_dir=str(tmp_path))
    assert dict(module.hparams) == dict(plain.hparams)


def test_experiment_selects_the_prior_callbacks_and_budget(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = compose_cfg(["experiment=maskedtokens"])
    assert cfg.model._target_.endswith("MaskedTokenModule")
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"
    assert cfg.callbacks.training_budget.min_steps == 504  # as the VQ-Diffusion prior
    assert "codebook_monitor" not in cfg.callbacks
    vq = save_tiny_vq(tmp_path / "vq")
    t = trainer(max_steps=1, enable_checkpointing=True,
                callbacks=[ModelCheckpoint(dirpath=tmp_path, monitor="val/vb")])
    with pytest.raises(ValueError, match="experiment=maskedtokens"):
        t.fit(tiny_prior(vq), ToyCodes(4))


# ------------------------------------------------------------------------------- end to end
@pytest.mark.slow  # about 40 s on the shared CPU (a tiny VQ-VAE run, then the prior's)
def test_run_trains_logs_the_learning_curve_and_exports(tmp_path):
    """`mdvq.run experiment=maskedtokens` on a tiny VQ-VAE run: summary, val/masked_accuracy per
    validation (the learning curve), the export, and `mdvq.sample` on the run folder."""
    import csv

    from mdvq.runs.training import train
    from mdvq.sample import main as sample_main

    cache = tmp_path / "cache"
    train(compose_cfg(tiny_overrides(tmp_path / "vq", data_cache=cache) + [
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "test=false", "~callbacks.spectrogram_grid",
        "callbacks.codebook_monitor.log_histogram=false"]))
    kl = save_tiny_kl(tmp_path / "kl")  # a KL-VAE stops the run, naming the key
    with pytest.raises(ValueError, match=r"model\.vqvae: .*KL-VAE.*experiment=latentdiffusion"):
        train(compose_cfg(data_overrides(tmp_path / "bad", cache) + [
            "experiment=maskedtokens", f"model.vqvae={kl}"]))
    summary = train(compose_cfg(data_overrides(tmp_path / "prior", cache) + [
        "experiment=maskedtokens", f"model.vqvae={tmp_path / 'vq' / 'run'}",
        "model.num_layers=1", "model.num_attention_heads=2", "model.attention_head_dim=16",
        "model.sample_steps=4", "model.val_samples_per_class=1",
        "model.scheduler.num_warmup_steps=2", "trainer.max_epochs=2",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]))
    run = tmp_path / "prior" / "run"
    assert summary["status"] == "finished" and summary["model"] == "maskedtokens"
    for key in ("val/loss", "val/masked_accuracy", "test/masked_accuracy", "test/masked_entropy"):
        assert key in summary["metrics"], key
    with open(next((run / "csv").glob("version_*/metrics.csv"))) as fh:
        curve = [(int(r["step"]), float(r["val/masked_accuracy"]))
                 for r in csv.DictReader(fh) if r.get("val/masked_accuracy")]
    assert len(curve) == 2 and curve[0][0] < curve[1][0], curve
    assert (run / "pretrained" / "prior.json").exists()
    assert (run / "figures" / "samples_test.png").exists()
    out = sample_main([str(run), "n_per_class=1", "steps=3"])
    assert json.loads((out / "meta.json").read_text())["prior_kind"] == "maskedtokens"
