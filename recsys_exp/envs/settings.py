"""Environment names, their parameters and how one named simulator is built from validated settings.

``ENV_NAMES`` are RecSim's three environments; ``custom`` (:mod:`recsys_exp.envs.custom`) is a
simulator assembled from parts named in its parameters, checked before it is used. The
constructors (:mod:`recsys_exp.envs.registry`) and the reference backend
(:mod:`recsys_exp.envs.recsim_backend`) both build on this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from recsys_exp.envs import custom, interest_evolution, interest_exploration, long_term_satisfaction
from recsys_exp.envs.components import Simulator

BACKENDS = ("native", "recsim")


@dataclass(frozen=True)
class EnvKind:
    """How to build one named environment: its parameter dataclass, builder and default horizon.

    ``check(sim, num_candidates, slate_size, max_episode_steps)`` validates a built simulator whose
    parts come from the user (raises ``ValueError`` naming the part); None for the fixed envs.
    """

    params: type
    build: Callable[[Any], Simulator]
    default_max_episode_steps: int | None
    check: Callable[[Simulator, int, int, int | None], None] | None = None


ENVS: dict[str, EnvKind] = {
    "interest_evolution": EnvKind(interest_evolution.InterestEvolutionParams, interest_evolution.build, None),
    "long_term_satisfaction": EnvKind(long_term_satisfaction.LongTermSatisfactionParams,
                                      long_term_satisfaction.build, None),
    # The original never ends an IExp session; 100 steps is the conventional horizon.
    "interest_exploration": EnvKind(interest_exploration.InterestExplorationParams,
                                    interest_exploration.build, 100),
    # Parts from the config (env=custom and presets built on it, e.g. ecommerce).
    custom.NAME: EnvKind(custom.CustomParams, custom.build, None, custom.check),
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


def _spec(name: str) -> EnvKind:
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; known envs: {', '.join(ENV_NAMES)}, {custom.NAME} "
                         f"(parts named in its params)")
    return ENVS[name]


def check_positive_int(name: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")


def resolve_settings(name: str, num_candidates: int = 10, slate_size: int = 2,
                     resample_documents: bool = True, seed: int | None = 0,
                     max_episode_steps: int | None | str = "default", **params: Any) -> EnvSettings:
    """Validate the constructor arguments of ``name`` and fill in its defaults."""
    spec = _spec(name)
    check_positive_int(name, "num_candidates", num_candidates)
    check_positive_int(name, "slate_size", slate_size)
    if slate_size > num_candidates:
        raise ValueError(f"{name}: slate_size ({slate_size}) must be <= num_candidates ({num_candidates})")
    if max_episode_steps == "default":
        max_episode_steps = spec.default_max_episode_steps
    if max_episode_steps is not None:
        check_positive_int(name, "max_episode_steps", max_episode_steps)
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
