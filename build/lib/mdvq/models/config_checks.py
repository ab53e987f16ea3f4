"""Validation of an autoencoder configuration before any network is built or trained.

:func:`check_autoencoder_config` is called by both ``VQVAEModule`` and ``KLVAEModule`` and can be
used standalone (e.g. by the entry point before loading data). Every failure is a
``ValueError`` whose message names the offending config key (``model.<key>`` or
``data.image_size``), so a bad yaml is caught in seconds instead of after data loading.
"""

from __future__ import annotations

from collections.abc import Sequence

from mdvq.models.losses import RECON_LOSSES

ENCODER_BLOCK_TYPES = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
"""Down-block types that diffusers' VAE ``Encoder`` (VQModel, AutoencoderKL) can run.

Checked on diffusers 0.42: the UNet blocks (``DownBlock2D``, ``AttnDownBlock2D``, ``Skip*``,
``CrossAttn*``, ``K*``) are accepted by ``get_down_block`` but fail in the VAE encoder (they
need a time embedding, cross-attention or return skip tuples)."""

DECODER_BLOCK_TYPES = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")
"""Up-block types that diffusers' VAE ``Decoder`` can run (same check as above)."""

NORM_TYPES = ("group", "spatial")
"""VQModel decoder normalisations; ``"spatial"`` uses a GroupNorm with 32 fixed groups."""


def downsampling_factor(block_out_channels: Sequence[int]) -> int:
    """Total spatial downsampling of diffusers' VAE encoder: ``2 ** (len(block_out_channels) - 1)``.

    The last block does not downsample, so 3 levels map 64x64 pixels to a 16x16 latent grid.
    """
    return 2 ** (len(block_out_channels) - 1)


def as_tuple(value, kind: type, key: str) -> tuple:
    """Turn a list-like config value (list, tuple, OmegaConf ``ListConfig``) into a plain tuple.

    Each entry is converted with ``kind`` (``int`` or ``str``); a bare string or scalar, or an
    entry that does not convert, raises ``ValueError`` naming ``key``. Plain tuples keep
    ``save_hyperparameters`` and ``save_pretrained`` free of OmegaConf objects.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{key} must be a list, got {value!r}")  # noqa: TRY004 (config error)
    out = []
    for v in value:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{key} must hold integers, got {list(value)!r}")
        if kind is str and not isinstance(v, str):
            raise ValueError(f"{key} must hold strings, got {list(value)!r}")
        out.append(kind(v))
    return tuple(out)


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def check_autoencoder_config(
    *,
    block_out_channels: Sequence[int],
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    norm_num_groups: int,
    image_size: Sequence[int],
    recon_loss: str = "l1",
    layers_per_block: int = 1,
    in_channels: int = 1,
    out_channels: int = 1,
    latent_channels: int = 4,
    spectral_weight: float = 0.0,
    commitment_cost: float | None = None,
    num_vq_embeddings: int | None = None,
    vq_embed_dim: int | None = None,
    norm_type: str = "group",
    kl_weight: float | None = None,
) -> int:
    """Check an autoencoder config; return the total downsampling factor.

    VQ-only keys (``commitment_cost``, ``num_vq_embeddings``, ``vq_embed_dim``) and the KL-only
    key (``kl_weight``) are checked when given (not ``None``). ``image_size`` is the data's
    ``(F, T)`` in pixels. Raises ``ValueError`` naming the key for: a count/length mismatch
    between ``down_block_types``, ``up_block_types`` and ``block_out_channels``; an unknown
    block type; ``norm_num_groups`` not dividing every ``block_out_channels`` entry; ``F`` or
    ``T`` not divisible by ``2 ** (len(block_out_channels) - 1)``; ``commitment_cost < 0``;
    ``num_vq_embeddings < 2``; ``kl_weight < 0``; ``spectral_weight < 0``; ``recon_loss`` not in
    :data:`RECON_LOSSES`; non-positive sizes; ``norm_type`` unusable with the channels.
    """
    chans = list(block_out_channels)
    downs = list(down_block_types)
    ups = list(up_block_types)
    if not chans:
        raise ValueError("model.block_out_channels must list at least one channel count")
    for c in chans:
        _positive_int(c, f"model.block_out_channels (entry {c!r} in {chans})")
    if not (len(downs) == len(ups) == len(chans)):
        raise ValueError(
            "model.down_block_types, model.up_block_types and model.block_out_channels must "
            f"have the same length (one per level), got {len(downs)}, {len(ups)} and {len(chans)}"
        )
    for key, types, valid in (
        ("model.down_block_types", downs, ENCODER_BLOCK_TYPES),
        ("model.up_block_types", ups, DECODER_BLOCK_TYPES),
    ):
        for t in types:
            if t not in valid:
                raise ValueError(f"{key}: unknown block type {t!r}; valid: {list(valid)}")
    _positive_int(norm_num_groups, "model.norm_num_groups")
    bad = [c for c in chans if c % norm_num_groups]
    if bad:
        raise ValueError(
            f"model.norm_num_groups={norm_num_groups} must divide every entry of "
            f"model.block_out_channels={chans} (not {bad})"
        )
    if norm_type not in NORM_TYPES:
        raise ValueError(f"model.norm_type must be one of {list(NORM_TYPES)}, got {norm_type!r}")
    if norm_type == "spatial":
        bad = [c for c in chans if c % 32]
        if bad:
            raise ValueError(
                "model.norm_type='spatial' uses 32 normalisation groups: every entry of "
                f"model.block_out_channels={chans} must be a multiple of 32 (not {bad})"
            )
        if vq_embed_dim is not None and vq_embed_dim != latent_channels:
            raise ValueError(
                "model.norm_type='spatial' needs model.vq_embed_dim == model.latent_channels, "
                f"got {vq_embed_dim} and {latent_channels}"
            )
    _positive_int(layers_per_block, "model.layers_per_block")
    _positive_int(in_channels, "model.in_channels")
    _positive_int(out_channels, "model.out_channels")
    _positive_int(latent_channels, "model.latent_channels")

    size = list(image_size) if isinstance(image_size, Sequence) else None
    if size is None or len(size) != 2:
        raise ValueError(f"data.image_size must be a 2-list [F, T] of pixels, got {image_size!r}")
    for s in size:
        _positive_int(s, f"data.image_size (entry {s!r} in {size})")
    factor = downsampling_factor(chans)
    if size[0] % factor or size[1] % factor:
        raise ValueError(
            f"data.image_size={size} must be divisible by the total downsampling factor {factor} "
            f"= 2**(len(model.block_out_channels) - 1) with model.block_out_channels={chans}"
        )

    if recon_loss not in RECON_LOSSES:
        raise ValueError(
            f"model.recon_loss must be one of {list(RECON_LOSSES)}, got {recon_loss!r}"
        )
    if not spectral_weight >= 0:
        raise ValueError(f"model.spectral_weight must be >= 0, got {spectral_weight!r}")
    if commitment_cost is not None and not commitment_cost >= 0:
        raise ValueError(f"model.commitment_cost must be >= 0, got {commitment_cost!r}")
    if num_vq_embeddings is not None:
        if isinstance(num_vq_embeddings, bool) or not isinstance(num_vq_embeddings, int):
            raise ValueError(
                f"model.num_vq_embeddings must be an integer, got {num_vq_embeddings!r}"
            )
        if num_vq_embeddings < 2:
            raise ValueError(f"model.num_vq_embeddings must be >= 2, got {num_vq_embeddings}")
    if vq_embed_dim is not None:
        _positive_int(vq_embed_dim, "model.vq_embed_dim")
    if kl_weight is not None and not kl_weight >= 0:
        raise ValueError(f"model.kl_weight must be >= 0, got {kl_weight!r}")
    return factor
