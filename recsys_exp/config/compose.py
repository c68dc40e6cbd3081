"""From Hydra's composed config to the one validated plain dict a run uses.

Fresh runs take the composed config. ``restore=`` and ``resume=true`` take the *saved* config of
the earlier run as the base and apply this command line's overrides on top (key=value overrides
and group switches such as ``eval=...``), then validate the result like a fresh run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recsys_exp.config.schema import GROUPS
from recsys_exp.errors import ConfigError
from recsys_exp.config.validate import check_schema, check_semantics
from recsys_exp.run_dir import CONFIG_FILE, load_config, locate_checkpoint

# Keys that describe this invocation rather than the experiment: never taken from a saved config.
INVOCATION_KEYS = ("mode", "restore", "resume")


def _parse_overrides(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def apply_overrides(saved: dict[str, Any], composed: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Put this command line's overrides (already typed by Hydra in ``composed``) onto ``saved``."""
    merged = OmegaConf.create(saved)
    choices = dict(saved.get("choices", {}))
    for ov in _parse_overrides(overrides):
        key = ov.key_or_group
        if key.startswith("hydra") or key in INVOCATION_KEYS:
            continue
        if key == "experiment":
            raise ConfigError("+experiment: presets cannot be applied on top of a restored config; "
                              "pass the keys you want to change directly")
        if ov.is_delete():
            raise ConfigError(f"~{key}: deleting keys of a restored config is not supported")
        if key in GROUPS:  # switch a whole group to the freshly composed option
            merged[key] = composed[key]
            choices[key] = str(ov.value())
            if key == "offline" and composed.offline.name not in ("none", "logged"):
                merged["algo"] = composed["algo"]  # offline=bc|marwil|cql also chooses the algorithm
                choices["algo"] = composed.offline.name
            continue
        OmegaConf.update(merged, key, OmegaConf.select(composed, key), force_add=True)
    merged["choices"] = choices
    for key in INVOCATION_KEYS:
        merged[key] = composed[key]
    return OmegaConf.to_container(merged, resolve=True)


def resolve_run_config(composed: DictConfig, overrides: list[str], choices: dict[str, str],
                       run_dir: Path) -> dict[str, Any]:
    """The validated plain config of this run (the single DictConfig → dict boundary)."""
    if composed.resume and (Path(run_dir) / CONFIG_FILE).is_file():
        base = apply_overrides(load_config(Path(run_dir) / CONFIG_FILE), composed, overrides)
    elif composed.restore:
        try:
            _, config_dir = locate_checkpoint(composed.restore)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        base = apply_overrides(load_config(config_dir / CONFIG_FILE), composed, overrides)
    else:
        base = OmegaConf.to_container(composed, resolve=True)
        base["choices"] = choices
    fill_logged_sizes(base)
    config = check_schema(base)
    check_semantics(config)
    return config


def fill_logged_sizes(c: dict[str, Any]) -> None:
    """``env=logged``: N and K come from the logged data's metadata (so config.yaml says what was used)."""
    from recsys_exp.envs import logged

    env = c.get("env") or {}
    path = (env.get("params") or {}).get("path")
    if env.get("name") != logged.NAME or not path:
        return  # validation names a missing offline.path
    try:
        meta = logged.logged_meta(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    env["num_candidates"], env["slate_size"] = meta["num_candidates"], meta["slate_size"]
