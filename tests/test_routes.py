"""`experiment=routes` end to end on a tiny config: both routes trained, sampled, evaluated and
tabulated; a second call reuses every finished stage; a failing stage is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAINER, TINY_VQ, compose_cfg

from mdvq.decide import main as decide_main
from mdvq.runs.experiments import StageFailed, routes

TWO_CLASSES = [  # 2 classes x 10 simulated examples at 16x16
    "data=radar", "data.image_size=[16,16]", "data.datamodule.source.classes=[walking,falling]",
    "data.datamodule.source.num_per_class=10", "data.datamodule.source.num_subjects=10",
    "data.datamodule.source.progress=false", "data.datamodule.batch_size=8",
]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"]
STAGES = {
    "klvae": [*TINY_MODEL, "~callbacks.spectrogram_grid"],
    "vqvae": [*TINY_MODEL, *TINY_VQ, "~callbacks.spectrogram_grid"],
    "classifier": ["model.channels=[8,16]"],
    "latentdiffusion": ["model.block_out_channels=[16,32]",
                        "model.down_block_types=[DownBlock2D,DownBlock2D]",
                        "model.up_block_types=[UpBlock2D,UpBlock2D]", "model.num_train_timesteps=20",
                        "model.sample_steps=4", "model.val_samples_per_class=0"],
    "vqdiffusion": ["model.num_layers=1", "model.num_attention_heads=2",
                    "model.attention_head_dim=8", "model.num_train_timesteps=10",
                    "model.sample_steps=4", "model.val_samples_per_class=0",
                    "model.scheduler.num_warmup_steps=1"],
}


def routes_overrides(tmp: Path, cache: Path) -> list[str]:
    stage_overrides = [f"routes.stage_overrides.{name}=[{','.join(repr(x) for x in o)}]"
                       for name, o in STAGES.items()]
    return ["experiment=routes", *TWO_CLASSES, *TINY_TRAINER, *SHORT,
            f"paths.output_dir={tmp / 'routes'}", f"paths.cache_dir={cache}",
            "routes.sampling.n_per_class=4", "routes.tstr=false", *stage_overrides]


def common(tmp: Path, cache: Path) -> list[str]:
    """What the command line would hand every stage (all but routes.* and experiment)."""
    return [o for o in routes_overrides(tmp, cache)
            if not o.startswith(("routes.", "experiment=", "paths.output_dir"))]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routes")
    cache = tmp / "cache"
    cfg = compose_cfg(routes_overrides(tmp, cache))
    table = routes(cfg, overrides=common(tmp, cache))
    return tmp, cache, table


def test_routes_trains_samples_evaluates_and_tabulates_both_routes(finished):
    tmp, _, table = finished
    out = tmp / "routes"
    for stage in STAGES:
        summary = json.loads((out / stage / "summary.json").read_text())
        assert summary["status"] == "finished", stage
    kl, vq = (json.loads((out / s / "summary.json").read_text()) for s in ("klvae", "vqvae"))
    assert kl["data_key"] == vq["data_key"] == table["data_key"], "one data set and split"
    on_disk = json.loads((out / "routes.json").read_text())
    assert [r["route"] for r in on_disk["rows"]] == ["kl", "vq"]
    kl_row, vq_row = on_disk["rows"]
    assert kl_row["test_psnr_db"] == pytest.approx(kl["metrics"]["test/psnr"])
    assert vq_row["codebook_usage"] == pytest.approx(vq["metrics"]["test/codebook_usage"])
    assert kl_row["codebook_usage"] is None
    for row in on_disk["rows"]:
        assert 0 <= row["conditional_accuracy"] <= 1 and row["samples_per_second"] > 0
        assert row["prior_parameters"] > 0 and row["prior_wall_s"] > 0
        assert row["sampling_steps"] == 4
    assert on_disk["decision"]["verdict"] in ("klvae", "vqvae")
    md = (out / "routes.md").read_text()
    assert "| kl |" in md and "| vq |" in md and "Phase-1 rule" in md
    samples = json.loads((out / "samples_kl" / "meta.json").read_text())
    assert samples["class_names"] == ["walking", "falling"] and samples["n_per_class"] == 4
    assert (out / "eval_vq" / "metrics.json").is_file()


def test_a_second_call_reuses_every_finished_stage(finished):
    tmp, cache, _ = finished
    before = {s: (tmp / "routes" / s / "summary.json").stat().st_mtime_ns for s in STAGES}
    table = routes(compose_cfg(routes_overrides(tmp, cache)), overrides=common(tmp, cache))
    assert all(s["reused"] for s in table["stages"].values())
    assert before == {s: (tmp / "routes" / s / "summary.json").stat().st_mtime_ns for s in STAGES}


def test_decide_on_a_routes_folder_adds_the_generation_evidence(finished, capsys):
    tmp, _, _ = finished
    decide_main([str(tmp / "routes")])
    printed = capsys.readouterr().out
    assert printed.startswith("decision: ") and "Generation evidence" in printed
    assert "| kl |" in printed


def test_a_failing_stage_stops_the_experiment_and_is_named(finished, tmp_path):
    _, cache, _ = finished
    broken = routes_overrides(tmp_path, cache) + [
        "routes.stage_overrides.classifier=['model.channels=[8,16]','model.dropout=2.0']"]
    with pytest.raises(StageFailed, match="stage 'classifier' failed"):
        routes(compose_cfg(broken), overrides=common(tmp_path, cache))
    out = tmp_path / "routes"
    assert json.loads((out / "vqvae" / "summary.json").read_text())["status"] == "finished"
    assert json.loads((out / "classifier" / "summary.json").read_text())["status"] == "failed"
    assert not (out / "latentdiffusion").exists()


def test_n_per_class_null_samples_as_many_as_the_real_training_split(finished):
    tmp, cache, _ = finished
    table = routes(compose_cfg(routes_overrides(tmp, cache) + ["routes.sampling.n_per_class=null"]),
                   overrides=common(tmp, cache))
    assert all(s["reused"] for s in table["stages"].values()), "no stage trained again"
    train = json.loads((tmp / "routes" / "classifier" / "summary.json").read_text())
    expected = -(-train["data"]["split_counts"]["train"] // 2)  # ceil over the 2 classes
    meta = json.loads((tmp / "routes" / "samples_kl" / "meta.json").read_text())
    assert meta["n_per_class"] == expected and expected != 4


def test_every_stage_records_and_tabulates_its_steps_and_wall_time(finished):
    tmp, _, table = finished
    out = tmp / "routes"
    md = (out / "routes.md").read_text()
    assert "| stage | optimiser steps | epochs | wall [s] | reused |" in md
    for stage in STAGES:
        summary = json.loads((out / stage / "summary.json").read_text())
        # SHORT: 1 epoch of at most 2 batches (the latent prior's batch of 64 takes all 14
        # training latents in 1); summary.json says what ran
        steps = summary["trained_steps"]
        assert steps == (1 if stage == "latentdiffusion" else 2) and summary["epochs"] == 1, stage
        row = table["stages"][stage]
        assert row["trained_steps"] == steps and row["wall_time_s"] == summary["wall_time_s"]
        assert f"| {stage} | {steps} | 1 | {summary['wall_time_s']:.0f} |" in md, stage
    kl, vq = table["rows"]
    assert (kl["prior_steps"], vq["prior_steps"], vq["autoencoder_steps"]) == (1, 2, 2)


def test_routes_reuse_skips_the_named_autoencoder_stages(finished, tmp_path):
    tmp, cache, _ = finished
    done = tmp / "routes"
    before = {s: (done / s / "summary.json").stat().st_mtime_ns for s in ("klvae", "vqvae")}
    table = routes(compose_cfg(routes_overrides(tmp_path, cache) + [
        f"routes.reuse.klvae={done / 'klvae'}", f"routes.reuse.vqvae={done / 'vqvae'}"]),
        overrides=common(tmp_path, cache))
    out = tmp_path / "routes"
    assert not (out / "klvae").exists() and not (out / "vqvae").exists(), "not trained again"
    assert before == {s: (done / s / "summary.json").stat().st_mtime_ns for s in ("klvae", "vqvae")}
    for stage in ("klvae", "vqvae"):
        row = table["stages"][stage]
        assert (row["dir"], row["reused"], row["status"]) == (
            str((done / stage).resolve()), True, "finished")
    on_disk = json.loads((out / "routes.json").read_text())
    assert on_disk["stages"]["klvae"]["dir"] == str((done / "klvae").resolve())
    prior = json.loads((out / "latentdiffusion" / "summary.json").read_text())["config"]
    assert prior["model"]["autoencoder"] == str((done / "klvae").resolve())
    prior = json.loads((out / "vqdiffusion" / "summary.json").read_text())["config"]
    assert prior["model"]["vqvae"] == str((done / "vqvae").resolve())
    decide_main([str(out)])  # mdvq.decide finds the reused autoencoders where routes.json says
    assert json.loads((out / "decision.json").read_text())["verdict"] in ("klvae", "vqvae")


def test_routes_reuse_refuses_a_run_of_other_data_naming_both_keys(finished, tmp_path):
    import shutil

    tmp, cache, table = finished
    other = tmp_path / "other_klvae"
    shutil.copytree(tmp / "routes" / "klvae", other)
    summary = json.loads((other / "summary.json").read_text())
    summary["data_key"] = "other-data-key"
    (other / "summary.json").write_text(json.dumps(summary))
    cfg = compose_cfg(routes_overrides(tmp_path, cache) + [f"routes.reuse.klvae={other}"])
    with pytest.raises(ValueError, match=r"routes\.reuse\.klvae") as err:
        routes(cfg, overrides=common(tmp_path, cache))
    assert "'other-data-key'" in str(err.value) and repr(table["data_key"]) in str(err.value)
    assert not (tmp_path / "routes" / "klvae").exists(), "nothing trained"


def test_routes_reuse_refuses_a_run_of_another_config_naming_both_fingerprints(finished, tmp_path):
    import shutil

    tmp, cache, _ = finished
    other = tmp_path / "other_vqvae"
    shutil.copytree(tmp / "routes" / "vqvae", other)
    summary = json.loads((other / "summary.json").read_text())
    summary["config"]["model"]["lr"] = 123.0
    (other / "summary.json").write_text(json.dumps(summary))
    cfg = compose_cfg(routes_overrides(tmp_path, cache) + [
        f"routes.reuse.klvae={tmp / 'routes' / 'klvae'}", f"routes.reuse.vqvae={other}"])
    with pytest.raises(ValueError, match=r"routes\.reuse\.vqvae=.*fingerprint '[0-9a-f]{16}' "
                                         r"differs from the vqvae stage's '[0-9a-f]{16}'"):
        routes(cfg, overrides=common(tmp_path, cache))


def test_routes_reuse_auto_finds_a_finished_run_of_the_same_config_and_data(finished, tmp_path):
    tmp, cache, _ = finished
    cfg = compose_cfg(routes_overrides(tmp_path, cache) + [
        "routes.reuse.auto=true", f"paths.output_root={tmp / 'routes'}"])
    table = routes(cfg, overrides=common(tmp_path, cache))
    assert not (tmp_path / "routes" / "klvae").exists()
    assert table["stages"]["vqvae"]["dir"] == str((tmp / "routes" / "vqvae").resolve())
