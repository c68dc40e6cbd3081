"""The contextual-bandit view of a slate observation: one feature row per candidate.

A linear bandit scores candidate j as θᵀx_j. With x_j = [1, doc_j, user] alone a linear score
cannot express user–document affinity (in Interest Evolution the click probability depends on
u[c_j], the user's interest in the doc's cluster), so the view also includes the outer product
user ⊗ doc_j, flattened: for IEv that term holds u[c_j] at position (c_j, c_j).

Row layout (width 1 + D + U + U·D): ``[1, doc_j (D), user (U), vec(user ⊗ doc_j) (U·D)]``;
for envs without observed user features (LTS, IExp) it is ``[1, doc_j]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def bandit_feature_dim(user_dim: int, doc_dim: int) -> int:
    """Width of one candidate's feature row."""
    return 1 + doc_dim + (user_dim + user_dim * doc_dim if user_dim else 0)


def bandit_features(obs: dict[str, Any]) -> np.ndarray:
    """Per-candidate features from an observation.

    ``obs["user"]`` (..., U) and ``obs["doc"]`` (..., N, D) with any leading batch shape;
    returns float32 (..., N, bandit_feature_dim(U, D)).
    """
    user = np.asarray(obs["user"], dtype=np.float32)
    doc = np.asarray(obs["doc"], dtype=np.float32)
    n = doc.shape[-2]
    parts = [np.ones(doc.shape[:-1] + (1,), np.float32), doc]
    if user.shape[-1]:
        user_rows = np.broadcast_to(user[..., None, :], doc.shape[:-1] + user.shape[-1:])
        outer = user_rows[..., :, None] * doc[..., None, :]
        parts += [user_rows, outer.reshape(doc.shape[:-2] + (n, -1))]
    return np.concatenate(parts, axis=-1)


class BanditObservation(gym.ObservationWrapper):
    """Replace a slate env's observation by its (N, F) bandit feature matrix (``gymnasium.Env``)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        n, d = env.observation_space["doc"].shape
        u = env.observation_space["user"].shape[0]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n, bandit_feature_dim(u, d)), np.float32)

    def observation(self, observation):
        return bandit_features(observation)
