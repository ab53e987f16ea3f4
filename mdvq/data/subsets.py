"""Fractions of the training split, drawn by whole recordings/subjects and stratified by class.

`experiment=augment` trains generators and classifiers on a fraction k of the real training
split. `draw_fraction` picks that fraction (whole recordings or subjects, so no recording is cut
in two; every class keeps about a fraction k of its recordings); the result is a *manifest*, a
small JSON file that `SpectrogramDataModule(train_subset=...)` reads
(`data.datamodule.train_subset`) to restrict its training split to it. Validation and test are
never touched.

Manifest (JSON): `{"groups": [ids ...]}` (recording/subject ids, as strings) or
`{"indices": [i ...]}` (positions in the training split, for data without ids), plus
free-form description keys (`fraction`, `by`, `seed`, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KEY = "data.datamodule.train_subset"
"""The config key of the datamodule option that reads a manifest (named in every error)."""


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def draw_fraction(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int,
                  class_names: Sequence[str] | None = None,
                  key: str = "augment.fractions") -> dict:
    """A stratified fraction of a training split, by whole groups (recordings or subjects).

    labels: `(N,)` class index of each training example; groups: `(N,)` its recording/subject id
    (None: draw single examples instead); fraction: k in (0, 1]; seed: the draw's seed.
    Per class c with G_c groups holding it, round(k * G_c) of them are drawn (a group holding
    several classes, e.g. a subject doing every activity, counts for each); classes with the
    fewest groups draw first, and a group already drawn counts for every class it holds. Groups
    are taken in one order fixed by `seed`, so with the same seed the subset of a smaller k lies
    inside that of a larger k (for one-class recordings always; for groups holding several
    classes as long as the classes draw in the same order).
    Returns a manifest dict: `{"fraction", "by": "group"|"example", "seed", "groups": sorted ids}`
    (or `"indices"`: sorted positions, without groups). Raises ValueError naming `key` and the
    class when k leaves a class without any group (round(k * G_c) = 0), or k is not in (0, 1].
    """
    labels = np.asarray(labels)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"{key}: every fraction must lie in (0, 1], got {fraction}")
    classes = np.unique(labels)

    def name(c) -> str:
        return str(class_names[int(c)]) if class_names is not None else str(int(c))

    units = np.asarray(groups).astype(str) if groups is not None else np.arange(len(labels)).astype(str)
    by = "group" if groups is not None else "example"
    holders = {int(c): sorted(set(units[labels == c].tolist())) for c in classes}
    wanted = {c: _round(float(fraction) * len(h)) for c, h in holders.items()}
    empty = [name(c) for c, n in wanted.items() if n == 0]
    if empty:
        counts = ", ".join(f"{name(c)}: {len(h)}" for c, h in holders.items())
        raise ValueError(
            f"{key}: fraction {fraction} leaves class(es) {empty} without a single "
            f"{'recording/subject' if by == 'group' else 'example'} in the training subset "
            f"(round(k x count) = 0; {'recordings/subjects' if by == 'group' else 'examples'} "
            f"per class in the training split: {counts}); raise the fraction or add data")
    # one seeded order of all groups; each class takes the next of its groups in that order, so
    # with one seed a smaller fraction's subset lies inside a larger one's (nested subsets)
    order = np.random.default_rng(seed).permutation(sorted(set(units.tolist()))).tolist()
    chosen: set[str] = set()
    for c in sorted(holders, key=lambda c: (len(holders[c]), c)):
        mine = set(holders[c])
        need = wanted[c] - len(mine & chosen)
        for u in order:
            if need <= 0:
                break
            if u in mine and u not in chosen:
                chosen.add(u)
                need -= 1
    manifest = {"fraction": float(fraction), "by": by, "seed": int(seed)}
    if by == "group":
        manifest["groups"] = sorted(chosen)
    else:
        manifest["indices"] = sorted(int(u) for u in chosen)
    return manifest


def write_manifest(manifest: dict, path: str | Path) -> Path:
    """Write `manifest` as JSON to `path` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(path: str | Path) -> dict:
    """Read and check a manifest file; ValueError naming `data.datamodule.train_subset` and the
    file when it is missing, not JSON, or holds neither a non-empty `groups` nor `indices` list."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"{KEY}={path}: cannot read the subset manifest ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{KEY}={path}: not a JSON subset manifest ({err})") from None
    if not isinstance(manifest, dict) or ("groups" in manifest) == ("indices" in manifest):
        raise ValueError(f"{KEY}={path}: a subset manifest holds exactly one of "
                         "{'groups': [recording/subject ids]} or {'indices': [positions]}")
    items = manifest.get("groups", manifest.get("indices"))
    if not isinstance(items, list) or not items:
        raise ValueError(f"{KEY}={path}: its {'groups' if 'groups' in manifest else 'indices'} "
                         "must be a non-empty list")
    return manifest


def manifest_hash(manifest: dict) -> str:
    """A short hash of what a manifest selects (its groups or indices, not its description)."""
    what = {k: sorted(map(str, manifest[k])) for k in ("groups", "indices") if k in manifest}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def select_train(manifest: dict, groups: np.ndarray | None, n_train: int,
                 source: str | Path = "") -> np.ndarray:
    """Positions (sorted int64) in the training split that `manifest` keeps.

    groups: `(N_train,)` recording/subject id of each training example (None: the data carry no
    ids, so only an `indices` manifest applies); n_train: the training split's size. ValueError naming `data.datamodule.train_subset`
    (and `source`, the file) when an id is not in the training split (validation and test stay
    whole), an index is out of range, or a `groups` manifest meets data without ids.
    """
    where = f"{KEY}={source}" if source else KEY
    if "indices" in manifest:
        n = int(n_train)
        idx = np.unique(np.asarray(manifest["indices"], dtype=np.int64))
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{where}: indices must lie in [0, {n}) (positions in the training "
                             f"split), got {idx.min()}..{idx.max()}")
        return idx
    if groups is None:
        raise ValueError(f"{where}: the manifest lists recording/subject ids but the data carry "
                         "none (or data.datamodule.subject_disjoint=false); use an 'indices' "
                         "manifest")
    ids = np.asarray(groups).astype(str)
    wanted = {str(g) for g in manifest["groups"]}
    unknown = sorted(wanted - set(ids.tolist()))
    if unknown:
        raise ValueError(f"{where}: ids {unknown[:8]}{' ...' if len(unknown) > 8 else ''} are not "
                         "in the training split (a subset is drawn from the training split "
                         "only; validation and test stay whole)")
    return np.flatnonzero(np.isin(ids, list(wanted))).astype(np.int64)
