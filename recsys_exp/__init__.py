"""recsys_exp: reinforcement-learning recommender experiments on RecSim, RLlib, Tune and Hydra.

The Python API (:mod:`recsys_exp.api`): ``compose(overrides)``, ``run(overrides_or_config)``,
``load_policy(path)``; bad configs raise ``ConfigError``. Imported lazily: ``import recsys_exp``
loads neither Hydra, Ray nor torch.
"""

from recsys_exp.errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "compose", "run", "load_policy", "RunResult"]


def __getattr__(name: str):
    if name in ("compose", "run", "load_policy"):
        from recsys_exp import api

        return getattr(api, name)
    if name == "RunResult":
        from recsys_exp.runner.lifecycle import RunResult

        return RunResult
    raise AttributeError(f"module 'recsys_exp' has no attribute {name!r}")
