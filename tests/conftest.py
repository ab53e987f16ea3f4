"""Shared test fixtures: tiny in-memory spectrogram sources."""

from __future__ import annotations

import numpy as np
import pytest

from mdvq.data.dataset import SpectrogramSet


class InMemorySource:
    """A source returning a fixed SpectrogramSet and counting how often it was loaded."""

    def __init__(self, data: SpectrogramSet):
        self.data = data
        self.loads = 0

    def load(self) -> SpectrogramSet:
        self.loads += 1
        return self.data


def make_set(n_classes=3, per_class=20, n_subjects=None, size=(16, 24), seed=0) -> SpectrogramSet:
    """Random [0,1] spectrograms whose class shows as a horizontal ridge at a class-specific row."""
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    labels = np.repeat(np.arange(n_classes), per_class)
    images = rng.uniform(0, 0.2, size=(n, 1, *size)).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, 0, 2 + 3 * c, :] = 1.0
    subjects = None
    if n_subjects:
        subjects = np.array([f"s{i % n_subjects:02d}" for i in range(n)])
    return SpectrogramSet(
        images=images, labels=labels, class_names=[f"class{c}" for c in range(n_classes)],
        subjects=subjects, freqs_hz=np.linspace(-500, 500, size[0]),
        times_s=np.linspace(0.05, 2.95, size[1]),
    )


@pytest.fixture
def small_set() -> SpectrogramSet:
    return make_set(n_subjects=10)


# ---- the real Hydra config, shrunk: shared by every end-to-end test -------------------------
import os
import subprocess
import sys
from pathlib import Path

from mdvq.core.compose import compose_config, config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = config_dir()

TINY_MODEL = [
    "model.block_out_channels=[8,16]",
    "model.down_block_types=[DownEncoderBlock2D,DownEncoderBlock2D]",
    "model.up_block_types=[UpDecoderBlock2D,UpDecoderBlock2D]",
    "model.norm_num_groups=4",
    "model.latent_channels=4",
    "model.mid_block_add_attention=false",
]
TINY_VQ = ["model.num_vq_embeddings=16", "model.vq_embed_dim=4"]
TINY_DATA = [  # 8 simulated examples per class at 16x16
    "data=radar",
    "data.image_size=[16,16]",
    "data.datamodule.source.num_per_class=8",
    "data.datamodule.source.num_subjects=8",
    "data.datamodule.source.progress=false",
    "data.datamodule.batch_size=8",
]
TINY_TRAINER = [
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def tiny_overrides(tmp: Path, model: str = "vqvae", data_cache: Path | None = None) -> list[str]:
    """Overrides for a run on 8 simulated examples per class at 16x16 with a tiny model."""
    return [
        f"model={model}",
        *TINY_DATA,
        f"paths.output_root={tmp}",
        f"paths.output_dir={tmp / 'run'}",
        f"paths.cache_dir={data_cache or tmp / 'cache'}",
        *TINY_TRAINER,
        *TINY_MODEL,
        *(TINY_VQ if model == "vqvae" else []),
    ]


def data_overrides(tmp: Path, cache: Path) -> list[str]:
    """`tiny_overrides` without the model keys (for the priors and the classifier)."""
    return [o for o in tiny_overrides(tmp, data_cache=cache) if not o.startswith("model")]


def compose_cfg(overrides: list[str]):
    """The project config composed with `overrides`, as `python -m mdvq.run` would."""
    return compose_config(overrides)


def run_cli(args: list[str], cwd: Path = ROOT, timeout=600) -> subprocess.CompletedProcess:
    """`python -m ARGS` in a subprocess (W&B offline), output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory) -> Path:
    """One shared simulated cache for every test of a module (generated once)."""
    return tmp_path_factory.mktemp("cache")


# ---- one trained in-domain classifier, shared by tests/test_classifier.py and test_evaluate.py
def classifier_run_overrides(tmp: Path) -> list[str]:
    """A quick `experiment=classifier` run on 6 x 40 simulated spectrograms at 32x32 (12 epochs)."""
    return [
        "experiment=classifier", "model.channels=[16,32,64]", "data=radar", "data.image_size=[32,32]",
        "data.datamodule.source.num_per_class=40", "data.datamodule.source.num_subjects=10",
        "data.datamodule.source.progress=false", "data.datamodule.batch_size=16",
        f"paths.output_root={tmp}", f"paths.output_dir={tmp / 'run'}",
        f"paths.cache_dir={tmp / 'cache'}", "trainer.accelerator=cpu", "trainer.max_epochs=12",
        "callbacks.training_budget.min_steps=0",  # 12 short epochs, not the 500-step budget
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ]


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory) -> Path:
    """The run folder of one classifier trained once per session (`classifier_run_overrides`)."""
    from mdvq.runs.training import train

    tmp = tmp_path_factory.mktemp("cls")
    train(compose_cfg(classifier_run_overrides(tmp)))
    return tmp / "run"


def sigterm_after_first_checkpoint(overrides: list[str], run_dir: Path,
                                   timeout: float = 300) -> tuple[int, str, Path]:
    """Start `python -m mdvq.run OVERRIDES` (run folder `run_dir`), wait for its first
    `checkpoints/last.ckpt`, send SIGTERM to that process (as `kill PID` or a scheduler does) and
    wait for it to end; returns (exit status, stderr, path of last.ckpt)."""
    import signal
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mdvq.run", *overrides], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + timeout
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.is_file(), f"no checkpoint before the signal: {proc.stderr.read()[-3000:]}"
    time.sleep(0.5)  # let the first save finish (the file appears before it is complete)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, last


def interrupted_stage(tmp: Path, cache: Path, extra: list[str]) -> tuple[int, str, Path, list[str]]:
    """An experiment stage (`<tmp>/stages/vqvae`, a tiny VQ-VAE for 12 epochs plus `extra`)
    stopped by SIGTERM after its first checkpoint. Returns (exit status, stderr, the stage
    folder, the stage's overrides without its output folder, as `train_stage` takes them)."""
    stage = tmp / "stages" / "vqvae"
    overrides = [o for o in tiny_overrides(tmp, data_cache=cache) + list(extra)
                 + ["trainer.max_epochs=12", "export=false", "trainer.limit_train_batches=4"]
                 if not o.startswith("paths.output_dir")]
    status, err, _ = sigterm_after_first_checkpoint(
        overrides + [f"paths.output_dir={stage}", "task=fit"], stage)
    return status, err, stage, overrides


#: experiment=routes / experiment=augment end to end: 2 classes x 10 simulated examples at
#: 16x16 (10 subjects doing both), and one short epoch per stage
TWO_CLASSES = [
    "data=radar", "data.image_size=[16,16]", "data.datamodule.source.classes=[walking,falling]",
    "data.datamodule.source.num_per_class=10", "data.datamodule.source.num_subjects=10",
    "data.datamodule.source.progress=false", "data.datamodule.batch_size=8",
]
SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"]
