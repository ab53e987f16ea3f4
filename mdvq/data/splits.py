"""Train/val/test splits: stratified by class, subject-disjoint when subject ids exist, seeded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: version of the split algorithm, part of every data key: a change of how examples are assigned
#: to train/val/test (v2: every class first gets one group in every split) changes the key, so
#: caches, decisions and comparisons never mix splits made by different versions
SPLIT_VERSION = 2


def split_indices(
    labels: np.ndarray,
    subjects: np.ndarray | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Split example indices into {"train", "val", "test"} (sorted int64 arrays).

    Without subject ids every class is shuffled and cut in the requested fractions (each
    non-zero fraction gets at least one example of every class that has 3 or more). With
    subject ids, whole subjects are assigned to splits (no subject in two splits): subjects
    are shuffled and each goes to the split whose per-class shortfall its examples fill best,
    so the class mix of every split stays close to the whole set's; every non-empty split first
    gets one subject of each class. Subject ids may be recording ids (windows of one recording
    must not fall into two splits).
    Raises ValueError naming `data.datamodule.val_fraction`/`data.datamodule.test_fraction` or the subject count
    when the split is impossible, and with the per-class counts of recordings/subjects when a
    class has fewer of them than there are non-empty splits; `class_names` (label order) name
    the classes in those messages (None: the label indices).
    """
    labels = np.asarray(labels)
    for key, frac in (("data.datamodule.val_fraction", val_fraction), ("data.datamodule.test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"data.datamodule.val_fraction + data.datamodule.test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    if subjects is None:
        parts = _split_by_class(labels, fractions, rng)
    else:
        parts = _split_by_subject(labels, np.asarray(subjects), fractions, rng, class_names)
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def _split_by_class(labels, fractions, rng):
    parts = {k: [] for k in fractions}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_test = _count(n, fractions["test"])
        n_val = _count(n, fractions["val"])
        parts["test"].extend(idx[:n_test])
        parts["val"].extend(idx[n_test : n_test + n_val])
        parts["train"].extend(idx[n_test + n_val :])
    return parts


def _count(n: int, frac: float) -> int:
    if frac == 0 or n < 3:
        return 0
    return max(1, round(n * frac))


def _split_by_subject(labels, subjects, fractions, rng, class_names=None):
    """Whole groups (subjects or recordings) to splits, every class in every non-empty split."""
    classes = np.unique(labels)

    def name(c) -> str | int:
        return str(class_names[int(c)]) if class_names is not None else int(c)

    uniq = np.unique(subjects)
    names = [k for k, f in fractions.items() if f > 0]
    needed = len(names)
    if len(uniq) < needed:
        raise ValueError(
            f"subject-disjoint split needs at least {needed} subjects, the data has {len(uniq)}; "
            "lower data.datamodule.val_fraction/data.datamodule.test_fraction to 0 or set "
            "data.datamodule.subject_disjoint=false"
        )
    class_col = np.searchsorted(classes, labels)
    per_subject = np.zeros((len(uniq), len(classes)))
    np.add.at(per_subject, (np.searchsorted(uniq, subjects), class_col), 1)
    groups_per_class = (per_subject > 0).sum(0).astype(int)
    short = groups_per_class < needed
    if short.any():
        counts = ", ".join(f"{name(c)}: {n}" for c, n in zip(classes, groups_per_class,
                                                             strict=True))
        raise ValueError(
            f"a recording/subject-disjoint split into {needed} splits ({'/'.join(names)}) needs "
            f"at least {needed} recordings (or subjects) of every class; recordings or subjects "
            f"per class: {counts} (too few: {[name(c) for c in classes[short]]}). Add recordings of "
            "those classes, or set data.datamodule.val_fraction=0 and/or "
            "data.datamodule.test_fraction=0 (or data.datamodule.subject_disjoint=false, which "
            "lets windows of one recording fall into different splits)"
        )
    totals = per_subject.sum(0)
    target = {k: fractions[k] * totals for k in names}
    have = {k: np.zeros(len(classes)) for k in names}
    owner = {}
    order = [int(s) for s in rng.permutation(len(uniq))]
    # Seed: every split (smallest first) gets one group of each class it still lacks, taking
    # the group with the fewest examples of that class so small splits do not overshoot.
    for split in sorted(names, key=lambda k: fractions[k]):
        for c in rng.permutation(len(classes)):
            if have[split][c] > 0:
                continue
            free = [s for s in order if uniq[s] not in owner and per_subject[s, c] > 0]
            if not free:
                break
            s = min(free, key=lambda g: per_subject[g, c])
            have[split] += per_subject[s]
            owner[uniq[s]] = split
    # Fill: every other group goes to the split whose per-class shortfall it fills best.
    for s in order:
        if uniq[s] in owner:
            continue
        counts = per_subject[s]
        deficit = {k: float(counts @ (target[k] - have[k]) / target[k].sum()) for k in names}
        best = max(deficit, key=deficit.get)
        have[best] += counts
        owner[uniq[s]] = best
    missing = {k: [name(c) for c in classes[have[k] == 0]] for k in names if (have[k] == 0).any()}
    if missing:
        raise ValueError(
            f"could not give every split every class while keeping recordings/subjects apart "
            f"(classes missing per split: {missing}; recordings or subjects per class: "
            f"{dict(zip(map(name, classes), groups_per_class.tolist(), strict=True))}); add "
            "recordings, or lower data.datamodule.val_fraction/test_fraction"
        )
    split_of = np.array([owner[s] for s in subjects])
    return {k: np.flatnonzero(split_of == k) for k in fractions}


def describe_split(
    labels: np.ndarray,
    groups: np.ndarray | None,
    parts: dict[str, np.ndarray],
    class_names: Sequence[str],
    by: str = "recording",
) -> dict:
    """What went where, for the log and `summary.json` (`data.split`).

    labels: `(N,)` class indices; groups: `(N,)` recording or subject id of every example
    (None: the split is by example); parts: split name -> example indices (`split_indices`);
    by: what a group is ("recording" or "subject"). Returns a plain dict:
    `by` ("recording", "subject" or "example"), `windows` {split: {class: examples}},
    `groups` {split: {class: recordings or subjects}}, `manifest` {split: {class: sorted ids}}
    (empty without groups) and `single` {split: [classes with exactly one recording/subject in
    that split]}: their accuracy there rests on that one recording.
    """
    labels = np.asarray(labels)
    names = [str(c) for c in class_names]
    out = {"by": by if groups is not None else "example", "windows": {}, "groups": {},
           "manifest": {}, "single": {}}
    for split, idx in parts.items():
        idx = np.asarray(idx, dtype=np.int64)
        out["windows"][split] = {c: int((labels[idx] == k).sum()) for k, c in enumerate(names)}
        if groups is None:
            continue
        ids = {c: sorted({str(g) for g in np.asarray(groups)[idx][labels[idx] == k]})
               for k, c in enumerate(names)}
        out["manifest"][split] = ids
        out["groups"][split] = {c: len(v) for c, v in ids.items()}
        single = [c for c, v in ids.items() if len(v) == 1]
        if single and len(idx):
            out["single"][split] = single
    return out


def split_lines(described: dict, max_ids: int = 8) -> list[str]:
    """`describe_split`'s dict in words, one line per split: the recordings (or subjects) of
    each class with up to `max_ids` ids each, and the windows."""
    by = described["by"]
    noun = by if by in ("recording", "subject") else "id"
    lines = []
    for split, windows in described["windows"].items():
        if by == "example":
            lines.append(f"{split}: windows per class {windows} (split by example, not by "
                         "recording)")
            continue
        parts = []
        for c, ids in described["manifest"][split].items():
            shown = ", ".join(ids[:max_ids]) + (f", ... ({len(ids) - max_ids} more)"
                                                if len(ids) > max_ids else "")
            parts.append(f"{c}: {len(ids)} {noun}{'s' if len(ids) != 1 else ''} "
                         f"[{shown}], {windows[c]} windows")
        lines.append(f"{split}: " + "; ".join(parts))
    return lines
