"""One env spec: the single object that says what env a run uses, built once from the ``env`` group.

Validation, the RLlib build, recording, off-policy evaluation, serving and the JSON-lines import
all ask an :class:`EnvSpec` for the env's sizes, spaces, slate layout and constructors instead of
building the env themselves. :meth:`EnvSpec.from_config` memoises specs by their settings, so a
run (its validation, build and evaluation) builds each configured env's spaces once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from recsys_exp.envs import gym_env, logged

RLLIB_PREFIX = "recsim_"  # RLlib / Tune registry names: recsim_<env name>
_CACHE: OrderedDict[str, "EnvSpec"] = OrderedDict()
_CACHE_SIZE = 64


@dataclass(frozen=True)
class EnvSpec:
    """What env a run uses: its name, sizes, parameters, spaces and slate layout.

    ``name`` is one of RecSim's envs, ``custom`` (parts in ``params``), ``gym`` (``entry_point`` and
    constructor ``kwargs``) or ``logged`` (no simulator: spaces from the metadata of the logged data
    at ``params["path"]``, :mod:`recsys_exp.envs.logged`). ``seed`` seeds the env's streams. Spaces
    are built lazily, once.
    """

    name: str
    num_candidates: int = 10
    slate_size: int = 2
    resample_documents: bool = True
    max_episode_steps: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    entry_point: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_config(cls, env: Mapping[str, Any], seed: int) -> "EnvSpec":
        """The spec of a config's ``env`` group (memoised: equal settings give the same object)."""
        key = json.dumps([dict(env), seed], sort_keys=True, default=str)
        spec = _CACHE.get(key)
        if spec is None:
            spec = cls(name=env["name"], num_candidates=env.get("num_candidates", 10),
                       slate_size=env.get("slate_size", 2), resample_documents=env.get("resample_documents", True),
                       max_episode_steps=env.get("max_episode_steps"), params=dict(env.get("params") or {}),
                       entry_point=env.get("entry_point"), kwargs=dict(env.get("kwargs") or {}), seed=seed)
            _CACHE[key] = spec
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return spec

    # --- what kind of env ---------------------------------------------------------------
    @property
    def is_gym(self) -> bool:
        """A bring-your-own gymnasium env (its own spaces, no slate structure assumed)."""
        return self.name == gym_env.NAME

    @property
    def is_logged(self) -> bool:
        """Known only from logged data (``env=logged``): spaces, no simulator."""
        return self.name == logged.NAME

    @property
    def rllib_name(self) -> str:
        """The name the env is registered under with Ray Tune (``recsys_exp.envs.rllib``)."""
        return RLLIB_PREFIX + self.name

    # --- building -------------------------------------------------------------------------
    def check(self) -> "EnvSpec":
        """Build the env once as its constructor will and keep its spaces; raises ``ValueError``
        (``custom.PartError``, ``gym_env.GymEnvError``) or ``TypeError`` saying what does not fit."""
        _ = self.spaces
        return self

    @cached_property
    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """(single observation space, native action space) of the env (one env built, then closed)."""
        if self.is_gym:
            return gym_env.env_spaces(self.entry_point, dict(self.kwargs))
        if self.is_logged:
            env = logged.LoggedOnlyEnv(self.logged_meta)
            return env.observation_space, env.action_space
        venv = self.vector_env(1)
        try:
            return venv.single_observation_space, venv.single_action_space
        finally:
            venv.close()

    @cached_property
    def logged_meta(self) -> dict[str, Any]:
        """``env=logged``: the metadata of the data at ``params["path"]``, checked against N and K;
        ``ValueError`` / ``FileNotFoundError`` naming the path when it does not fit."""
        path = self.params.get("path")
        if not path:
            raise ValueError("env=logged takes its sizes and spaces from logged data: set offline.path=<Parquet "
                             "file or dir>")
        meta = logged.logged_meta(path)
        have = {"num_candidates": meta.get("num_candidates"), "slate_size": meta.get("slate_size")}
        want = {"num_candidates": self.num_candidates, "slate_size": self.slate_size}
        if have != want:
            bad = ", ".join(f"env.{k}={want[k]} but the data has {have[k]}" for k in want if want[k] != have[k])
            raise ValueError(f"offline.path={path}: {bad} (env=logged takes them from the data)")
        return meta

    @property
    def observation_space(self) -> gym.Space:
        """The observation space of one env (a Dict of user / doc / response for slate envs)."""
        return self.spaces[0]

    @property
    def action_space(self) -> gym.Space:
        """The native action space of one env (``MultiDiscrete([N]*K)`` for slate envs)."""
        return self.spaces[1]

    @cached_property
    def slate_layout(self) -> dict[str, Any]:
        """Offsets of user, doc and click in the flattened observation
        (:func:`recsys_exp.envs.layout.slate_layout`); ``ValueError`` if not a slate env."""
        from recsys_exp.envs.layout import slate_layout

        return slate_layout(self.observation_space)

    def vector_env(self, num_envs: int, seed: int | None = None, flatten_actions: bool = False) -> gym.vector.VectorEnv:
        """``num_envs`` users stepped together (no Ray): the native slate env (``flatten_actions``: slates as
        one ``Discrete(N**K)`` action), or a ``SyncVectorEnv`` of the user's env for ``gym``."""
        seed = self.seed if seed is None else seed
        if self.is_gym:
            return gym_env.make_gym_vector_env(self.entry_point, num_envs, dict(self.kwargs), self.max_episode_steps,
                                               seed)
        from recsys_exp.envs.wrappers import FlatSlateVectorActions

        if self.is_logged:  # spaces only: reset/step raise NoSimulator
            meta = self.logged_meta
            venv = gym.vector.SyncVectorEnv([lambda: logged.LoggedOnlyEnv(meta)] * num_envs,
                                            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        else:
            from recsys_exp.envs.registry import make_vector_env

            venv = make_vector_env(self.name, num_envs=num_envs, **self._slate_kwargs(seed))
        return FlatSlateVectorActions(venv) if flatten_actions else venv

    def env(self, seed: int | None = None, flatten_actions: bool = False) -> gym.Env:
        """One env (the gymnasium API), seeded like :meth:`vector_env`."""
        seed = self.seed if seed is None else seed
        if self.is_gym:
            return gym_env.make_gym_env(self.entry_point, dict(self.kwargs), self.max_episode_steps, seed)
        from recsys_exp.envs.wrappers import FlatSlateActions

        if self.is_logged:
            env = logged.LoggedOnlyEnv(self.logged_meta)
        else:
            from recsys_exp.envs.registry import make_env

            env = make_env(self.name, **self._slate_kwargs(seed))
        return FlatSlateActions(env) if flatten_actions else env

    def first_docs(self) -> np.ndarray:
        """(N, D) float32: the candidates' features of one observation, from the simulator's first
        reset (at the spec's seed) or, with ``env=logged``, the first logged row."""
        if self.is_logged:
            import pyarrow.parquet as pq

            first = pq.ParquetFile(logged.data_files(self.params["path"])[0])
            return np.asarray(first.read_row_group(0, columns=["docs"]).column(0)[0].as_py(), dtype=np.float32)
        venv = self.vector_env(1)
        try:
            return np.asarray(venv.reset(seed=self.seed)[0]["doc"][0], dtype=np.float32)
        finally:
            venv.close()

    def _slate_kwargs(self, seed: int | None) -> dict[str, Any]:
        return {"num_candidates": self.num_candidates, "slate_size": self.slate_size,
                "resample_documents": self.resample_documents, "max_episode_steps": self.max_episode_steps,
                "seed": seed, **self.params}

    def rllib_env_config(self, flatten_actions: bool = False) -> dict[str, Any]:
        """The plain ``env_config`` dict RLlib hands to the env creator in every worker
        (:func:`from_rllib_env_config` turns it back into this spec)."""
        if self.is_gym:
            return {"entry_point": self.entry_point, "kwargs": dict(self.kwargs),
                    "max_episode_steps": self.max_episode_steps, "seed": self.seed}
        return {"num_candidates": self.num_candidates, "slate_size": self.slate_size,
                "resample_documents": self.resample_documents, "max_episode_steps": self.max_episode_steps,
                "seed": self.seed, "flatten_actions": flatten_actions, **self.params}


def from_rllib_env_config(env: str, env_config: Mapping[str, Any]) -> tuple[EnvSpec, bool]:
    """(spec, flatten_actions) from RLlib's ``config.env`` name and ``env_config`` (inverse of
    :meth:`EnvSpec.rllib_env_config`), for code that only sees an ``AlgorithmConfig``."""
    name = env[len(RLLIB_PREFIX):] if env.startswith(RLLIB_PREFIX) else env
    kwargs = dict(env_config)
    kwargs.pop("num_envs", None)
    flatten = bool(kwargs.pop("flatten_actions", False))
    seed = kwargs.pop("seed", 0)
    if name == gym_env.NAME:
        return EnvSpec.from_config({"name": name, **kwargs}, seed), False
    common = {k: kwargs.pop(k) for k in ("num_candidates", "slate_size", "resample_documents", "max_episode_steps")
              if k in kwargs}
    return EnvSpec.from_config({"name": name, **common, "params": kwargs}, seed), flatten


__all__ = ["EnvSpec", "from_rllib_env_config", "RLLIB_PREFIX"]


def env_spec(c: Mapping[str, Any]) -> EnvSpec:
    """The :class:`EnvSpec` of a run config (its ``env`` group and ``seed``), memoised."""
    return EnvSpec.from_config(c["env"], c["seed"])
