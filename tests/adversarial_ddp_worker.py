"""2-process DDP (gloo, CPU) fit of a tiny adversarial VQ-VAE across disc_start; prints
"DDP OK <checksums>" when every rank ends with the same autoencoder and discriminator weights.
Run by tests/test_adversarial.py (a subprocess: ddp_spawn inside pytest is fragile)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L
import torch
from test_adversarial import ADV, images, loader, tiny

from mdvq.models import VQVAEModule


class SameOnEveryRank(L.Callback):
    """At the end of training, gathers each rank's weight sums and prints them from rank 0."""

    def on_train_end(self, trainer, pl_module):
        sums = torch.stack([
            sum(p.double().sum() for n, p in pl_module.named_parameters()
                if not n.startswith("adversary.")),
            sum(p.double().sum() for p in pl_module.adversary.parameters()),
            pl_module.adversary.steps.double(),
        ])
        gathered = trainer.strategy.all_gather(sums)
        if trainer.is_global_zero:
            same = bool((gathered == gathered[0]).all())
            print(("DDP OK " if same else "DDP DIFFER ") + str(gathered.tolist()), flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    model = tiny(VQVAEModule, loss={**ADV, "disc_start": 2})
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0,
                        precision="bf16-mixed", limit_val_batches=1, num_sanity_val_steps=0,
                        callbacks=[SameOnEveryRank()])
    trainer.fit(model, train_dataloaders=loader(images(16)), val_dataloaders=loader(images(8)))
