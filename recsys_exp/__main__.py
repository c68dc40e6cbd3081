"""``python -m recsys_exp [overrides]``: the Hydra entry point (configs in ``conf/``).

Kept thin: composing a config (``--cfg job``) imports neither Ray nor torch.
"""

import os

# Before torch/Ray are imported anywhere: one BLAS/OpenMP thread per process on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from recsys_exp.config.schema import register_configs  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one experiment (or one job of a ``-m`` sweep)."""
    from recsys_exp.runner.app import run

    return run(cfg)


if __name__ == "__main__":
    main()
