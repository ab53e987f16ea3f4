"""End-to-end tests of `mdvq.run` through the real Hydra config, shrunk to tiny settings."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import CONF, ROOT, compose_cfg, run_cli, tiny_overrides
from hydra.utils import get_object
from omegaconf import OmegaConf

from mdvq.core.compose import compose_config
from mdvq.core.summary import RunSummary
from mdvq.run import main as run_main
from mdvq.runs.training import train


def config_options() -> list[tuple[str, str]]:
    """Every (group, option) of conf/, read from the folder itself: a new file is tested the day
    it is added. Files starting with "_" are shared parts, not options."""
    out = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if len(rel.parts) > 1 and not path.name.startswith("_") and rel.parts[0] != "hydra":
            out.append(("/".join(rel.parts[:-1]), path.stem))
    return out


@pytest.mark.parametrize("group, option", config_options())
def test_every_config_option_composes_and_resolves(tmp_path, group, option):
    extra = ["data.root=/somewhere", "+data.labels_path=null"] if group == "data" and option != "radar" else []
    cfg = compose_cfg([f"{group}={option}", f"paths.output_dir={tmp_path}", *extra])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.data.datamodule._target_.endswith("SpectrogramDataModule")
    for target in targets(resolved):  # every class or function a config names exists
        assert get_object(target), target


def targets(node) -> list[str]:
    """Every `_target_` in a plain config tree."""
    if isinstance(node, dict):
        own = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return own + [t for v in node.values() for t in targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in targets(v)]
    return []


def test_every_group_hydra_composes_has_its_options_tested():
    """The groups Hydra picks options of when composing (the defaults lists, experiments
    included) are all among the groups `config_options` found, so each has its options tested."""
    tested = {g for g, _ in config_options()}
    for overrides in ([], *[[f"experiment={o}"] for g, o in config_options() if g == "experiment"]):
        cfg = compose_config(overrides, return_hydra_config=True)
        chosen = {g for g, option in cfg.hydra.runtime.choices.items()
                  if option is not None and not g.startswith("hydra")}
        assert chosen and chosen <= tested, (overrides, sorted(chosen - tested))


def test_missing_data_root_is_named(tmp_path):
    cfg = compose_cfg(["data=glasgow", f"paths.output_dir={tmp_path}"])
    with pytest.raises(Exception, match="data.root"):
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_fit_test_export_and_summary(tmp_path, data_cache):
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + ["debug=limit"])
    summary = train(cfg)
    run = tmp_path / "run"
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["model"] == "vqvae"
    for key in ("test/psnr", "test/ssim", "test/codebook_usage", "test/perplexity", "val/psnr"):
        assert key in on_disk["metrics"], key
    # training improved the reconstruction, and more than one code is in use (16 codes)
    with open(run / "csv" / "version_0" / "metrics.csv") as fh:
        val_psnr = [float(r["val/psnr"]) for r in csv.DictReader(fh) if r.get("val/psnr")]
    assert len(val_psnr) == 2 and val_psnr[1] > val_psnr[0], val_psnr
    assert on_disk["metrics"]["test/codebook_usage"] >= 2 / 16
    assert on_disk["data_key"].startswith("radar-") and on_disk["wall_time_s"] > 0
    # the split is recorded: grouping, subjects per class and split, and their ids
    split = on_disk["data"]["split"]
    assert split["by"] and set(split["manifest"]) == {"train", "val", "test"}
    assert all(n >= 1 for per in split["groups"].values() for n in per.values())
    # paths are relative to the run folder (a run folder can be moved) and resolve to real files
    assert on_disk["checkpoints"]["last"] == "checkpoints/last.ckpt"
    run_summary = RunSummary.read(run, model="vqvae")
    assert run_summary.checkpoint("last").is_file() and run_summary.checkpoint("best").is_file()
    assert on_disk["config"]["model"]["num_vq_embeddings"] == 16
    # the autoencoder reloads with diffusers alone
    from diffusers import VQModel

    vq = VQModel.from_pretrained(run_summary.pretrained_dir)
    assert vq.config.num_vq_embeddings == 16
    with open(run / "csv" / "version_0" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r.get("val/psnr") for r in rows)
    assert list((run / "figures").glob("spectrograms_val_epoch*.png"))
    assert summary["metrics"]["test/psnr"] == on_disk["metrics"]["test/psnr"]


def test_config_that_cannot_work_fails_before_training(tmp_path, data_cache):
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + ["model.norm_num_groups=3"])
    with pytest.raises(ValueError, match="norm_num_groups"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    cfg = compose_cfg(tiny_overrides(tmp_path, data_cache=data_cache) + ["data.image_size=[17,16]"])
    with pytest.raises(ValueError, match="data.image_size"):
        train(cfg)


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path, data_cache, monkeypatch):
    from mdvq.models import VQVAEModule

    overrides = tiny_overrides(tmp_path, data_cache=data_cache) + [
        "trainer.max_epochs=3", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    original = VQVAEModule.training_step

    def poisoned(self, batch, batch_idx):
        if self.current_epoch == 1:  # epoch 0 trains and checkpoints normally
            batch = (torch.full_like(batch[0], float("nan")), batch[1])
        return original(self, batch, batch_idx)

    monkeypatch.setattr(VQVAEModule, "training_step", poisoned)
    with pytest.raises(FloatingPointError, match="(?i)nan|inf"):
        train(compose_cfg(overrides))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "FloatingPointError" in summary["error"]
    last = torch.load(RunSummary.read(tmp_path / "run").checkpoint("last"), map_location="cpu",
                      weights_only=False)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values()
               if torch.is_tensor(v) and v.is_floating_point())


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, data_cache):
    common = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false",
              "export=false", "trainer.deterministic=true", "~callbacks.spectrogram_grid",
              "callbacks.codebook_monitor.log_histogram=false"]
    full = compose_cfg(tiny_overrides(tmp_path / "full", data_cache=data_cache) + common
                       + ["trainer.max_epochs=2"])
    train(full)
    part = compose_cfg(tiny_overrides(tmp_path / "part", data_cache=data_cache) + common
                       + ["trainer.max_epochs=1"])
    first = train(part)
    resumed = compose_cfg(tiny_overrides(tmp_path / "part", data_cache=data_cache) + common
                          + ["trainer.max_epochs=2",
                             f"ckpt_path={RunSummary(tmp_path / 'part' / 'run', first).checkpoint('last')}"])
    train(resumed)
    a = torch.load(tmp_path / "full/run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "part/run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(v, b["state_dict"][k], rtol=1e-5, atol=1e-6, msg=k)


def test_preview_command_writes_png(tmp_path, data_cache):
    """`python -m mdvq.run task=preview`, in this process: Hydra's main called with the composed
    config dispatches on `task` as the command line does (test_phase1_experiment_writes_the_decision
    runs the command line itself)."""
    overrides = [o for o in tiny_overrides(tmp_path, data_cache=data_cache) if not o.startswith("model.")]
    assert run_main(compose_cfg(["task=preview", *overrides])) is None
    png = tmp_path / "run" / "preview.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_unknown_data_key_names_the_path_where_it_lives(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException,
                       match=r"(?s)not in struct.*data\.max_doppler_hz is not a key of data=radar.*"
                             r"lives at data\.datamodule\.source\.stft\.max_doppler_hz: give "
                             r"data\.datamodule\.source\.stft\.max_doppler_hz=1250"):
        compose_config(["data=radar", "data.max_doppler_hz=1250"])
    with pytest.raises(ConfigCompositionException, match=r"no key 'nonsense' anywhere under data"):
        compose_config(["data=radar", "data.nonsense=1"])
    # the command line prints the same hint after Hydra's own error
    done = run_cli(["mdvq.run", "data=radar", "data.max_doppler_hz=1250",
                    f"paths.output_root={tmp_path}"], cwd=tmp_path, timeout=120)
    assert done.returncode != 0 and "not in struct" in done.stderr
    assert "it lives at data.datamodule.source.stft.max_doppler_hz" in done.stderr


def test_phase1_experiment_writes_the_decision(tmp_path, data_cache):
    # the common tiny-model overrides apply to both models; K stays at its default
    overrides = [o for o in tiny_overrides(tmp_path, model="klvae", data_cache=data_cache)
                 if not o.startswith(("model=", "paths.output_dir"))]
    overrides += ["experiment=phase1", f"hydra.run.dir={tmp_path / 'phase1'}", "debug=limit",
                  "~callbacks.spectrogram_grid"]
    proc = run_cli(["mdvq.run", *overrides], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "phase1"
    decision = json.loads((out / "decision.json").read_text())
    kl = json.loads((out / "klvae" / "summary.json").read_text())
    vq = json.loads((out / "vqvae" / "summary.json").read_text())
    assert kl["data_key"] == vq["data_key"]
    assert decision["psnr_kl"] == pytest.approx(kl["metrics"]["test/psnr"])
    assert decision["psnr_vq"] == pytest.approx(vq["metrics"]["test/psnr"])
    expect = (vq["metrics"]["test/psnr"] > 1.1 * kl["metrics"]["test/psnr"]
              and vq["metrics"]["test/codebook_usage"] > 0.8)
    assert decision["verdict"] == ("vqvae" if expect else "klvae")
    assert decision["psnr_margin"] == 0.10 and decision["usage_threshold"] == 0.80  # conf/decision
    assert decision["vq_run"] == "vqvae" and decision["kl_run"] == "klvae", "relative run folders"


def test_the_main_config_names_every_experiment():
    """conf/config.yaml's comment on the experiment group lists every conf/experiment file."""
    line = next(x for x in (CONF / "config.yaml").read_text().splitlines()
                if x.strip().startswith("- experiment:"))
    named = set(line.split("#", 1)[1].split("(")[0].replace("|", " ").split())
    assert named == {p.stem for p in (CONF / "experiment").glob("*.yaml")}, named
