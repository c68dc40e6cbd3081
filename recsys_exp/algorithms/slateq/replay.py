"""Replay buffers for SlateQ: n-step rows and Monte Carlo rows (returns to the end of the session).

SlateQ reads which slot of a step's slate was clicked from the *next* observation's response.
With ``n_step > 1`` RLlib's episode buffers return o_{t+n} as the next observation, whose
response belongs to the slate of step t+n-1, not t. These buffers add the one-step next
observation o_{t+1} of every sampled row as the extra column ``NEXT_OBS_1`` (an extra model
output, which RLlib's learner connector turns into a batch column); the learner reads clicks
from it and bootstraps from ``Columns.NEXT_OBS`` (o_{t+n}).

With ``returns_to_end`` (SlateQ's ``targets=monte_carlo``) the buffer is sampled with
:meth:`~_OneStepNextObservation.sample_returns_to_end`, which returns batch columns, not episodes;
every sampled row of step t is

    reward = Σ_{j=t}^{T−1} γ^{j−t} r_j,   next observation = o_T,   n_step = T − t,
    terminated / truncated = the stored episode's,

plus o_{t+1} (``NEXT_OBS_1``), the row's t (``SESSION_STEP``) and the session's mean reward before t and
before T (``PAST_REWARD``, ``PAST_REWARD_END``), where T is the last step stored of
that episode: the whole rest of a finished session (a Monte Carlo return, nothing to bootstrap), or
the rest so far of a running one (the learner bootstraps γ^{T−t}·V(o_T) from there, as for any
n-step row; likewise for a time-limit cut).
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
PAST_REWARD = "past_reward"  # mean reward of the stored steps of the row's session before t (0 if none)
PAST_REWARD_END = "past_reward_end"  # the same before T (the bootstrap step): every stored step's mean


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = Σ_{j≥t} γ^{j−t} r_j for every t of one reward sequence (T,) -> (T,)."""
    return scipy.signal.lfilter([1.0], [1.0, -gamma], np.asarray(rewards, np.float64)[::-1])[::-1]


def past_mean(rewards: np.ndarray) -> np.ndarray:
    """The mean of the rewards before each step, (T,) -> (T,): ``r̄_t = Σ_{j<t} r_j / t``, 0 at t = 0."""
    rewards = np.asarray(rewards, np.float64)
    before = np.concatenate([[0.0], np.cumsum(rewards)[:-1]])
    return before / np.maximum(np.arange(len(rewards)), 1)


class _SessionEnd(NamedTuple):
    """What the Monte Carlo rows of one stored episode share: its stored length, returns to go and mean
    rewards before each step (one per step), the mean of all its stored rewards, last observation, end
    flags, and the gamma the returns were summed with."""

    length: int
    returns: np.ndarray
    past_reward: np.ndarray
    mean_reward: float
    last_obs: np.ndarray
    terminated: bool
    truncated: bool
    gamma: float


class _OneStepNextObservation:
    """Mixin over an RLlib episode replay buffer: every sampled multi-step row gets o_{t+1}; with
    ``returns_to_end`` rows are returns to the end of what is stored, sampled as batch columns by
    :meth:`sample_returns_to_end` (module docstring)."""

    def __init__(self, *args, returns_to_end: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.returns_to_end = returns_to_end
        # episode id -> its _SessionEnd: a finished episode's stays valid; a running one's is redone
        # when it has grown.
        self._to_end: dict[str, _SessionEnd] = {}

    def sample(self, *args, **kwargs):
        if kwargs.get("sample_episodes") and self.returns_to_end:
            raise ValueError("a returns_to_end buffer samples batch columns: call sample_returns_to_end()")
        episodes = super().sample(*args, **kwargs)
        n_step = kwargs.get("n_step", 1)
        if not kwargs.get("sample_episodes") or kwargs.get("batch_length_T") or n_step == 1:
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

    def sample_returns_to_end(self, num_items: int, gamma: float) -> dict[str, np.ndarray]:
        """``num_items`` stored steps drawn uniformly, as Monte Carlo rows in batch columns (module docstring).

        Draws the same steps as RLlib's ``sample(..., n_step=1)`` would from the same generator state,
        but gathers each row from the stored arrays instead of building a one-step episode per row for
        RLlib's learner connector to take apart again (that round trip was over a third of SlateQ's
        steady training time, py-spy). Columns: ``obs`` (B, d) o_t, ``actions`` a_t, ``rewards`` (B,)
        float32 G_t, ``new_obs`` o_T, ``terminateds`` / ``truncateds`` the stored episode's, ``n_step``
        T − t, ``weights`` ones, ``NEXT_OBS_1`` o_{t+1}, ``SESSION_STEP`` t (steps since the session
        started), ``PAST_REWARD`` r̄_t and ``PAST_REWARD_END`` r̄_T, the mean stored reward of the session
        before t and before T (:func:`past_mean`; the session baseline's input).
        """
        from ray.rllib.core.columns import Columns

        if len(self._to_end) > 2 * len(self.episodes):  # forget evicted episodes
            live = {ep.id_ for ep in self.episodes}
            self._to_end = {k: v for k, v in self._to_end.items() if k in live}
        draws = self.rng.integers(len(self._indices), size=num_items)  # = RLlib's one draw per row
        obs, obs1, actions, end_rows, past, steps, ends = [], [], [], [], [], [], []
        for draw in draws:
            index, t = self._indices[draw]
            stored = self.episodes[index - self._num_episodes_evicted]
            end = self._session_end(stored, gamma)
            observations = stored.observations.data
            lookback = stored.observations.lookback
            obs.append(observations[lookback + t])
            obs1.append(observations[lookback + t + 1])
            actions.append(stored.actions.data[stored.actions.lookback + t])
            end_rows.append(end.returns[t])
            past.append(end.past_reward[t])
            steps.append((stored.t_started + t, end.length - t))
            ends.append(end)
        steps = np.asarray(steps, np.int64).reshape(-1, 2)
        self.sampled_timesteps += num_items
        self._record_sample(draws)
        return {
            Columns.OBS: np.stack(obs).astype(np.float32, copy=False),
            Columns.ACTIONS: np.stack(actions),
            Columns.REWARDS: np.asarray(end_rows, np.float32),
            Columns.NEXT_OBS: np.stack([end.last_obs for end in ends]).astype(np.float32, copy=False),
            Columns.TERMINATEDS: np.array([end.terminated for end in ends]),
            Columns.TRUNCATEDS: np.array([end.truncated for end in ends]),
            "n_step": steps[:, 1],
            "weights": np.ones(num_items, np.float32),
            NEXT_OBS_1: np.stack(obs1).astype(np.float32, copy=False),
            SESSION_STEP: steps[:, 0],
            PAST_REWARD: np.asarray(past, np.float32),
            PAST_REWARD_END: np.asarray([end.mean_reward for end in ends], np.float32),
        }

    def _session_end(self, stored, gamma: float) -> _SessionEnd:
        """The cached :class:`_SessionEnd` of a stored episode (redone when a running one has grown)."""
        end = self._to_end.get(stored.id_)
        if end is None or end.gamma != gamma or end.length != len(stored):
            rewards = np.asarray(stored.get_rewards(), np.float64)
            end = _SessionEnd(len(stored), returns_to_go(rewards, gamma), past_mean(rewards),
                              float(rewards.mean()) if len(rewards) else 0.0,
                              np.asarray(stored.get_observations(-1)), stored.is_terminated, stored.is_truncated,
                              gamma)
            self._to_end[stored.id_] = end
        return end

    def _record_sample(self, draws: np.ndarray) -> None:
        """RLlib's sample metrics for ``draws`` (indices into ``_indices``), as its own ``sample`` logs them."""
        from ray.rllib.core import DEFAULT_AGENT_ID, DEFAULT_MODULE_ID

        n, episodes = len(draws), len({self._indices[d][0] for d in draws})
        steps = len(set(draws.tolist()))
        per_agent = dict(num_steps_sampled=n, num_episodes_per_sample=episodes, num_steps_per_sample=steps,
                         sampled_n_step=1.0, num_resamples=0)
        self._update_sample_metrics(
            num_env_steps_sampled=n, num_episodes_per_sample=episodes, num_env_steps_per_sample=steps,
            sampled_n_step=1.0, num_resamples=0,
            **{f"agent_to_{k}": {DEFAULT_AGENT_ID: v} for k, v in per_agent.items()},
            **{f"module_to_{k}": {DEFAULT_MODULE_ID: v} for k, v in per_agent.items()})


class SlateQEpisodeReplayBuffer(_OneStepNextObservation, EpisodeReplayBuffer):
    """``EpisodeReplayBuffer`` whose samples also hold the one-step next observation."""


class SlateQPrioritizedEpisodeReplayBuffer(_OneStepNextObservation, PrioritizedEpisodeReplayBuffer):
    """``PrioritizedEpisodeReplayBuffer`` whose samples also hold the one-step next observation."""
