"""The true-model reference policies (recsys_exp.envs.oracles) against RecSim's formulas (recsim.md)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys_exp.envs import make_vector_env
from recsys_exp.envs.oracles import MyopicOracle, RolloutOracle, play_episodes

TUTORIAL = dict(sensitivity=0.058, time_budget=120, choc_stddev=0.1, kale_stddev=0.1, observe_satisfaction=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Expected immediate reward of one slate (K distinct positions) for user b, from recsim.md §2-§4.
def iev_value(users, docs, b, slate):
    """§3.3/3.4: P(click i) = (u[c_i] + 1) / (Σ_j (u[c_j] + 1) + 2), a click watches min(budget, 4)."""
    s = np.array([users["interests"][b, docs["cluster_id"][b, i]] + 1.0 for i in slate])
    return min(users["budget"][b], 4.0) * s.sum() / (s.sum() + 2.0)


def lts_value(constants):
    """§2: slot 0 is consumed; engagement = exp(N((c·μc + (1−c)·μk)·SAT, c·σc + (1−c)·σk)), SAT = σ(β·NPE);
    its mean is exp(loc + scale²/2)."""
    beta, choc_sd, kale_sd = constants

    def value(users, docs, b, slate):
        c = docs["clickbait"][b, slate[0]]
        loc = (5.0 * c + 4.0 * (1.0 - c)) * _sigmoid(beta * users["npe"][b])
        scale = choc_sd * c + kale_sd * (1.0 - c)
        return np.exp(loc + scale ** 2 / 2.0)
    return value


def iexp_value(users, docs, b, slate):
    """§4.3: logit_i = affinity[topic_i] + quality_i against a no-click logit 5; reward = clicks."""
    logits = np.array([users["affinity"][b, docs["cluster_id"][b, i]] + docs["quality"][b, i] for i in slate])
    return np.exp(logits).sum() / (np.exp(logits).sum() + np.exp(5.0))


CASES = [
    ("interest_evolution", {}, iev_value, 2),
    ("interest_evolution", {}, iev_value, 3),
    ("long_term_satisfaction", {}, lts_value((0.01, 1.0, 1.0)), 2),
    ("long_term_satisfaction", TUTORIAL, lts_value((0.058, 0.1, 0.1)), 2),
    ("interest_exploration", {}, iexp_value, 2),
    ("interest_exploration", {}, iexp_value, 3),
]


def _state(name, params, slate_size, users=16, num_candidates=6, seed=3, steps=2):
    """A vector env after a few random steps (IEv budgets and interests have moved) and its true state."""
    env = make_vector_env(name, num_envs=users, num_candidates=num_candidates, slate_size=slate_size, seed=seed,
                          **params)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        env.step(np.stack([rng.permutation(num_candidates)[:slate_size] for _ in range(users)]))
    if name == "interest_evolution":  # some users near the end of their budget: watch time min(budget, 4) < 4
        env.core.users["budget"][::3] = rng.uniform(0.5, 3.5, len(env.core.users["budget"][::3]))
    return env


@pytest.mark.parametrize("name,params,formula,slate_size", CASES)
def test_myopic_oracle_is_the_brute_force_best_slate_of_recsims_formula(name, params, formula, slate_size):
    env = _state(name, params, slate_size)
    core = env.core
    users, docs = core.users, core.docs
    oracle = MyopicOracle(core.sim, core.num_candidates, slate_size)
    chosen = oracle(users, docs)
    values = oracle.values(users, docs)
    all_slates = list(itertools.permutations(range(core.num_candidates), slate_size))
    for b in range(core.batch):
        brute = np.array([formula(users, docs, b, s) for s in all_slates])
        assert len(set(chosen[b].tolist())) == slate_size  # K distinct candidates
        assert formula(users, docs, b, chosen[b]) == pytest.approx(brute.max(), rel=1e-12)
        # The oracle's value of every decision slate is the formula's.
        np.testing.assert_allclose(values[b], [formula(users, docs, b, s) for s in oracle.slates], rtol=1e-12)


@pytest.mark.parametrize("name,params,_formula,slate_size", CASES[::2] + CASES[3:4])
def test_rollout_with_depth_zero_is_the_myopic_oracle(name, params, _formula, slate_size):
    env = _state(name, params, slate_size, users=32)
    core = env.core

    def last_candidates(users, docs):  # a base policy unlike the myopic one
        return np.tile(np.arange(core.num_candidates - slate_size, core.num_candidates), (core.batch, 1))

    myopic = MyopicOracle(core.sim, core.num_candidates, slate_size)(core.users, core.docs)
    for base in (None, last_candidates):
        rollout = RolloutOracle(core.sim, core.num_candidates, slate_size, depth=0, rollouts=3, base=base)
        np.testing.assert_array_equal(rollout(core.users, core.docs), myopic)


def test_rollout_uses_common_random_numbers():
    """Interest Exploration users are static and the next candidates do not depend on the slate: with
    the same draws for every candidate, continuations are equal and only the first reward differs,
    so even the plain argmax of the rollout means (z = 0) is the myopic slate. Independent draws per
    candidate would add noise of several clicks and pick other slates."""
    env = _state("interest_exploration", {}, 2, users=64)
    core = env.core
    rollout = RolloutOracle(core.sim, core.num_candidates, 2, candidates=4, rollouts=2, depth=5, z=0.0)
    steps_left = np.full(core.batch, 50)
    myopic = MyopicOracle(core.sim, core.num_candidates, 2)(core.users, core.docs)
    np.testing.assert_array_equal(rollout(core.users, core.docs, steps_left), myopic)


def test_rollout_looks_ahead_where_the_myopic_slate_is_worse():
    """Long-Term Satisfaction with a strong satisfaction effect (β = 1), 2-step sessions, two candidates
    with clickbait 1 (choc) and 0 (kale), one slot. By recsim.md §2, Q(c) = E[r₀ | c] + E[r₁], where
    r₁ is the myopic (highest of N fresh clickbaits c') engagement after NPE₁ = 0.7·NPE₀ − 2(c − 0.5):
    E[r₁] = ∫ exp((4 + c')·SAT₁ + σ²/2) N c'^(N−1) dc'. Choc wins now, kale wins both steps."""
    n, sd = 2, 0.1
    env = make_vector_env("long_term_satisfaction", num_envs=5, num_candidates=n, slate_size=1, seed=0,
                          sensitivity=1.0, time_budget=2, choc_stddev=sd, kale_stddev=sd, innovation_stddev=1e-9)
    env.reset(seed=0)
    core = env.core
    npe0 = np.array([-1.5, -0.5, 0.0, 0.7, 1.6])
    core.users["npe"][:], core.users["satisfaction"][:] = npe0, _sigmoid(npe0)
    core.docs["clickbait"][:] = [0.0, 1.0]

    grid = np.linspace(0.0, 1.0, 20001)

    def q(c):
        now = np.exp((4.0 + c) * _sigmoid(npe0) + sd ** 2 / 2)
        sat1 = _sigmoid(0.7 * npe0 - 2.0 * (c - 0.5))[:, None]
        later = np.trapezoid(np.exp((4.0 + grid) * sat1 + sd ** 2 / 2) * n * grid ** (n - 1), grid, axis=1)
        return now + later

    assert (q(0.0) > q(1.0) + 1.0).all()  # the formula's verdict: kale (candidate 0) for every user
    myopic = MyopicOracle(core.sim, n, 1)(core.users, core.docs)
    rollout = RolloutOracle(core.sim, n, 1, candidates=None, rollouts=8)(core.users, core.docs)
    np.testing.assert_array_equal(myopic[:, 0], 1)
    np.testing.assert_array_equal(rollout[:, 0], 0)


@pytest.mark.parametrize("name,params", [("interest_evolution", {}), ("long_term_satisfaction", TUTORIAL),
                                         ("interest_exploration", {"max_episode_steps": 6})])
def test_planning_leaves_the_real_episode_alone(name, params):
    """Steps served by the rollout oracle are the steps the env plays for the same slates with no
    planning at all (same rewards, observations, user state, env generator state), and
    play_episodes counts each user's first episode, terminal reward included."""
    users, n, k = 6, 5, 2
    planned = make_vector_env(name, num_envs=users, num_candidates=n, slate_size=k, seed=11, **params)
    replay = make_vector_env(name, num_envs=users, num_candidates=n, slate_size=k, seed=11, **params)
    oracle = RolloutOracle(planned.core.sim, n, k, candidates=3, rollouts=2, depth=3, seed=5)
    planned.reset(seed=11)
    replay.reset(seed=11)
    for _ in range(5):
        before = {key: v.copy() for key, v in planned.core.users.items()}
        action = oracle(planned.core.users, planned.core.docs, np.full(users, 6))
        for key, value in planned.core.users.items():  # planning worked on copies
            np.testing.assert_array_equal(value, before[key])
        obs, r, term, trunc, _ = planned.step(action)
        obs2, r2, term2, trunc2, _ = replay.step(action)
        np.testing.assert_array_equal(r, r2)
        np.testing.assert_array_equal(obs["doc"], obs2["doc"])
        np.testing.assert_array_equal(obs["user"], obs2["user"])
    for key in planned.core.users:
        np.testing.assert_array_equal(planned.core.users[key], replay.core.users[key])
    assert planned.core.rng.bit_generator.state == replay.core.rng.bit_generator.state

    # play_episodes against a plain loop over all sub-envs that stops counting a user once it is done
    if name == "long_term_satisfaction":
        params = {**params, "time_budget": 7}
    env = make_vector_env(name, num_envs=users, num_candidates=n, slate_size=k, seed=2, **params)
    myopic = MyopicOracle(env.core.sim, n, k)
    returns, lengths = play_episodes(env, myopic.act, users, seed=2)
    env.reset(seed=2)
    expected, steps, done = np.zeros(users), np.zeros(users, dtype=int), np.zeros(users, dtype=bool)
    while not done.all():
        _, r, term, trunc, _ = env.step(myopic(env.core.users, env.core.docs))
        expected += np.where(done, 0.0, r)
        steps += ~done
        done |= term | trunc
    np.testing.assert_allclose(returns, expected, rtol=1e-12)
    np.testing.assert_array_equal(lengths, steps)
    if name != "interest_evolution":  # fixed-length sessions
        assert (lengths == (7 if name == "long_term_satisfaction" else 6)).all()
