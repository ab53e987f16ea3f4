"""`python -m mdvq.bench` and the performance switches: the marginal-cost fit, what each switch
does to the model, errors naming the key, and the command on a tiny config."""

from __future__ import annotations

import json

import pytest
import torch

from mdvq import bench
from mdvq.benchmarks import builders, loops
from mdvq.benchmarks.timing import interleaved, marginal_cost
from mdvq.callbacks.performance import PerformanceSwitches, apply_switches, is_compiled
from mdvq.core.compose import build, compose_config
from mdvq.utils.cli import UsageError


class FakeClock:
    """A clock that only moves when an arm 'runs': fixed + n * per_batch seconds."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_marginal_cost_of_interleaved_arms_on_a_synthetic_timer():
    clock, calls = FakeClock(), []

    def arm(name, fixed, per):
        def run(n):
            calls.append((name, n))
            clock.now += fixed + n * per
        return run

    points = interleaved({"a": arm("a", 2.0, 0.5), "b": arm("b", 1.0, 0.25)}, [4, 12],
                         repeats=2, clock=clock)
    # interleaved: every arm at a count before the next count, and the whole again
    assert calls == [("a", 4), ("b", 4), ("a", 12), ("b", 12)] * 2
    assert points["a"] == [(4, 4.0), (12, 8.0)] * 2
    assert marginal_cost(points["a"]) == pytest.approx((0.5, 2.0))
    assert marginal_cost(points["b"]) == pytest.approx((0.25, 1.0))
    # least squares through noisy points: (4, 3.9), (4, 4.1), (12, 8.0) -> slope 0.5, fixed 2
    assert marginal_cost([(4, 3.9), (4, 4.1), (12, 8.0)]) == pytest.approx((0.5, 2.0))
    with pytest.raises(ValueError, match="two distinct batch counts"):
        marginal_cost([(4, 1.0), (4, 1.2)])
    with pytest.raises(ValueError, match="two distinct counts"):
        interleaved({"a": lambda n: None}, [4], clock=clock)


@pytest.fixture
def tiny_vqvae():
    return builders.build_module(builders.model_config("vqvae", "tiny"))


def test_channels_last_switch_converts_the_network(tiny_vqvae):
    weight = tiny_vqvae.model.encoder.down_blocks[0].resnets[0].conv1.weight  # (8, 8, 3, 3)
    assert not weight.is_contiguous(memory_format=torch.channels_last)
    done = apply_switches(tiny_vqvae, channels_last=True)
    assert done == ["channels_last(VQModel)"]
    for name in ("encoder.down_blocks.0.resnets.0.conv1", "decoder.conv_in"):
        w = tiny_vqvae.model.get_submodule(name).weight
        assert w.is_contiguous(memory_format=torch.channels_last), name
    x = torch.rand(2, 1, 16, 16) * 2 - 1  # still computes the same thing
    assert tiny_vqvae(x)[0].shape == x.shape


def test_compile_switch_compiles_encoder_and_decoder_in_place(tiny_vqvae):
    keys = set(tiny_vqvae.state_dict())
    assert not is_compiled(tiny_vqvae.model.encoder)
    done = apply_switches(tiny_vqvae, compile=True)
    assert done == ["compile(Encoder)", "compile(Decoder)"]
    assert is_compiled(tiny_vqvae.model.encoder) and is_compiled(tiny_vqvae.model.decoder)
    assert type(tiny_vqvae.model.encoder).__name__ == "Encoder"  # in place: no wrapper module
    assert set(tiny_vqvae.state_dict()) == keys  # so checkpoints and exports are unchanged


def test_fused_switch_reaches_the_optimizer():
    cfg = builders.model_config("vqvae", "tiny", overrides=["+model.optimizer.fused=true"])
    opt = build(cfg.model).configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    plain = build(builders.model_config("vqvae", "tiny").model).configure_optimizers()
    assert not plain["optimizer"].defaults["fused"]
    fused = loops.with_fused(builders.model_config("vqvae", "tiny"), True)
    assert build(fused.model).configure_optimizers()["optimizer"].defaults["fused"] is True


def test_bad_switch_values_name_the_key():
    cfg = compose_config(["callbacks=performance", "callbacks.performance.channels_last=1"])
    with pytest.raises(TypeError, match=r"callbacks\.performance\.channels_last"):
        build(cfg.callbacks.performance)
    with pytest.raises(ValueError, match=r"callbacks\.performance\.compile_mode"):
        PerformanceSwitches(compile_mode="fastest")
    with pytest.raises(TypeError, match=r"callbacks\.performance\.compile "):
        PerformanceSwitches(compile="yes")
    with pytest.raises(TypeError, match=r"model\.optimizer\.fused"):
        loops.with_fused(builders.model_config("vqvae", "tiny"), "yes")
    with pytest.raises(UsageError, match="switches: unknown"):
        bench.main(["switches=turbo"])
    with pytest.raises(UsageError, match="sections: unknown"):
        bench.main(["sections=everything"])


def test_command_runs_on_a_tiny_config_and_writes_its_tables(tmp_path, capsys):
    out = bench.main([f"out={tmp_path / 'b'}", "size=tiny", "sections=framework,data,sampling",
                      "models=vqvae,vqdiffusion", "batches=1,2", "repeats=1", "steps=1,2",
                      "samples=2", "num_per_class=4"])
    text = (out / "bench.md").read_text()
    assert "## Framework vs raw diffusers loop" in text and "| vqvae | 8 |" in text
    assert "| vqdiffusion | 8 |" in text
    assert "## Data pipeline" in text and "## Sampling" in text and "## Peak memory" in text
    result = json.loads((out / "bench.json").read_text())
    rows = result["results"]["framework"]
    assert [r["model"] for r in rows] == ["vqvae", "vqdiffusion"]
    for r in rows:  # both arms timed at both counts
        assert sorted(n for n, _ in r["fits"]["raw"]["points"]) == [1, 2]
        # a fitted slope each (its value is noise at 1-2 tiny batches on a shared machine)
        assert isinstance(r["raw s/batch"], float) and isinstance(r["framework s/batch"], float)
    assert result["results"]["data"]["n"] == 6 * 4
    assert [r["steps"] for r in result["results"]["sampling"]] == [1, 2]
    assert result["machine"]["torch"] == torch.__version__
    assert "written:" in capsys.readouterr().out
