"""Registration of the environments with Ray Tune / RLlib under ``recsim_<name>``.

RLlib calls the creator with the ``env_config`` dict for a single env and with
``env_config | {"num_envs": n}`` for a vector env; ``flatten_actions: true`` in the env config
exposes slates as one Discrete(N**K) action (for DQN). With
``config.env_runners(gym_env_vectorize_mode="vector_entry_point")`` the native
:class:`~recsys_exp.envs.core.SlateVectorEnv` is used directly, one numpy batch per EnvRunner.
Per-EnvRunner seeds come from RLlib: it resets each runner's env with
``seed = config.seed + worker_index`` (+1e6 for evaluation runners).
"""

from __future__ import annotations

from typing import Any

from recsys_exp.envs.registry import ENV_NAMES, make_env, make_vector_env
from recsys_exp.envs.wrappers import FlatSlateActions, FlatSlateVectorActions

_PREFIX = "recsim_"


def rllib_env_name(name: str) -> str:
    """The name under which ``name`` is registered with Ray Tune (``recsim_<name>``)."""
    return _PREFIX + name


def env_creator(name: str):
    """A Tune env creator for ``name``: builds a vector env when ``num_envs`` is in the config."""

    def create(env_config: dict[str, Any]):
        kwargs = dict(env_config)
        num_envs = kwargs.pop("num_envs", None)
        flatten_actions = kwargs.pop("flatten_actions", False)
        if num_envs is None:
            env = make_env(name, **kwargs)
            return FlatSlateActions(env) if flatten_actions else env
        venv = make_vector_env(name, num_envs, **kwargs)
        return FlatSlateVectorActions(venv) if flatten_actions else venv

    return create


def register_envs() -> list[str]:
    """Register every env with ``ray.tune.register_env``; returns the registered names."""
    from ray.tune.registry import register_env  # lazy: composing configs must not import Ray

    names = []
    for name in ENV_NAMES:
        register_env(rllib_env_name(name), env_creator(name))
        names.append(rllib_env_name(name))
    return names
