"""One simulation engine: a :class:`~recsys_exp.runner.policy.Policy` playing episodes in its env.

Episodes are played in rounds of ``num_envs`` simulated users (``spec.vector_env(num_envs, seed)``)
that each play exactly one episode; a round ends when all of its users are done, and the last
round uses only as many users as episodes are still missing. Collecting "the first E episodes to
finish" instead would over-sample short episodes. The envs use gymnasium's NEXT_STEP autoreset: the
step after a sub-env's episode ends only resets it, so finished users are ignored until the round
ends. Both ``mode=evaluate`` (evaluation.json) and the simulated truth of off-policy evaluation
(ope.json ``simulated``) come from :func:`simulate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episodes:
    """Per-episode results: ``returns`` (E,) float64 (Σ_t γ^t r_t) and ``lengths`` (E,) int64."""

    returns: np.ndarray
    lengths: np.ndarray


def simulate(policy, episodes: int, num_envs: int, seed: int, explore: bool = False, gamma: float = 1.0,
             t: int = 0, env=None) -> Episodes:
    """Play ``episodes`` episodes of ``policy`` in rounds of ``min(num_envs, episodes)`` users.

    ``explore``: sample from the exploring policy (its ε / distribution at env step ``t``, fixed for
    the whole simulation) instead of acting greedily. ``gamma``: discount of the returns
    (1 = undiscounted). ``seed`` seeds the env's first reset and torch (the policies' own draws:
    random slates, ε, tie-breaks). ``env``: a vector env to use instead of
    ``policy.spec.vector_env(num_envs, seed)`` (it must have ``num_envs`` sub-envs).
    """
    import torch

    if episodes < 1:
        raise ValueError(f"episodes={episodes}: must be >= 1")
    num_envs = min(num_envs, episodes)
    own_env = env is None
    if own_env:
        env = policy.spec.vector_env(num_envs, seed)
    torch.manual_seed(seed)
    returns, lengths = [], []
    try:
        obs, _ = env.reset(seed=seed)
        b = env.num_envs
        while len(returns) < episodes:
            users = min(b, episodes - len(returns))  # sub-envs 0..users-1 play this round's episodes
            ret = np.zeros(b)
            length = np.zeros(b, dtype=np.int64)
            running = np.arange(b) < users
            while running.any():
                actions = policy.act(obs, explore=explore, t=t)
                obs, reward, terminated, truncated, _ = env.step(actions)
                ret[running] += gamma ** length[running] * np.asarray(reward, dtype=np.float64)[running]
                length[running] += 1
                running &= ~(np.asarray(terminated) | np.asarray(truncated))
            returns += ret[:users].tolist()
            lengths += length[:users].tolist()
            if len(returns) < episodes:
                obs, _ = env.reset()  # the next round's users (streams continue; not reseeded)
    finally:
        if own_env:
            env.close()
    return Episodes(np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.int64))
