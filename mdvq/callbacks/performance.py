"""`PerformanceSwitches`: speed switches a plain training loop does not apply by default.

Applied to the diffusers network(s) inside a LightningModule at `setup`, before the optimisers
are built (so an optimiser sees the converted parameters):

- `channels_last`: the networks' 4-D weights in `torch.channels_last` memory format (NHWC);
  convolutions then run NHWC kernels (inputs follow the weights' format).
- `compile`: `torch.compile` of each network in place (`nn.Module.compile`: the state-dict
  keys, hence checkpoints and exports, are unchanged). An autoencoder (a diffusers model with
  `encoder` and `decoder`, called through `encode` / `decode`, not `forward`) has those two
  compiled; a prior's transformer or UNet (called through `forward`) is compiled whole.

The other two switches are plain settings elsewhere: fused AdamW is `model.optimizer.fused`
(the optimiser partial) and bf16 mixed precision is `trainer.precision=bf16-mixed`.
`python -m mdvq.bench` measures every switch against a raw diffusers loop
(experiments/bench/README.md).
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch import Callback

log = logging.getLogger(__name__)

NETWORK_ATTRS = ("model", "transformer", "unet", "net")
"""Attributes of a LightningModule that may hold the trainable diffusers network."""

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""Accepted values of `compile_mode` (torch.compile's `mode`)."""


def _flag(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"callbacks.performance.{key} must be true or false, got {value!r}")
    return value


def check_switches(channels_last, compile, compile_mode, dynamic) -> tuple[bool, bool]:
    """Validate the switches (errors name `callbacks.performance.<key>`); returns
    `(channels_last, compile)`."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"callbacks.performance.compile_mode must be one of "
                         f"{list(COMPILE_MODES)}, got {compile_mode!r}")
    if dynamic is not None and not isinstance(dynamic, bool):
        raise TypeError(f"callbacks.performance.dynamic must be true, false or null, "
                        f"got {dynamic!r}")
    return _flag(channels_last, "channels_last"), _flag(compile, "compile")


def networks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The trainable networks of `module`: the first of :data:`NETWORK_ATTRS` it has that is an
    `nn.Module` (a frozen autoencoder inside a prior is not touched). ValueError if none."""
    for name in NETWORK_ATTRS:
        net = getattr(module, name, None)
        if isinstance(net, torch.nn.Module):
            return [net]
    raise ValueError(f"{type(module).__name__} has none of the attributes {list(NETWORK_ATTRS)} "
                     "holding its network: callbacks.performance cannot apply its switches")


def compile_targets(net: torch.nn.Module) -> list[torch.nn.Module]:
    """What to compile in a network: its `encoder` and `decoder` when it has both (an
    autoencoder called through `encode` / `decode`), else the network itself."""
    parts = [getattr(net, "encoder", None), getattr(net, "decoder", None)]
    if all(isinstance(p, torch.nn.Module) for p in parts):
        return parts
    return [net]


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether `module` was compiled in place (`nn.Module.compile`)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def apply_switches(module: torch.nn.Module, channels_last: bool = False, compile: bool = False,
                   compile_mode: str = "default", dynamic: bool | None = False) -> list[str]:
    """Apply the switches to `module`'s network(s) in place; returns what was done (names).

    channels_last: convert the networks to `torch.channels_last`. compile: compile them
    (:func:`compile_targets`) with `mode=compile_mode` and `dynamic` (False: one graph per
    input shape, fastest for fixed batch sizes; None: torch decides after a shape change).
    """
    channels_last, compile = check_switches(channels_last, compile, compile_mode, dynamic)
    done = []
    for net in networks(module) if (channels_last or compile) else []:
        if channels_last:
            net.to(memory_format=torch.channels_last)
            done.append(f"channels_last({type(net).__name__})")
        if compile:
            for part in compile_targets(net):
                if not is_compiled(part):
                    part.compile(mode=compile_mode, dynamic=dynamic)
                    done.append(f"compile({type(part).__name__})")
    return done


class PerformanceSwitches(Callback):
    """Apply :func:`apply_switches` to the module at `setup` (every stage, once per module).

    Args:
        channels_last: networks in `torch.channels_last` memory format.
        compile: `torch.compile` the networks in place (first batches pay the compilation).
        compile_mode: torch.compile `mode` (:data:`COMPILE_MODES`).
        dynamic: torch.compile `dynamic` (False: static shapes; None: automatic).

    Every argument is checked here; a bad value raises ValueError naming
    `callbacks.performance.<key>`. `applied` lists what was done.
    """

    def __init__(self, channels_last: bool = False, compile: bool = False,
                 compile_mode: str = "default", dynamic: bool | None = False):
        self.channels_last, self.compile = check_switches(channels_last, compile, compile_mode,
                                                          dynamic)
        self.compile_mode = compile_mode
        self.dynamic = dynamic
        self.applied: list[str] = []
        self._done: set[int] = set()

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Convert / compile the module's network(s) once, before the optimisers are built."""
        if id(pl_module) in self._done:
            return
        self._done.add(id(pl_module))
        self.applied = apply_switches(pl_module, self.channels_last, self.compile,
                                      self.compile_mode, self.dynamic)
        if self.applied:
            log.info("performance switches: %s", ", ".join(self.applied))
