"""`experiment=routes` end to end on a tiny config: the rows of `routes.sampling.priors` trained,
sampled, evaluated and tabulated; a second call reuses every finished stage; a failing stage is
named; the rows are data (`ROUTE_ROWS`): one row alone, another order, two rows sharing one prior
stage, an unknown name refused; the shared prior budget; the real examples beside the samples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SHORT, TINY_MODEL, TINY_TRAINER, TINY_VQ, TWO_CLASSES, compose_cfg

from mdvq.decide import main as decide_main
from mdvq.runs.experiments import (
    ROUTE_ROWS,
    RouteRow,
    StageFailed,
    apply_sampling_options,
    prior_budget_overrides,
    routes,
    select_rows,
    write_real_examples,
)

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


#: tiny settings of the priors of the rows hybrid / hybrid_unsnapped / maskedtokens
NEW_PRIORS = {
    "hybrid": STAGES["latentdiffusion"],
    "maskedtokens": ["model.num_layers=1", "model.num_attention_heads=2",
                     "model.attention_head_dim=16", "model.sample_steps=4",
                     "model.val_samples_per_class=0", "model.scheduler.num_warmup_steps=1"],
}


def routes_overrides(tmp: Path, cache: Path, more: dict | None = None) -> list[str]:
    """The tiny routes run into `tmp/routes`; `more`: extra overrides of some stages (added to
    those of `STAGES`, or a stage's only ones)."""
    more = more or {}
    stages = {k: STAGES.get(k, []) + more.get(k, []) for k in (*STAGES, *more)}
    stage_overrides = [f"routes.stage_overrides.{name}=[{','.join(repr(x) for x in o)}]"
                       for name, o in stages.items()]
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
    # each prior is tied to the autoencoder run it read: retraining that autoencoder in place
    # changes the prior's fingerprint, so the prior is not reused on stale latents
    for prior, ae in (("latentdiffusion", kl), ("vqdiffusion", vq)):
        config = json.loads((out / prior / "summary.json").read_text())["config"]
        assert config["upstream"] == {"autoencoder": ae["finished_at"]}, prior
    on_disk = json.loads((out / "routes.json").read_text())
    assert [r["route"] for r in on_disk["rows"]] == ["kl", "vq"]
    kl_row, vq_row = on_disk["rows"]
    assert kl_row["test_psnr_db"] == pytest.approx(kl["metrics"]["test/psnr"])
    assert vq_row["codebook_usage"] == pytest.approx(vq["metrics"]["test/codebook_usage"])
    assert kl_row["codebook_usage"] is None
    # the tokens' entropy (VQ rows only), the discrete prior's masked-token accuracy, and the
    # judge-free physical fidelity of the samples
    assert vq_row["token_entropy"] == pytest.approx(vq["metrics"]["test/token_entropy"])
    assert kl_row["token_entropy"] is None and kl_row["masked_accuracy"] is None
    vqd = json.loads((out / "vqdiffusion" / "summary.json").read_text())
    assert vq_row["masked_accuracy"] == pytest.approx(vqd["metrics"]["test/masked_acc"])
    for row in on_disk["rows"]:
        judged = json.loads((out / f"eval_{row['route']}" / "metrics.json").read_text())
        assert row["physics_pass_rate"] == judged["metrics"]["physics_pass_rate"]
        assert row["physics_median_ratio"] == judged["metrics"]["physics_median_ratio"]
    for row in on_disk["rows"]:
        assert 0 <= row["conditional_accuracy"] <= 1 and row["samples_per_second"] > 0
        judged = json.loads((out / f"eval_{row['route']}" / "metrics.json").read_text())
        shares = judged["judge"]["samples"]["predicted_share"]
        assert row["top_vote_share"] == max(shares.values()) >= 0.5, "of 2 classes"
        assert row["prior_parameters"] > 0 and row["prior_wall_s"] > 0
        assert row["sampling_steps"] == 4
    assert on_disk["decision"]["verdict"] in ("klvae", "vqvae")
    md = (out / "routes.md").read_text()
    assert "| kl |" in md and "| vq |" in md and "Phase-1 rule" in md
    # two narrower tables, and the priors' budget stated
    assert "## Reconstruction and codebook" in md and "## Generation and cost" in md
    assert md.count("| kl |") == 2 and "| kl | KL latent + latent diffusion | klvae |" in md
    assert ("Priors trained to: each prior's own budget (routes.prior_budget=null; "
            "callbacks.training_budget.min_steps: latentdiffusion 1920, vqdiffusion 504)") in md
    assert on_disk["prior_budget"] == {"shared": None,
                                       "min_steps": {"latentdiffusion": 1920, "vqdiffusion": 504}}
    assert "Not measured here: the latent's effect needs the rows kl and hybrid" in md
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
    assert "| route | latent + prior | cond. acc. | FD/floor | TSTR | TRTR | TSTR/TRTR |" in printed
    table = json.loads((tmp / "routes" / "routes.json").read_text())
    for row in table["rows"]:  # every row's evidence (tstr=false here: TRTR only)
        assert (f"| {row['route']} | {row['label']} | {row['conditional_accuracy']:.3f} | "
                f"{row['fd_ratio_to_floor']:.1f} | - | {row['trtr_acc']:.3f} | - |") in printed
    assert "**Verdict.**" in printed and "**Which factor explains the gap.**" in printed


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
                                         r"differs from the vqvae stage's '[0-9a-f]{16}'") as err:
        routes(cfg, overrides=common(tmp_path, cache))
    # the message names the one key that differs, with both values (and nothing else)
    assert re.search(r"stage vs run: model\.lr: \S+ vs 123\.0\)$", str(err.value)), err.value


def test_routes_reuse_auto_finds_a_finished_run_of_the_same_config_and_data(finished, tmp_path):
    tmp, cache, _ = finished
    cfg = compose_cfg(routes_overrides(tmp_path, cache) + [
        "routes.reuse.auto=true", f"paths.output_root={tmp / 'routes'}"])
    table = routes(cfg, overrides=common(tmp_path, cache))
    assert not (tmp_path / "routes" / "klvae").exists()
    assert table["stages"]["vqvae"]["dir"] == str((tmp / "routes" / "vqvae").resolve())


def test_routes_writes_real_test_examples_beside_the_samples(finished):
    from PIL import Image

    tmp, _, table = finished
    path = tmp / "routes" / "real_examples.png"
    assert table["real_examples"] == "real_examples.png"
    assert Image.open(path).format == "PNG" and Image.open(path).size[0] > 100


def test_real_examples_show_the_first_test_examples_of_each_class_one_row_each(monkeypatch,
                                                                                tmp_path):
    """3 test examples of class 0, 5 of class 1, 4 asked: 3 of each (the fewest any class has),
    so that every row of the grid is one class, as in the samples grids."""
    import numpy as np
    import torch

    from mdvq.utils import plotting

    x = torch.linspace(-1, 1, 8).reshape(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous()
    y = torch.tensor([1, 0, 1, 0, 1, 1, 0, 1])
    dm = type("DM", (), {"datasets": {"test": torch.utils.data.TensorDataset(x, y)},
                         "class_names": ["walking", "falling"], "freqs_hz": None,
                         "times_s": None})()
    seen = {}
    real = plotting.sample_grid_figure

    def record(images, labels, names, freqs, times, per_row, suptitle):
        seen.update(images=images, labels=labels, names=names, per_row=per_row)
        return real(images, labels, names, freqs, times, per_row=per_row, suptitle=suptitle)

    monkeypatch.setattr(plotting, "sample_grid_figure", record)
    out = write_real_examples(dm, tmp_path / "real.png", per_class=4)
    assert out.is_file() and seen["per_row"] == 3 and seen["names"] == ["walking", "falling"]
    assert seen["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    # examples 1, 3, 6 (class 0) then 0, 2, 4 (class 1), mapped from [-1, 1] to [0, 1]
    expected = (np.linspace(-1, 1, 8)[[1, 3, 6, 0, 2, 4]] + 1) / 2
    assert np.allclose(seen["images"][:, 0, 0, 0], expected, atol=1e-6)


def test_unknown_row_names_are_refused_naming_the_key_and_the_known_rows(finished, tmp_path):
    _, cache, _ = finished
    cfg = compose_cfg(routes_overrides(tmp_path, cache) + ["routes.sampling.priors=[kl,nonsense]"])
    with pytest.raises(ValueError, match=r"routes\.sampling\.priors: unknown rows \['nonsense'\]; "
                                         r"the known rows are \['kl', 'vq', 'hybrid', "
                                         r"'hybrid_unsnapped', 'maskedtokens'\]"):
        routes(cfg, overrides=common(tmp_path, cache))
    assert not (tmp_path / "routes" / "klvae").exists(), "refused before anything trains"
    row = RouteRow("new", "KL latent + a prior not written yet", "klvae", "newprior",
                   ("experiment=no_such_prior",), "model.autoencoder", "continuous")
    cfg = compose_cfg(routes_overrides(tmp_path, cache) + ["routes.sampling.priors=[kl,new]"])
    with pytest.raises(ValueError, match=r"row 'new' needs experiment=no_such_prior, which this "
                                         r"checkout lacks \(.*no_such_prior\.yaml\)"):
        routes(cfg, overrides=common(tmp_path, cache), rows=(*ROUTE_ROWS, row))
    clash = RouteRow("kl_on_vq", "the KL prior's stage on the VQ-VAE", "vqvae", "latentdiffusion",
                     ("experiment=latentdiffusion",), "model.autoencoder", "continuous")
    with pytest.raises(ValueError, match=r"rows 'kl' and 'kl_on_vq' share the prior stage "
                                         r"'latentdiffusion' but train it differently"):
        select_rows(["kl", "kl_on_vq"], (*ROUTE_ROWS, clash))
    assert [r.name for r in select_rows("vq")] == ["vq"], "one name alone"
    with pytest.raises(ValueError, match=r"routes\.sampling\.priors names \['kl'\] more than once"):
        select_rows(["kl", "vq", "kl"])
    with pytest.raises(ValueError, match=r"routes\.sampling\.priors is empty"):
        select_rows([])
    for bad in (0, -5, 2.5, True, "500"):
        with pytest.raises(ValueError, match=r"routes\.prior_budget must be null or an integer "):
            prior_budget_overrides(bad)
    assert prior_budget_overrides(None) == [] and prior_budget_overrides(7) == [
        "callbacks.training_budget.min_steps=7"]


def test_the_rows_follow_routes_sampling_priors_order_reusing_every_stage(finished):
    tmp, cache, _ = finished
    out = tmp / "routes"
    marks = [out / "latentdiffusion" / "summary.json", out / "samples_kl" / "stage.json",
             out / "eval_vq" / "stage.json"]
    routes(compose_cfg(routes_overrides(tmp, cache)), overrides=common(tmp, cache))  # [kl, vq]
    before = [p.stat().st_mtime_ns for p in marks]
    table = routes(compose_cfg(routes_overrides(tmp, cache) + ["routes.sampling.priors=[vq,kl]"]),
                   overrides=common(tmp, cache))
    assert [r["route"] for r in table["rows"]] == ["vq", "kl"]
    assert all(s["reused"] for s in table["stages"].values())
    assert before == [p.stat().st_mtime_ns for p in marks], "nothing trained, sampled or scored"
    md = (out / "routes.md").read_text()
    assert md.startswith("# Routes: VQ latent + VQ-Diffusion vs KL latent + latent diffusion")
    assert md.index("| vq | VQ latent") < md.index("| kl | KL latent")


def test_two_rows_sharing_a_prior_stage_train_it_once_and_sample_it_twice(finished):
    """As `hybrid` and `hybrid_unsnapped` do: here the KL prior sampled with its default
    sampler (DPM-Solver) and with DDIM, as one more row of the table."""
    import numpy as np

    tmp, cache, _ = finished
    out = tmp / "routes"
    ddim = RouteRow("kl_ddim", "KL latent + latent diffusion, DDIM sampler", "klvae",
                    "latentdiffusion", ("experiment=latentdiffusion",), "model.autoencoder",
                    "continuous", {"sampler": "ddim"})
    trained = (out / "latentdiffusion" / "summary.json").stat().st_mtime_ns
    table = routes(compose_cfg(routes_overrides(tmp, cache)
                               + ["routes.sampling.priors=[kl,kl_ddim]"]),
                   overrides=common(tmp, cache), rows=(*ROUTE_ROWS, ddim))
    assert (out / "latentdiffusion" / "summary.json").stat().st_mtime_ns == trained
    assert [r["route"] for r in table["rows"]] == ["kl", "kl_ddim"]
    assert table["rows"][1]["sampling_options"] == {"sampler": "ddim"}
    assert table["rows"][0]["prior_steps"] == table["rows"][1]["prior_steps"] == 1
    metas = [json.loads((out / f"samples_{r}" / "meta.json").read_text()) for r in ("kl", "kl_ddim")]
    assert [m["sampler"] for m in metas] == ["dpm", "ddim"]
    assert metas[1]["route"] == "kl_ddim" and metas[1]["prior"] == "latentdiffusion"
    first, second = (np.load(out / f"samples_{r}" / "samples.npy") for r in ("kl", "kl_ddim"))
    assert first.shape == second.shape and not np.allclose(first, second)
    assert (out / "eval_kl_ddim" / "metrics.json").is_file()


def test_sampling_options_set_the_prior_setting_or_name_the_row():
    import torch
    from lightning.pytorch.utilities.parsing import AttributeDict

    class Prior(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hparams = AttributeDict(decode_quantized=True, sample_steps=4)
            self.decode_quantized = True

    prior = Prior()
    row = next(r for r in ROUTE_ROWS if r.name == "hybrid_unsnapped")
    assert apply_sampling_options(prior, row) == {}
    assert prior.hparams.decode_quantized is False and prior.decode_quantized is False
    snapped = next(r for r in ROUTE_ROWS if r.name == "hybrid")
    assert (snapped.prior, snapped.sampling) == ("hybrid", {}), "one prior stage, default decoding"
    with pytest.raises(ValueError, match=r"routes row 'hybrid_unsnapped': its prior \(Module\) "
                                         r"has no setting 'decode_quantized'"):
        apply_sampling_options(torch.nn.Module(), row)
    ddim = RouteRow("x", "x", "klvae", "p", (), "model.autoencoder", "continuous",
                    {"sampler": "ddim", "truncation": 0.9})
    assert apply_sampling_options(prior, ddim) == {"sampler": "ddim", "truncation": 0.9}

    class Checked(Prior):  # a prior with a setter (as the latent-diffusion prior's) uses it
        def set_decode_quantized(self, snap):
            self.calls = [*getattr(self, "calls", []), snap]

    checked = Checked()
    assert apply_sampling_options(checked, row) == {} and checked.calls == [False]
    assert checked.decode_quantized is True, "the setter alone decides"


def test_one_row_alone_trains_only_its_prior_and_the_shared_budget_applies(finished, tmp_path):
    """`routes.sampling.priors=[vq]` with `routes.prior_budget=6`: no KL prior; the VQ-Diffusion
    stage (2 optimiser steps per epoch, 1 epoch asked) trains at least 6 steps."""
    tmp, cache, _ = finished
    done = tmp / "routes"
    more = {"vqdiffusion": ["trainer.limit_train_batches=1.0"]}  # the budget stands down on a limit
    cfg = compose_cfg(routes_overrides(tmp_path, cache, more) + [
        "routes.sampling.priors=[vq]", "routes.prior_budget=6",
        f"routes.reuse.klvae={done / 'klvae'}", f"routes.reuse.vqvae={done / 'vqvae'}"])
    table = routes(cfg, overrides=common(tmp_path, cache))
    out = tmp_path / "routes"
    assert [r["route"] for r in table["rows"]] == ["vq"]
    assert not (out / "latentdiffusion").exists() and not (out / "samples_kl").exists()
    assert set(table["stages"]) == {"klvae", "vqvae", "classifier", "vqdiffusion"}
    prior = json.loads((out / "vqdiffusion" / "summary.json").read_text())
    assert prior["config"]["callbacks"]["training_budget"]["min_steps"] == 6
    assert prior["trained_steps"] >= 6 and prior["epochs"] >= 3, "1 epoch of 2 steps raised"
    assert table["prior_budget"] == {"shared": 6, "min_steps": {"vqdiffusion": 6}}
    md = (out / "routes.md").read_text()
    assert ("Priors trained to: one shared budget, at least 6 optimiser steps each "
            "(routes.prior_budget=6; min_steps: vqdiffusion 6).") in md
    assert "No verdict: fewer than two routes" in md and (out / "real_examples.png").is_file()
    assert "this run has vq;" in md


def _has_experiment(name: str) -> bool:
    from mdvq.core.compose import config_dir

    return (config_dir() / "experiment" / f"{name}.yaml").is_file()


def _hybrid_prior_written() -> bool:
    from mdvq.models.latent_diffusion import LatentDiffusionModule

    return hasattr(LatentDiffusionModule, "set_decode_quantized")


@pytest.mark.skipif(not _hybrid_prior_written(), reason="the hybrid prior (latent diffusion on a "
                    "VQ-VAE, set_decode_quantized) is not in this checkout yet")
def test_hybrid_rows_train_one_prior_on_the_vqvae_and_sample_it_snapped_and_unsnapped(finished):
    import numpy as np

    tmp, cache, _ = finished
    out = tmp / "routes"
    trained = (out / "latentdiffusion" / "summary.json").stat().st_mtime_ns
    cfg = compose_cfg(routes_overrides(tmp, cache, NEW_PRIORS) + [
        "routes.sampling.priors=[kl,vq,hybrid,hybrid_unsnapped]"])
    table = routes(cfg, overrides=common(tmp, cache))
    assert [r["route"] for r in table["rows"]] == ["kl", "vq", "hybrid", "hybrid_unsnapped"]
    assert (out / "latentdiffusion" / "summary.json").stat().st_mtime_ns == trained
    prior = json.loads((out / "hybrid" / "summary.json").read_text())
    assert prior["config"]["model"]["autoencoder"] == str(out / "vqvae") and not table["stages"][
        "hybrid"]["reused"]
    snapped, unsnapped = (np.load(out / f"samples_{r}" / "samples.npy")
                          for r in ("hybrid", "hybrid_unsnapped"))
    assert snapped.shape == unsnapped.shape and not np.allclose(snapped, unsnapped)
    hybrid, unsnapped_row = table["rows"][2:]
    assert hybrid["codebook_usage"] == table["rows"][1]["codebook_usage"], "the same VQ-VAE"
    assert unsnapped_row["sampling_options"] == {"decode_quantized": False}
    md = (out / "routes.md").read_text()
    assert "Latent (same continuous prior): kl " in md and "against hybrid " in md
    assert "Prior (same VQ latent, the best discrete prior): hybrid " in md
    again = routes(cfg, overrides=common(tmp, cache))
    assert all(s["reused"] for s in again["stages"].values())


@pytest.mark.skipif(not _has_experiment("maskedtokens"), reason="experiment=maskedtokens is not "
                    "in this checkout yet")
def test_the_masked_token_row_trains_its_prior_on_the_vqvae(finished):
    tmp, cache, _ = finished
    out = tmp / "routes"
    cfg = compose_cfg(routes_overrides(tmp, cache, NEW_PRIORS) + [
        "routes.sampling.priors=[vq,maskedtokens]"])
    table = routes(cfg, overrides=common(tmp, cache))
    assert [r["route"] for r in table["rows"]] == ["vq", "maskedtokens"]
    prior = json.loads((out / "maskedtokens" / "summary.json").read_text())
    assert prior["status"] == "finished" and prior["config"]["model"]["vqvae"] == str(out / "vqvae")
    assert 0 <= table["rows"][1]["conditional_accuracy"] <= 1
    assert table["rows"][1]["prior_family"] == "discrete"
    masked = json.loads((out / "maskedtokens" / "summary.json").read_text())["metrics"]
    assert table["rows"][1]["masked_accuracy"] == masked["test/masked_accuracy"]
    again = routes(cfg, overrides=common(tmp, cache))
    assert all(s["reused"] for s in again["stages"].values())
    meta = json.loads((out / "samples_maskedtokens" / "meta.json").read_text())
    assert meta["temperature"] == prior["config"]["model"]["sample_temperature"]
    # routes.sampling.temperature redraws the masked row's samples at that temperature only
    cooler = routes(compose_cfg(routes_overrides(tmp, cache, NEW_PRIORS) + [
        "routes.sampling.priors=[vq,maskedtokens]",
        "routes.sampling.temperature.maskedtokens=0.5"]), overrides=common(tmp, cache))
    assert all(s["reused"] for s in cooler["stages"].values())
    assert json.loads((out / "samples_maskedtokens" / "meta.json").read_text())["temperature"] == 0.5


def test_fingerprint_counts_a_null_option_as_absent_but_not_a_set_one():
    """An option added later with a null default keeps older runs' fingerprint; setting it does not."""
    from mdvq.runs.experiments import config_fingerprint

    old = {"model": {"lr": 1e-3, "codebook": {"name": "healthy"}}, "data": {"root": "x"}}
    added_null = {"model": {"lr": 1e-3, "codebook": {"name": "healthy", "levels": None}},
                  "data": {"root": "x", "train_subset": None}}
    added_set = {"model": {"lr": 1e-3, "codebook": {"name": "healthy", "levels": [5, 5, 5]}},
                 "data": {"root": "x", "train_subset": None}}
    assert config_fingerprint(old) == config_fingerprint(added_null)
    # an empty mapping is absent too (`upstream: {}` was added to every config; runs made
    # before it stay reusable)
    assert config_fingerprint(old) == config_fingerprint({**old, "upstream": {}})
    assert config_fingerprint(old) != config_fingerprint({**old, "upstream": {"autoencoder": "t"}})
    assert config_fingerprint(old) != config_fingerprint(added_set)
    assert config_fingerprint(old) != config_fingerprint({**old, "data": {"root": "y"}})


def test_fingerprint_ignores_the_progress_bar_but_not_the_training_length():
    """A run trained with the progress bar off is reusable by a stage that has it on (seen for
    real: `routes.reuse.klvae` refused such a run); max_epochs still counts."""
    from mdvq.runs.experiments import config_fingerprint

    base = {"model": {"lr": 1e-3}, "trainer": {"max_epochs": 8, "enable_progress_bar": True}}
    quiet = {**base, "trainer": {"max_epochs": 8, "enable_progress_bar": False,
                                 "enable_model_summary": False}}
    longer = {**base, "trainer": {"max_epochs": 9, "enable_progress_bar": True}}
    assert config_fingerprint(base) == config_fingerprint(quiet)
    assert config_fingerprint(base) != config_fingerprint(longer)


def test_a_copied_experiment_folder_fingerprints_like_the_original():
    """A prior's config names its sibling autoencoder and the augment subset by absolute path:
    the same stage in a renamed/copied experiment folder is the same run; an autoencoder
    outside the experiment folder is another."""
    from mdvq.runs.experiments import _moved_fingerprint

    def prior(exp: str, autoencoder: str) -> dict:
        return {"paths": {"output_dir": f"{exp}/k0.1/latentdiffusion"},
                "trainer": {"default_root_dir": f"{exp}/k0.1/latentdiffusion"},
                "model": {"autoencoder": autoencoder},
                "data": {"datamodule": {"train_subset": f"{exp}/k0.1/subset.json"}}}

    a = prior("/runs/augment/a", "/runs/augment/a/k0.1/klvae")
    copied = prior("/elsewhere/b", "/elsewhere/b/k0.1/klvae")
    foreign = prior("/elsewhere/b", "/runs/augment/a/k0.1/klvae")
    assert _moved_fingerprint(a) == _moved_fingerprint(copied)
    assert _moved_fingerprint(a) != _moved_fingerprint(foreign)
    # a stand-alone run in a folder of another name (routes.reuse of outputs/ae/vq_fsq for the
    # stage folder routes/vqvae) is the same config too
    single = {"paths": {"output_dir": "/x/outputs/ae/vq_fsq"},
              "trainer": {"default_root_dir": "/x/outputs/ae/vq_fsq"}, "model": {"lr": 1}}
    stage = {"paths": {"output_dir": "/y/routes/vqvae"},
             "trainer": {"default_root_dir": "/y/routes/vqvae"}, "model": {"lr": 1}}
    assert _moved_fingerprint(single) == _moved_fingerprint(stage)
    # a folder whose name merely starts like the experiment folder is not inside it
    near = prior("/runs/augment/a", "/runs/augment/a/k0.1/klvae")
    near["model"]["autoencoder"] = "/runs/augment/a/k0.1-old/klvae"
    assert _moved_fingerprint(near) != _moved_fingerprint(a)
