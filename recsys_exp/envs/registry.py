"""Environment names, their parameters, and the two constructors ``make_env`` / ``make_vector_env``.

``ENV_NAMES`` are RecSim's three environments; ``custom`` (:mod:`recsys_exp.envs.custom`) is a
simulator assembled from parts named in its parameters, checked before it is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym

from recsys_exp.envs import custom, interest_evolution, interest_exploration, long_term_satisfaction
from recsys_exp.envs.components import Simulator
from recsys_exp.envs.core import SlateEnv, SlateVectorEnv

BACKENDS = ("native", "recsim")


@dataclass(frozen=True)
class EnvSpec:
    """How to build one named environment: its parameter dataclass, builder and default horizon.

    ``check(sim, num_candidates, slate_size, max_episode_steps)`` validates a built simulator whose
    parts come from the user (raises ``ValueError`` naming the part); None for the fixed envs.
    """

    params: type
    build: Callable[[Any], Simulator]
    default_max_episode_steps: int | None
    check: Callable[[Simulator, int, int, int | None], None] | None = None


ENVS: dict[str, EnvSpec] = {
    "interest_evolution": EnvSpec(interest_evolution.InterestEvolutionParams, interest_evolution.build, None),
    "long_term_satisfaction": EnvSpec(long_term_satisfaction.LongTermSatisfactionParams,
                                      long_term_satisfaction.build, None),
    # The original never ends an IExp session; 100 steps is the conventional horizon.
    "interest_exploration": EnvSpec(interest_exploration.InterestExplorationParams,
                                    interest_exploration.build, 100),
    # Parts from the config (env=custom and presets built on it, e.g. ecommerce).
    custom.NAME: EnvSpec(custom.CustomParams, custom.build, None, custom.check),
}
# RecSim's environments (the fixed ones); custom simulators are built by name "custom".
ENV_NAMES = tuple(name for name in ENVS if name != custom.NAME)


@dataclass(frozen=True)
class EnvSettings:
    """Validated common settings plus the env's own parameter dataclass."""

    name: str
    num_candidates: int
    slate_size: int
    resample_documents: bool
    max_episode_steps: int | None
    seed: int | None
    params: Any


def env_param_names(name: str) -> tuple[str, ...]:
    """The model constants ``name`` accepts as keywords (e.g. ``sensitivity`` for LTS)."""
    return tuple(f.name for f in dataclasses.fields(_spec(name).params))


def _spec(name: str) -> EnvSpec:
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; known envs: {', '.join(ENV_NAMES)}, {custom.NAME} "
                         f"(parts named in its params)")
    return ENVS[name]


def _check_positive_int(name: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")


def resolve_settings(name: str, num_candidates: int = 10, slate_size: int = 2,
                     resample_documents: bool = True, seed: int | None = 0,
                     max_episode_steps: int | None | str = "default", **params: Any) -> EnvSettings:
    """Validate the constructor arguments of ``name`` and fill in its defaults."""
    spec = _spec(name)
    _check_positive_int(name, "num_candidates", num_candidates)
    _check_positive_int(name, "slate_size", slate_size)
    if slate_size > num_candidates:
        raise ValueError(f"{name}: slate_size ({slate_size}) must be <= num_candidates ({num_candidates})")
    if max_episode_steps == "default":
        max_episode_steps = spec.default_max_episode_steps
    if max_episode_steps is not None:
        _check_positive_int(name, "max_episode_steps", max_episode_steps)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{name}: seed must be a non-negative integer or None, got {seed!r}")
    allowed = env_param_names(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(f"{name}: unknown parameter(s) {', '.join(unknown)}; allowed: "
                        f"num_candidates, slate_size, resample_documents, seed, max_episode_steps, "
                        f"backend, {', '.join(allowed)}")
    # YAML gives lists where the dataclasses hold tuples (custom parts take their YAML as is).
    if name != custom.NAME:
        params = {k: _as_tuple(v) for k, v in params.items()}
    return EnvSettings(name, num_candidates, slate_size, bool(resample_documents), max_episode_steps,
                       seed, spec.params(**params))


def build_simulator(s: EnvSettings) -> Simulator:
    """The simulator of resolved settings ``s``, checked against N, K and the horizon if its parts
    are user-chosen (``custom``); raises ``ValueError`` naming the part that does not fit."""
    spec = ENVS[s.name]
    sim = spec.build(s.params)
    if spec.check is not None:
        spec.check(sim, s.num_candidates, s.slate_size, s.max_episode_steps)
    return sim


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


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
    _check_positive_int(name, "num_envs", num_envs)
    s = resolve_settings(name, **kwargs)
    if backend == "recsim":
        from recsys_exp.envs.recsim_backend import make_reference_vector_env
        return make_reference_vector_env(s, num_envs)
    return SlateVectorEnv(build_simulator(s), num_envs, s.num_candidates, s.slate_size,
                          s.resample_documents, s.max_episode_steps, s.seed)
