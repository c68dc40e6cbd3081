"""What one Hydra job of the CLI does: resolve the config, then hand it to the run lifecycle.

A thin shell over :mod:`recsys_exp.api`'s pieces: config errors become one line on stderr and
exit status 2 (in a ``-m`` multirun they are raised, so Hydra reports them and goes on with
the other jobs). The run itself prints a header and its own lines on a quiet terminal: other
libraries' output goes to ``<run dir>/recsys_exp.log`` (:mod:`recsys_exp.runner.quiet`) unless
``-v`` or ``hydra.verbose=true`` asked for it on the terminal.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from omegaconf import DictConfig

from recsys_exp.config.schema import GROUPS
from recsys_exp.errors import ConfigError


def _hydra_context() -> tuple[Path, list[str], dict[str, str], bool, bool]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if k in GROUPS or k == "experiment"}
    return (Path(hc.runtime.output_dir), list(hc.overrides.task), choices, hc.mode == RunMode.MULTIRUN,
            bool(hc.verbose))


def _output(run_dir: Path, verbose: bool):
    """A quiet terminal for the run (other libraries' output into the job's log file), or nothing
    with ``-v`` / ``hydra.verbose``."""
    from recsys_exp.runner.console import verbose_from_env
    from recsys_exp.runner.quiet import hydra_log_file, quiet_terminal

    if verbose or verbose_from_env():
        return contextlib.nullcontext(None)
    return quiet_terminal(hydra_log_file() or run_dir / "recsys_exp.log")


def run(cfg: DictConfig) -> float | None:
    """Entry point of a job; returns the final greedy evaluation return (the sweep objective)."""
    from recsys_exp.config.compose import resolve_run_config
    from recsys_exp.runner import console, modes  # noqa: F401  (modes registers the built-in modes)
    from recsys_exp.runner.lifecycle import execute, prepare, relay_worker_output

    run_dir, overrides, choices, multirun, verbose = _hydra_context()
    relay_worker_output(True)  # Ray workers' output: into the log file (or with -v onto the terminal)
    log_file = None
    try:
        c = resolve_run_config(cfg, overrides, choices, run_dir)
        with _output(run_dir, verbose) as log_file:
            console.say(console.header(c, run_dir, log_file))
            prepared = prepare(c)
            return execute(c, run_dir, overrides, prepared).result
    except ConfigError as e:  # before Ray, or found while running (e.g. logged data the estimators cannot use)
        if multirun:  # let Hydra report it and go on with the other jobs
            raise
        print(f"recsys_exp: config error: {e}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        if log_file is not None:  # the error follows (Hydra prints it); the libraries' side of it is in the log
            print(f"recsys_exp: the run did not complete; Ray/RLlib/Tune output: {console.display_path(log_file)}",
                  file=sys.stderr, flush=True)
        raise
