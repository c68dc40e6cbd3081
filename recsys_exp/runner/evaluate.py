"""Greedy evaluation of a checkpoint in the simulator, with a confidence interval.

Runs RLlib's own ``SingleAgentEnvRunner`` (so observations and actions go through exactly the
connectors used in training) on the native vector env with ``explore=False``, restored from the
checkpoint's EnvRunner state (RLModule weights + connector state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def mean_ci95(values: np.ndarray) -> tuple[float, float, float, list[float]]:
    """Mean, standard deviation and the Student-t 95% interval of the mean."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    half = float(stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, std, half, [mean - half, mean + half]


def load_policy_state(runner, checkpoint: Path) -> None:
    """Put the checkpoint's policy into an EnvRunner: connector state, then the Learner's RLModule.

    The EnvRunner component of an Algorithm checkpoint holds connector state but not the module
    weights (those live under learner_group/learner/rl_module), so both are loaded.
    """
    from ray.rllib.core import (COMPONENT_ENV_RUNNER, COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP,
                                COMPONENT_RL_MODULE, DEFAULT_MODULE_ID)
    from ray.rllib.core.rl_module.rl_module import RLModule

    runner.restore_from_path(checkpoint / COMPONENT_ENV_RUNNER)
    module_dir = checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    state = RLModule.from_checkpoint(module_dir).get_state(inference_only=True)
    runner.module.set_state(state)


def evaluate_checkpoint(c: dict[str, Any], checkpoint: Path, episodes: int, num_envs: int, seed: int) -> dict[str, Any]:
    """Run ``episodes`` greedy episodes of the policy in ``checkpoint``; returns the evaluation record."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from recsys_exp.envs.rllib import register_envs
    from recsys_exp.runner.build import build_algorithm_config

    register_envs()
    _, config = build_algorithm_config(c)
    # Rounds of `num_envs` users that each play one episode in parallel: a round that stopped at
    # the first `episodes` finished episodes of many users would over-sample short episodes.
    num_envs = min(num_envs, episodes)
    config = config.env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs).debugging(seed=seed)
    runner = SingleAgentEnvRunner(config=config)
    returns, lengths = [], []
    try:
        load_policy_state(runner, Path(checkpoint))
        while len(returns) < episodes:
            done = runner.sample(num_episodes=min(num_envs, episodes - len(returns)), explore=False,
                                 random_actions=False, force_reset=True)
            returns += [ep.get_return() for ep in done]
            lengths += [len(ep) for ep in done]
    finally:
        runner.stop()
    returns, lengths = np.array(returns[:episodes]), np.array(lengths[:episodes])
    mean, std, _, ci = mean_ci95(returns)
    return {"episode_return_mean": mean, "episode_return_std": std, "ci95": ci,
            "episodes": int(len(returns)), "episode_len_mean": float(lengths.mean()),
            "checkpoint": str(checkpoint), "seed": seed}
