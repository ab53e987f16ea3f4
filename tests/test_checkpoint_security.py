"""A received checkpoint never runs code: every path-taking key and command opens checkpoints
with torch's weights-only unpickler, and the error names the key (mdvq/core/artifacts.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_cfg, data_overrides, tiny_overrides

from mdvq.core.artifacts import checkpoint_kind, load_checkpoint, resolve_artifact
from mdvq.core.samples import write_samples
from mdvq.evaluate import main as evaluate_main
from mdvq.evaluation.classifier_run import load_classifier_run
from mdvq.models.frozen_klvae import load_frozen_klvae
from mdvq.models.frozen_vqvae import load_frozen_vqvae
from mdvq.runs.training import train
from mdvq.sample import main as sample_main


class Payload:
    """Unpickling this object calls ``Path.touch(marker)``: the code a malicious file runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_checkpoint(path: Path, marker: Path, prefix: str = "model.encoder.") -> Path:
    """A Lightning-shaped checkpoint (state-dict keys of `prefix`) carrying a pickle payload."""
    torch.save({"state_dict": {f"{prefix}w": torch.zeros(2)}, "epoch": 0,
                "hyper_parameters": {"note": Payload(marker)}}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = evil_checkpoint(tmp_path / "evil.ckpt", marker)
    return {"ckpt": ckpt, "marker": marker, "tmp": tmp_path}


def test_the_payload_runs_when_unpickled_unsafely(evil):
    """The fixture is really malicious: a plain (unsafe) load creates the marker."""
    torch.load(evil["ckpt"], weights_only=False)  # the unsafe load this project never does
    assert evil["marker"].exists()


def test_load_checkpoint_refuses_the_payload_and_names_key_and_file(evil):
    with pytest.raises(ValueError, match=r"model\.autoencoder: .*evil\.ckpt is refused.*run code"):
        load_checkpoint(evil["ckpt"], "model.autoencoder")
    assert not evil["marker"].exists()


@pytest.mark.parametrize("key,loader", [("model.autoencoder", load_frozen_klvae),
                                        ("model.vqvae", load_frozen_vqvae)])
def test_frozen_autoencoder_keys_refuse_the_payload(evil, key, loader):
    with pytest.raises(ValueError, match=re.escape(key) + r".*evil\.ckpt is refused"):
        loader(evil["ckpt"])
    assert not evil["marker"].exists()


def test_a_received_run_folder_without_export_is_refused_too(evil):
    """A KL run folder with no pretrained/: its best checkpoint is the malicious file."""
    run = evil["tmp"] / "klrun"
    (run / "checkpoints").mkdir(parents=True)
    evil_checkpoint(run / "checkpoints" / "epoch_000.ckpt", evil["marker"])
    (run / "summary.json").write_text(json.dumps({
        "model": "klvae", "status": "finished",
        "checkpoints": {"best": "checkpoints/epoch_000.ckpt", "last": None}}))
    with pytest.raises(ValueError, match=r"model\.autoencoder.*epoch_000\.ckpt is refused"):
        load_frozen_klvae(run)
    assert not evil["marker"].exists()


def test_experiment_keys_refuse_the_payload(evil, data_cache):
    """`model.autoencoder` (latent diffusion), `model.vqvae` (VQ-Diffusion) and `ckpt_path`
    given to the training command itself."""
    tmp, ckpt = evil["tmp"], evil["ckpt"]
    cases = [
        (["experiment=latentdiffusion", *data_overrides(tmp / "ld", data_cache),
          f"model.autoencoder={ckpt}"], "model.autoencoder"),
        (["experiment=vqdiffusion", *data_overrides(tmp / "vd", data_cache),
          f"model.vqvae={ckpt}"], "model.vqvae"),
        ([*tiny_overrides(tmp / "vq", data_cache=data_cache), f"ckpt_path={ckpt}"], "ckpt_path"),
    ]
    for overrides, key in cases:
        with pytest.raises(ValueError, match=re.escape(key) + r".*evil\.ckpt is refused"):
            train(compose_cfg(overrides))
        assert not evil["marker"].exists(), key


def test_sample_and_evaluate_commands_refuse_the_payload(evil):
    evil_prior = evil_checkpoint(evil["tmp"] / "prior.ckpt", evil["marker"], "transformer.")
    with pytest.raises(ValueError, match=r"prior: .*prior\.ckpt is refused"):
        sample_main([str(evil_prior), f"out={evil['tmp'] / 'samples'}"])
    evil_cls = evil_checkpoint(evil["tmp"] / "cls.ckpt", evil["marker"], "backbone.")
    with pytest.raises(ValueError, match=r"classifier: .*cls\.ckpt is refused"):
        load_classifier_run(evil_cls, overrides=["data=radar"])
    samples = write_samples(evil["tmp"] / "s", np.zeros((2, 1, 16, 16), np.float32),
                            np.array([0, 1]), {"class_names": ["a", "b"]}, pictures=False)
    with pytest.raises(ValueError, match=r"classifier: .*cls\.ckpt is refused"):
        evaluate_main([f"classifier={evil_cls}", f"samples={samples}",
                       f"out={evil['tmp'] / 'eval'}", "data=radar"])
    assert not evil["marker"].exists()


def test_checkpoint_kind_is_read_from_state_dict_keys_alone():
    kinds = {"transformer.x": "vqdiffusion", "unet.x": "latentdiffusion",
             "model.quantize.embedding.weight": "vqvae", "model.encoder.conv_in.weight": "klvae",
             "backbone.0.weight": "classifier", "other.x": None}
    for key, kind in kinds.items():
        assert checkpoint_kind({"state_dict": {key: torch.zeros(1)}}) == kind
    # a prior holds its frozen autoencoder too: the prior's own prefix wins
    both = {"vqvae.model.quantize.embedding.weight": 0, "transformer.x": 0}
    assert checkpoint_kind({"state_dict": both}) == "vqdiffusion"


def test_a_checkpoint_of_another_kind_is_refused_naming_both(tmp_path):
    torch.save({"state_dict": {"backbone.0.weight": torch.zeros(1)}}, tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match=r"model\.vqvae: .*c\.ckpt is a classifier checkpoint; "
                                         r"give a VQ-VAE"):
        resolve_artifact(tmp_path / "c.ckpt", "vqvae", "model.vqvae")


def test_no_unsafe_load_in_the_library():
    """`weights_only=False` or `allow_pickle=True` in code only on a line marked
    `# trusted: <why this file is the project's own>` (mentions in `backticks` are prose)."""
    unsafe_call = re.compile(r"(?<!`)\b(weights_only *= *False|allow_pickle *= *True)")
    unsafe = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
              for path in sorted((ROOT / "mdvq").rglob("*.py"))
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if unsafe_call.search(line) and "# trusted:" not in line]
    assert unsafe == [], unsafe
