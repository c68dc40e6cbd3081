"""The one loader (``recsys_exp.runner.policy``), the policy contract and the one simulation engine,
each against an independent oracle:

* flattening = RLlib's own ``FlattenObservations`` connector run on an episode;
* ``load_policy(...).recommend(obs)`` = the trained module's own ``forward_inference``, restored by
  RLlib and fed RLlib-flattened observations (slate module, RLlib's DQN over flat slates, PPO on CartPole);
* exploring propensities = empirical sampling frequencies, and a hand-computed ε-mixture;
* ``evaluate_checkpoint`` of the random policy = the env's own return under numpy-uniform slates;
* discounted returns = the closed form of CartPole's reward of 1 per step;
* ``mean_ci95`` = scipy's t-interval.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import compose_config
from recsys_exp.run_dir import CONFIG_FILE, write_config
from recsys_exp.runner.policy import Policy, load_policy

SMALL = ("env.num_candidates=4", "env.slate_size=2", "env.max_episode_steps=5")
CARTPOLE = ("env=gym", "env.entry_point=CartPole-v1", "algo=ppo", "env.max_episode_steps=30",
            "model.hidden_sizes=[8]")


def rllib_flatten(space: gym.Space, observations: list) -> np.ndarray:
    """RLlib's env-to-module ``FlattenObservations`` connector on one episode per observation."""
    from ray.rllib.connectors.env_to_module import FlattenObservations
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    conn = FlattenObservations(input_observation_space=space, input_action_space=gym.spaces.Discrete(2))
    rows = []
    for o in observations:
        ep = SingleAgentEpisode(observations=[o], observation_space=space)
        conn(rl_module=None, batch={}, episodes=[ep], explore=False, shared_data={})
        rows.append(np.asarray(ep.get_observations(-1), dtype=np.float32))
    return np.stack(rows)


def unbatch(obs, i: int):
    """Observation ``i`` of a vector env's batched observation."""
    if isinstance(obs, dict):
        return {k: unbatch(v, i) for k, v in obs.items()}
    return obs[i]


# ---------------------------------------------------------------------------------------
# flattening
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", [
    gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
    gym.spaces.Discrete(5),
    gym.spaces.Dict({"b": gym.spaces.Discrete(3), "a": gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32),
                     "c": gym.spaces.MultiDiscrete([2, 3])}),
], ids=["box", "discrete", "dict"])
def test_flattening_equals_rllibs_connector_on_gym_spaces(space):
    from recsys_exp.envs.layout import flatten_observations

    space.seed(0)
    samples = [space.sample() for _ in range(6)]
    batch = ({k: np.stack([s[k] for s in samples]) for k in space.spaces} if isinstance(space, gym.spaces.Dict)
             else np.stack(samples))
    np.testing.assert_array_equal(flatten_observations(space, batch), rllib_flatten(space, samples))


@pytest.mark.parametrize("env", ["interest_evolution", "long_term_satisfaction_tutorial"])
def test_batched_flatten_connector_equals_rllibs_per_episode_one(env):
    """The training runs' env-to-module connector (one batched flatten per step) writes the same
    flat observations into every episode as RLlib's own connector (one flatten per episode)."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from recsys_exp.envs.spec import env_spec
    from recsys_exp.runner.flatten_connector import BatchedFlattenObservations

    c = compose_config("algo=slateq", f"env={env}")
    spec = env_spec(c)
    vec = spec.vector_env(6, 3)
    obs, _ = vec.reset(seed=5)
    obs, *_ = vec.step(np.tile([0, 1], (6, 1)))  # some clicks in the response
    space = vec.single_observation_space
    observations = [unbatch(obs, i) for i in range(6)]
    conn = BatchedFlattenObservations(input_observation_space=space, input_action_space=gym.spaces.Discrete(2))
    episodes = [SingleAgentEpisode(observations=[o], observation_space=space) for o in observations]
    conn(rl_module=None, batch={}, episodes=episodes, explore=False, shared_data={})
    got = np.stack([ep.get_observations(-1) for ep in episodes])
    np.testing.assert_array_equal(got, rllib_flatten(space, observations))
    assert got.dtype == np.float32 and episodes[0].observation_space == conn.observation_space


def test_policy_flattens_slate_observations_like_rllib():
    c = compose_config("algo=greedy", *SMALL)
    policy = Policy.from_checkpoint(c, None)
    env = policy.spec.vector_env(5, 3)
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(np.tile([0, 1], (5, 1)))  # a non-zero response
    expected = rllib_flatten(policy.observation_space, [unbatch(obs, i) for i in range(5)])
    np.testing.assert_array_equal(policy.flatten(obs), expected)
    assert policy.module.observation_space.shape == (expected.shape[1],)


# ---------------------------------------------------------------------------------------
# the loader vs the trained module's own inference
# ---------------------------------------------------------------------------------------
def train_checkpoint(c: dict, path: Path) -> Path:
    """One training iteration of ``c``, saved with its config.yaml (a loadable checkpoint dir)."""
    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(c)
    algo = config.build_algo()
    try:
        algo.train()
        checkpoint = Path(algo.save_to_path(str(path)))
    finally:
        algo.stop()
    write_config(checkpoint / CONFIG_FILE, c)
    return checkpoint


def module_inference(checkpoint: Path, flat: np.ndarray) -> dict:
    """RLlib's own restore of the learner RLModule and its ``forward_inference``."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
                                      / DEFAULT_MODULE_ID)
    with torch.no_grad():
        return module.forward_inference({"obs": torch.as_tensor(flat)})


CASES = {
    "lin_ucb": ("algo=lin_ucb", "env.num_candidates=6", "algo.training.train_batch_size_per_learner=100"),
    "dqn": ("algo=dqn", *SMALL, "algo.training.train_batch_size_per_learner=64",
            "algo.training.num_steps_sampled_before_learning_starts=32", "model.hidden_sizes=[8]"),
    "ppo_cartpole": (*CARTPOLE, "algo.training.train_batch_size_per_learner=64", "algo.training.minibatch_size=32",
                     "algo.training.num_epochs=1"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recommend_equals_the_trained_modules_forward_inference(name, ray_session, tmp_path):
    from recsys_exp.envs.wrappers import decode_flat_slate as np_decode

    c = compose_config(*CASES[name])
    checkpoint = train_checkpoint(c, tmp_path / "ckpt")
    policy = load_policy(checkpoint)
    env = policy.spec.vector_env(6, 11)
    obs, _ = env.reset(seed=11)
    obs, *_ = env.step(policy.act(obs))
    singles = [unbatch(obs, i) for i in range(6)]
    out = module_inference(checkpoint, rllib_flatten(policy.observation_space, singles))
    if name == "lin_ucb":
        expected = out["actions"].numpy()
    elif name == "dqn":  # a flat Discrete(N**K) index, little-endian
        expected = np_decode(out["actions"].numpy(), 4, 2)
    else:  # PPO's greedy action: the argmax of its categorical logits
        expected = out["action_dist_inputs"].argmax(-1).numpy()
    got = np.stack([policy.recommend(o) for o in singles])
    np.testing.assert_array_equal(got, expected)
    if name == "lin_ucb":  # a run dir (config.yaml + checkpoints/last) loads the same policy
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        write_config(run / CONFIG_FILE, c)
        (run / "checkpoints" / "last").symlink_to(checkpoint)
        np.testing.assert_array_equal(np.stack([load_policy(run).recommend(o) for o in singles]), expected)


# ---------------------------------------------------------------------------------------
# exploring probabilities
# ---------------------------------------------------------------------------------------
def one_observation(policy: Policy, rows: int) -> np.ndarray:
    env = policy.spec.vector_env(1, 5)
    obs, _ = env.reset(seed=5)
    return np.repeat(policy.flatten(obs), rows, axis=0)


@pytest.mark.parametrize("overrides", [("algo=ppo", *SMALL), ("algo=ppo", *SMALL, "algo.flatten_actions=true"),
                                       ("algo=random", *SMALL)], ids=["ppo_per_slot", "ppo_flat", "random"])
def test_sampled_propensities_match_sampling_frequencies(overrides):
    """Each sampled slate's propensity (and slot propensity) is its observed frequency in 20000 draws
    (within 4.5 binomial standard errors), and the support sums to 1."""
    c = compose_config(*overrides)
    policy = Policy.from_checkpoint(c, None)
    with torch.no_grad():  # a fresh PPO head is near-uniform: sharpen it so the test can tell slates apart
        for p in policy.module.parameters():
            p.mul_(8.0)
    n = 20_000
    flat = one_observation(policy, n)
    torch.manual_seed(0)
    draw = policy.sample(flat, 0)
    slates, prop = draw["action"], draw["propensity"]
    keys, index, counts = np.unique(slates, axis=0, return_inverse=True, return_counts=True)
    index = index.reshape(-1)
    first = np.array([np.flatnonzero(index == j)[0] for j in range(len(keys))])
    p = prop[first]
    assert np.allclose(prop, p[index])  # one propensity per slate
    assert (np.abs(counts / n - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1e-9).all(), (counts / n, p)
    for k in range(2):
        freq = np.array([(slates[:, k] == slates[i, k]).mean() for i in first])
        q = draw["slot_propensity"][first, k]
        assert (np.abs(freq - q) <= 4.5 * np.sqrt(q * (1 - q) / n) + 1e-9).all()
    support, probs = policy.support(flat[:1], explore=True)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(policy.slate_probabilities(flat[first], keys, explore=True)[0], p, rtol=1e-5)


def test_epsilon_greedy_distribution_is_the_hand_computed_mixture():
    """Greedy by affinity with ε = 0.3 over 4·3 = 12 ordered slates: P(A) = 0.7·[A = greedy] + 0.3/12,
    P(slot k shows i) = 0.7·[i = greedy_k] + 0.3/4 (computed here by hand, not by the mixture code)."""
    c = compose_config("algo=greedy", "exploration=epsilon_greedy", "exploration.initial_epsilon=0.3",
                       "exploration.final_epsilon=0.3", *SMALL)
    policy = Policy.from_checkpoint(c, None)
    flat = one_observation(policy, 1)
    greedy = policy.greedy(flat)[0]
    import itertools

    slates = np.array(list(itertools.permutations(range(4), 2)))
    hand = np.array([0.7 * (tuple(s) == tuple(greedy)) + 0.3 / 12 for s in slates])
    got, slot = policy.slate_probabilities(np.repeat(flat, 12, 0), slates, explore=True)
    np.testing.assert_allclose(got, hand, rtol=1e-6)
    matrix = policy.slot_probabilities(flat, explore=True)[0]  # (K, N)
    hand_slot = np.full((2, 4), 0.3 / 4)
    hand_slot[[0, 1], greedy] += 0.7
    np.testing.assert_allclose(matrix, hand_slot, rtol=1e-6)
    np.testing.assert_allclose(policy.slot_probabilities(flat, explore=False)[0], (hand_slot > 0.5).astype(float))


def test_thompson_sampling_is_honestly_unknown():
    from recsys_exp.algorithms.slates import NotEnumerable

    policy = Policy.from_checkpoint(compose_config("algo=lin_ts", *SMALL), None)
    flat = one_observation(policy, 3)
    draw = policy.sample(flat, 0)
    assert np.isnan(draw["propensity"]).all() and np.isnan(draw["slot_propensity"]).all()
    assert np.isnan(policy.slot_probabilities(flat, explore=True)).all()
    with pytest.raises(NotEnumerable, match="no closed form|without enumerable"):
        policy.support(flat, explore=True)
    support, probs = policy.support(flat, explore=False)  # its greedy (posterior-mean) policy is known
    assert support.shape == (3, 1, 2) and (probs == 1).all()


# ---------------------------------------------------------------------------------------
# the simulation engine
# ---------------------------------------------------------------------------------------
def test_evaluate_checkpoint_of_random_matches_the_envs_random_return(ray_session, tmp_path):
    """The random policy's evaluation equals the return of the env stepped with numpy-uniform ordered
    slates (a separate loop over the env), within the two estimates' combined 99% error."""
    from recsys_exp.runner.evaluate import evaluate_checkpoint

    c = compose_config("algo=random", "env.num_candidates=6", "env.max_episode_steps=8",
                       "algo.training.train_batch_size_per_learner=50")
    checkpoint = train_checkpoint(c, tmp_path / "ckpt")
    ev = evaluate_checkpoint(c, checkpoint, 400, 50, 7)
    assert ev["episodes"] == 400 and ev["episode_len_mean"] == 8 and ev["checkpoint"] == str(checkpoint)

    rng = np.random.default_rng(0)
    from recsys_exp.envs.spec import env_spec

    env = env_spec(c).vector_env(400, 12345)
    env.reset(seed=12345)
    returns, done = np.zeros(400), np.zeros(400, bool)
    while not done.all():
        slates = np.stack([rng.permutation(6)[:2] for _ in range(400)])
        _, r, term, trunc, _ = env.step(slates)
        returns[~done] += r[~done]
        done |= term | trunc
    se = np.hypot(ev["episode_return_std"] / np.sqrt(400), returns.std(ddof=1) / np.sqrt(400))
    assert abs(ev["episode_return_mean"] - returns.mean()) < 2.58 * se, (ev, returns.mean(), se)
    assert returns.std() > 0


def test_simulate_plays_whole_rounds_and_discounts():
    """CartPole pays 1 per step: a discounted return is (1 - γ^L)/(1 - γ) of the episode's length L;
    7 episodes with 3 users per round are exactly 7 episodes (the last round uses one user)."""
    from recsys_exp.runner.simulate import simulate

    policy = Policy.from_checkpoint(compose_config(*CARTPOLE), None)
    result = simulate(policy, 7, 3, seed=1, explore=True, gamma=0.9)
    assert len(result.returns) == len(result.lengths) == 7 and (result.lengths >= 1).all()
    np.testing.assert_allclose(result.returns, (1 - 0.9 ** result.lengths) / (1 - 0.9))
    plain = simulate(policy, 7, 3, seed=1, explore=True)
    np.testing.assert_array_equal(plain.returns, plain.lengths)
    assert (result.lengths <= 30).all() and len(set(result.lengths.tolist())) > 1


def test_mean_ci95_is_the_student_t_interval():
    from scipy import stats

    from recsys_exp.stats import mean_ci95

    x = np.array([1.0, 4.0, 2.5, 3.0, 7.0])
    mean, std, half, (low, high) = mean_ci95(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std(ddof=1))
    assert (low, high) == pytest.approx((lo, hi)) and half == pytest.approx((hi - lo) / 2)
    assert mean_ci95([2.0])[3] == [2.0, 2.0]
