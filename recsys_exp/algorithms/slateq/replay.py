"""Replay buffers for SlateQ: n-step rows and Monte Carlo rows (returns to the end of the session).

SlateQ reads which slot of a step's slate was clicked from the *next* observation's response.
With ``n_step > 1`` RLlib's episode buffers return o_{t+n} as the next observation, whose
response belongs to the slate of step t+n-1, not t. These buffers add the one-step next
observation o_{t+1} of every sampled row as the extra column ``NEXT_OBS_1`` (an extra model
output, which RLlib's learner connector turns into a batch column); the learner reads clicks
from it and bootstraps from ``Columns.NEXT_OBS`` (o_{t+n}).

With ``returns_to_end`` (SlateQ's ``targets=monte_carlo``) every sampled row of step t becomes

    reward = Σ_{j=t}^{T−1} γ^{j−t} r_j,   next observation = o_T,   n_step = T − t,
    terminated / truncated = the stored episode's,

and the row's t as the column ``SESSION_STEP``, where T is the last step stored of that episode:
the whole rest of a finished session (a Monte Carlo return, nothing to bootstrap), or the rest so
far of a running one (the learner bootstraps γ^{T−t}·V(o_T) from there, as for any n-step row;
likewise for a time-limit cut).
The return is the behaviour's own (on-policy, like SARSA(1)), and it carries effects that an
observation does not show: in Interest Evolution a click's cost to the hidden time budget
changes the session's length, which a one-step target r + γ·V(s') cannot see (s' looks the same).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.signal
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils.replay_buffers import EpisodeReplayBuffer, PrioritizedEpisodeReplayBuffer

NEXT_OBS_1 = "next_obs_1"
SESSION_STEP = "session_step"  # t of a Monte Carlo row (steps since its session started)


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = Σ_{j≥t} γ^{j−t} r_j for every t of one reward sequence (T,) -> (T,)."""
    return scipy.signal.lfilter([1.0], [1.0, -gamma], np.asarray(rewards, np.float64)[::-1])[::-1]


class _SessionEnd(NamedTuple):
    """What the Monte Carlo rows of one stored episode share: its stored length, returns to go (one per
    step), last observation, end flags, and the gamma the returns were summed with."""

    length: int
    returns: np.ndarray
    last_obs: np.ndarray
    terminated: bool
    truncated: bool
    gamma: float


class _OneStepNextObservation:
    """Mixin over an RLlib episode replay buffer: every sampled multi-step row gets o_{t+1}; with
    ``returns_to_end`` the 1-step rows become returns to the end of what is stored (module docstring)."""

    def __init__(self, *args, returns_to_end: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.returns_to_end = returns_to_end
        # episode id -> its _SessionEnd: a finished episode's stays valid; a running one's is redone
        # when it has grown.
        self._to_end: dict[str, _SessionEnd] = {}

    def sample(self, *args, **kwargs):
        episodes = super().sample(*args, **kwargs)
        if not kwargs.get("sample_episodes") or kwargs.get("batch_length_T"):
            return episodes
        n_step = kwargs.get("n_step", 1)
        if self.returns_to_end:
            if n_step != 1:
                raise ValueError(f"returns to the end of the session and n_step={n_step} exclude each other")
            return self._returns_to_end(episodes, float(kwargs.get("gamma", 0.99)))
        if n_step == 1:
            return episodes  # 1-step rows: Columns.NEXT_OBS already is o_{t+1} (and no per-row cost)
        for ep in episodes:
            stored = self._stored(ep)
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

    def _stored(self, ep):
        if ep.id_ not in self.episode_id_to_index:
            # RLlib's prioritized buffer gives its samples new ids: no way back to the stored episode.
            raise NotImplementedError(f"{type(self).__name__}: n_step > 1 and returns to the end are not supported")
        return self.episodes[self.episode_id_to_index[ep.id_] - self._num_episodes_evicted]

    def _returns_to_end(self, episodes, gamma: float):
        """Turn 1-step rows (o_t, a_t, r_t, o_{t+1}) into (o_t, a_t, G_t, o_T) in place."""
        if len(self._to_end) > 2 * len(self.episodes):  # forget evicted episodes
            live = {ep.id_ for ep in self.episodes}
            self._to_end = {k: v for k, v in self._to_end.items() if k in live}
        for ep in episodes:
            end = self._to_end.get(ep.id_)
            finished = end is not None and (end.terminated or end.truncated) and end.gamma == gamma
            if not finished:
                stored = self._stored(ep)
                if end is None or end.length != len(stored) or end.gamma != gamma:
                    end = _SessionEnd(len(stored), returns_to_go(stored.get_rewards(), gamma),
                                      np.asarray(stored.get_observations(-1)), stored.is_terminated,
                                      stored.is_truncated, gamma)
                    self._to_end[ep.id_] = end
            t = ep.t_started
            obs0, obs1 = np.asarray(ep.get_observations(0)), np.asarray(ep.get_observations(-1))
            ep.extra_model_outputs[NEXT_OBS_1] = InfiniteLookbackBuffer(obs1[None], lookback=0)
            ep.extra_model_outputs["n_step"] = InfiniteLookbackBuffer(np.full((1,), end.length - t), lookback=0)
            ep.extra_model_outputs[SESSION_STEP] = InfiniteLookbackBuffer(np.full((1,), t), lookback=0)
            ep.observations = InfiniteLookbackBuffer([obs0, end.last_obs], lookback=0)
            ep.rewards = InfiniteLookbackBuffer([float(end.returns[t])], lookback=0)
            ep.is_terminated, ep.is_truncated = end.terminated, end.truncated
        return episodes


class SlateQEpisodeReplayBuffer(_OneStepNextObservation, EpisodeReplayBuffer):
    """``EpisodeReplayBuffer`` whose samples also hold the one-step next observation."""


class SlateQPrioritizedEpisodeReplayBuffer(_OneStepNextObservation, PrioritizedEpisodeReplayBuffer):
    """``PrioritizedEpisodeReplayBuffer`` whose samples also hold the one-step next observation."""
