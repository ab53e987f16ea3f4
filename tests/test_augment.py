"""`experiment=augment`: the subset draw (whole recordings, stratified, refusals), the datamodule's
`train_subset`, the classical augmentation (hand-checked shifts), and a tiny end-to-end run whose
generator stages see only their fraction and whose second call reuses every stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    SHORT,
    TINY_MODEL,
    TINY_TRAINER,
    TWO_CLASSES,
    InMemorySource,
    compose_cfg,
    make_set,
)

from mdvq.data.augmentation import ClassicalAugment, shift
from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.subsets import draw_fraction, manifest_hash, select_train, write_manifest


# ------------------------------------------------------------------------------ subset draw
def single_class_recordings():
    """Recordings of one class each: class 0 has 20, class 1 has 10, class 2 has 40, with 1-5
    windows per recording."""
    rng = np.random.default_rng(1)
    labels, groups = [], []
    for c, n_rec in enumerate((20, 10, 40)):
        for r in range(n_rec):
            w = int(rng.integers(1, 6))
            labels += [c] * w
            groups += [f"c{c}-r{r:02d}"] * w
    return np.array(labels), np.array(groups)


def test_draw_keeps_recordings_whole_and_is_stratified():
    labels, groups = single_class_recordings()
    manifest = draw_fraction(labels, groups, 0.3, seed=3, class_names=["a", "b", "c"])
    chosen = set(manifest["groups"])
    # stratified: round(0.3 x recordings) of every class
    for c, n_rec in enumerate((20, 10, 40)):
        assert sum(g.startswith(f"c{c}-") for g in chosen) == round(0.3 * n_rec)
    # whole: the positions kept are exactly every window of the chosen recordings
    keep = select_train(manifest, groups, len(labels))
    assert set(keep.tolist()) == {i for i, g in enumerate(groups) if g in chosen}
    # another seed draws other recordings, the same counts
    other = draw_fraction(labels, groups, 0.3, seed=4)
    assert other["groups"] != manifest["groups"] and len(other["groups"]) == len(chosen)
    assert draw_fraction(labels, groups, 1.0, seed=0)["groups"] == sorted(set(groups.tolist()))
    # nested: with one seed the 10 % subset lies inside the 30 % one
    assert set(draw_fraction(labels, groups, 0.1, seed=3)["groups"]) < chosen


def test_draw_of_subjects_doing_every_class_keeps_the_class_mix():
    """Subjects (as in the simulator) each perform every class: 20 subjects x 3 classes x 4."""
    subjects = np.repeat([f"s{i:02d}" for i in range(20)], 12)
    labels = np.tile(np.repeat(np.arange(3), 4), 20)
    manifest = draw_fraction(labels, subjects, 0.25, seed=0)
    assert len(manifest["groups"]) == 5  # a subject drawn for one class counts for all
    keep = select_train(manifest, subjects, len(labels))
    assert np.bincount(labels[keep]).tolist() == [20, 20, 20]  # whole subjects, every class
    assert set(subjects[keep]) == set(manifest["groups"])
    assert set(draw_fraction(labels, subjects, 0.1, seed=0)["groups"]) < set(manifest["groups"])


def test_draw_refuses_a_fraction_that_leaves_a_class_without_a_recording():
    labels = np.array([0] * 30 + [1] * 3)
    groups = np.array([f"w{i}" for i in range(30)] + ["f0", "f1", "f2"])
    with pytest.raises(ValueError, match=r"augment\.fractions.*falling"):
        draw_fraction(labels, groups, 0.1, seed=0, class_names=["walking", "falling"])
    with pytest.raises(ValueError, match=r"augment\.fractions"):
        draw_fraction(labels, groups, 0.0, seed=0)


def test_draw_without_ids_draws_examples_per_class():
    labels = np.repeat([0, 1], [40, 20])
    manifest = draw_fraction(labels, None, 0.25, seed=0)
    keep = select_train(manifest, None, len(labels))
    assert np.bincount(labels[keep]).tolist() == [10, 5]


# -------------------------------------------------------------- datamodule.train_subset
def test_datamodule_trains_on_the_manifest_only_and_keeps_val_test(tmp_path):
    full = SpectrogramDataModule(InMemorySource(make_set(n_subjects=10)), image_size=(16, 24))
    full.setup()
    manifest = draw_fraction(full.datasets["train"].tensors[1].numpy(), full.train_groups, 0.5, 0)
    path = write_manifest(manifest, tmp_path / "subset.json")
    sub = SpectrogramDataModule(InMemorySource(make_set(n_subjects=10)), image_size=(16, 24),
                                train_subset=str(path))
    sub.setup()
    assert set(sub.train_groups) == set(manifest["groups"])
    expected = int(np.isin(full.train_groups, manifest["groups"]).sum())
    assert sub.split_counts["train"] == expected < full.split_counts["train"]
    for split in ("val", "test"):
        assert torch.equal(sub.datasets[split].tensors[0], full.datasets[split].tensors[0])
    assert sub.data_key == f"{full.data_key}-sub{manifest_hash(manifest)}"
    # an id outside the training split (here a validation subject) is refused, naming the key
    val_id = min(full.split["manifest"]["val"]["class0"])
    write_manifest({"groups": [val_id]}, tmp_path / "bad.json")
    bad = SpectrogramDataModule(InMemorySource(make_set(n_subjects=10)), image_size=(16, 24),
                                train_subset=str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match=r"data\.datamodule\.train_subset=.*not in the training"):
        bad.setup()
    (tmp_path / "empty.json").write_text('{"groups": []}')
    with pytest.raises(ValueError, match=r"data\.datamodule\.train_subset=.*non-empty"):
        SpectrogramDataModule(InMemorySource(make_set(n_subjects=10)), image_size=(16, 24),
                              train_subset=str(tmp_path / "empty.json")).setup()


# ------------------------------------------------------------------ classical augmentation
def test_shift_by_hand():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]])  # (C=1, F=2, T=4)
    assert shift(x, 1, -1, 0.0).tolist() == [[[0, 1, 2, 3], [0, 5, 6, 7]]]  # later in time
    assert shift(x, -2, -1, -1.0).tolist() == [[[3, 4, -1, -1], [7, 8, -1, -1]]]
    assert shift(x, 1, -2, 0.0).tolist() == [[[0, 0, 0, 0], [1, 2, 3, 4]]]  # up in Doppler
    assert shift(x, 5, -1, 0.0).tolist() == [[[0] * 4, [0] * 4]]


def test_classical_augment_shifts_match_their_draws_and_keep_shape_and_range():
    t = torch.arange(1, 11, dtype=torch.float32)
    x = t.expand(1, 6, 10).clone() / 10.0  # every row a ramp 0.1 .. 1.0 along time
    aug = ClassicalAugment(max_time_shift=3, max_doppler_shift=0, time_masks=0,
                           doppler_masks=0, fill=0.0)
    seen = set()
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        expected_shift = int(torch.randint(-3, 4, (1,), generator=torch.Generator()
                                           .manual_seed(seed)).item())
        out = aug(x, g)
        assert torch.equal(out, shift(x, expected_shift, -1, 0.0))
        seen.add(expected_shift)
    assert seen == set(range(-3, 4))
    full = ClassicalAugment(max_time_shift=4, max_doppler_shift=2, time_masks=2,
                            time_mask_width=3, doppler_masks=2, doppler_mask_width=2, fill=-1.0)
    x = torch.rand(1, 16, 20) * 2 - 1
    before = x.clone()
    for seed in range(20):
        out = full(x, torch.Generator().manual_seed(seed))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= -1.0 and out.max() <= 1.0
    assert torch.equal(x, before)  # the input is left as it was
    with pytest.raises(ValueError, match=r"augment\.classical\.time_masks"):
        ClassicalAugment(time_masks=-1)


def test_masks_blank_whole_stripes():
    x = torch.ones(1, 8, 12)
    out = ClassicalAugment(max_time_shift=0, max_doppler_shift=0, time_masks=1, time_mask_width=3,
                           doppler_masks=0, fill=0.0)(x, torch.Generator().manual_seed(5))
    blank_cols = (out[0] == 0).all(0)
    assert (out[0] == 0).sum() == 8 * int(blank_cols.sum())  # only whole time columns
    assert int(blank_cols.sum()) <= 3 and torch.equal(x, torch.ones(1, 8, 12))


def test_training_loader_applies_the_transform_per_example_and_only_when_given():
    from types import SimpleNamespace

    from mdvq.evaluation.tstr import SyntheticTrainData

    images = np.full((6, 1, 4, 5), 0.75, dtype=np.float32)  # 0.5 on the models' scale
    labels = np.arange(6) % 2
    real = SimpleNamespace(class_names=["a", "b"])
    plain = next(iter(SyntheticTrainData(images, labels, real, 6, 0).train_dataloader()))[0]
    assert torch.allclose(plain, torch.full((6, 1, 4, 5), 0.5))
    aug = ClassicalAugment(max_time_shift=0, max_doppler_shift=0, time_masks=1,
                           time_mask_width=5, doppler_masks=0, fill=-1.0)
    torch.manual_seed(0)
    x, y = next(iter(SyntheticTrainData(images, labels, real, 6, 0, aug).train_dataloader()))
    assert x.shape == (6, 1, 4, 5) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    blanked = (x == -1.0).all(dim=2).sum(dim=-1).flatten()  # masked time columns per example
    assert set(torch.unique(x).tolist()) <= {-1.0, 0.5} and blanked.sum() > 0
    assert len(set(blanked.tolist())) > 1  # drawn afresh per example


# -------------------------------------------------------------------------- end to end
STAGES = {
    "klvae": [*TINY_MODEL, "~callbacks.spectrogram_grid"],
    "latentdiffusion": ["model.block_out_channels=[16,32]",
                        "model.down_block_types=[DownBlock2D,DownBlock2D]",
                        "model.up_block_types=[UpBlock2D,UpBlock2D]", "model.num_train_timesteps=20",
                        "model.sample_steps=4", "model.val_samples_per_class=0"],
    "classifier": ["model.channels=[8,16]"],
}


def augment_overrides(tmp: Path) -> list[str]:
    stage = [f"augment.stage_overrides.{name}=[{','.join(repr(x) for x in o)}]"
             for name, o in STAGES.items()]
    return ["experiment=augment", *TWO_CLASSES, *TINY_TRAINER, *SHORT,
            f"paths.output_dir={tmp / 'augment'}", f"paths.cache_dir={tmp / 'cache'}",
            "augment.fractions=[0.5,1.0]", "augment.arms=[real,synth_1x]", "augment.seeds=[0,1]",
            "augment.classifier.steps=4", "augment.classifier.val_every_steps=2", *stage]


def common(tmp: Path) -> list[str]:
    """What the command line hands every stage (all but augment.*, experiment, output_dir)."""
    return [o for o in augment_overrides(tmp)
            if not o.startswith(("augment.", "experiment=", "paths.output_dir"))]


@pytest.mark.slow
def test_augment_end_to_end_sees_only_its_fraction_and_reuses_stages(tmp_path, monkeypatch):
    from mdvq.runs.augment import augment

    cfg = compose_cfg(augment_overrides(tmp_path))
    table = augment(cfg, overrides=common(tmp_path))
    out = tmp_path / "augment"
    for name in ("augment.json", "augment.md", "augment.png"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "augment.json").read_text())
    assert [(r["fraction"], r["arm"]) for r in on_disk["rows"]] == [
        (0.5, "real"), (0.5, "synth_1x"), (1.0, "real"), (1.0, "synth_1x")]
    for row in on_disk["rows"]:
        assert set(row["acc_per_seed"]) == {"0", "1"}
        assert all(0.0 <= a <= 1.0 for a in row["acc_per_seed"].values())
        if row["arm"] == "synth_1x":  # the real subset plus as many synthetic examples
            assert row["train_count"] == 2 * row["real_train_count"]
            d = row["diff_vs_real"]
            accs = row["acc_per_seed"]
            reals = next(r for r in on_disk["rows"] if r["arm"] == "real"
                         and r["fraction"] == row["fraction"])["acc_per_seed"]
            assert d["mean"] == pytest.approx(np.mean([accs[s] - reals[s] for s in accs]))
            assert d["half"] is not None and d["low"] <= d["mean"] <= d["high"]
    assert "| 0.5 | synth_1x |" in (out / "augment.md").read_text()
    for res in on_disk["fractions"].values():  # every part of the wall time was recorded
        assert res["classifier_wall_time_s"] > 0 and res["sampling_wall_time_s"] > 0
    assert "Wall time [s]" in (out / "augment.md").read_text()
    for row in on_disk["rows"]:  # the validation curves behind the under-training flag
        assert row["seeds_still_learning"] in (0, 1, 2), row
    arm_run = json.loads((out / "k1" / "real" / "seed0" / "stage.json").read_text())
    assert [step for step, _ in arm_run["val_curve"]] == sorted(s for s, _ in arm_run["val_curve"])
    assert arm_run["val_curve"] and all(0 <= acc <= 1 for _, acc in arm_run["val_curve"])
    for stage in out.glob("k*/*/seed*/stage.json"):  # every arm: the same optimiser steps
        assert json.loads(stage.read_text())["steps"] == 4, stage
    assert len(list(out.glob("k*/*/seed*/stage.json"))) == 8  # 2 fractions x 2 arms x 2 seeds

    # the generator stages of k = 0.5 saw exactly the subset's training windows, no more
    manifest = json.loads((out / "k0.5" / "subset.json").read_text())
    from mdvq.core.compose import build

    base = build(compose_cfg(common(tmp_path) + ["paths.output_dir=."]).data.datamodule)
    base.setup("fit")
    in_subset = int(np.isin(base.train_groups, manifest["groups"]).sum())
    assert 0 < in_subset < base.split_counts["train"]
    for stage in ("klvae", "latentdiffusion"):
        summary = json.loads((out / "k0.5" / stage / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert summary["data"]["split_counts"]["train"] == in_subset, stage
        assert summary["data"]["split_counts"]["val"] == base.split_counts["val"], stage
        whole = json.loads((out / "k1" / stage / "summary.json").read_text())
        assert whole["data"]["split_counts"]["train"] == base.split_counts["train"], stage
    assert table["fractions"]["k0.5"]["real_train_count"] == in_subset

    # a second call trains nothing: every stage is reused
    def boom(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr("mdvq.runs.experiments.train", boom)
    monkeypatch.setattr("mdvq.evaluation.tstr.train_on_synthetic", boom)
    monkeypatch.setattr("mdvq.runs.prior_sampling.sample_prior", boom)
    again = augment(cfg, overrides=common(tmp_path))
    assert again["rows"] == table["rows"]
    assert all(s["reused"] for f in again["fractions"].values() for s in f["stages"].values())


def test_augment_without_synthetic_arms_trains_no_generator(tmp_path):
    """arms real + classical: the classical arm trains through the augmenting loader, no
    autoencoder or prior is trained, and the paired differences are computed per seed."""
    from mdvq.runs.augment import augment

    cfg = compose_cfg(augment_overrides(tmp_path) + ["augment.fractions=[0.5]",
                                                     "augment.arms=[real,classical]"])
    table = augment(cfg, overrides=common(tmp_path))
    out = tmp_path / "augment" / "k0.5"
    assert not (out / "klvae").exists() and not (out / "samples").exists()
    real, classical = table["rows"]
    assert classical["arm"] == "classical" and classical["train_count"] == real["train_count"]
    diffs = [classical["acc_per_seed"][s] - real["acc_per_seed"][s] for s in ("0", "1")]
    assert classical["diff_vs_real"]["mean"] == pytest.approx(np.mean(diffs))
    assert json.loads((out / "classical" / "seed1" / "stage.json").read_text())["inputs"][
        "classical"]["max_time_shift"] == 4


def test_augment_refuses_bad_settings_before_training(tmp_path):
    from mdvq.runs.augment import augment

    cfg = compose_cfg(augment_overrides(tmp_path) + ["augment.arms=[synth_1x]"])
    with pytest.raises(ValueError, match=r"augment\.arms"):
        augment(cfg, overrides=common(tmp_path))
    cfg = compose_cfg(augment_overrides(tmp_path) + ["augment.route=xx"])
    with pytest.raises(ValueError, match=r"augment\.route"):
        augment(cfg, overrides=common(tmp_path))
    cfg = compose_cfg(augment_overrides(tmp_path) + ["augment.fractions=[0.01]"])
    with pytest.raises(ValueError, match=r"augment\.fractions.*(walking|falling)"):
        augment(cfg, overrides=common(tmp_path))
    # `python -m mdvq.run experiment=augment` dispatches to it (the same refusal)
    from mdvq.run import main as run_main

    with pytest.raises(ValueError, match=r"augment\.fractions.*(walking|falling)"):
        run_main(cfg)


VQ_STAGES = {
    "vqvae": [*TINY_MODEL, "model.num_vq_embeddings=16", "model.vq_embed_dim=4",
              "~callbacks.spectrogram_grid"],
    "vqdiffusion": ["model.num_layers=1", "model.num_attention_heads=2",
                    "model.attention_head_dim=8", "model.num_train_timesteps=10",
                    "model.sample_steps=4", "model.val_samples_per_class=0",
                    "model.scheduler.num_warmup_steps=1"],
    "classifier": ["model.channels=[8,16]"],
}


@pytest.mark.slow
def test_augment_on_the_vq_route(tmp_path):
    """augment.route=vq trains the VQ-VAE and VQ-Diffusion on the subset and samples them."""
    from mdvq.runs.augment import augment

    stage = [f"augment.stage_overrides.{name}=[{','.join(repr(x) for x in o)}]"
             for name, o in VQ_STAGES.items()]
    overrides = [o for o in augment_overrides(tmp_path) if not o.startswith(
        ("augment.stage_overrides", "augment.fractions", "augment.arms"))]
    cfg = compose_cfg([*overrides, *stage, "augment.route=vq", "augment.fractions=[0.5]",
                       "augment.arms=[real,synth_only]"])
    table = augment(cfg, overrides=common(tmp_path))
    out = tmp_path / "augment" / "k0.5"
    assert table["route"] == "vq" and [r["arm"] for r in table["rows"]] == ["real", "synth_only"]
    for name in ("vqvae", "vqdiffusion"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["data"]["split_counts"]["train"] == table["fractions"]["k0.5"][
            "real_train_count"], name
    meta = json.loads((out / "samples" / "meta.json").read_text())
    assert meta["prior_kind"] == "vqdiffusion"


def test_wall_time_rows_add_up_and_show_unknown_parts():
    from mdvq.runs.augment import wall_time_rows

    table = {"fractions": {
        "k0.1": {"stages": {"klvae": {"wall_time_s": 100.0}, "latentdiffusion": {"wall_time_s": 50.0}},
                 "sampling_wall_time_s": 10.0, "classifier_wall_time_s": 40.0},
        "k1": {"stages": {}, "sampling_wall_time_s": None, "classifier_wall_time_s": 60.0}}}
    rows = wall_time_rows(table)
    assert rows[0] == ["k0.1", "150", "10", "40", "200"]
    assert rows[1] == ["k1", "0", "0", "60", "60"]  # real/classical arms only: no generator
    assert rows[2][0] == "all" and rows[2][-1] == "260 (4 min)"
    table["fractions"]["k0.1"]["stages"]["klvae"]["wall_time_s"] = None  # made before it was recorded
    assert wall_time_rows(table)[0][1] == "-" and wall_time_rows(table)[2][-1] == "-"


def test_still_learning_flags_a_curve_that_rises_at_its_end():
    from mdvq.runs.augment import still_learning

    assert still_learning([[49, 0.4], [99, 0.6], [149, 0.7]]) is True
    assert still_learning([[49, 0.4], [99, 0.8], [149, 0.7]]) is False   # peaked before the end
    assert still_learning([[49, 0.8], [99, 0.8]]) is False               # flat at the end
    assert still_learning([[49, 0.8]]) is None
