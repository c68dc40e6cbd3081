"""``python -m recsys_exp [overrides]`` (or ``recsys-exp``): the Hydra entry point (configs in ``conf/``).

``--help`` / ``-h`` prints recsys_exp's own help (config groups and options, modes, common commands;
:mod:`recsys_exp.runner.cli_help`), ``--hydra-help`` Hydra's. ``-v`` / ``--verbose`` keeps Ray's,
RLlib's, Tune's and W&B's output on the terminal instead of the run's log file.

Kept thin: composing a config (``--cfg job``) imports neither Ray nor torch.
"""

import os
import sys
from pathlib import Path

# Before torch/Ray are imported anywhere: one BLAS/OpenMP thread per process on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys_exp.config.schema import register_configs  # noqa: E402

register_configs()

# An absolute path: a relative one would be resolved against the calling module, which the
# ``recsys-exp`` console script makes ``recsys_exp.__main__`` (Hydra then looks for a package "conf").
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
HELP_FLAGS = ("--help", "-h")
VERBOSE_FLAGS = ("-v", "--verbose")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """Run one experiment (or one job of a ``-m`` sweep)."""
    from recsys_exp.runner.app import run

    return run(cfg)


def main() -> float | None:
    """The command line: recsys_exp's ``--help`` and ``-v``, everything else to Hydra."""
    args = sys.argv[1:]
    if any(a in HELP_FLAGS for a in args):
        from recsys_exp.runner.cli_help import help_text

        try:
            print(help_text(), flush=True)
        except BrokenPipeError:  # e.g. piped into head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None
    if any(a in VERBOSE_FLAGS for a in args):
        os.environ["RECSYS_EXP_VERBOSE"] = "1"  # read by recsys_exp.runner.console.verbose_from_env
        sys.argv = [sys.argv[0], *(a for a in args if a not in VERBOSE_FLAGS)]
    return hydra_main()


if __name__ == "__main__":
    main()
