"""Where the project's Hydra configs are, composing them outside `python -m mdvq.run`, and
building objects from a composed config (`build`, `instantiate_collection`).

The configs live in the repository's top-level `conf/`; an installed package (`pip install .`)
carries the same files as `mdvq/conf/` (setuptools' package-dir mapping in pyproject.toml), so
every command runs from any folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_PACKAGE = Path(__file__).resolve().parents[1]


def device_count(value, key: str) -> int:
    """`value` of config key `key` when it is a whole number of devices >= 1, else a ValueError
    naming the key. The SLURM launcher asks for `trainer.devices` processes and GPUs per
    machine, which must be a count: `trainer=ddp`'s -1 ("all visible"), "auto" or a list of
    device ids cannot be requested from SLURM."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: the SLURM launcher requests this many processes and "
                         f"GPUs per machine, so it must be a count >= 1 (e.g. {key}=4), not -1 "
                         f"('all visible'), 'auto' or a list of device ids")
    return value


# `${mdvq.device_count:${trainer.devices},trainer.devices}` in conf/hydra/launcher/slurm.yaml
OmegaConf.register_new_resolver("mdvq.device_count", device_count, replace=True)


def config_dir() -> Path:
    """The folder holding `config.yaml`: `mdvq/conf` when installed, else the checkout's `conf/`."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no Hydra config folder (config.yaml) in {_PACKAGE / 'conf'} or "
                            f"{_PACKAGE.parent / 'conf'}: reinstall mdvq")


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config",
                   return_hydra_config: bool = False) -> DictConfig:
    """The project config composed with `overrides` (Hydra syntax, e.g. "model=klvae"),
    exactly as `python -m mdvq.run` would compose it (without the Hydra run folder unless
    `return_hydra_config`)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose in its context
        return compose(config_name=config_name, overrides=list(overrides),
                       return_hydra_config=return_hydra_config)
    from hydra.errors import ConfigCompositionException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides),
                           return_hydra_config=return_hydra_config)
    except ConfigCompositionException as err:
        hint = unknown_key_hint(overrides, config_name)
        if hint:
            cause = f"\n{err.__cause__}" if err.__cause__ is not None else ""
            raise ConfigCompositionException(f"{err}{cause}\n{hint}") from err
        raise


_SET = re.compile(r"^(?P<key>data(?:\.[A-Za-z_][\w]*)+)=")  # `data.x.y=...`; `+data.x=` adds keys
_GROUP = re.compile(r"^[\w/@:+~-]+=")  # a group choice such as `data=iq` (no dot in the key)


def key_paths(node, name: str, prefix: str) -> list[str]:
    """Every full path (`prefix.a.b.name`) under a plain container `node` whose last key is
    `name`, in config order."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}"
            if key == name:
                found.append(path)
            found.extend(key_paths(value, name, path))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(key_paths(value, name, f"{prefix}[{i}]"))
    return found


def unknown_key_hint(overrides, config_name: str = "config") -> str | None:
    """For each `data.<key>=value` override whose key the composed `data` config lacks (Hydra's
    "Key '<key>' is not in struct"), where that key lives in this data config: "data.<key> is
    not a key at the top of data=<name>; it lives at data.datamodule.source.stft.<key>: give
    data.datamodule.source.stft.<key>=value". None when every data key exists or the config
    cannot be composed without the key overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    wanted = [(m.group("key"), o.split("=", 1)[1]) for o in overrides
              if (m := _SET.match(o.strip()))]
    if not wanted:
        return None
    groups = [o for o in overrides if _GROUP.match(o.strip()) and not _SET.match(o.strip())]
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config_name=config_name, overrides=groups)
        else:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                cfg = compose(config_name=config_name, overrides=groups)
    except Exception:  # noqa: BLE001 - a hint only; the original error stands
        return None
    data = OmegaConf.to_container(cfg.data, resolve=False)
    choice = next((o.split("=", 1)[1] for o in groups if o.strip().startswith("data=")), None)
    which = f"data={choice}" if choice else "this data config"
    lines = []
    for key, value in wanted:
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            continue
        name = key.rsplit(".", 1)[1]
        paths = key_paths(data, name, "data")
        if paths:
            lines.append(f"{key} is not a key of {which} at that level; it lives at "
                         f"{' and '.join(paths)}: give {paths[0]}={value}")
        else:
            top = ", ".join(k for k in data if k != "datamodule")
            lines.append(f"{key}: no key {name!r} anywhere under data ({which}); its top-level "
                         f"keys are {top}")
    return "\n".join(lines) or None


_ABSENT = object()


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, re-raising a configuration error (ValueError, TypeError) as
    itself rather than wrapped in Hydra's InstantiationException, so the message naming the
    offending key is the one the user sees."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
            raise cause from None
        raise


def instantiate_collection(cfg: DictConfig | None) -> list:
    """Instantiate every entry with a `_target_` in a group such as `callbacks` or `logger`."""
    if not cfg:
        return []
    return [build(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]
