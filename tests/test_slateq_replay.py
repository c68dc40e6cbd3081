"""SlateQ's replay buffers: n-step rows also carry the one-step next observation (which says what
step t's user clicked), and the n actually summed where an unfinished episode ends sooner."""

import gymnasium as gym
import numpy as np
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from recsys_exp.algorithms.slateq.replay import (
    NEXT_OBS_1,
    PAST_REWARD,
    PAST_REWARD_END,
    SESSION_STEP,
    SlateQEpisodeReplayBuffer,
)


def test_n_step_rows_carry_the_one_step_next_observation():
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buffer = SlateQEpisodeReplayBuffer(capacity=1_000)
    for start, done in ((0.0, True), (100.0, False)):  # a finished and an unfinished episode, 6 steps each
        buffer.add([SingleAgentEpisode(observations=[np.array([start + t], np.float32) for t in range(7)],
                                       actions=[0] * 6, rewards=[1.0] * 6, terminated=done,
                                       observation_space=space, action_space=gym.spaces.Discrete(2),
                                       len_lookback_buffer=0)])
    one_step = buffer.sample(num_items=5, n_step=1, gamma=0.5, sample_episodes=True)
    assert NEXT_OBS_1 not in one_step[0].extra_model_outputs  # Columns.NEXT_OBS is o_{t+1} already
    rows = buffer.sample(num_items=200, n_step=3, gamma=0.5, sample_episodes=True)
    seen = set()
    for ep in rows:
        o0, on = ep.get_observations(0)[0], ep.get_observations(-1)[0]
        o1 = ep.get_extra_model_outputs(NEXT_OBS_1, 0)[0]
        k = int(ep.get_extra_model_outputs("n_step", 0))
        assert o1 == o0 + 1
        assert on == o0 + k and k == min(3, 106 - o0 if o0 >= 100 else 6 - o0)
        assert np.isclose(ep.get_rewards(0), sum(0.5 ** i for i in range(k)))
        seen.add(k)
    assert seen == {1, 2, 3}


def _episodes(starts_done, rewards, space):
    """One stored-to-be episode per (first observation, terminated): observations start, start+1, ..."""
    return [SingleAgentEpisode(observations=[np.array([start + t], np.float32) for t in range(len(rewards) + 1)],
                               actions=[int(start) + t for t in range(len(rewards))], rewards=list(rewards),
                               terminated=done, observation_space=space, action_space=gym.spaces.Discrete(200),
                               len_lookback_buffer=0) for start, done in starts_done]


def test_monte_carlo_rows_sum_each_session_to_its_end():
    """``returns_to_end``: row t of a finished 4-step session holds Σ_{j≥t} γ^{j−t} r_j (hand sums) and no
    bootstrap; a running session's row holds the rewards so far, its last observation and n = the steps
    summed (the learner bootstraps γⁿ·V from there); when the running session grows, its rows follow."""
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buffer = SlateQEpisodeReplayBuffer(capacity=1_000, returns_to_end=True)
    rewards = [1.0, 2.0, 4.0, 8.0]
    running = _episodes([(0.0, True), (100.0, False)], rewards, space)
    buffer.add(running)
    gamma = 0.5
    hand = {0: 1 + 0.5 * 2 + 0.25 * 4 + 0.125 * 8, 1: 2 + 0.5 * 4 + 0.25 * 8, 2: 4 + 0.5 * 8, 3: 8.0}
    past = {0: 0.0, 1: 1.0, 2: (1 + 2) / 2, 3: (1 + 2 + 4) / 3}  # mean reward before t (undiscounted)
    rows = buffer.sample_returns_to_end(200, gamma=gamma)
    seen = set()
    for i, o0 in enumerate(rows["obs"][:, 0]):
        is_running = o0 >= 100
        t = int(o0 - 100 if is_running else o0)
        assert np.isclose(rows["rewards"][i], hand[t])
        assert rows["new_obs"][i, 0] == (104.0 if is_running else 4.0)  # o_T, the last stored
        assert rows[NEXT_OBS_1][i, 0] == o0 + 1  # what step t's user did
        assert rows["actions"][i] == int(o0)
        assert rows["n_step"][i] == 4 - t and rows[SESSION_STEP][i] == t
        assert np.isclose(rows[PAST_REWARD][i], past[t]) and np.isclose(rows[PAST_REWARD_END][i], 15 / 4)
        assert rows["terminateds"][i] == (not is_running) and not rows["truncateds"][i]
        seen.add((is_running, t))
    assert len(seen) == 8
    # Two more steps of the running session (rewards 16, 32; it ends): its rows now sum to step 6.
    tail = running[1].cut()
    for t in (4, 5):
        tail.add_env_step(np.array([101.0 + t], np.float32), 100 + t, 2.0 ** (t + 0), terminated=t == 5)
    buffer.add([tail.to_numpy()])
    rows = buffer.sample_returns_to_end(300, gamma=gamma)
    full = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    for i in np.flatnonzero(rows["obs"][:, 0] >= 100):
        t = int(rows["obs"][i, 0] - 100)
        assert np.isclose(rows["rewards"][i], sum(gamma ** (j - t) * full[j] for j in range(t, 6)))
        assert rows["new_obs"][i, 0] == 106.0 and rows["n_step"][i] == 6 - t and rows["terminateds"][i]
        assert np.isclose(rows[PAST_REWARD][i], np.mean(full[:t]) if t else 0.0)
        assert np.isclose(rows[PAST_REWARD_END][i], np.mean(full))
    try:
        buffer.sample(num_items=5, n_step=1, gamma=gamma, sample_episodes=True)
    except ValueError as err:
        assert "sample_returns_to_end" in str(err)
    else:
        raise AssertionError("episode rows from a returns_to_end buffer must fail")


def test_monte_carlo_rows_are_the_steps_rllibs_sampler_draws():
    """From the same generator state, the Monte Carlo columns hold the very steps RLlib's own one-step
    sampler draws (its o_t, a_t and o_{t+1}): the fast gather skips RLlib's per-row episodes, nothing else."""
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buffer = SlateQEpisodeReplayBuffer(capacity=1_000, returns_to_end=True)
    buffer.add(_episodes([(0.0, True), (100.0, False), (200.0, True)], [1.0, 0.0, 2.0, 0.0, 3.0], space))
    reference = SlateQEpisodeReplayBuffer(capacity=1_000)
    reference.add(_episodes([(0.0, True), (100.0, False), (200.0, True)], [1.0, 0.0, 2.0, 0.0, 3.0], space))
    buffer.rng, reference.rng = np.random.default_rng(7), np.random.default_rng(7)
    rows = buffer.sample_returns_to_end(64, gamma=1.0)
    episodes = reference.sample(num_items=64, n_step=1, gamma=1.0, sample_episodes=True)
    np.testing.assert_array_equal(rows["obs"][:, 0], [ep.get_observations(0)[0] for ep in episodes])
    np.testing.assert_array_equal(rows[NEXT_OBS_1][:, 0], [ep.get_observations(-1)[0] for ep in episodes])
    np.testing.assert_array_equal(rows["actions"], [ep.get_actions(0) for ep in episodes])
