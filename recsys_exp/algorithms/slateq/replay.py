"""Replay buffers for SlateQ's n-step returns.

SlateQ reads which slot of a step's slate was clicked from the *next* observation's response.
With ``n_step > 1`` RLlib's episode buffers return o_{t+n} as the next observation, whose
response belongs to the slate of step t+n-1, not t. These buffers add the one-step next
observation o_{t+1} of every sampled row as the extra column ``NEXT_OBS_1`` (an extra model
output, which RLlib's learner connector turns into a batch column); the learner reads clicks
from it and bootstraps from ``Columns.NEXT_OBS`` (o_{t+n}).
"""

from __future__ import annotations

import numpy as np
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils.replay_buffers import EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer

NEXT_OBS_1 = "next_obs_1"


class _OneStepNextObservation:
    """Mixin over an RLlib episode replay buffer: every sampled 1-step episode gets o_{t+1}."""

    def sample(self, *args, **kwargs):
        episodes = super().sample(*args, **kwargs)
        if not kwargs.get("sample_episodes") or kwargs.get("batch_length_T") or kwargs.get("n_step", 1) == 1:
            return episodes  # 1-step rows: Columns.NEXT_OBS already is o_{t+1} (and no per-row cost)
        for ep in episodes:
            if ep.id_ not in self.episode_id_to_index:
                # RLlib's prioritized buffer gives its samples new ids: no way back to the stored episode.
                raise NotImplementedError(f"{type(self).__name__}: n_step > 1 is not supported")
            stored = self.episodes[self.episode_id_to_index[ep.id_] - self._num_episodes_evicted]
            # The sampled row starts at index t_started of the stored episode (relative, no lookback).
            obs1 = np.asarray(stored.get_observations(ep.t_started + 1))
            ep.extra_model_outputs[NEXT_OBS_1] = InfiniteLookbackBuffer(obs1[None], lookback=0)
            # RLlib records the requested n even where a not yet finished episode ends sooner (its
            # slice is shorter): record the steps actually summed, so the bootstrap discount is γ^k.
            n = ep.get_extra_model_outputs("n_step", 0)
            k = min(int(n), len(stored) - ep.t_started)
            if k != n:
                ep.extra_model_outputs["n_step"] = InfiniteLookbackBuffer(np.full((1,), k), lookback=0)
        return episodes


class SlateQEpisodeReplayBuffer(_OneStepNextObservation, EpisodeReplayBuffer):
    """``EpisodeReplayBuffer`` whose samples also hold the one-step next observation."""


class SlateQPrioritizedEpisodeReplayBuffer(_OneStepNextObservation, PrioritizedEpisodeReplayBuffer):
    """``PrioritizedEpisodeReplayBuffer`` whose samples also hold the one-step next observation."""
