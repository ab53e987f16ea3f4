"""The four benchmarked models, built from conf/ with random weights, and synthetic batches.

Each model is composed exactly as `python -m mdvq.run` would compose it
(:func:`mdvq.core.compose.compose_config`): `model=vqvae` with `model/codebook=plain` (the same
computation a raw diffusers loop of the exported `VQModel` does; the codebook-health switches
add work no plain loop has), `model=klvae`, `experiment=vqdiffusion` and
`experiment=latentdiffusion`. The priors need a frozen autoencoder: a random-weight one of the
same config is exported to a folder first (:func:`export_frozen`). Model cost does not depend on
the values fed, so batches are random: images `(B, 1, F, T)` in [-1, 1], code maps `(B, h, w)`
in [0, K), scaled latents `(B, c, h, w)` ~ N(0, 1), labels `(B,)` in [0, num_classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from mdvq.core.compose import compose_config
from mdvq.utils.pixels import to_model

AUTOENCODERS = ("vqvae", "klvae")
PRIORS = ("vqdiffusion", "latentdiffusion")
MODELS = AUTOENCODERS + PRIORS
"""Names accepted by :func:`model_config` (the `models=` of `python -m mdvq.bench`)."""

TINY = {  # a seconds-long benchmark (tests, smoke runs): 16x16 images, tiny networks
    "data": ["data.image_size=[16,16]", "data.datamodule.batch_size=8"],
    "vqvae": ["model.block_out_channels=[8,16]",
              "model.down_block_types=[DownEncoderBlock2D,DownEncoderBlock2D]",
              "model.up_block_types=[UpDecoderBlock2D,UpDecoderBlock2D]",
              "model.norm_num_groups=4", "model.latent_channels=4",
              "model.mid_block_add_attention=false", "model.num_vq_embeddings=16",
              "model.vq_embed_dim=4"],
    "klvae": ["model.block_out_channels=[8,16]",
              "model.down_block_types=[DownEncoderBlock2D,DownEncoderBlock2D]",
              "model.up_block_types=[UpDecoderBlock2D,UpDecoderBlock2D]",
              "model.norm_num_groups=4", "model.latent_channels=4",
              "model.mid_block_add_attention=false"],
    "vqdiffusion": ["model.num_layers=1", "model.num_attention_heads=2",
                    "model.attention_head_dim=8"],
    "latentdiffusion": ["model.block_out_channels=[8,8,8]", "model.norm_num_groups=4",
                        "model.attention_head_dim=4", "model.batch_size=8"],
}
"""Overrides of the `size=tiny` benchmark, per model (and `data` for all)."""

TINY_DATA_SECTION = TINY["data"] + ["data.datamodule.source.num_subjects=4",
                                     "data.datamodule.subject_disjoint=false"]
"""Overrides of the data section at `size=tiny` (few examples: splits by example)."""

SIZES = ("default", "tiny")


def _check(name: str, size: str) -> None:
    if name not in MODELS:
        raise ValueError(f"models: unknown model {name!r}; choose from {', '.join(MODELS)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")


def model_config(name: str, size: str = "default", frozen: Path | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The composed project config of model `name` (:data:`MODELS`) at `size`, a prior reading
    its frozen autoencoder from `frozen`, plus `overrides` (Hydra syntax)."""
    _check(name, size)
    extra = [*(TINY["data"] + TINY[name] if size == "tiny" else []), *overrides]
    if name == "vqvae":
        return compose_config(["model=vqvae", "model/codebook=plain", *extra])
    if name == "klvae":
        return compose_config(["model=klvae", *extra])
    if frozen is None:
        raise ValueError(f"the {name} prior needs the folder of a frozen autoencoder")
    key = "vqvae" if name == "vqdiffusion" else "autoencoder"
    return compose_config([f"experiment={name}", f"model.{key}={frozen}",
                           "model.cache_dir=null", "model.output_dir=null", *extra])


def build_module(cfg: DictConfig, seed: int = 0):
    """The LightningModule of a composed config, with seeded random weights."""
    from mdvq.core.compose import build

    torch.manual_seed(seed)
    return build(cfg.model)


def export_frozen(name: str, folder: Path, size: str = "default", seed: int = 0) -> Path:
    """Export a random-weight autoencoder for prior `name` (its config at `size`) to `folder`
    in diffusers' format; returns `folder`."""
    ae = "vqvae" if name == "vqdiffusion" else "klvae"
    return build_module(model_config(ae, size), seed).export_pretrained(folder)


def batch_size(cfg: DictConfig) -> int:
    """The training batch size of a composed config: the latent prior's own `model.batch_size`
    when set, else `data.datamodule.batch_size`."""
    own = cfg.model.get("batch_size") if "latent" in str(cfg.model._target_).lower() else None
    return int(own or cfg.data.datamodule.batch_size)


@dataclass
class BenchModel:
    """A benchmarked model: its `name`, composed `cfg`, `batch` size and `batches` (a list of
    `(inputs, labels)` tuples, reused by every arm)."""

    name: str
    cfg: DictConfig
    batch: int
    batches: list

    def build(self, seed: int = 0):
        """A fresh LightningModule with seeded random weights."""
        return build_module(self.cfg, seed)


def synthetic_batches(module, cfg: DictConfig, n: int, batch: int, seed: int = 0) -> list:
    """`n` random `(inputs, labels)` batches of what `module` trains on (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    classes = int(cfg.model.get("num_classes", 6))
    size = tuple(int(s) for s in cfg.data.image_size)
    out = []
    for _ in range(n):
        labels = torch.randint(0, classes, (batch,), generator=g)
        kind = getattr(module, "model_kind", "")
        if kind == "vqdiffusion":
            x = torch.randint(0, module.num_codes, (batch, *module.grid), generator=g)
        elif kind == "latentdiffusion":
            x = torch.randn((batch, *module.latent_shape), generator=g)
        else:
            x = to_model(torch.rand((batch, int(cfg.model.in_channels), *size), generator=g))
        out.append((x, labels))
    return out


def bench_model(name: str, n_batches: int, size: str = "default", frozen_dir: Path | None = None,
                batch: int | None = None, overrides: list[str] | tuple[str, ...] = ()
                ) -> BenchModel:
    """Compose model `name`, export a frozen autoencoder into `frozen_dir` for a prior, and make
    `n_batches` synthetic batches of `batch` (None: the config's training batch size)."""
    _check(name, size)
    frozen = None
    if name in PRIORS:
        if frozen_dir is None:
            raise ValueError(f"the {name} prior needs a folder for its frozen autoencoder")
        frozen = export_frozen(name, Path(frozen_dir) / f"{name}-autoencoder", size)
    cfg = model_config(name, size, frozen, overrides)
    batch = int(batch or batch_size(cfg))
    module = build_module(cfg)
    return BenchModel(name, cfg, batch, synthetic_batches(module, cfg, n_batches, batch))
