"""Find and safely open a trained model a user points at: a run folder, a diffusers export or a
Lightning checkpoint.

Every path-taking key and command (``model.vqvae``, ``model.autoencoder``, ``ckpt_path``,
``mdvq.sample prior=``, ``mdvq.evaluate classifier=``) goes through :func:`resolve_artifact`,
and every checkpoint a user may have received is opened by :func:`load_checkpoint` with
``torch.load(..., weights_only=True)``: a pickle that would construct anything but tensors and
plain containers (a ``__reduce__`` payload) is refused before it can run, and the error names
the config key and the file. Lightning's own loaders (``load_from_checkpoint``,
``Trainer.fit/test(ckpt_path=...)``) are called with ``weights_only=True`` too (:data:`SAFE`).

A checkpoint's kind (VQ-VAE, KL-VAE, a prior, the classifier) is read from its state-dict key
prefixes (:func:`checkpoint_kind`), never from a pickled class.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mdvq.core.errors import DataError
from mdvq.core.summary import RunSummary

log = logging.getLogger(__name__)

SAFE = {"weights_only": True}
"""Keyword arguments for every Lightning load of a received file (``load_from_checkpoint``,
``Trainer.fit/test(ckpt_path=...)``): torch's restricted unpickler, whatever the torch default."""

MODEL_KINDS = ("vqvae", "klvae", "vqdiffusion", "maskedtokens", "latentdiffusion", "classifier")

DESCRIPTIONS = {
    "vqvae": "a VQ-VAE (a `model=vqvae` run folder, a diffusers VQModel folder or a VQVAEModule "
             ".ckpt)",
    "klvae": "a KL-VAE (a `model=klvae` run folder, a diffusers AutoencoderKL folder or a "
             "KLVAEModule .ckpt)",
    "vqdiffusion": "a VQ-Diffusion prior (its run folder or .ckpt)",
    "maskedtokens": "a masked-token prior (its run folder, .ckpt or exported folder with "
                    "transformer/, scheduler/, vqvae/, prior.json)",
    "latentdiffusion": "a latent-diffusion prior (its run folder, .ckpt or exported folder with "
                       "unet/, scheduler/, vae/ or vqvae/)",
    "classifier": "a classifier (an `experiment=classifier` run folder, its summary.json or "
                  ".ckpt)",
}
"""What each kind of artifact may be given as (used in every error message)."""

KIND_NAMES = {"vqvae": "a VQ-VAE", "klvae": "a KL-VAE", "vqdiffusion": "a VQ-Diffusion prior",
              "maskedtokens": "a masked-token prior",
              "latentdiffusion": "a latent-diffusion prior", "classifier": "a classifier"}
"""Each kind in words."""

DIFFUSERS_CLASSES = {"VQModel": "vqvae", "AutoencoderKL": "klvae"}
"""diffusers ``_class_name`` of an exported autoencoder -> its kind."""

# State-dict key prefixes that identify each LightningModule of mdvq (first match wins: a prior
# holds its frozen autoencoder under `vqvae.` / `autoencoder.`, so it is tested first).
_PREFIXES = (("transformer.", "vqdiffusion"), ("masked_transformer.", "maskedtokens"),
             ("unet.", "latentdiffusion"),
             ("model.quantize.", "vqvae"), ("model.encoder.", "klvae"),
             ("backbone.", "classifier"))


@dataclass(frozen=True)
class Artifact:
    """A resolved model location.

    ``kind``: one of :data:`MODEL_KINDS`; ``form``: ``"checkpoint"`` (a Lightning ``.ckpt``),
    ``"diffusers"`` (a ``save_pretrained`` folder with ``config.json``) or ``"export"`` (a
    prior's exported pipeline folder: ``unet/``, ``scheduler/``, ...); ``path``: the file or
    folder to load; ``run``: the run folder's summary when it came from one (else None);
    ``source``: the path the user gave.
    """

    kind: str
    form: str
    path: Path
    run: RunSummary | None
    source: Path

    @property
    def image_size(self) -> list[int] | None:
        """``data.image_size`` of the run it came from, when known."""
        if self.run is None:
            return None
        return (self.run.config.get("data") or {}).get("image_size")


def expected(kinds: tuple[str, ...]) -> str:
    """The human description of ``kinds`` for error messages."""
    return " or ".join(DESCRIPTIONS[k] for k in kinds)


def load_checkpoint(path: str | os.PathLike, key: str, expect: str = "",
                    archive_checked: bool = False) -> dict:
    """The contents of a Lightning/torch checkpoint, loaded with ``weights_only=True``.

    Raises ValueError naming ``key`` and the file when it is unreadable, not a checkpoint, or
    holds pickled objects beyond tensors and plain containers (such a file is refused unopened:
    it could run code). No code from the file ever runs. ``expect`` (what should be given
    instead) ends the message when set. ``archive_checked``: the caller already ran
    :func:`checkpoint_problem` on the file (it is not read twice).
    """
    path = Path(path)
    give = f"; give {expect}" if expect else ""
    problem = None if archive_checked else checkpoint_problem(path)
    if problem is not None:
        raise ValueError(f"{key}: {path} is not a readable checkpoint ({problem}){give}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{key}: {path} is refused: it holds pickled objects other than tensors "
                         f"and plain data, which could run code when loaded "
                         f"({_offending_global(err)}){give}") from None
    except Exception as err:  # noqa: BLE001 (a damaged archive entry, ...)
        raise ValueError(f"{key}: {path} is not a readable checkpoint "
                         f"({type(err).__name__}: {str(err)[:200]}){give}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{key}: {path} is not a Lightning checkpoint (a "  # noqa: TRY004
                         f"{type(ckpt).__name__}, not a dict with a state_dict){give}")
    return ckpt


def _offending_global(err: Exception) -> str:
    """The part of torch's weights-only error that names what the file wanted to construct
    (torch's own advice to retry with `weights_only=False` is left out)."""
    text = str(err)
    match = re.search(r"(Unsupported global: [^\n]*?)(?:\s+This global|\n|$)", text)
    return match.group(1).strip() if match else text.strip().splitlines()[0][:200]


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the checkpoint file at ``path`` as a torch ``zip`` archive (missing,
    truncated, a CRC error, no ``data.pkl``), or None when it is whole. Reads the whole file
    once; unpickles nothing."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return (f"not a PyTorch checkpoint, or truncated ({size} bytes; torch.save writes a zip "
                "archive). Resume from another checkpoint, e.g. the run's checkpoints/last.ckpt "
                "or its best epoch_*.ckpt")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"corrupt checkpoint archive ({err})"
    if bad is not None:
        return (f"corrupt checkpoint: entry {bad!r} fails its CRC check (damaged while copied or "
                "written?)")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "a zip archive without data.pkl, not a torch.save file"
    return None


def checkpoint_kind(ckpt: dict) -> str | None:
    """The model kind (:data:`MODEL_KINDS`) of a loaded checkpoint, from its state-dict keys;
    None when it is none of mdvq's modules."""
    keys = list((ckpt.get("state_dict") or {}).keys())
    for prefix, kind in _PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return kind
    return None


def _diffusers_kind(folder: Path, kinds: tuple[str, ...], key: str) -> str:
    """Kind of a diffusers ``save_pretrained`` folder from its ``config.json``'s class name;
    ValueError naming ``key`` when it is unreadable or not one of ``kinds``."""
    try:
        cls = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{key}: {folder / 'config.json'} is an unreadable diffusers config "
                         f"({err})") from err
    kind = DIFFUSERS_CLASSES.get(cls)
    if kind not in kinds:
        wanted = [c for c, k in DIFFUSERS_CLASSES.items() if k in kinds]
        what = f" (it is {KIND_NAMES[kind]})" if kind else ""
        raise ValueError(f"{key}: {folder} holds a diffusers {cls}, not "
                         f"{_article(' or '.join(wanted) or 'mdvq model')}{what}; give "
                         f"{expected(kinds)}")
    return kind


def _article(word: str) -> str:
    return ("an " if word[:1] in "AEIOU" else "a ") + word


def _refuse_kind(found: str | None, kinds: tuple[str, ...], what: Path, key: str) -> None:
    """ValueError naming ``key`` unless the checkpoint's kind ``found`` is one of ``kinds``."""
    if found not in kinds:
        got = KIND_NAMES.get(found, "none of mdvq's models: no known")
        raise ValueError(f"{key}: {what} is {got} checkpoint; give {expected(kinds)}")


def resolve_artifact(path: str | os.PathLike, kinds: str | tuple[str, ...], key: str,
                     prefer_export: bool = True) -> Artifact:
    """Where the model of one of ``kinds`` behind ``path`` is, and in which form.

    ``path`` may be a run folder (or its ``summary.json``): its exported diffusers folder when
    ``prefer_export`` and one exists, else its best (or last) checkpoint; a diffusers
    ``save_pretrained`` folder (or a folder with ``pretrained/config.json``); a prior's exported
    pipeline folder (``unet/``; a masked-token prior's: ``prior.json`` naming its kind); or a
    ``.ckpt`` (inside a run folder its run is attached).
    A checkpoint's kind is checked by :func:`checkpoint_kind` on a weights-only load.

    Raises FileNotFoundError (nothing there, or a run with no model saved) or ValueError /
    DataError (another kind, an unreadable file); every message names ``key`` and the path.
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    source = Path(path).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"{key}: {source} not found (give {expected(kinds)})")
    if source.is_file() and source.suffix == ".ckpt":
        return _checkpoint_artifact(source, kinds, key, source)
    if source.is_file() and source.suffix != ".json":
        raise ValueError(f"{key}: {source} is not a Lightning checkpoint (.ckpt), a run folder "
                         f"or a diffusers folder; give {expected(kinds)}")
    if RunSummary.exists(source):
        return _run_artifact(source, kinds, key, prefer_export)
    for folder in (source, source / "pretrained"):
        if (folder / "config.json").is_file():
            found = _diffusers_kind(folder, kinds, key)
            return Artifact(found, "diffusers", folder, None, source)
    if (source / "unet").is_dir() and "latentdiffusion" in kinds:
        return Artifact("latentdiffusion", "export", source, None, source)
    if "maskedtokens" in kinds and _export_kind(source) == "maskedtokens":
        return Artifact("maskedtokens", "export", source, None, source)
    priors = {"vqdiffusion", "latentdiffusion", "maskedtokens"}
    if (source / "prior.json").is_file() and not priors & set(kinds):
        raise ValueError(f"{key}: {source} is an exported prior (prior.json), not "
                         f"{' or '.join(KIND_NAMES[k] for k in kinds)}; give {expected(kinds)}")
    raise FileNotFoundError(f"{key}: {source} is neither a run folder (summary.json), a diffusers "
                            f"folder (config.json), a folder with pretrained/config.json nor a "
                            f"checkpoint; give {expected(kinds)}")


def _export_kind(folder: Path) -> str | None:
    """``model_kind`` named by an exported prior's ``prior.json`` (None: no such file or field)."""
    try:
        meta = json.loads((folder / "prior.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("model_kind") if isinstance(meta, dict) else None


def _run_artifact(source: Path, kinds: tuple[str, ...], key: str,
                  prefer_export: bool) -> Artifact:
    try:
        run = RunSummary.read(source, model=kinds, key=key)
    except DataError as err:
        raise DataError(err.path, f"{err.problem}; give {expected(kinds)}") from None
    if prefer_export and run.model in DIFFUSERS_CLASSES.values() and run.pretrained_dir:
        return Artifact(run.model, "diffusers", run.pretrained_dir, run, source)
    ckpt = run.checkpoint("best")
    if ckpt is None:
        raise FileNotFoundError(f"{key}: {run.run_dir} has no exported model (pretrained/) and no "
                                "checkpoint (summary.json's checkpoints or checkpoints/last.ckpt)")
    return _checkpoint_artifact(ckpt, kinds, key, source, run)


def _checkpoint_artifact(ckpt: Path, kinds: tuple[str, ...], key: str, source: Path,
                         run: RunSummary | None = None) -> Artifact:
    found = checkpoint_kind(load_checkpoint(ckpt, key, expect=expected(kinds)))
    _refuse_kind(found, kinds, ckpt, key)
    if run is None:  # <run>/checkpoints/x.ckpt: attach its run for the config
        folder = ckpt.resolve().parent.parent
        if RunSummary.exists(folder):
            try:
                run = RunSummary.read(folder, model=found)
            except DataError:
                run = None  # another kind's run, or an unreadable summary: the file stands alone
    return Artifact(found, "checkpoint", ckpt, run, source)



def load_module(module_class, path: str | os.PathLike, key: str, map_location="cpu"):
    """``module_class.load_from_checkpoint(path)`` with torch's weights-only unpickler (eval
    mode); ValueError naming ``key`` and the file when it fails."""
    try:
        module = module_class.load_from_checkpoint(path, map_location=map_location, **SAFE)
    except Exception as err:  # noqa: BLE001 (a truncated file, another module's weights, ...)
        raise ValueError(f"{key}: {path} is not a readable checkpoint of "
                         f"{module_class.__module__}.{module_class.__name__} "
                         f"({type(err).__name__}: {str(err)[:300]})") from None
    return module.eval()


def load_frozen(path: str | os.PathLike, kind: str, key: str, frozen_class, diffusers_class,
                module_class, network_of, artifact: Artifact | None = None):
    """A frozen autoencoder of ``kind`` ("vqvae" or "klvae") from whatever ``path`` names: a
    diffusers folder loads ``diffusers_class.from_pretrained``; a checkpoint loads
    ``module_class()`` (a function returning the LightningModule class, imported late) weights-
    only and takes ``network_of(module)``. Returns ``frozen_class(network, source=...,
    image_size=...)``; errors as :func:`resolve_artifact` and :func:`load_module`.
    ``artifact``: ``path`` already resolved (to ``kind``), not resolved again."""
    if artifact is None or artifact.kind != kind:
        artifact = resolve_artifact(path, kind, key)
    if artifact.form == "diffusers":
        network = diffusers_class.from_pretrained(artifact.path)
        return frozen_class(network, source=str(artifact.path), image_size=artifact.image_size)
    if artifact.run is not None:
        log.info("%s %s: no exported model; using checkpoint %s", kind, path, artifact.path)
    module = load_module(module_class(), artifact.path, key)
    return frozen_class(network_of(module), source=str(artifact.path),
                        image_size=module.hparams.get("image_size"))
