"""Replay the faults of the reliability issue on tiny runs and print a table: case, expected, seen.

    python experiments/faults/probe.py [--out DIR]      # about 2-4 minutes on a 2-core CPU

Each case builds its own input in a temporary folder (a malicious checkpoint, a truncated
`last.ckpt`, a finished run started again, a moved run folder, a corrupt `.mat`, ...), runs the
library or command the way a user would, and reports what happened. `ok` is whether what was
seen matches what is expected. Exit status 1 when a case does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import torch
from conftest import compose_cfg, data_overrides, tiny_overrides

from mdvq.core.summary import RunSummary
from mdvq.runs.training import train

SHORT = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "~callbacks.spectrogram_grid",
         "callbacks.codebook_monitor.log_histogram=false", "trainer.enable_progress_bar=false"]
CASES = []


def case(name: str, expected: str):
    """Register a probe: a function (tmp folder, data cache) -> what was seen (str, bool ok)."""
    def register(fn):
        CASES.append((name, expected, fn))
        return fn
    return register


class Payload:
    """Unpickling it creates a marker file: the code a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def evil(path: Path, marker: Path, prefix="model.encoder.") -> Path:
    torch.save({"state_dict": {f"{prefix}w": torch.zeros(1)}, "x": Payload(marker)}, path)
    return path


def error_of(fn) -> str:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 (the probe reports whatever happens)
        return f"{type(err).__name__}: {err}"
    return "no error"


def tiny(tmp: Path, cache: Path, *extra: str) -> list[str]:
    return tiny_overrides(tmp, data_cache=cache) + SHORT + list(extra)


def finished_run(tmp: Path, cache: Path) -> tuple[list[str], Path]:
    overrides = tiny(tmp, cache, "trainer.max_epochs=1", "export=false")
    train(compose_cfg(overrides))
    return overrides, tmp / "run"


# ---- 1. a received checkpoint never runs code ------------------------------------------------
def _evil_key(key: str, overrides_of):
    def probe(tmp: Path, cache: Path):
        marker = tmp / "PWNED"
        ckpt = evil(tmp / "evil.ckpt", marker)
        seen = error_of(lambda: train(compose_cfg(overrides_of(tmp, cache, ckpt))))
        ran = marker.exists()
        return (f"payload ran: {ran}; {seen[:110]}",
                not ran and key in seen and "refused" in seen)
    return probe


for _key, _make in {
    "model.autoencoder": lambda t, c, k: ["experiment=latentdiffusion", *data_overrides(t, c),
                                          f"model.autoencoder={k}"],
    "model.vqvae": lambda t, c, k: ["experiment=vqdiffusion", *data_overrides(t, c),
                                    f"model.vqvae={k}"],
    "ckpt_path": lambda t, c, k: [*tiny(t, c), f"ckpt_path={k}"],
}.items():
    case(f"malicious .ckpt as {_key}", "refused naming the key; payload never runs")(
        _evil_key(_key, _make))


@case("malicious .ckpt to mdvq.sample / mdvq.evaluate",
      "refused naming `prior` / `classifier`; payload never runs")
def _evil_commands(tmp: Path, cache: Path):
    import numpy as np

    from mdvq.core.samples import write_samples
    from mdvq.evaluate import main as evaluate_main
    from mdvq.sample import main as sample_main

    marker = tmp / "PWNED"
    prior = evil(tmp / "prior.ckpt", marker, "transformer.")
    cls = evil(tmp / "cls.ckpt", marker, "backbone.")
    samples = write_samples(tmp / "s", np.zeros((2, 1, 16, 16), np.float32), np.array([0, 1]),
                            {"class_names": ["a", "b"]}, pictures=False)
    a = error_of(lambda: sample_main([str(prior), f"out={tmp / 'o'}"]))
    b = error_of(lambda: evaluate_main([f"classifier={cls}", f"samples={samples}",
                                        f"out={tmp / 'e'}", "data=radar"]))
    return (f"payload ran: {marker.exists()}; {a[:60]} | {b[:60]}",
            not marker.exists() and "prior:" in a and "classifier:" in b)


# ---- 2. no command destroys a finished run's record -------------------------------------------
@case("resume from a truncated last.ckpt of a finished run",
      "error names ckpt_path; summary keeps the finished metrics, failure under attempts")
def _truncated(tmp: Path, cache: Path):
    overrides, run = finished_run(tmp, cache)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    seen = error_of(lambda: train(compose_cfg(overrides + ["ckpt_path=last"])))
    kept = RunSummary.read(run)
    return ((f"{seen[:70]}; status {kept.status}, test/psnr {kept.metrics.get('test/psnr', 0):.2f}, "
            f"attempts {[a['status'] for a in kept.data.get('attempts', [])]}"),
            "ckpt_path" in seen and kept.finished and "test/psnr" in kept.metrics)


@case("fresh run with hydra.run.dir=<finished run>",
      "refused naming ckpt_path=last, hydra.run.dir, overwrite=true; nothing touched")
def _fresh_over_finished(tmp: Path, cache: Path):
    overrides, run = finished_run(tmp, cache)
    before = (run / "summary.json").read_bytes(), (run / "checkpoints" / "last.ckpt").read_bytes()
    seen = error_of(lambda: train(compose_cfg(overrides)))
    after = (run / "summary.json").read_bytes(), (run / "checkpoints" / "last.ckpt").read_bytes()
    return (f"{seen[:90]}; files unchanged: {before == after}",
            before == after and all(k in seen for k in ("ckpt_path=last", "hydra.run.dir",
                                                        "overwrite=true")))


@case("run killed outright (SIGKILL) mid-run", "summary.json says running, with started_at")
def _running(tmp: Path, cache: Path):
    from mdvq.runs import training

    seen = {}

    def killed(cfg, out_dir, summary, state):
        seen.update(json.loads((out_dir / "summary.json").read_text()))
        raise SystemExit(-9)

    real, training._fit_and_test = training._fit_and_test, killed
    try:
        error_of(lambda: train(compose_cfg(tiny(tmp, cache))))
    finally:
        training._fit_and_test = real
    return (f"status {seen.get('status')}, started_at {seen.get('started_at')}",
            seen.get("status") == "running" and bool(seen.get("started_at")))


@case("full disk (ENOSPC) while writing summary.json",
      "earlier summary.json unchanged, no .tmp left, the record in the log")
def _enospc(tmp: Path, cache: Path):
    import errno

    overrides, run = finished_run(tmp, cache)
    before = (run / "summary.json").read_bytes()
    real = Path.write_text

    def full(self, data, *a, **k):
        if self.name.endswith(".json.tmp"):
            real(self, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *a, **k)

    Path.write_text = full
    try:
        seen = error_of(lambda: train(compose_cfg(overrides + ["ckpt_path=last",
                                                               "trainer.max_epochs=2"])))
    finally:
        Path.write_text = real
    same, tmps = (run / "summary.json").read_bytes() == before, list(run.glob("*.tmp"))
    return f"{seen[:50]}; summary unchanged: {same}; tmp files: {len(tmps)}", same and not tmps


# ---- 3. a moved or copied run folder resumes with its own best checkpoint --------------------
@case("resume after mv run run2 / cp -r run run3",
      "same test PSNR as uninterrupted; every recorded checkpoint inside the folder")
def _moved(tmp: Path, cache: Path):
    full = train(compose_cfg(tiny(tmp / "full", cache, "trainer.max_epochs=2", "export=false")))
    train(compose_cfg(tiny(tmp / "part", cache, "trainer.max_epochs=1", "export=false")))
    shutil.copytree(tmp / "part" / "run", tmp / "copied")
    (tmp / "part" / "run").rename(tmp / "moved")
    seen, ok = [], True
    for folder in (tmp / "moved", tmp / "copied"):
        got = train(compose_cfg(tiny(tmp / "x", cache, "trainer.max_epochs=2", "export=false",
                                     f"paths.output_dir={folder}", "ckpt_path=last")))
        run = RunSummary.read(folder)
        inside = all(run.contains(run.resolve(p)) for p in run.data["checkpoints"].values() if p)
        same = abs(got["metrics"]["test/psnr"] - full["metrics"]["test/psnr"]) < 1e-4
        seen.append(f"{folder.name}: {got['metrics']['test/psnr']:.3f} dB "
                    f"(uninterrupted {full['metrics']['test/psnr']:.3f}), inside {inside}")
        ok &= inside and same
    return "; ".join(seen), ok


# ---- 4. an interrupted experiment stage resumes --------------------------------------------
@case("experiment stage interrupted by SIGTERM, then run again",
      "resumes from last.ckpt (CSV log version_1 from epoch >= 1), one best checkpoint")
def _stage(tmp: Path, cache: Path):
    import csv

    from conftest import interrupted_stage

    from mdvq.runs.experiments import train_stage

    status, _, stage, overrides = interrupted_stage(tmp, cache, SHORT)
    train_stage("vqvae", overrides, stage)
    rows = list(csv.DictReader((stage / "csv" / "version_1" / "metrics.csv").open()))
    first = min(int(r["epoch"]) for r in rows if r.get("epoch"))
    best = len(list((stage / "checkpoints").glob("epoch_*.ckpt")))
    return (f"exit {status}; resumed log starts at epoch {first}; best checkpoints: {best}",
            status == 143 and first >= 1 and best == 1)


# ---- 5. recorded data it should question ------------------------------------------------------
def _iq_error(make) -> str:
    """The error (or "no error") of reading a `data=iq` folder that `make(root)` prepared."""
    from test_iq import FS, source

    def probe(tmp: Path, cache: Path):
        make(tmp)
        return error_of(lambda: source(tmp, sample_rate_hz=FS).load())
    return probe


def _iq_case(name: str, expected: str, make, needle: str):
    def probe(tmp: Path, cache: Path):
        seen = _iq_error(make)(tmp, cache)
        return seen[:120], needle in seen
    case(name, expected)(probe)


def _folder_with(name: str, content: bytes):
    def make(root: Path):
        from test_iq import recorded_set

        recorded_set(root, n_classes=2, per_class=2)
        (root / "class0" / name).write_bytes(content)
    return make


_iq_case("0-byte .mat recording", "DataError naming the file (skippable)",
         _folder_with("empty.mat", b""), "empty.mat")
_iq_case("WAV content named .npy", "names the file and says it is a WAV file",
         _folder_with("x.npy", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40)), "WAV")
_iq_case("text file named .bin", "names the file and says it is text",
         _folder_with("x.bin", b"this is a text file, not I/Q samples\n" * 20), "text")


def _empty_class(root: Path):
    from test_iq import recorded_set

    recorded_set(root, n_classes=2, per_class=2)
    (root / "class9").mkdir()


_iq_case("empty class folder", "error naming the folder", _empty_class, "class9")


def _mixed_rates(root: Path):
    import numpy as np

    for c, fs in enumerate((500, 1000)):
        (root / f"class{c}").mkdir()
        for r in range(2):
            t = np.arange(int(3.0 * fs)) / fs
            np.savez(root / f"class{c}" / f"rec{r}.npz", iq=np.exp(2j * np.pi * 100.0 * t), fs=float(fs))


@case("recordings at 500 and 1000 Hz", "refused naming both rates and a file each, or resample_hz")
def _rates(tmp: Path, cache: Path):
    from test_iq import source

    _mixed_rates(tmp)
    seen = error_of(lambda: source(tmp).load())
    return seen[:120], "500 Hz" in seen and "1000 Hz" in seen and "resample_hz" in seen


@case("cache altered (labels changed) but valid .npz", "checksum mismatch: rebuilt, file named")
def _altered_cache(tmp: Path, cache: Path):
    import numpy as np
    from test_iq import FS, recorded_set, source

    recorded_set(tmp / "data", n_classes=2, per_class=2)
    first = source(tmp / "data", sample_rate_hz=FS, cache_dir=tmp / "c").load()
    (path,) = (tmp / "c").glob("*.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    arrays["labels"] = (arrays["labels"] + 1) % 2
    np.savez(path, **arrays)
    again = source(tmp / "data", sample_rate_hz=FS, cache_dir=tmp / "c").load()
    same = np.array_equal(again.labels, first.labels)
    return f"labels after reload equal the originals: {same}", same


# ---- 6. commands that decide on mismatched inputs -----------------------------------------------
def _summary(folder: Path, model: str, metrics: dict, key: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"model": model, "status": "finished",
                                                     "metrics": metrics, "data_key": key}))
    return folder


@case("mdvq.decide on runs of different data", "exit 2 naming both keys, unless force=true")
def _decide(tmp: Path, cache: Path):
    import subprocess

    vq = _summary(tmp / "vq", "vqvae", {"test/psnr": 30.0, "test/codebook_usage": 0.9}, "radar-a")
    kl = _summary(tmp / "kl", "klvae", {"test/psnr": 25.0}, "iq-b")
    proc = subprocess.run([sys.executable, "-m", "mdvq.decide", str(vq), str(kl)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return (f"exit {proc.returncode}: {last[:100]}",
            proc.returncode == 2 and "radar-a" in proc.stderr and "iq-b" in proc.stderr)


@case("mdvq.sample into a folder that holds samples", "refused naming out=, or overwrite=true")
def _sample_again(tmp: Path, cache: Path):
    import numpy as np

    from mdvq.core.samples import write_samples
    from mdvq.sample import main as sample_main

    out = write_samples(tmp / "out", np.zeros((2, 1, 16, 16), np.float32), np.array([0, 1]),
                        {"class_names": ["a", "b"]})
    seen = error_of(lambda: sample_main([str(tmp / "prior"), f"out={out}"]))
    return seen[:120], "overwrite=true" in seen


@case("mdvq.report on a corrupt summary.json", "says unreadable, with the JSON error")
def _report(tmp: Path, cache: Path):
    from mdvq.runs.report import build_report

    (tmp / "run").mkdir()
    (tmp / "run" / "summary.json").write_text("{broken")
    page = build_report([tmp])
    return ("unreadable shown: " + str("unreadable" in page)), "unreadable" in page


def main() -> int:
    """Run every case; print the table; 1 when a case's outcome is not the expected one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the case folders here")
    parser.add_argument("-k", default="", help="only the cases whose name contains this")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="mdvq-faults-"))
    cache = root / "cache"
    rows, failed = [], 0
    for i, (name, expected, probe) in enumerate(CASES):
        if args.k not in name:
            continue
        tmp = root / f"case{i:02d}"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            seen, ok = probe(tmp, cache)
        except Exception:  # noqa: BLE001 (a probe that breaks is a finding too)
            seen, ok = "probe crashed: " + traceback.format_exc(limit=1).splitlines()[-1], False
        failed += not ok
        seen = seen.replace(str(root) + "/", "…/").replace(str(root), "…")
        rows.append((name, expected, seen.replace("|", "/").replace("\n", " "), "yes" if ok else "NO"))
        print(f"[{'ok' if ok else 'NO'}] {name}", file=sys.stderr, flush=True)
    print("| case | expected | seen | ok |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
