"""Logger factories: W&B that never blocks or fails without a network or an account."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


def wandb_account_configured() -> bool:
    """True when W&B credentials exist: WANDB_API_KEY, or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.exists() and netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_logger(project: str = "mdvq", save_dir: str = ".", offline: bool | None = None, **kwargs):
    """A Lightning `WandbLogger`, offline unless an account is configured (or `offline` says so).

    `WANDB_MODE=offline|online|disabled` in the environment wins over the automatic choice.
    Offline runs are written under `<save_dir>/wandb/` and can be uploaded with `wandb sync`.
    Extra keyword arguments go to `WandbLogger` (entity, name, group, tags, log_model, ...).
    """
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE")
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_account_configured())
    if offline:
        log.info("W&B runs offline (no account configured): files in %s/wandb", save_dir)
        kwargs["log_model"] = False  # artifacts cannot be uploaded offline
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return WandbLogger(project=project, save_dir=str(save_dir), offline=offline, **kwargs)
