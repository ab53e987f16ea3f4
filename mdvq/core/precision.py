"""The training precision a machine can run: `trainer.precision`, or float32 where bfloat16 is
not native to the device.

The default `trainer.precision` is `bf16-mixed`: on a CPU with AVX512-BF16 it trains the default
autoencoders about 1.4x faster at the same test PSNR and codebook usage
(`experiments/bench/README.md`), and NVIDIA GPUs from Ampere on (compute capability >= 8.0)
run it natively. Where bfloat16 is only emulated it is slower than float32, so a run there
trains in `32-true` instead, with a warning naming the key:
- CPUs without AVX512-BF16 or AMX (many laptops, older servers; ARM CPUs are treated the
  same, unmeasured): measured 2x (AVX512) to 17x (AVX2) slower than float32 on the default
  autoencoder, torch converting bfloat16 in software;
- CUDA GPUs below compute capability 8.0 (V100, T4, ...).
`trainer.precision=16-mixed` is the choice for those GPUs when wanted: it is never picked
silently, because float16 needs loss scaling and changes the numerics the phase-1 rule
compares. MPS and other accelerators are passed through for Lightning to validate.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

FALLBACK = "32-true"
"""What a run uses instead of bfloat16 where bfloat16 is emulated."""


def is_bf16(precision) -> bool:
    """True for Lightning's bfloat16 settings (`bf16-mixed`, `bf16-true`, `bf16`)."""
    return str(precision).startswith("bf16")


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 instructions torch uses (AVX512-BF16 or AMX)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def training_device(accelerator) -> str:
    """`cuda`, `mps`, `cpu` or the accelerator's own name: where Lightning will train for
    `trainer.accelerator` (`auto` picks CUDA, then MPS, then the CPU, as Lightning does)."""
    accelerator = str(accelerator)
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator != "auto":
        return accelerator
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def usable_precision(precision, accelerator="auto") -> str:
    """`precision` (a `trainer.precision` value), or `32-true` when it asks for bfloat16 on a
    device that only emulates it (a CPU without AVX512-BF16/AMX, a CUDA GPU below compute
    capability 8.0), with a warning naming the key and the device.

    `accelerator` is `trainer.accelerator`. Other precisions and devices are returned
    unchanged (as strings) for Lightning to validate.
    """
    precision = str(precision)
    if not is_bf16(precision):
        return precision
    device = training_device(accelerator)
    if device == "cpu" and not cpu_has_native_bf16():
        log.warning("trainer.precision=%s: this CPU has no bfloat16 instructions (AVX512-BF16 or "
                    "AMX), where bfloat16 is slower than float32; training in %s instead",
                    precision, FALLBACK)
        return FALLBACK
    if device == "cuda" and torch.cuda.is_available() and \
            not torch.cuda.is_bf16_supported(including_emulation=False):
        log.warning("trainer.precision=%s: %s has no native bfloat16 (compute capability %s < 8.0); "
                    "training in %s instead (set trainer.precision=16-mixed for float16 with loss "
                    "scaling)", precision, torch.cuda.get_device_name(),
                    ".".join(map(str, torch.cuda.get_device_capability())), FALLBACK)
        return FALLBACK
    return precision


def trainer_precision(trainer_cfg) -> str:
    """`usable_precision` of a Lightning `Trainer` config (a mapping with `precision` and
    `accelerator`; defaults `32-true` and `auto`, as Lightning's)."""
    return usable_precision(trainer_cfg.get("precision", "32-true"),
                            trainer_cfg.get("accelerator", "auto"))
