"""Sample spectrograms from a trained VQ-Diffusion prior.

    python -m mdvq.sample CKPT n_per_class=8 guidance=1.5 steps=20 seed=0 out=DIR

``CKPT`` is a Lightning checkpoint of :class:`mdvq.models.VQDiffusionModule` or a prior run
folder (its best checkpoint, else ``last.ckpt``). Other ``key=value`` arguments: ``batch_size``
(samples per model call, default 64), ``device`` (auto | cpu | cuda, default auto), ``classes``
(comma-separated class names, default all). ``out`` defaults to ``<run folder>/samples``.

Written to ``DIR`` (the contract the evaluation reads):

- ``samples.npy``: float32 ``(N, 1, F, T)`` in [0, 1], rows in ascending Doppler,
- ``labels.npy``: int64 ``(N,)`` class indices,
- ``meta.json``: ``class_names``, ``freqs_hz`` (Hz), ``times_s`` (s), ``steps``, ``guidance``,
  ``seed``, ``checkpoint``, ``vqvae`` (its source), ``samples_per_second`` (plus
  ``n_per_class``, ``vqvae_fingerprint``, ``data_key``),
- ``png/<class>_<i>.png``: each sample as an 8-bit grey picture, positive Doppler at the top,
- ``grid.png``: one row per class, axes in seconds and Hz.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mdvq.plotting import save_figure, spectrogram_grid

USAGE = ("usage: python -m mdvq.sample CKPT [n_per_class=8] [guidance=1.5] [steps=20] [seed=0] "
         "[out=DIR] [batch_size=64] [device=auto] [classes=a,b]")

DEFAULTS = {"n_per_class": 8, "guidance": None, "steps": None, "seed": 0, "out": None,
            "batch_size": 64, "device": "auto", "classes": None}


def sample_grid_figure(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                       freqs_hz=None, times_s=None, per_row: int = 8, suptitle: str | None = None):
    """A figure of samples ``(N, C, F, T)`` in [0, 1] sorted by class, ``per_row`` per row, each
    panel titled with its class; axes in seconds and Hz when known (``mdvq.plotting``)."""
    order = np.argsort(np.asarray(labels), kind="stable")
    counts = {}
    titles = []
    for i in order:
        c = int(labels[i])
        counts[c] = counts.get(c, 0) + 1
        name = class_names[c] if 0 <= c < len(class_names) else f"class {c}"
        titles.append(f"{name} #{counts[c]}")
    return spectrogram_grid([images[i] for i in order], titles, freqs_hz, times_s,
                            ncols=max(1, int(per_row)), suptitle=suptitle)


def resolve_checkpoint(path: str | Path) -> Path:
    """The ``.ckpt`` to load: ``path`` itself, or a prior run folder's best (else last)
    checkpoint. Raises FileNotFoundError / ValueError naming ``path``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint or run folder not found: {path}")
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ValueError(f"{path}: expected a Lightning checkpoint (.ckpt) or a run folder")
        return path
    candidates = []
    summary_path = path / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("model") not in (None, "vqdiffusion"):
            raise ValueError(f"{path} is a {summary.get('model')!r} run, not a VQ-Diffusion prior run")
        ckpts = summary.get("checkpoints") or {}
        candidates += [ckpts.get("best"), ckpts.get("last")]
    candidates.append(path / "checkpoints" / "last.ckpt")
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise FileNotFoundError(f"{path}: no checkpoint found (summary.json's checkpoints or "
                            "checkpoints/last.ckpt)")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "class"


def write_samples(module, out: str | Path, n_per_class: int = 8, steps: int | None = None,
                  guidance: float | None = None, seed: int = 0, batch_size: int = 64,
                  classes: list[str] | None = None, checkpoint: str | None = None) -> dict:
    """Sample ``n_per_class`` spectrograms of each class from a ``VQDiffusionModule`` (already
    on its device, eval mode) and write the sample folder (see the module docstring).
    Returns the meta dict."""
    from PIL import Image

    from mdvq.data.spectrogram import to_image_rows

    if n_per_class < 1 or batch_size < 1:
        raise ValueError(f"n_per_class and batch_size must be positive, got {n_per_class}, {batch_size}")
    info = module.data_info or {}
    names = list(info.get("class_names") or [f"class{c}" for c in range(module.num_classes)])
    wanted = list(range(len(names)))
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"classes: unknown {unknown}; the prior knows {names}")
        wanted = [names.index(c) for c in classes]
    steps = int(module.hparams.sample_steps if steps is None else steps)
    guidance = float(module.hparams.sample_guidance if guidance is None else guidance)
    labels = torch.tensor(wanted).repeat_interleave(int(n_per_class))
    device = module.device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    started = time.perf_counter()
    images = []
    for i in range(0, len(labels), batch_size):
        codes = module.generate(labels[i:i + batch_size], steps, guidance, generator)
        images.append(module.decode(codes).float().clamp(0, 1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    samples = torch.cat(images).numpy().astype(np.float32)
    out = Path(out)
    (out / "png").mkdir(parents=True, exist_ok=True)
    np.save(out / "samples.npy", samples)
    np.save(out / "labels.npy", labels.numpy().astype(np.int64))
    counts: dict[int, int] = {}
    for img, c in zip(samples, labels.tolist()):
        i = counts[c] = counts.get(c, -1) + 1
        pixels = np.round(to_image_rows(img[0]) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / "png" / f"{_safe(names[c])}_{i}.png")
    meta = {
        "class_names": names,
        "freqs_hz": info.get("freqs_hz"),
        "times_s": info.get("times_s"),
        "steps": steps,
        "guidance": guidance,
        "seed": int(seed),
        "checkpoint": checkpoint,
        "vqvae": module.vqvae.source,
        "samples_per_second": round(len(labels) / max(elapsed, 1e-9), 3),
        "n_per_class": int(n_per_class),
        "vqvae_fingerprint": module.vqvae.fingerprint,
        "data_key": info.get("data_key"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    fig = sample_grid_figure(samples, labels.numpy(), names, info.get("freqs_hz"), info.get("times_s"),
                             per_row=n_per_class,
                             suptitle=f"samples: {steps} steps, guidance {guidance}, seed {seed}")
    save_figure(fig, out / "grid.png")
    return meta


def parse_args(argv: list[str]) -> tuple[str, dict]:
    """``CKPT key=value ...`` -> (CKPT, options with types); ValueError on an unknown key."""
    if not argv or "=" in argv[0] or argv[0] in ("-h", "--help"):
        raise ValueError(USAGE)
    opts = dict(DEFAULTS)
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise ValueError(f"unknown argument {arg!r}; {USAGE}")
        if key in ("n_per_class", "steps", "seed", "batch_size"):
            opts[key] = int(value)
        elif key == "guidance":
            opts[key] = float(value)
        elif key == "classes":
            opts[key] = [c for c in value.split(",") if c]
        else:
            opts[key] = value
    return argv[0], opts


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry; returns the output folder."""
    from mdvq.models.vqdiffusion import VQDiffusionModule

    target, opts = parse_args(sys.argv[1:] if argv is None else argv)
    ckpt = resolve_checkpoint(target)
    device = opts["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = VQDiffusionModule.load_from_checkpoint(ckpt, map_location=device).to(device).eval()
    if opts["out"]:
        out = Path(opts["out"])
    else:
        run = Path(target) if Path(target).is_dir() else ckpt.parent
        out = (run.parent if run.name == "checkpoints" else run) / "samples"
    meta = write_samples(module, out, opts["n_per_class"], opts["steps"], opts["guidance"],
                         opts["seed"], opts["batch_size"], opts["classes"], str(ckpt.resolve()))
    print(f"{len(meta['class_names']) if not opts['classes'] else len(opts['classes'])} classes x "
          f"{opts['n_per_class']} samples at {meta['samples_per_second']} samples/s -> {out}")
    return out


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
