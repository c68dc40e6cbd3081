"""Registration of the environments with Ray Tune / RLlib under ``recsim_<name>``.

RLlib calls the creator with the ``env_config`` dict for a single env and with
``env_config | {"num_envs": n}`` for a vector env; ``flatten_actions: true`` in the env config
exposes slates as one Discrete(N**K) action (for DQN). With
``config.env_runners(gym_env_vectorize_mode="vector_entry_point")`` the native
:class:`~recsys_exp.envs.core.SlateVectorEnv` is used directly, one numpy batch per EnvRunner.
Per-EnvRunner seeds come from RLlib: it resets each runner's env with
``seed = config.seed + worker_index`` (+1e6 for evaluation runners).

Besides RecSim's envs, ``recsim_custom`` (a simulator from parts, :mod:`recsys_exp.envs.custom`),
``recsim_gym`` (any gymnasium env, :mod:`recsys_exp.envs.gym_env`; env config
``entry_point``, ``kwargs``, ``max_episode_steps``, ``seed``) and ``recsim_logged`` (the spaces of
logged data, no simulator: :mod:`recsys_exp.envs.logged`) are registered too.
"""

from __future__ import annotations

from typing import Any

from recsys_exp.envs import custom, gym_env, logged
from recsys_exp.envs.settings import ENV_NAMES
from recsys_exp.envs.spec import RLLIB_PREFIX, from_rllib_env_config


def rllib_env_name(name: str) -> str:
    """The name under which ``name`` is registered with Ray Tune (``recsim_<name>``)."""
    return RLLIB_PREFIX + name


def env_creator(name: str):
    """A Tune env creator for ``name``: the env of the :class:`~recsys_exp.envs.spec.EnvSpec` the
    ``env_config`` describes; a vector env when ``num_envs`` is in the config."""

    def create(env_config: dict[str, Any]):
        spec, flatten_actions = from_rllib_env_config(rllib_env_name(name), env_config)
        num_envs = env_config.get("num_envs")
        if num_envs is None:
            return spec.env(flatten_actions=flatten_actions)
        return spec.vector_env(num_envs, flatten_actions=flatten_actions)

    return create


def register_envs() -> list[str]:
    """Register every env with ``ray.tune.register_env``; returns the names of RecSim's envs
    (``recsim_custom`` and ``recsim_gym`` are registered as well)."""
    from ray.tune.registry import register_env  # lazy: composing configs must not import Ray

    names = []
    for name in ENV_NAMES:
        register_env(rllib_env_name(name), env_creator(name))
        names.append(rllib_env_name(name))
    register_env(rllib_env_name(custom.NAME), env_creator(custom.NAME))
    register_env(rllib_env_name(gym_env.NAME), env_creator(gym_env.NAME))
    register_env(rllib_env_name(logged.NAME), env_creator(logged.NAME))
    return names
