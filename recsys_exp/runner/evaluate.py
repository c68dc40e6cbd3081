"""Greedy evaluation of a policy in the simulator, with a confidence interval.

The checkpoint becomes a :class:`~recsys_exp.runner.policy.Policy` (:mod:`recsys_exp.runner.policy`:
the module rebuilt from the run's config with the checkpoint's learner RLModule weights, observations
flattened exactly like RLlib's ``FlattenObservations``), and plays in the one simulation engine
(:func:`recsys_exp.runner.simulate.simulate`) with ``explore=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys_exp.stats import mean_ci95


def evaluate_policy(policy, episodes: int, num_envs: int, seed: int) -> dict[str, Any]:
    """``episodes`` greedy, undiscounted episodes of ``policy`` (rounds of ``num_envs`` users);
    returns ``episode_return_mean``, ``episode_return_std``, ``ci95`` (Student-t), ``episodes``,
    ``episode_len_mean`` and ``seed``."""
    from recsys_exp.runner.simulate import simulate

    result = simulate(policy, episodes, num_envs, seed, explore=False)
    mean, std, _, ci = mean_ci95(result.returns)
    return {"episode_return_mean": mean, "episode_return_std": std, "ci95": ci,
            "episodes": int(len(result.returns)), "episode_len_mean": float(result.lengths.mean()), "seed": seed}


def evaluate_checkpoint(c: dict[str, Any], checkpoint: Path, episodes: int, num_envs: int, seed: int) -> dict[str, Any]:
    """Run ``episodes`` greedy episodes of the policy in ``checkpoint`` (config ``c``); returns the
    evaluation record (:func:`evaluate_policy`'s dict plus ``checkpoint``)."""
    from recsys_exp.runner.policy import Policy

    ev = evaluate_policy(Policy.from_checkpoint(c, Path(checkpoint)), episodes, num_envs, seed)
    return {**{k: v for k, v in ev.items() if k != "seed"}, "checkpoint": str(checkpoint), "seed": seed}
