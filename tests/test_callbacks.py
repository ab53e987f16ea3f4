"""Phase-1 callbacks driven by a real Lightning Trainer on tiny fake modules (CPU).

The fake modules return the contract dicts with fixed, hand-chosen codes and reconstruction
errors, so every logged figure is known in advance:

item  codes (2x2)     recon error  PSNR
0     0 0 / 0 1       +0.1         20 dB
1     2 2 / 2 2       +0.01        40 dB
2     0 1 / 1 1       +0.1         20 dB
3     2 3 / 3 3       +0.01        40 dB

Over the 4 items the counts are [4, 4, 5, 3] (K=4): usage 1.0, perplexity exp(H), PSNR 30 dB.
Under 2-process DDP rank 0 sees items 0 and 2 (codes {0, 1}) and rank 1 items 1 and 3 (codes
{2, 3}): unsynchronised counts would report usage 0.5.
"""

import json
import logging
import math
from pathlib import Path
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.image import structural_similarity_index_measure

from mdvq.callbacks import (
    CodebookMonitor,
    DecisionRule,
    ReconstructionMetrics,
    ReleaseProcessGroup,
    SpectrogramGrid,
)
from mdvq.callbacks.codebook import max_usage
from mdvq.callbacks.grids import spectrogram_grid_figure
from mdvq.core.errors import DataError
from mdvq.utils.figures import save_and_log_figure

REPO = Path(__file__).resolve().parents[1]
K = 4
CODES = torch.tensor(
    [[[0, 0], [0, 1]], [[2, 2], [2, 2]], [[0, 1], [1, 1]], [[2, 3], [3, 3]]], dtype=torch.long
)
ERROR = torch.tensor([0.1, 0.01, 0.1, 0.01])
N, F, T = 4, 16, 16
COUNTS = [4, 4, 5, 3]
PERPLEXITY = math.exp(-sum(c / 16 * math.log(c / 16) for c in COUNTS))


def images() -> torch.Tensor:
    """Targets in [0.2, 0.8], (N, 1, F, T)."""
    return 0.2 + 0.6 * torch.rand(N, 1, F, T, generator=torch.Generator().manual_seed(0))


class FakeData(LightningDataModule):
    """4 items (x in [-1,1], y = item id) with the attributes callbacks read from a datamodule."""

    def __init__(self, train_batch_size=1, eval_batch_size=2):
        super().__init__()
        self.dataset = TensorDataset(2 * images() - 1, torch.arange(N))
        self.train_batch_size, self.eval_batch_size = train_batch_size, eval_batch_size
        self.class_names = ["walk", "sit", "stand", "fall"]
        self.times_s = np.linspace(0.0, 1.5, T)
        self.freqs_hz = np.linspace(-400.0, 400.0, F)
        self.data_key = "fake-key"

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.train_batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.eval_batch_size, shuffle=False)

    test_dataloader = val_dataloader


class FakeKL(LightningModule):
    """Returns the contract dicts without codes; reconstruction = target + ERROR[item]."""

    model_kind = "klvae"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def _outputs(self, batch):
        x, y = batch
        target = (x + 1) / 2
        recon = (target + ERROR.to(x.device)[y].view(-1, 1, 1, 1)).clamp(0, 1)
        return {"loss": (self.w - 1) ** 2, "target": target, "recon": recon}

    def training_step(self, batch, batch_idx):
        return {"loss": self._outputs(batch)["loss"]}

    def validation_step(self, batch, batch_idx):
        return self._outputs(batch)

    test_step = validation_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FakeVQ(FakeKL):
    """Adds `indices` (B, 2, 2) = CODES[item] to every step, and `num_codes`."""

    model_kind = "vqvae"
    num_codes = K

    def _outputs(self, batch):
        out = super()._outputs(batch)
        out["indices"] = CODES.to(batch[1].device)[batch[1]]
        return out

    def training_step(self, batch, batch_idx):
        out = self._outputs(batch)
        return {"loss": out["loss"], "indices": out["indices"]}


def trainer_for(tmp_path, callbacks, **kwargs) -> Trainer:
    """A 1-epoch CPU trainer with a CSV logger in `tmp_path`; `kwargs` override."""
    options = {
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "logger": CSVLogger(tmp_path, name="csv"),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks,
    }
    return Trainer(**(options | kwargs))


def metric(trainer, name) -> float:
    return float(trainer.callback_metrics[name])


def expected_ssim() -> float:
    target = images()
    recon = (target + ERROR.view(-1, 1, 1, 1)).clamp(0, 1)
    return float(structural_similarity_index_measure(recon, target, data_range=1.0))


def test_logged_metrics_equal_hand_computed_values(tmp_path):
    monitor = CodebookMonitor(dead_code_window=1, output_dir=tmp_path)
    callbacks = [monitor, ReconstructionMetrics()]
    trainer = trainer_for(tmp_path, callbacks)
    data, model = FakeData(), FakeVQ()
    trainer.fit(model, datamodule=data)
    # 4 train steps, items 0..3; window 1 = step 4 only (codes {2, 3}): codes 0, 1 dead
    assert monitor.tracker.last_used_step.tolist() == [3, 3, 4, 4]
    for stage in ("train", "val"):
        assert metric(trainer, f"{stage}/dead_codes") == 2
    assert metric(trainer, "val/codebook_usage") == 1.0
    assert metric(trainer, "val/codebook_selections") == N * 2 * 2  # 4 items x 2x2 codes
    assert metric(trainer, "val/codebook_usage_max") == 1.0  # min(1, 16 / 4)
    assert metric(trainer, "val/perplexity") == pytest.approx(PERPLEXITY, rel=1e-5)
    assert metric(trainer, "val/psnr") == pytest.approx(30.0, abs=1e-3)  # mean of 20 and 40 dB
    assert metric(trainer, "val/ssim") == pytest.approx(expected_ssim(), abs=1e-5)

    trainer.test(model, datamodule=data)
    assert metric(trainer, "test/codebook_usage") == 1.0
    assert metric(trainer, "test/perplexity") == pytest.approx(PERPLEXITY, rel=1e-5)
    assert metric(trainer, "test/dead_codes") == 2
    assert metric(trainer, "test/psnr") == pytest.approx(30.0, abs=1e-3)

    # counts restart with each pass: one batch of items 0, 1 -> codes {0, 1, 2}, counts [3, 1, 4, 0]
    second = trainer_for(tmp_path, callbacks, limit_val_batches=1)
    second.validate(model, datamodule=data)
    assert metric(second, "val/codebook_usage") == 0.75
    assert metric(second, "val/codebook_selections") == 8
    p = np.array([3, 1, 4]) / 8
    assert metric(second, "val/perplexity") == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert metric(second, "val/psnr") == pytest.approx(30.0, abs=1e-3)


def test_usage_states_the_selections_behind_it_and_their_maximum(tmp_path, caplog):
    assert max_usage(4096, 512) == 1.0 and max_usage(256, 512) == 0.5 and max_usage(0, 8) == 0.0
    # the same 8 selections (one batch of 2 items x 2x2) read against K=64 codes: at most 1/8
    monitor = CodebookMonitor(num_codes=64, log_histogram=False)
    trainer = trainer_for(tmp_path, [monitor], limit_val_batches=1)
    with caplog.at_level(logging.WARNING):
        trainer.validate(FakeVQ(), datamodule=FakeData())
    assert metric(trainer, "val/codebook_selections") == 8
    assert metric(trainer, "val/codebook_usage_max") == 0.125
    assert metric(trainer, "val/codebook_usage") == 3 / 64
    assert "rests on 8 code selections for K=64 codes: at most 0.125" in caplog.text


def test_kl_module_gets_reconstruction_metrics_and_no_codebook_figures(tmp_path):
    callbacks = [
        CodebookMonitor(output_dir=tmp_path),
        ReconstructionMetrics(),
        DecisionRule(baseline=str(write_kl_summary(tmp_path / "kl", 25.0, "fake-key",
                                                   "2025-01-01T00:00:00")),
                     psnr_margin=0.10, usage_threshold=0.80, output_dir=tmp_path),
    ]
    trainer = trainer_for(tmp_path, callbacks)
    trainer.fit(FakeKL(), datamodule=FakeData())
    trainer.test(trainer.lightning_module, datamodule=trainer.datamodule)
    assert metric(trainer, "test/psnr") == pytest.approx(30.0, abs=1e-3)
    assert not [k for k in trainer.callback_metrics if "codebook" in k or "dead" in k]
    assert (
        not list(tmp_path.glob("figures/codebook_*")) and not (tmp_path / "decision.json").exists()
    )


def test_reconstruction_metrics_name_the_missing_outputs(tmp_path):
    class NoRecon(FakeKL):
        def validation_step(self, batch, batch_idx):
            return {"loss": self._outputs(batch)["loss"]}

    trainer = trainer_for(tmp_path, [ReconstructionMetrics()], logger=False)
    with pytest.raises(ValueError, match="'target' and 'recon'"):
        trainer.validate(NoRecon(), datamodule=FakeData())


def test_figures_are_written_after_fit_and_test(tmp_path):
    callbacks = [CodebookMonitor(output_dir=tmp_path), SpectrogramGrid(num_examples=2)]
    trainer = trainer_for(tmp_path, callbacks, max_epochs=2)
    trainer.fit(FakeVQ(), datamodule=FakeData())
    trainer.test(trainer.lightning_module, datamodule=trainer.datamodule)
    names = {p.name for p in tmp_path.rglob("*.png")}
    for epoch in ("0000", "0001"):
        assert f"codebook_val_epoch{epoch}.png" in names
        assert f"spectrograms_val_epoch{epoch}.png" in names
    assert {"codebook_test.png", "spectrograms_test.png"} <= names
    # without output_dir the grid goes to trainer.log_dir (the CSV logger's folder)
    assert list(Path(trainer.log_dir).glob("figures/spectrograms_val_epoch0000.png"))


def test_grid_figure_has_physical_axes_and_a_01_colour_scale():
    targets = images()[:2].numpy()
    recons = np.clip(targets + 0.1, 0, 1)
    times, freqs = np.linspace(0.0, 1.5, T), np.linspace(-400.0, 400.0, F)
    fig = spectrogram_grid_figure(targets, recons, ["walk", "sit"], times, freqs)
    axes = fig.axes[:4]  # inputs 0, 1 then reconstructions 0, 1
    image = axes[0].get_images()[0]
    dt, df = 1.5 / (T - 1), 800.0 / (F - 1)
    assert image.get_extent() == pytest.approx([-dt / 2, 1.5 + dt / 2, -400 - df / 2, 400 + df / 2])
    assert image.origin == "lower" and (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
    assert [ax.get_title() for ax in axes] == ["walk", "sit", "20.0 dB", "20.0 dB"]
    assert axes[2].get_xlabel() == "time [s]" and axes[0].get_xlabel() == ""
    assert axes[0].get_ylabel() == "input\nDoppler [Hz]"
    assert axes[2].get_ylabel() == "reconstruction\nDoppler [Hz]"
    assert len(fig.axes) == 5  # four panels and one colour bar
    fig = spectrogram_grid_figure(targets, recons)  # no physical axes: bins
    assert (
        fig.axes[0].get_ylabel() == "input\nDoppler bin" and fig.axes[0].get_title() == "example 0"
    )


def test_figures_go_to_image_loggers_only(tmp_path):
    wandb, tensorboard, csv = (
        MagicMock(spec=c) for c in (WandbLogger, TensorBoardLogger, CSVLogger)
    )
    trainer = MagicMock(loggers=[wandb, tensorboard, csv], global_step=7)
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    path = save_and_log_figure(trainer, fig, "val/code_use", tmp_path / "f" / "x.png")
    assert path.is_file()
    kwargs = wandb.log_image.call_args.kwargs
    assert kwargs["key"] == "val/code_use" and kwargs["step"] == 7
    assert kwargs["images"][0].shape == (100, 200, 3) and kwargs["images"][0].dtype == np.uint8
    tensorboard.experiment.add_figure.assert_called_once_with(
        "val/code_use", fig, global_step=7, close=False
    )
    assert csv.mock_calls == []


def test_dead_code_tracker_is_restored_on_resume(tmp_path):
    monitor = CodebookMonitor(dead_code_window=1, output_dir=tmp_path)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/psnr", mode="max", save_last=True
    )
    trainer = trainer_for(
        tmp_path, [monitor, ReconstructionMetrics(), checkpoint], enable_checkpointing=True
    )
    trainer.fit(FakeVQ(), datamodule=FakeData())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert saved[monitor.state_key]["last_used_step"].tolist() == [3, 3, 4, 4]

    resumed = CodebookMonitor(dead_code_window=1, output_dir=tmp_path)
    again = trainer_for(tmp_path, [resumed, ReconstructionMetrics()])
    again.fit(FakeVQ(), datamodule=FakeData(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed.tracker.last_used_step.tolist() == [3, 3, 4, 4]
    with pytest.raises(ValueError, match="codes"):
        resumed.load_state_dict({"num_codes": 8, "last_used_step": torch.zeros(8)})


def write_kl_summary(run_dir: Path, psnr: float, data_key: str, finished_at: str) -> Path:
    run_dir.mkdir(parents=True)
    summary = {
        "model": "klvae",
        "metrics": {"test/psnr": psnr},
        "data_key": data_key,
        "run_dir": str(run_dir),
        "finished_at": finished_at,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def run_vq_test(tmp_path, decision_rule) -> Trainer:
    run_dir = tmp_path / "vq_run"
    callbacks = [CodebookMonitor(output_dir=run_dir), ReconstructionMetrics(), decision_rule]
    trainer = trainer_for(run_dir, callbacks)
    trainer.test(FakeVQ(), datamodule=FakeData())
    return trainer


def test_decision_rule_with_an_explicit_baseline(tmp_path):
    # this run: PSNR 30 dB, usage 1.0 against a 25 dB baseline: 30 > 27.5 -> vqvae
    kl = write_kl_summary(tmp_path / "kl", 25.0, "fake-key", "2025-01-01T00:00:00")
    run_dir = tmp_path / "vq_run"
    trainer = run_vq_test(tmp_path, DecisionRule(baseline=str(kl), psnr_margin=0.10,
                                                 usage_threshold=0.80, output_dir=run_dir))
    decision = json.loads((run_dir / "decision.json").read_text())
    assert decision["verdict"] == "vqvae" and decision["continue_vq"] is True
    assert decision["psnr_kl"] == 25.0 and decision["kl_run"] == "../kl"
    assert decision["psnr_vq"] == pytest.approx(30.0, abs=1e-3) and decision["usage_vq"] == 1.0
    assert decision["vq_run"] == "." and decision["data_key"] == "fake-key"
    assert metric(trainer, "decision/continue_vq") == 1.0
    logged = (Path(trainer.log_dir) / "metrics.csv").read_text()
    assert "decision/continue_vq" in logged
    # a stronger baseline (28 dB needs 30.8 dB) turns the verdict
    strong = write_kl_summary(tmp_path / "kl28", 28.0, "fake-key", "2025-01-01T00:00:00")
    trainer = run_vq_test(tmp_path, DecisionRule(baseline=str(strong), psnr_margin=0.10,
                                                 usage_threshold=0.80, output_dir=run_dir))
    assert json.loads((run_dir / "decision.json").read_text())["verdict"] == "klvae"
    assert metric(trainer, "decision/continue_vq") == 0.0


def test_decision_rule_needs_a_readable_klvae_baseline(tmp_path):
    with pytest.raises(ValueError, match="callbacks.decision_rule.baseline"):
        DecisionRule(baseline="", psnr_margin=0.1, usage_threshold=0.8)
    with pytest.raises(DataError, match="summary.json"):
        DecisionRule(baseline=str(tmp_path / "no_such_run"), psnr_margin=0.1, usage_threshold=0.8)
    vq = tmp_path / "vq"
    vq.mkdir()
    (vq / "summary.json").write_text(json.dumps({"model": "vqvae", "metrics": {"test/psnr": 1}}))
    with pytest.raises(DataError, match="callbacks.decision_rule.baseline: this is a 'vqvae' run"):
        DecisionRule(baseline=str(vq), psnr_margin=0.1, usage_threshold=0.8)


def test_callback_configs_compose_and_instantiate(tmp_path):
    conf = REPO / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        overrides = [f"+paths.output_dir={tmp_path}", f"+paths.output_root={tmp_path}/outputs"]
        cfg = compose(overrides=["+callbacks=default", *overrides])
    built = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    assert set(built) == {
        "model_checkpoint",
        "reconstruction_metrics",
        "realism",
        "codebook_monitor",
        "spectrogram_grid",
        "last_checkpoint",
        "lr_monitor",
        "training_budget",
        "epoch_lines",
        "wandb_review",
    }
    assert built["training_budget"].min_steps == 500
    ckpt = built["model_checkpoint"]
    assert (ckpt.monitor, ckpt.mode, ckpt.save_last) == ("val/psnr", "max", False)  # last.ckpt: callbacks/last_checkpoint.yaml
    assert ckpt.dirpath == str(tmp_path / "checkpoints")
    assert built["codebook_monitor"].dead_code_window == 200
    assert built["spectrogram_grid"].output_dir == str(tmp_path)
    # every file of the group is one named callback; every argument carries a comment
    for path in (conf / "callbacks").glob("*.yaml"):
        if path.stem in ("default", "prior", "latent_prior", "classifier"):  # sets of callbacks
            continue
        lines = [
            ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
        assert lines[0] == f"{path.stem}:", path
        assert all("#" in ln for ln in lines[2:] if not ln.strip().startswith("- ")), path


@pytest.mark.slow  # several processes (DDP on CPU): `make test-slow` (CI runs it)
def test_ddp_two_processes_report_the_same_figures_as_one(tmp_path, monkeypatch):
    # the spawned ranks inherit the environment: a global seed an earlier test set with
    # seed_everything (PL_GLOBAL_SEED) would change which items each rank sees last
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    monitor = CodebookMonitor(dead_code_window=1, log_histogram=False)
    trainer = trainer_for(
        tmp_path,
        [monitor, ReconstructionMetrics(), ReleaseProcessGroup()],  # as mdvq.run adds it
        strategy="ddp_spawn",
        devices=2,
        logger=False,
    )
    trainer.fit(FakeVQ(), datamodule=FakeData(train_batch_size=1, eval_batch_size=1))
    # rank 0 saw codes {0, 1}, rank 1 {2, 3}: the summed counts are those of one process
    assert metric(trainer, "val/codebook_usage") == 1.0
    assert metric(trainer, "val/codebook_selections") == N * 2 * 2  # 4 items x 2x2 codes
    assert metric(trainer, "val/codebook_usage_max") == 1.0  # min(1, 16 / 4)
    assert metric(trainer, "val/perplexity") == pytest.approx(PERPLEXITY, rel=1e-5)
    assert metric(trainer, "val/psnr") == pytest.approx(30.0, abs=1e-3)
    assert metric(trainer, "val/ssim") == pytest.approx(expected_ssim(), abs=1e-5)
    # last step: rank 0 item 2 {0, 1}, rank 1 item 3 {2, 3}: all codes alive over both ranks
    assert metric(trainer, "val/dead_codes") == 0
