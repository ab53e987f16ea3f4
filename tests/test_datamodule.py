import numpy as np
import pytest
import torch
from conftest import InMemorySource, make_set

from mdvq.data.datamodule import SpectrogramDataModule
from mdvq.data.splits import split_indices


def test_class_stratified_split_is_a_seeded_partition():
    labels = np.repeat(np.arange(4), 50)
    a = split_indices(labels, None, 0.2, 0.1, seed=3)
    b = split_indices(labels, None, 0.2, 0.1, seed=3)
    c = split_indices(labels, None, 0.2, 0.1, seed=4)
    allidx = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(allidx) == list(range(200))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["val"], c["val"])
    for c_ in range(4):  # stratified: 10 val and 5 test examples of each class
        assert (labels[a["val"]] == c_).sum() == 10 and (labels[a["test"]] == c_).sum() == 5


def test_subject_disjoint_split_keeps_subjects_apart_and_classes_balanced():
    rng = np.random.default_rng(0)
    n = 600
    labels = np.repeat(np.arange(6), 100)
    subjects = np.array([f"s{i}" for i in rng.integers(0, 30, n)])
    parts = split_indices(labels, subjects, 0.15, 0.15, seed=0)
    sets = {k: set(subjects[v]) for k, v in parts.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert sum(len(v) for v in parts.values()) == n
    for k, frac in (("val", 0.15), ("test", 0.15)):
        assert abs(len(parts[k]) / n - frac) < 0.06
        counts = np.bincount(labels[parts[k]], minlength=6)
        assert counts.min() > 0


@pytest.mark.parametrize("val, test, match", [
    (0.6, 0.5, "must be < 1"), (-0.1, 0.1, "val_fraction"), (0.1, 1.0, "test_fraction"),
])
def test_impossible_split_fractions(val, test, match):
    with pytest.raises(ValueError, match=match):
        split_indices(np.zeros(10, int), None, val, test, 0)


def test_too_few_subjects():
    with pytest.raises(ValueError, match="at least 3 subjects.*has 2"):
        split_indices(np.zeros(10, int), np.array(["a", "b"] * 5), 0.2, 0.2, 0)


def test_datamodule_batches_in_minus_one_one_and_resized():
    data = make_set(n_subjects=10, size=(32, 48))
    dm = SpectrogramDataModule(InMemorySource(data), image_size=(16, 16), batch_size=8)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.5
    assert sum(dm.split_counts.values()) == len(data)
    assert dm.class_names == data.class_names and dm.num_classes == 3
    assert len(dm.freqs_hz) == 16 and dm.freqs_hz[0] > -500 and dm.freqs_hz[-1] < 500
    assert np.all(np.diff(dm.freqs_hz) > 0) and len(dm.times_s) == 16
    subj = {k: set(data.subjects[v]) for k, v in dm.split_indices.items()}
    assert not (subj["train"] & subj["test"])


def test_data_key_tracks_data_and_split():
    data = make_set(n_subjects=10)
    keys = set()
    for seed, size in ((0, (16, 16)), (0, (16, 16)), (1, (16, 16)), (0, (8, 8))):
        dm = SpectrogramDataModule(InMemorySource(data), image_size=size, split_seed=seed)
        dm.setup()
        keys.add(dm.data_key)
    assert len(keys) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": (64,)}, "data.image_size"), ({"batch_size": 0}, "batch_size"),
    ({"num_workers": -1}, "num_workers"),
])
def test_bad_datamodule_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpectrogramDataModule(InMemorySource(make_set()), **kwargs)


def test_datamodule_rejects_nan_naming_the_source():
    data = make_set()
    data.images[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        SpectrogramDataModule(InMemorySource(data)).setup()


def test_training_order_depends_only_on_seed_and_epoch():
    from mdvq.data.datamodule import EpochShuffleSampler

    a, b = EpochShuffleSampler(50, seed=7), EpochShuffleSampler(50, seed=7)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    b.set_epoch(1)
    assert sorted(first) == list(range(50)) and first != second and list(b) == second
    dm = SpectrogramDataModule(InMemorySource(make_set()), image_size=(16, 16), shuffle_seed=3)
    y1 = torch.cat([y for _, y in dm.train_dataloader()])
    y2 = torch.cat([y for _, y in dm.train_dataloader()])
    assert torch.equal(y1, y2)


def test_missing_ids_are_warned_about(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        SpectrogramDataModule(InMemorySource(make_set()), image_size=(16, 16)).setup()
    assert "no recording or subject ids" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        SpectrogramDataModule(InMemorySource(make_set(n_subjects=10)), image_size=(16, 16)).setup()
    assert "no recording or subject ids" not in caplog.text


def test_recording_disjoint_split_every_class_in_every_split_or_counts():
    # one recording per group and class: 4 recordings of each of 3 classes
    labels = np.repeat(np.arange(3), 40)
    recordings = np.array([f"c{c}r{i // 10}" for c, i in zip(labels, np.tile(np.arange(40), 3))])
    for seed in range(5):
        parts = split_indices(labels, recordings, 0.2, 0.2, seed)
        for idx in parts.values():
            assert set(labels[idx]) == {0, 1, 2}
        owners = [{k for k, idx in parts.items() if r in set(recordings[idx])}
                  for r in np.unique(recordings)]
        assert all(len(o) == 1 for o in owners)
    keep = recordings != "c1r3"
    keep &= recordings != "c1r2"
    with pytest.raises(ValueError, match=r"0: 4, 1: 2, 2: 4.*too few: \[1\]"):
        split_indices(labels[keep], recordings[keep], 0.2, 0.2, 0)
    parts = split_indices(labels[keep], recordings[keep], 0.0, 0.2, 0)  # 2 splits: possible
    assert len(parts["val"]) == 0 and set(labels[keep][parts["test"]]) == {0, 1, 2}
