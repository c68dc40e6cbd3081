"""SlateQ's replay buffers: n-step rows also carry the one-step next observation (which says what
step t's user clicked), and the n actually summed where an unfinished episode ends sooner."""

import gymnasium as gym
import numpy as np
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from recsys_exp.algorithms.slateq.replay import NEXT_OBS_1, SlateQEpisodeReplayBuffer


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


def test_monte_carlo_rows_sum_each_session_to_its_end():
    """``returns_to_end``: row t of a finished 4-step session holds Σ_{j≥t} γ^{j−t} r_j (hand sums) and no
    bootstrap; a running session's row holds the rewards so far, its last observation and n = the steps
    summed (the learner bootstraps γⁿ·V from there)."""
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buffer = SlateQEpisodeReplayBuffer(capacity=1_000, returns_to_end=True)
    rewards = [1.0, 2.0, 4.0, 8.0]
    for start, done in ((0.0, True), (100.0, False)):
        buffer.add([SingleAgentEpisode(observations=[np.array([start + t], np.float32) for t in range(5)],
                                       actions=[0] * 4, rewards=rewards, terminated=done,
                                       observation_space=space, action_space=gym.spaces.Discrete(2),
                                       len_lookback_buffer=0)])
    gamma = 0.5
    hand = {0: 1 + 0.5 * 2 + 0.25 * 4 + 0.125 * 8, 1: 2 + 0.5 * 4 + 0.25 * 8, 2: 4 + 0.5 * 8, 3: 8.0}
    seen = set()
    for ep in buffer.sample(num_items=200, n_step=1, gamma=gamma, sample_episodes=True):
        o0 = ep.get_observations(0)[0]
        running = o0 >= 100
        t = int(o0 - 100 if running else o0)
        assert np.isclose(ep.get_rewards(0), hand[t])
        assert ep.get_observations(-1)[0] == (104.0 if running else 4.0)  # o_T, the last stored
        assert ep.get_extra_model_outputs(NEXT_OBS_1, 0)[0] == o0 + 1  # what step t's user did
        assert int(ep.get_extra_model_outputs("n_step", 0)) == 4 - t
        assert ep.is_terminated == (not running)
        seen.add((running, t))
    assert len(seen) == 8
    try:
        buffer.sample(num_items=5, n_step=3, gamma=gamma, sample_episodes=True)
    except ValueError as err:
        assert "n_step=3" in str(err)
    else:
        raise AssertionError("n_step > 1 with returns to the end must fail")
