"""A user's first look at their data (`python -m mdvq.run task=inspect`, and the settings
`task=preview` prints beside its picture): recordings, windows and duration per class, the split
by recording, the sample rate and the axes it gives, whether a recording-disjoint split is
possible, and the optimiser steps per epoch and per stage.

Everything here reads a `SpectrogramDataModule` (and its source); the training budget of each
stage comes in as plain numbers from the command (`mdvq.run.inspect`).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

from mdvq.data.spectrogram import STFTConfig, derived_axes
from mdvq.data.splits import split_lines

_WINDOW = re.compile(r"^(?P<file>.*)#\d+@(?P<start>[-\d.eE+]+)s$")  # iq sources "<file>#k@<start>s"


def sample_rate(datamodule) -> float | None:
    """The slow-time sample rate (PRF) of the data [Hz]: the one rate of a recorded set
    (`meta["sample_rate_hz"]`), the simulator's `prf_hz`, or None when unknown or several."""
    fs = (datamodule.meta or {}).get("sample_rate_hz")
    if isinstance(fs, (list, tuple)):
        fs = fs[0] if len(fs) == 1 else None
    if fs is None:
        fs = getattr(getattr(datamodule.source, "config", None), "prf_hz", None)
    return None if fs is None else float(fs)


def derived_settings(datamodule) -> dict:
    """The axes the settings give (after `setup`): `sample_rate_hz` [Hz]; from the STFT at that
    rate `resolution_hz` (Doppler bin, fs / nfft [Hz]), `time_step_s` (frame step [s]),
    `stft_window_s` [s], `doppler_span_hz` (+- Doppler kept [Hz]) and nperseg / noverlap / nfft
    [samples]; the example window and hop `window_s`, `hop_s` [s] when the source has them; and
    the picture the models see: `image_size` (F, T) with its `row_step_hz` and `column_step_s`
    after resizing."""
    src = datamodule.source
    out: dict = {}
    fs = sample_rate(datamodule)
    if fs is not None:
        out["sample_rate_hz"] = fs
        if hasattr(src, "derived"):
            out.update(src.derived(fs))
        elif isinstance(getattr(src, "stft", None), STFTConfig):
            out.update(derived_axes(fs, src.stft))
    for key in ("window_s", "hop_s"):
        if getattr(src, key, None) is not None:
            out[key] = float(getattr(src, key))
    out["image_size"] = list(datamodule.image_size)
    freqs, times = datamodule.freqs_hz, datamodule.times_s
    if freqs is not None and len(freqs) > 1:
        out["row_step_hz"] = float(np.mean(np.diff(freqs)))
    if times is not None and len(times) > 1:
        out["column_step_s"] = float(np.mean(np.diff(times)))
    return out


def per_class(labels, groups, sources, class_names, window_s: float | None) -> dict:
    """{class: {"recordings": n, "windows": n, "duration_s": s or None}}: the recordings (split
    groups) and windows of each class, and the time its windows cover [s] (per recording the last
    window's start + `window_s`, from `"<file>#k@<start>s"` sources; None when unknown)."""
    labels = np.asarray(labels)
    out = {}
    for k, name in enumerate(class_names):
        hit = np.flatnonzero(labels == k)
        recs = {str(groups[i]) for i in hit} if groups is not None else set()
        ends: dict[str, float] = defaultdict(float)
        known = window_s is not None and sources is not None and len(hit) > 0
        for i in hit if known else ():
            m = _WINDOW.match(str(sources[i]))
            if m is None:
                known = False
                break
            ends[m["file"]] = max(ends[m["file"]], float(m["start"]) + window_s)
        out[str(name)] = {"recordings": len(recs) if groups is not None else None,
                          "windows": len(hit),
                          "duration_s": round(sum(ends.values()), 6) if known else None}
    return out


def stage_steps(train_windows: int, stages: dict | None) -> dict:
    """Per stage the optimiser steps it is estimated to take: `stages` maps a stage name to
    {"batch_size", "max_epochs", "min_steps" (None: no budget, the fixed epochs),
    "budget_max_epochs" (cap of the raised epochs, or None)}. Adds `steps_per_epoch`
    (ceil(train windows / batch size)), `epochs` (max_epochs, raised so that at least min_steps
    run) and `steps` (epochs x steps per epoch)."""
    out = {}
    for name, st in (stages or {}).items():
        if "error" in st:
            out[name] = dict(st)
            continue
        spe = max(1, math.ceil(train_windows / int(st["batch_size"])))
        epochs = int(st["max_epochs"])
        if st.get("min_steps"):
            epochs = max(epochs, math.ceil(int(st["min_steps"]) / spe))
            if st.get("budget_max_epochs"):
                epochs = min(epochs, int(st["budget_max_epochs"]))
        out[name] = {**st, "steps_per_epoch": spe, "epochs": epochs, "steps": epochs * spe}
    return out


def overview(datamodule, stages: dict | None = None) -> dict:
    """Everything `task=inspect` prints, as a plain dict (also written as `inspect.json`).

    Loads the source (its cache when there is one) and tries `datamodule.setup()`: when a
    recording-disjoint split is impossible (too few recordings of a class) the reason is kept
    under `split_error` and the rest is still reported. stages: see `stage_steps`.
    """
    data = datamodule.source.load()
    groups = data.subjects if datamodule.subject_disjoint else None
    fractions = {"train": 1 - datamodule.val_fraction - datamodule.test_fraction,
                 "val": datamodule.val_fraction, "test": datamodule.test_fraction}
    needed = sum(f > 0 for f in fractions.values())
    info: dict = {"classes": per_class(data.labels, data.subjects, data.sources,
                                       data.class_names, getattr(datamodule.source, "window_s",
                                                                 None)),
                  "splits_needed": needed}
    try:
        datamodule.setup()
    except ValueError as err:
        info["split_error"] = str(err)
        datamodule.meta = dict(data.meta)
        datamodule.freqs_hz = datamodule.times_s = None
    else:
        info["split"] = datamodule.split
        info["split_counts"] = dict(datamodule.split_counts)
    counts = {c: v["recordings"] for c, v in info["classes"].items()}
    if groups is None:
        info["recording_disjoint"] = {"possible": None, "why": "the data carry no recording or "
                                      "subject ids (or subject_disjoint=false): split by example"}
    else:
        short = [c for c, n in counts.items() if n is not None and n < needed]
        few = [c for c, n in counts.items() if n is not None and needed <= n < 2 * needed]
        info["recording_disjoint"] = {
            "possible": not short, "needed_per_class": needed, "too_few": short,
            "one_per_split": few,
            "why": (f"every class has >= {needed} recordings (one per non-empty split)"
                    if not short else f"class(es) {', '.join(short)} have fewer than {needed} "
                    "recordings: add recordings, or set data.datamodule.val_fraction=0 / "
                    "test_fraction=0")}
    info["derived"] = derived_settings(datamodule)
    train = info.get("split_counts", {}).get("train")
    if train:
        info["batch_size"] = datamodule.batch_size
        info["steps_per_epoch"] = max(1, math.ceil(train / datamodule.batch_size))
        info["stages"] = stage_steps(train, stages)
    return info


def _hz(x: float) -> str:
    return f"{x:.6g} Hz"


def settings_lines(derived: dict, split: dict | None = None) -> list[str]:
    """The derived settings in words: sample rate, frequency resolution, time step, Doppler span,
    STFT in samples, the picture's steps, and windows per recording and per split."""
    d = derived
    lines = []
    if "sample_rate_hz" in d:
        lines.append(f"sample rate {_hz(d['sample_rate_hz'])}")
    if "resolution_hz" in d:
        lines.append(f"frequency resolution {_hz(d['resolution_hz'])} (fs / nfft = "
                     f"{d['sample_rate_hz']:g} / {d['nfft']}), time step {d['time_step_s']:.6g} s"
                     f" ((nperseg - noverlap) / fs = ({d['nperseg']} - {d['noverlap']}) / "
                     f"{d['sample_rate_hz']:g}), STFT window {d['stft_window_s']:.6g} s")
        lines.append(f"Doppler span +-{_hz(d['doppler_span_hz'])}")
    if "window_s" in d:
        lines.append(f"examples: windows of {d['window_s']:g} s every {d.get('hop_s', 0):g} s")
    steps = [f"{d['image_size'][0]} x {d['image_size'][1]} picture"]
    if "row_step_hz" in d:
        steps.append(f"row step {_hz(d['row_step_hz'])}")
    if "column_step_s" in d:
        steps.append(f"column step {d['column_step_s']:.6g} s")
    lines.append(", ".join(steps))
    if split:
        for name, windows in split["windows"].items():
            recs = split["groups"].get(name) or {}
            per = ", ".join(f"{c} {w / recs[c]:.3g}" if recs.get(c) else f"{c} -"
                            for c, w in windows.items())
            lines.append(f"{name}: {sum(windows.values())} windows; windows per recording: "
                         f"{per}" if recs else f"{name}: {sum(windows.values())} windows")
    return lines


def overview_lines(info: dict) -> list[str]:
    """`overview`'s dict in words, for the terminal."""
    lines = ["per class: recordings, windows, duration covered by the windows"]
    for c, v in info["classes"].items():
        dur = "" if v["duration_s"] is None else f", {v['duration_s']:.6g} s"
        recs = "?" if v["recordings"] is None else v["recordings"]
        lines.append(f"  {c}: {recs} recordings, {v['windows']} windows{dur}")
    rd = info["recording_disjoint"]
    verdict = {True: "yes", False: "NO", None: "n/a"}[rd["possible"]]
    lines.append(f"enough recordings per class for a recording-disjoint split: {verdict}: "
                 f"{rd['why']}")
    if rd.get("one_per_split"):
        lines.append(f"  (class(es) {', '.join(rd['one_per_split'])} get a single recording in "
                     "some split: accuracy there rests on that one recording)")
    if "split" in info:
        lines.append(f"split by {info['split']['by']}:")
        lines.extend(f"  {line}" for line in split_lines(info["split"]))
    else:
        lines.append(f"split: impossible: {info.get('split_error')}")
    lines.append("settings:")
    lines.extend(f"  {line}" for line in settings_lines(info["derived"], info.get("split")))
    if "steps_per_epoch" in info:
        lines.append(f"optimiser steps per epoch: {info['steps_per_epoch']} "
                     f"({info['split_counts']['train']} training windows / batch "
                     f"{info['batch_size']})")
    for name, st in (info.get("stages") or {}).items():
        if "error" in st:
            lines.append(f"  {name}: {st['error']}")
            continue
        budget = (f"budget {st['min_steps']} steps (callbacks.training_budget.min_steps)"
                  if st.get("min_steps") else "no step budget: fixed epochs")
        lines.append(f"  {name}: batch {st['batch_size']}, {st['steps_per_epoch']} steps/epoch, "
                     f"max_epochs {st['max_epochs']}, {budget} -> {st['epochs']} epochs = "
                     f"{st['steps']} steps")
    return lines


__all__ = ["derived_settings", "overview", "overview_lines", "per_class",
           "sample_rate", "settings_lines", "stage_steps"]
