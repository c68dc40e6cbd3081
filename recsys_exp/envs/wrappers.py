"""Action-space adapters for algorithms that need one Discrete action (DQN, flattened bandits)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def decode_flat_slate(actions: np.ndarray, num_candidates: int, slate_size: int) -> np.ndarray:
    """Little-endian digits of ``a`` in base N: slate[i] = (a // N**i) % N (RLlib's old wrapper).

    ``actions`` (...,) ints in [0, N**K) -> slates (..., K) int64.
    """
    a = np.asarray(actions, dtype=np.int64)
    return (a[..., None] // num_candidates ** np.arange(slate_size)) % num_candidates


class FlatSlateVectorActions(gym.vector.VectorActionWrapper):
    """Expose a slate vector env's MultiDiscrete([N]*K) actions as Discrete(N**K) per sub-env."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        self.n, self.k = int(env.single_action_space.nvec[0]), len(env.single_action_space.nvec)
        self.single_action_space = gym.spaces.Discrete(self.n ** self.k)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, env.num_envs)

    def actions(self, actions):
        a = np.asarray(actions)
        if not np.issubdtype(a.dtype, np.integer) or a.shape != (self.num_envs,) or a.min() < 0 \
                or a.max() >= self.single_action_space.n:
            raise ValueError(f"flattened slate actions must be {self.num_envs} integers in "
                             f"[0, {self.single_action_space.n}), got {a!r}")
        return decode_flat_slate(a, self.n, self.k)


class FlatSlateActions(gym.ActionWrapper):
    """Single-env version of :class:`FlatSlateVectorActions`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.n, self.k = int(env.action_space.nvec[0]), len(env.action_space.nvec)
        self.action_space = gym.spaces.Discrete(self.n ** self.k)

    def action(self, action):
        if not self.action_space.contains(np.int64(action)) or isinstance(action, (float, bool)):
            raise ValueError(f"flattened slate action must be an integer in [0, {self.action_space.n}), got {action!r}")
        return decode_flat_slate(action, self.n, self.k)
