"""Seeded replay buffers for the DQN family (slateq, dqn, cql_dqn).

RLlib 2.58's ``EpisodeReplayBuffer`` draws its samples from ``np.random.default_rng(seed=None)``
(set in its ``__init__``, with no way to pass a seed), so two runs with the same ``seed`` replay
different batches and learn different policies. These subclasses take ``seed`` (from the run's
``seed``, see :func:`seeded_replay_buffer_config`) and draw from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.utils.replay_buffers import EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer


class SeededEpisodeReplayBuffer(EpisodeReplayBuffer):
    """``EpisodeReplayBuffer`` whose sampling RNG is seeded with ``seed``."""

    def __init__(self, *args, seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(seed)


class SeededPrioritizedEpisodeReplayBuffer(PrioritizedEpisodeReplayBuffer):
    """``PrioritizedEpisodeReplayBuffer`` whose sampling RNG is seeded with ``seed``."""

    def __init__(self, *args, seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(seed)


# RLlib checks the buffer type by substring ("EpisodeReplayBuffer" in type) and builds it from a
# "module.Class" string, so the seeded types are given by their import paths.
SEEDED = {"EpisodeReplayBuffer": f"{__name__}.SeededEpisodeReplayBuffer",
          "PrioritizedEpisodeReplayBuffer": f"{__name__}.SeededPrioritizedEpisodeReplayBuffer"}
SEEDED.update({EpisodeReplayBuffer: SEEDED["EpisodeReplayBuffer"],
               PrioritizedEpisodeReplayBuffer: SEEDED["PrioritizedEpisodeReplayBuffer"]})


def seeded_replay_buffer_config(buffer_config: dict[str, Any] | None, seed: int) -> dict[str, Any] | None:
    """``buffer_config`` (an RLlib ``replay_buffer_config``) with its RLlib episode buffer type
    replaced by the seeded subclass and ``seed`` added; other types and None unchanged."""
    if not isinstance(buffer_config, dict) or buffer_config.get("type") not in SEEDED:
        return buffer_config
    return {**buffer_config, "type": SEEDED[buffer_config["type"]], "seed": seed}
