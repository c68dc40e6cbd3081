"""The Python API for notebooks, scripts and tests; the CLI (``python -m recsys_exp``) is a thin shell
over the same pieces.

    import recsys_exp
    c = recsys_exp.compose(["algo=lin_ucb", "stop.timesteps=5000"])      # validated config (dict)
    result = recsys_exp.run(c)                       # or run([...overrides]); -> RunResult
    policy = recsys_exp.load_policy(result.run_dir)  # a run dir, sweep dir or checkpoint dir
    slate = policy.recommend(obs)                    # one env observation -> a slate (K,)

Nothing here exits the process: bad configs raise :class:`recsys_exp.ConfigError`. A run started
from Python uses the Ray of the session if one is running (and leaves it running), else starts
one for the run and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from recsys_exp.config.schema import CONF_DIR
from recsys_exp.errors import ConfigError


@contextlib.contextmanager
def _hydra(config_dir: str | Path | None) -> Iterator[None]:
    """Hydra's global state initialised on ``config_dir`` (``conf/`` by default) for the block;
    reused if the caller (the CLI, or an enclosing block) initialised it already."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from recsys_exp.config.schema import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized() and config_dir is None:
        yield
        return
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir or CONF_DIR).resolve()), version_base="1.3"):
        yield


def _compose(overrides: Sequence[str]) -> tuple[Any, dict[str, str], Path]:
    """Hydra's composition of ``overrides``: (config without the hydra node, chosen options, run dir)."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from recsys_exp.config.schema import GROUPS

    try:
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_first_line(e)) from None
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if k in GROUPS or k == "experiment"}
    run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
    with _writable(cfg):
        del cfg["hydra"]
    return cfg, choices, run_dir


@contextlib.contextmanager
def _writable(cfg):
    from omegaconf import open_dict

    with open_dict(cfg):
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # Hydra puts the useful part ("Key 'x' is not in struct") after its own first line.
    return "; ".join(lines[:2]) if len(lines) > 1 else lines[0]


def compose(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> dict[str, Any]:
    """The validated run config of ``overrides`` (exactly what ``python -m recsys_exp <overrides>``
    runs), as a plain dict. ``config_dir``: another primary config dir than the package's ``conf/``
    (a team's own config dir is usually added with ``hydra.searchpath=[file://...]`` instead).
    Raises :class:`ConfigError` with one line naming the key."""
    return _resolve(overrides, config_dir)[0]


def _resolve(overrides: Sequence[str], config_dir, run_dir: Path | None = None) -> tuple[dict[str, Any], Path]:
    from recsys_exp.config.compose import resolve_run_config

    with _hydra(config_dir):
        cfg, choices, default_dir = _compose(overrides)
        run_dir = Path(run_dir) if run_dir is not None else default_dir
        return resolve_run_config(cfg, list(overrides), choices, run_dir), run_dir


def run(overrides_or_config: Sequence[str] | dict[str, Any] = (), run_dir: str | Path | None = None,
        config_dir: str | Path | None = None):
    """Run one experiment in-process; returns a :class:`~recsys_exp.runner.lifecycle.RunResult`
    (``run_dir``, ``status``, ``summary``, ``checkpoint``, ``result``).

    ``overrides_or_config``: command-line overrides (``["algo=lin_ucb", "seed=1"]``) or a config
    from :func:`compose`. ``run_dir``: where the run writes (default: the CLI's
    ``outputs/<date>/<time>``, or ``$RECSYS_OUT/<date>/<time>``). Raises :class:`ConfigError` for a
    bad config, before anything is written or Ray starts; a failed run re-raises its error after
    ``run.json`` records it.
    """
    from recsys_exp.runner import modes  # noqa: F401  (registers the built-in modes)
    from recsys_exp.runner.lifecycle import execute, prepare

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if isinstance(overrides_or_config, dict):
        from recsys_exp.config.validate import check_schema, check_semantics

        c = check_schema(overrides_or_config)
        check_semantics(c)
        overrides: list[str] = []
        if run_dir is None:
            out = os.environ.get("RECSYS_OUT", "outputs")
            run_dir = Path(out) / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")
    else:
        overrides = list(overrides_or_config)
        c, run_dir = _resolve(overrides, config_dir, run_dir)
    with _hydra(config_dir):  # offline_study composes its stages' algorithms
        prepared = prepare(c)
        return execute(c, Path(run_dir), overrides, prepared)


def load_policy(path: str | Path):
    """The policy of a run dir, sweep dir or RLlib checkpoint dir (its saved config decides the
    env and algorithm); ``policy.recommend(obs)`` maps one env observation to a slate."""
    from recsys_exp.runner.policy import load_policy as _load

    return _load(path)
