"""A bring-your-own slate env written directly against gymnasium (``env=gym``, the preset's default).

It uses none of recsys_exp's simulator parts: it only has to expose the slate spaces the slate
algorithms read, ``Dict(user (U,), doc (N, D), response: Dict(click: MultiDiscrete([2]*K)))`` and
a ``MultiDiscrete([N]*K)`` action. Any gymnasium env with these spaces runs with every algorithm.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ToySlateEnv(gym.Env):
    """N candidates with an observed quality q ~ U(0, 1); the user scans the slate top-down,
    clicks slot k with probability q_k and goes on after a skip with probability ``continue_prob``;
    reward = clicks; ``horizon`` steps per session.

    Observation: user (1,) = fraction of the session left; doc (N, 2) = [q, 1]; response.click (K,)
    of the last slate. Action: K candidate positions. Best slate: the K highest qualities in order.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_candidates: int = 5, slate_size: int = 2, horizon: int = 20, continue_prob: float = 0.5):
        if not 0 < slate_size <= num_candidates:
            raise ValueError(f"need 0 < slate_size <= num_candidates, got {slate_size}, {num_candidates}")
        self.n, self.k, self.horizon, self.continue_prob = num_candidates, slate_size, horizon, continue_prob
        self.observation_space = gym.spaces.Dict({
            "user": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            "doc": gym.spaces.Box(0.0, 1.0, (num_candidates, 2), np.float32),
            "response": gym.spaces.Dict({"click": gym.spaces.MultiDiscrete([2] * slate_size)}),
        })
        self.action_space = gym.spaces.MultiDiscrete([num_candidates] * slate_size)
        self._t = 0
        self._quality = np.zeros(num_candidates)

    def _obs(self, click: np.ndarray) -> dict:
        doc = np.ones((self.n, 2), np.float32)
        doc[:, 0] = self._quality
        return {"user": np.array([1.0 - self._t / self.horizon], np.float32), "doc": doc,
                "response": {"click": click.astype(np.int64)}}

    def reset(self, *, seed=None, options=None):
        """A new session with fresh candidates."""
        super().reset(seed=seed)
        self._t = 0
        self._quality = self.np_random.random(self.n)
        return self._obs(np.zeros(self.k)), {}

    def step(self, action):
        """Show the slate; the cascade user clicks at most once."""
        click = np.zeros(self.k)
        for slot, item in enumerate(np.asarray(action)):
            if self.np_random.random() < self._quality[item]:
                click[slot] = 1
                break
            if self.np_random.random() >= self.continue_prob:
                break
        self._t += 1
        self._quality = self.np_random.random(self.n)
        return self._obs(click), float(click.sum()), self._t >= self.horizon, False, {}
