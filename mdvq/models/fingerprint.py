"""A short, stable fingerprint of a network: its config and every weight, for cache keys."""

from __future__ import annotations

import hashlib
import json

import torch


def network_fingerprint(config: dict, module: torch.nn.Module) -> str:
    """A 16-hex-digit SHA-256 of `config` (JSON, sorted keys) and every tensor of `module`'s
    state dict (names, shapes, dtypes, bytes). The same weights give the same fingerprint
    whether they were loaded from a checkpoint or a `save_pretrained` folder."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
