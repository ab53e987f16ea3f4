import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_set

from mdvq.core.errors import DataError
from mdvq.data.dataset import SpectrogramSet, load_or_build
from mdvq.data.on_error import load_each


def test_save_load_round_trip(tmp_path, small_set):
    path = tmp_path / "set.npz"
    small_set.save(path)
    back = SpectrogramSet.load(path)
    np.testing.assert_array_equal(back.images, small_set.images)
    np.testing.assert_array_equal(back.labels, small_set.labels)
    np.testing.assert_array_equal(back.subjects, small_set.subjects)
    assert back.class_names == small_set.class_names
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file may remain"


def test_load_or_build_builds_once_and_keys_by_params(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return make_set()

    a = load_or_build(tmp_path, "toy", {"n": 1}, build)
    b = load_or_build(tmp_path, "toy", {"n": 1}, build)
    assert len(calls) == 1 and a.meta["cache_key"] == b.meta["cache_key"]
    c = load_or_build(tmp_path, "toy", {"n": 2}, build)
    assert len(calls) == 2 and c.meta["cache_key"] != a.meta["cache_key"]
    assert len(list(tmp_path.glob("toy-*.npz"))) == 2


def test_crash_during_write_leaves_no_cache(tmp_path, monkeypatch):
    def exploding_savez(fh, **arrays):
        fh.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(tmp_path, "toy", {"n": 1}, make_set)
    assert [f for f in os.listdir(tmp_path) if not f.endswith(".lock")] == []  # only the build lock


def test_corrupt_cache_is_rebuilt(tmp_path, caplog):
    load_or_build(tmp_path, "toy", {"n": 1}, make_set)
    (path,) = tmp_path.glob("toy-*.npz")
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{path.name}.*unreadable"):
        SpectrogramSet.load(path)
    data = load_or_build(tmp_path, "toy", {"n": 1}, make_set)
    assert len(data) == 60 and "rebuilding cache" in caplog.text


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.images.__setitem__((0, 0, 0, 0), np.nan), "NaN or inf"),
    (lambda d: setattr(d, "images", d.images[:, 0]), r"\(N, C, F, T\)"),
    (lambda d: setattr(d, "labels", d.labels[:-1]), "labels"),
    (lambda d: d.labels.__setitem__(0, 7), "labels must lie"),
    (lambda d: d.images.__setitem__((0, 0, 0, 0), 1.5), r"\[0,1\]"),
])
def test_validate_names_origin_and_problem(mutate, message):
    data = make_set()
    mutate(data)
    with pytest.raises(DataError, match=f"my/file.npz: .*{message}"):
        data.validate(Path("my/file.npz"))


def test_load_each_skip_and_raise(caplog):
    def load(name):
        if name == "bad":
            raise DataError(name, "corrupt")
        return name.upper()

    loaded, skipped = load_each(["a", "bad", "b"], load, on_error="skip")
    assert [r for _, r in loaded] == ["A", "B"] and len(skipped) == 1
    assert "skipped 1 of 3 files" in caplog.text
    with pytest.raises(DataError, match="bad: corrupt"):
        load_each(["a", "bad"], load, on_error="raise")
    with pytest.raises(ValueError, match="data.on_error"):
        load_each([], load, on_error="ignore")


def _rewrite(path, change, keep_checksum=True):
    """Rewrite the .npz at `path` as a valid .npz with `change(arrays)` applied."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    if not keep_checksum:
        arrays.pop("checksum", None)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, keep, warning", [
    (lambda a: a["labels"].__setitem__(slice(None), a["labels"][::-1]), True,
     "content checksum mismatch"),
    (lambda a: a["images"].__setitem__((3, 0, 1, 1), np.nan), True, "content checksum mismatch"),
    (lambda a: None, False, r"no content checksum \(a cache written by an older mdvq\): treated as stale"),
])
def test_altered_or_unchecked_cache_is_rebuilt_naming_the_file(tmp_path, caplog, change, keep,
                                                               warning):
    calls = []

    def build():
        calls.append(1)
        return make_set()

    first = load_or_build(tmp_path, "toy", {"n": 1}, build)
    (path,) = tmp_path.glob("toy-*.npz")
    _rewrite(path, change, keep_checksum=keep)
    with pytest.raises(DataError, match=f"{path.name}: {warning}"):
        SpectrogramSet.load(path)
    again = load_or_build(tmp_path, "toy", {"n": 1}, build)
    assert len(calls) == 2, "the altered cache must be rebuilt, not used"
    assert re.search(f"rebuilding cache: .*{re.escape(path.name)}: {warning}", caplog.text)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert np.isfinite(again.images).all()
    load_or_build(tmp_path, "toy", {"n": 1}, build)  # the rebuilt file verifies
    assert len(calls) == 2
