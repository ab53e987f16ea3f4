"""In-domain spectrogram classifier: the judge of phase-2 generation (docs/metrics.md).

A small CNN trained on the real training split. Its logits give the class accuracy of
generated spectrograms, its penultimate features the Frechet distance between sets, and a
fresh copy trained on generated data gives train-on-synthetic/test-on-real accuracy
(:mod:`mdvq.evaluate`). Trains through the normal entry::

    python -m mdvq.run model=classifier data=radar
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mdvq.models.config_checks import as_tuple
from mdvq.models.losses import PartialOptimizers, check_finite

STAGES = ("train", "val", "test")


def _check_int(value, low: int, key: str) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``value`` is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")


def _conv_block(c_in: int, c_out: int, convs: int, pool: bool) -> nn.Sequential:
    """``convs`` 3x3 conv -> BatchNorm -> ReLU layers, then a 2x2 max-pool when ``pool``."""
    layers: list[nn.Module] = []
    for c in (c_in, *[c_out] * (convs - 1)):
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SpectrogramClassifier(PartialOptimizers, LightningModule):
    """CNN classifier of ``(x, y)`` batches, x ``(B, C, F, T)`` in [-1, 1], y int64 class ids.

    Network: one block per entry of ``channels`` (``convs_per_block`` 3x3 conv + BatchNorm +
    ReLU; every block but the last halves F and T with a max-pool), global average pooling to the penultimate
    features ``(B, channels[-1])`` (:meth:`features`), dropout, then a linear layer to
    ``num_classes`` logits. Works on any ``(F, T)`` of at least ``2 ** (len(channels) - 1)``.

    Args:
        num_classes: number of classes; checked against the datamodule's ``class_names`` when
            fitting/testing starts (``ValueError`` naming ``model.num_classes``).
        channels: conv channels per block, e.g. ``(16, 32, 64, 128)``.
        convs_per_block: conv layers per block (1 is about twice as fast, less accurate).
        dropout: dropout probability before the last linear layer.
        in_channels: image channels (1 = magnitude spectrogram).
        label_smoothing: cross-entropy label smoothing in [0, 1).
        optimizer: ``functools.partial`` awaiting the parameters (``None``: AdamW, lr 1e-3,
            weight decay 0). scheduler: ``functools.partial`` awaiting ``optimizer=`` (stepped
            every optimiser step; ``num_training_steps`` filled in when unset) or None.

    Logs ``{train,val,test}/loss`` (cross-entropy) and ``{train,val,test}/acc`` (fraction of
    correct top-1 predictions, torchmetrics ``MulticlassAccuracy(average="micro")``).
    The optimiser partials are not saved as hyperparameters, so
    ``SpectrogramClassifier.load_from_checkpoint(path)`` works with torch's safe loading. The
    data's class names are stored in checkpoints under ``"class_names"`` when known.
    """

    model_kind = "classifier"

    def __init__(
        self,
        num_classes: int = 6,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        convs_per_block: int = 2,
        dropout: float = 0.3,
        in_channels: int = 1,
        label_smoothing: float = 0.0,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__()
        channels = as_tuple(channels, int, "model.channels")
        _check_int(num_classes, 2, "model.num_classes")
        _check_int(convs_per_block, 1, "model.convs_per_block")
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"model.channels must be a non-empty list of positive ints, got {channels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"model.dropout must lie in [0, 1), got {dropout}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"model.label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = int(num_classes)
        ins = (int(in_channels), *channels[:-1])
        self.backbone = nn.Sequential(
            *[_conv_block(i, o, convs_per_block, pool=k < len(channels) - 1)
              for k, (i, o) in enumerate(zip(ins, channels))],
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(channels[-1], num_classes))
        # one accuracy per stage (attributes, not a ModuleDict: "train" is a Module method)
        for stage in STAGES:
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes=num_classes, average="micro"))
        self.class_names: list[str] | None = None

    # ----------------------------------------------------------------------------- network
    @property
    def feature_dim(self) -> int:
        """Size d of the penultimate features (``channels[-1]``)."""
        return int(self.hparams.channels[-1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, d)`` (pooled, after ReLU) of ``x`` ``(B, C, F, T)`` in [-1, 1]."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of ``x`` ``(B, C, F, T)`` in [-1, 1]."""
        return self.head(self.features(x))

    # ----------------------------------------------------------------------------- checks
    def setup(self, stage: str) -> None:
        """Check ``num_classes`` against the datamodule's ``class_names`` (when it has them)."""
        trainer = getattr(self, "_trainer", None)
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        if not names:
            return
        if len(names) != self.num_classes:
            raise ValueError(
                f"model.num_classes={self.num_classes} but the data have {len(names)} classes "
                f"{list(names)}; set model.num_classes={len(names)}"
            )
        self.class_names = [str(n) for n in names]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the data's class names next to the weights."""
        if self.class_names:
            checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the class names stored by :meth:`on_save_checkpoint`."""
        self.class_names = checkpoint.get("class_names", self.class_names)

    # ----------------------------------------------------------------------------- training
    def _step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.hparams.label_smoothing)
        check_finite(loss, {"cross_entropy": loss}, stage, self.global_step, batch_idx)
        acc = getattr(self, f"{stage}_acc")
        acc.update(logits.detach(), y)
        train = stage == "train"
        self.log(f"{stage}/loss", loss.detach(), on_step=train, on_epoch=not train, prog_bar=True,
                 batch_size=x.shape[0], sync_dist=not train)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=not train,
                 batch_size=x.shape[0])
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one training batch."""
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one validation batch (accuracy accumulates over the epoch)."""
        return self._step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """As :meth:`validation_step`, logged under ``test/``."""
        return self._step(batch, batch_idx, "test")
