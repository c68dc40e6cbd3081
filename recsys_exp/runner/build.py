"""The one place a validated config becomes an RLlib ``AlgorithmConfig`` and a Tune ``param_space``.

Imports RLlib, so it is only called once a run really starts (never when composing configs).
Everything here runs before ``ray.init``: an RLlib keyword typo is reported as one line.
"""

from __future__ import annotations

import functools
from typing import Any

from recsys_exp.algorithms.registry import ALGORITHMS
from recsys_exp.config.validate import ConfigError
from recsys_exp.envs.rllib import rllib_env_name


def env_config(c: dict[str, Any]) -> dict[str, Any]:
    """The ``env_config`` dict handed to the env creator (``recsys_exp.envs.rllib.env_creator``;
    for ``env=gym`` ``gym_env_creator``: entry point, constructor keywords, horizon and seed).

    A plain dict: it travels to Ray workers, which build the env (and a custom env's parts) themselves.
    """
    env = c["env"]
    if env["name"] == "gym":
        return {"entry_point": env["entry_point"], "kwargs": dict(env["kwargs"]),
                "max_episode_steps": env["max_episode_steps"], "seed": c["seed"]}
    return {"num_candidates": env["num_candidates"], "slate_size": env["slate_size"],
            "resample_documents": env["resample_documents"], "max_episode_steps": env["max_episode_steps"],
            "seed": c["seed"], "flatten_actions": c["algo"]["flatten_actions"], **env["params"]}


def _flatten_observations_connector(env, spaces, device):
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations()


def load_module_weights(checkpoint: str, algorithm, metrics_logger=None, **kwargs) -> None:
    """``on_algorithm_init`` callback: start from the RLModule weights of ``checkpoint``."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

    component = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
    algorithm.restore_from_path(f"{checkpoint}/{component}", component=component)
    if algorithm.env_runner_group is not None:
        algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group,
                                                inference_only=True)


def _call(config, method: str, key: str, kwargs: dict[str, Any]):
    try:
        return getattr(config, method)(**kwargs)
    except TypeError as e:
        bad = str(e).split("argument")[-1].strip(" '")
        raise ConfigError(f"{key}.{bad}: not a parameter of {type(config).__name__}.{method}()") from None


def epsilon_schedule(ex: dict[str, Any]) -> list[tuple[int, float]] | None:
    """The linear epsilon decay ``[(0, initial), (epsilon_timesteps, final)]``, or None unless epsilon_greedy."""
    if ex["type"] != "epsilon_greedy":
        return None
    return [(0, ex["initial_epsilon"]), (ex["epsilon_timesteps"], ex["final_epsilon"])]


def exploration_settings(c: dict[str, Any], config) -> dict[str, Any]:
    """``training()`` keywords that carry the ``exploration`` group into the algorithm."""
    ex, info = c["exploration"], ALGORITHMS[c["algo"]["name"]]
    schedule = epsilon_schedule(ex)
    if info.slate_policy:
        settings: dict[str, Any] = {}
        if "exploration_mode" in vars(config):  # the linear bandits
            settings["exploration_mode"] = {"ucb": "ucb", "thompson": "thompson"}.get(ex["type"], "none")
            settings["alpha"], settings["posterior_scale"] = ex["alpha"], ex["scale"]
        if "ucb_alpha" in vars(config):  # UCB1 (stateless_bandit.py): exploration=none is alpha 0
            settings["ucb_alpha"] = ex["alpha"] if ex["type"] == "ucb" else 0.0
        if "epsilon" in vars(config):  # SlateQ (a DQN config)
            settings["epsilon"] = schedule or [(0, 0.0)]
        return settings
    if schedule:
        return {"epsilon": schedule}
    if "epsilon" in vars(config):  # DQN with exploration=none: act greedily
        return {"epsilon": [(0, 0.0)]}
    return {}


def slate_model_config(c: dict[str, Any]) -> dict[str, Any]:
    """``model_config`` of the slate modules: network sizes, the observation layout and epsilon."""
    from recsys_exp.algorithms.slate_view import slate_layout
    from recsys_exp.config.validate import env_observation_space

    model = c["model"]
    return {"hidden_sizes": list(model["hidden_sizes"]), "activation": model["activation"],
            "embedding_size": model["embedding_size"], "slate_layout": slate_layout(env_observation_space(c)),
            "epsilon": epsilon_schedule(c["exploration"])}


def build_algorithm_config(c: dict[str, Any], restore_checkpoint: str | None = None):
    """``(algorithm class, AlgorithmConfig)`` for a validated config ``c``.

    ``restore_checkpoint``: an Algorithm checkpoint whose RLModule weights the run starts from.
    """
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    algo, model = c["algo"], c["model"]
    info = ALGORITHMS[algo["name"]]
    config = info.load_config_class()()
    if info.slate_policy:
        model_config = slate_model_config(c)
    else:
        model_config = DefaultModelConfig(fcnet_hiddens=list(model["hidden_sizes"]),
                                          fcnet_activation=model["activation"])
    config = (config.environment(env=rllib_env_name(c["env"]["name"]), env_config=env_config(c))
              .framework("torch")
              .debugging(seed=c["seed"], log_level="WARN")
              .learners(num_learners=0)
              .rl_module(model_config=model_config))
    runners = {"gym_env_vectorize_mode": "vector_entry_point", **algo["env_runners"]}
    if algo["flatten_observations"]:
        runners["env_to_module_connector"] = _flatten_observations_connector
    config = _call(config, "env_runners", "algo.env_runners", runners)
    training = {**exploration_settings(c, config), **algo["training"]}
    config = _call(config, "training", "algo.training", training)
    if info.offline and c["offline"]["path"]:
        from pathlib import Path

        config.logged_data_path = str(Path(c["offline"]["path"]).expanduser().resolve())
    if restore_checkpoint:
        config = config.callbacks(on_algorithm_init=functools.partial(load_module_weights, restore_checkpoint))
    try:
        config.validate()
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"algo: RLlib rejected the {algo['name']} config: {str(e).splitlines()[0]}") from None
    return config.algo_class, config
