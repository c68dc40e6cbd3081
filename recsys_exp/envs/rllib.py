"""Registration of the environments with Ray Tune / RLlib under ``recsim_<name>``.

RLlib calls the creator with the ``env_config`` dict for a single env and with
``env_config | {"num_envs": n}`` for a vector env; ``flatten_actions: true`` in the env config
exposes slates as one Discrete(N**K) action (for DQN). With
``config.env_runners(gym_env_vectorize_mode="vector_entry_point")`` the native
:class:`~recsys_exp.envs.core.SlateVectorEnv` is used directly, one numpy batch per EnvRunner.
Per-EnvRunner seeds come from RLlib: it resets each runner's env with
``seed = config.seed + worker_index`` (+1e6 for evaluation runners).

Besides RecSim's envs, ``recsim_custom`` (a simulator from parts, :mod:`recsys_exp.envs.custom`)
and ``recsim_gym`` (any gymnasium env, :mod:`recsys_exp.envs.gym_env`; env config
``entry_point``, ``kwargs``, ``max_episode_steps``, ``seed``) are registered too.
"""

from __future__ import annotations

from typing import Any

from recsys_exp.envs import custom, gym_env
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


def gym_env_creator(env_config: dict[str, Any]):
    """Tune env creator of ``env=gym``: the user's env, a ``SyncVectorEnv`` of them with ``num_envs``.

    ``flatten_actions`` is ignored: a bring-your-own env keeps its own action space.
    """
    kwargs = dict(env_config)
    num_envs = kwargs.pop("num_envs", None)
    kwargs.pop("flatten_actions", None)
    if num_envs is None:
        return gym_env.make_gym_env(**kwargs)
    return gym_env.make_gym_vector_env(num_envs=num_envs, **kwargs)


def register_envs() -> list[str]:
    """Register every env with ``ray.tune.register_env``; returns the names of RecSim's envs
    (``recsim_custom`` and ``recsim_gym`` are registered as well)."""
    from ray.tune.registry import register_env  # lazy: composing configs must not import Ray

    names = []
    for name in ENV_NAMES:
        register_env(rllib_env_name(name), env_creator(name))
        names.append(rllib_env_name(name))
    register_env(rllib_env_name(custom.NAME), env_creator(custom.NAME))
    register_env(rllib_env_name(gym_env.NAME), gym_env_creator)
    return names
