"""What one Hydra job of the CLI does: resolve the config, then hand it to the run lifecycle.

A thin shell over :mod:`recsys_exp.api`'s pieces: config errors become one line on stderr and
exit status 2 (in a ``-m`` multirun they are raised, so Hydra reports them and goes on with
the other jobs).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from recsys_exp.config.schema import GROUPS
from recsys_exp.errors import ConfigError


def _hydra_context() -> tuple[Path, list[str], dict[str, str], bool]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if k in GROUPS or k == "experiment"}
    return (Path(hc.runtime.output_dir), list(hc.overrides.task), choices, hc.mode == RunMode.MULTIRUN)


def run(cfg: DictConfig) -> float | None:
    """Entry point of a job; returns the final greedy evaluation return (the sweep objective)."""
    from recsys_exp.config.compose import resolve_run_config
    from recsys_exp.runner import modes  # noqa: F401  (registers the built-in modes)
    from recsys_exp.runner.lifecycle import execute, prepare

    run_dir, overrides, choices, multirun = _hydra_context()
    try:
        c = resolve_run_config(cfg, overrides, choices, run_dir)
        prepared = prepare(c)
        return execute(c, run_dir, overrides, prepared).result
    except ConfigError as e:  # before Ray, or found while running (e.g. logged data the estimators cannot use)
        if multirun:  # let Hydra report it and go on with the other jobs
            raise
        print(f"recsys_exp: config error: {e}", file=sys.stderr)
        sys.exit(2)
