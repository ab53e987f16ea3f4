"""PatchGAN discriminator for the adversarial autoencoder objective (:mod:`mdvq.models.adversarial`).

The network is taming-transformers' ``NLayerDiscriminator`` (pix2pix's PatchGAN, as used by the
VQGAN and Latent Diffusion autoencoders): a stride-2 4x4 convolution, ``layers - 1`` more
stride-2 convolutions with normalisation and LeakyReLU(0.2) (channels doubling, capped at 8x),
one stride-1 convolution, then a 4x4 convolution to one logit per patch. With 3 layers each
logit sees a 70x70-pixel patch; a 64x64 image gives a 6x6 logit map.

Normalisation (``norm``): taming uses BatchNorm. mdvq defaults to GroupNorm because BatchNorm
makes a logit depend on the other images of the batch and on the rank's shard under DDP (each
rank normalises with its own statistics unless SyncBatchNorm is on), and its running statistics
are updated by every forward (also the generator's pass through the discriminator): GroupNorm
gives each image the same logits whatever batch or rank it lands in, so a 2-process run and a
1-process run see the same discriminator. ``"batch"`` (taming's choice) and ``"none"`` stay
available.
"""

from __future__ import annotations

import torch
from torch import nn

DISC_NORMS = ("group", "batch", "none")
"""Accepted values of ``norm``."""


def smallest_image(layers: int) -> int:
    """Smallest image side (pixels) that :class:`PatchDiscriminator` with ``layers`` layers can
    take: ``layers`` halvings then two 4x4 stride-1 convolutions need ``3 * 2**layers``."""
    return 3 * 2**layers


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.loss.disc_norm must be one of {list(DISC_NORMS)}, got {kind!r}")


class PatchDiscriminator(nn.Module):
    """PatchGAN (taming's ``NLayerDiscriminator``): images ``(B, C, F, T)`` in [-1, 1] -> patch
    logits ``(B, 1, h, w)`` (real > 0 > fake under the hinge loss).

    Args:
        in_channels: image channels (1 for magnitude spectrograms).
        channels: channels of the first convolution (taming: 64); later ones double, capped at
            ``8 * channels``.
        layers: stride-2 convolutions (taming: 3; receptive field 70 pixels; 2 gives 34).
        norm: ``"group"`` (default, batch-independent), ``"batch"`` (taming) or ``"none"``.

    Weights are drawn as in taming (convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0)
    from the global torch generator, so a seeded run draws the same discriminator.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, layers: int = 3,
                 norm: str = "group") -> None:
        super().__init__()
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"model.loss.disc_layers must be an integer >= 1, got {layers!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 4:
            raise ValueError(f"model.loss.disc_channels must be an integer >= 4, got {channels!r}")
        _norm(norm, 4)  # validates the name
        bias = norm != "batch"  # taming: no bias before BatchNorm
        blocks = [nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2))]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            blocks.append(nn.Sequential(
                nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=bias),
                _norm(norm, channels * mult),
                nn.LeakyReLU(0.2),
            ))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels * mult, 1, 4, 1, 1)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Patch logits ``(B, 1, h, w)`` of images ``x`` ``(B, C, F, T)`` in [-1, 1]; with
        ``features=True`` the list of every block's activation followed by the logits (for
        feature matching)."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        logits = self.head(x)
        return [*out, logits] if features else logits


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
