"""The one place a validated config becomes an RLlib ``AlgorithmConfig``.

Imports RLlib, so it is only called once a run really starts (never when composing configs).
Everything here runs before ``ray.init``: an RLlib keyword typo is reported as one line. The
algorithm's plugin (:mod:`recsys_exp.algorithms.plugin`) supplies its config class, model config
and exploration keywords; the env's :class:`~recsys_exp.envs.spec.EnvSpec` its RLlib name and
``env_config``. (Tune's ``param_space`` of a sweep is built in :mod:`recsys_exp.sweep.run`.)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from recsys_exp.algorithms.plugin import check_keywords, load_plugin
from recsys_exp.envs.spec import env_spec
from recsys_exp.errors import ConfigError


def _flatten_observations_connector(env, spaces, device):
    from recsys_exp.runner.flatten_connector import BatchedFlattenObservations

    return BatchedFlattenObservations(as_learner_connector=False)


def seed_replay_buffer(algorithm, metrics_logger=None, **kwargs) -> None:
    """``on_algorithm_init`` callback: seed the replay buffer's sampling RNG with the run's seed.

    RLlib 2.58's episode replay buffers draw from ``np.random.default_rng(seed=None)`` (set in their
    ``__init__``, no way to pass a seed), so same-seed runs of the DQN family (slateq, dqn,
    cql_dqn) replayed different batches and learned different policies. The seed is read from the
    built algorithm's config, so each trial of a sweep over seeds gets its own."""
    import numpy as np

    buffer = getattr(algorithm, "local_replay_buffer", None)
    if buffer is not None and hasattr(buffer, "rng"):
        buffer.rng = np.random.default_rng(algorithm.config.seed)


def load_module_weights(checkpoint: str, algorithm, metrics_logger=None, **kwargs) -> None:
    """``on_algorithm_init`` callback: start from the RLModule weights of ``checkpoint``."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

    component = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
    algorithm.restore_from_path(f"{checkpoint}/{component}", component=component)
    if algorithm.env_runner_group is not None:
        algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group,
                                                inference_only=True)


def build_algorithm_config(c: dict[str, Any], restore_checkpoint: str | None = None):
    """``(algorithm class, AlgorithmConfig)`` for a validated config ``c``.

    ``restore_checkpoint``: an Algorithm checkpoint whose RLModule weights the run starts from.
    """
    algo = c["algo"]
    plugin, spec = load_plugin(algo), env_spec(c)
    # With offline.path, training reads the logged rows (the offline algorithms always do; the
    # bandits then fit their statistics to the logs instead of sampling the env).
    from_logs = bool(c["offline"]["path"]) and c["mode"] == "train" and plugin.learns_from_logs
    config_class = plugin.load_config_class(logged=from_logs)
    config = config_class()
    config = (config.environment(env=spec.rllib_name, env_config=spec.rllib_env_config(algo["flatten_actions"]))
              .framework("torch")
              .debugging(seed=c["seed"], log_level="WARN")
              .learners(num_learners=0)
              .rl_module(model_config=plugin.model_config(c, spec)))
    runners = {"gym_env_vectorize_mode": "vector_entry_point", **algo["env_runners"]}
    if algo["flatten_observations"]:
        runners["env_to_module_connector"] = _flatten_observations_connector
    check_keywords(config_class, "env_runners", "algo.env_runners", algo["env_runners"])
    config = config.env_runners(**runners)
    check_keywords(config_class, "training", "algo.training", algo["training"])
    config = config.training(**{**plugin.exploration_settings(c["exploration"]), **algo["training"]})
    if from_logs:
        config.logged_data_path = str(Path(c["offline"]["path"]).expanduser().resolve())
        # env=logged: the sessions held out for the final off-policy evaluation are never trained on.
        config.logged_holdout = c["offline"]["eval_fraction"] if spec.is_logged else 0.0
    on_init = [seed_replay_buffer]
    if restore_checkpoint:
        on_init.append(functools.partial(load_module_weights, restore_checkpoint))
    config = config.callbacks(on_algorithm_init=on_init)
    try:
        config.validate()
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"algo: RLlib rejected the {algo['name']} config: {str(e).splitlines()[0]}") from None
    return config.algo_class, config
