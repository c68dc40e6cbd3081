"""The two environment constructors ``make_env`` / ``make_vector_env`` (native or recsim backend)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from recsys_exp.envs.core import SlateEnv, SlateVectorEnv
from recsys_exp.envs.settings import (BACKENDS, ENV_NAMES, ENVS, EnvSettings, check_positive_int,  # noqa: F401
                                      build_simulator, env_param_names, resolve_settings)


def _check_backend(name: str, backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def make_env(name: str, *, backend: str = "native", **kwargs: Any) -> gym.Env:
    """One RecSim environment as a ``gymnasium.Env``.

    ``make_env("interest_evolution", num_candidates=10, slate_size=2, resample_documents=True, seed=0)``.
    Keywords: ``num_candidates`` (N), ``slate_size`` (K), ``resample_documents``, ``seed``
    (seeds every stream, LTS included, unlike the original), ``max_episode_steps`` (truncation;
    default 100 for ``interest_exploration``, none for the others) and any model constant of the
    env (see :func:`env_param_names`). ``backend="recsim"`` runs the original recsim 0.2.4.
    """
    _check_backend(name, backend)
    s = resolve_settings(name, **kwargs)
    if backend == "recsim":
        from recsys_exp.envs.recsim_backend import RecSimReferenceEnv
        return RecSimReferenceEnv(s)
    return SlateEnv(build_simulator(s), s.num_candidates, s.slate_size,
                    s.resample_documents, s.max_episode_steps, s.seed)


def make_vector_env(name: str, num_envs: int = 1, *, backend: str = "native", **kwargs: Any) -> gym.vector.VectorEnv:
    """``num_envs`` users stepped together as a ``gymnasium.vector.VectorEnv`` (NEXT_STEP autoreset).

    Same keywords as :func:`make_env`. The native backend is one numpy batch; ``backend="recsim"``
    is a ``SyncVectorEnv`` of original envs (for fidelity tests and benchmarks).
    """
    _check_backend(name, backend)
    check_positive_int(name, "num_envs", num_envs)
    s = resolve_settings(name, **kwargs)
    if backend == "recsim":
        from recsys_exp.envs.recsim_backend import make_reference_vector_env
        return make_reference_vector_env(s, num_envs)
    return SlateVectorEnv(build_simulator(s), num_envs, s.num_candidates, s.slate_size,
                          s.resample_documents, s.max_episode_steps, s.seed)
