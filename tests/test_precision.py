"""Training precision: the bf16-mixed default, its float32 fallback on GPUs without native
bfloat16, and the decision rule's warning when the two runs it compares trained differently."""

import json
import logging

import pytest
import torch
from conftest import compose_cfg

from mdvq.core import precision as prec
from mdvq.core.precision import usable_precision
from mdvq.evaluation.decision import decide_runs, thresholds


@pytest.mark.parametrize("model", ["vqvae", "klvae"])
def test_the_autoencoders_train_in_bf16_mixed_by_default(model):
    assert compose_cfg([f"model={model}"]).trainer.precision == "bf16-mixed"
    assert compose_cfg([f"model={model}", "trainer=cpu"]).trainer.precision == "bf16-mixed"


def _fake_cpu(monkeypatch, native_bf16: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def test_a_cpu_with_bf16_instructions_keeps_bf16_and_other_precisions_pass_through(
        monkeypatch, caplog):
    _fake_cpu(monkeypatch, native_bf16=True)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert usable_precision("bf16-mixed", "auto") == "bf16-mixed"
        assert usable_precision("bf16-mixed", "cpu") == "bf16-mixed"
        assert usable_precision("32-true", "gpu") == "32-true"
        assert usable_precision(16, "auto") == "16"
        assert usable_precision("bf16-mixed", "mps") == "bf16-mixed"  # Lightning's to validate
    assert caplog.text == ""


def test_a_cpu_without_bf16_instructions_trains_in_float32(monkeypatch, caplog):
    _fake_cpu(monkeypatch, native_bf16=False)
    assert not prec.cpu_has_native_bf16()
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert usable_precision("bf16-mixed", "auto") == "32-true"
        assert usable_precision("bf16-mixed", "cpu") == "32-true"
        assert usable_precision("16-mixed", "cpu") == "16-mixed"
    assert "trainer.precision=bf16-mixed: this CPU has no bfloat16 instructions" in caplog.text


def _fake_gpu(monkeypatch, native_bf16: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))


def test_a_gpu_without_native_bf16_falls_back_to_float32_with_a_warning(monkeypatch, caplog):
    _fake_gpu(monkeypatch, native_bf16=False)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert usable_precision("bf16-mixed", "auto") == "32-true"
        assert usable_precision("bf16-true", "gpu") == "32-true"
    assert "trainer.precision=bf16-mixed: Tesla T4 has no native bfloat16" in caplog.text
    assert "compute capability 7.5 < 8.0" in caplog.text
    assert usable_precision("16-mixed", "gpu") == "16-mixed"  # other precisions: Lightning's
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert usable_precision("bf16-mixed", "cpu") == "bf16-mixed"  # that machine's CPU still can


def test_a_gpu_with_native_bf16_keeps_it(monkeypatch, caplog):
    _fake_gpu(monkeypatch, native_bf16=True)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert usable_precision("bf16-mixed", "gpu") == "bf16-mixed"
    assert caplog.text == ""


def _summary(run_dir, model, metrics, **extra):
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(
        {"model": model, "metrics": metrics, "data_key": "dk", **extra}))
    return run_dir


def test_the_decision_warns_when_the_runs_trained_in_different_precisions(tmp_path, caplog):
    vq = _summary(tmp_path / "vq", "vqvae", {"test/psnr": 26.2, "test/codebook_usage": 0.97},
                  precision="bf16-mixed")
    kl_old = _summary(tmp_path / "kl_old", "klvae", {"test/psnr": 26.5},  # before `precision`
                      config={"trainer": {"precision": "32-true"}})
    kl_new = _summary(tmp_path / "kl_new", "klvae", {"test/psnr": 26.5}, precision="bf16-mixed")
    with caplog.at_level(logging.WARNING, logger="mdvq.evaluation.decision"):
        assert decide_runs(vq, kl_new, **thresholds()).verdict == "klvae"
        assert "precisions" not in caplog.text
        decide_runs(vq, kl_old, **thresholds())
    assert f"different precisions (bf16-mixed in {vq / 'summary.json'}, 32-true in " in caplog.text


SHORT_RUN = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
             "~callbacks.spectrogram_grid", "callbacks.codebook_monitor.log_histogram=false",
             "callbacks.training_budget.min_steps=0", "export=false", "test=false"]


@pytest.mark.parametrize("native", [True, False])
def test_a_run_records_the_precision_it_trained_in(tmp_path, monkeypatch, caplog, native):
    from conftest import tiny_overrides

    from mdvq.runs.training import train

    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        summary = train(compose_cfg(tiny_overrides(tmp_path) + SHORT_RUN))
    assert summary["status"] == "finished"
    assert summary["precision"] == ("bf16-mixed" if native else "32-true")
    assert summary["config"]["trainer"]["precision"] == "bf16-mixed"  # what was asked
    assert ("no bfloat16 instructions" in caplog.text) is not native
