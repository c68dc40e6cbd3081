"""FQE that cannot run away and knows how wrong it may be (recsys_exp.offline.fqe), model
uncertainty in the intervals (recsys_exp.offline.ope) and the verdicts that read both
(recsys_exp.offline.verdict). Hand-built problems with closed-form answers; no Ray.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recsys_exp.offline.fqe import FQEConfig, fit_fqe, q_values, support_values
from recsys_exp.offline.ope import OPEInputs, estimate
from recsys_exp.offline.verdict import add_verdicts, judge, return_bounds, selected

SMALL = FQEConfig(hidden_sizes=(16, 16), iterations=8, min_updates_per_iteration=60, batch_size=128, lr=1e-2,
                  refits=0)


def test_return_bounds_by_hand():
    low, high = return_bounds(-1.0, 2.0, 0.5, np.array([3, 1, 0]))
    np.testing.assert_allclose(high, [2.0 * 1.75, 2.0, 0.0])
    np.testing.assert_allclose(low, [-1.75, -1.0, 0.0])
    assert return_bounds(0.5, 2.0, 1.0, 4) == (0.0, 8.0)  # non-negative rewards: a return may be 0
    assert return_bounds(0.0, 1.0, 0.9, None)[1] == pytest.approx(10.0)  # 1 / (1 - gamma)
    assert return_bounds(0.0, 1.0, 1.0, None)[1] == np.inf


def aliased_sessions(n_sessions: int, length: int, rng: np.random.Generator, reward_noise: float = 0.0):
    """Sessions of ``length`` steps whose observation never changes (it cannot tell the step), one
    item of two shown (the logged one at random), reward 1 (+ noise) per step, the last step terminal.
    The true value of any policy at step t is the remaining ``length - t`` (plus zero-mean noise)."""
    n = n_sessions * length
    steps = np.tile(np.arange(length), n_sessions)
    episodes = np.repeat(np.arange(n_sessions), length)
    slates = rng.integers(0, 2, (n, 1))
    target_next = np.zeros((n, 1, 1), np.int64)  # the target always shows item 0
    return dict(obs=np.ones((n, 1), np.float32), slates=slates, rewards=1.0 + reward_noise * rng.normal(size=n),
                next_obs=np.ones((n, 1), np.float32), dones=steps == length - 1, next_support=target_next,
                next_support_prob=np.ones((n, 1)), num_candidates=2, gamma=1.0), steps, episodes


def test_time_aware_fqe_recovers_a_horizon_the_observation_hides():
    data, steps, episodes = aliased_sessions(120, 4, np.random.default_rng(0))
    q = fit_fqe(**data, config=replace(SMALL, iterations=6), steps=steps, episodes=episodes)
    grid_steps = np.arange(4)
    fitted = q_values(q, np.ones((4, 1), np.float32), np.zeros((4, 1), np.int64), grid_steps)
    np.testing.assert_allclose(fitted, 4 - grid_steps, atol=0.15)
    assert q.diagnostics["held_out_rows"] == 12 * 4  # 10% of the sessions, whole
    assert q.diagnostics["fit_r2"] > 0.9 and abs(q.diagnostics["bellman_residual"]["mean"]) < 0.1
    assert q.diagnostics["discounted_length"] == 4.0  # gamma = 1: every session holds 4 decisions


def test_bias_bound_of_a_truncated_fit_is_its_true_bias():
    # Two FQE iterations on 5-step sessions with reward 1 per step: Q(t) = min(2, 5 - t) (the
    # targets of iteration 2 are r + min(1, 4 - t)), so V(s_0) = 2 against the true 5: bias -3.
    # Held-out Bellman residuals Q(t) - 1 - V(t+1) are -1, -1, -1, 0, 0 at t = 0..4: mean -0.6,
    # times G = 5 decisions per session gives a bound of exactly 3.
    data, steps, episodes = aliased_sessions(200, 5, np.random.default_rng(3))
    q = fit_fqe(**data, config=replace(SMALL, iterations=2, min_updates_per_iteration=300), steps=steps,
                episodes=episodes)
    first = steps == 0
    v0 = support_values(q, data["obs"][first], np.zeros((first.sum(), 1, 1), np.int64), np.ones((first.sum(), 1)),
                        steps[first])
    np.testing.assert_allclose(v0, 2.0, atol=0.1)
    assert q.diagnostics["discounted_length"] == 5.0
    assert q.diagnostics["bias_bound"] == pytest.approx(3.0, abs=0.15)
    # dm's interval widened by the bound covers the true value 5; the resampling interval alone does not
    inputs = OPEInputs(episode=episodes, reward=data["rewards"], behaviour_prob=np.full(len(steps), 0.5),
                       target_prob=(data["slates"][:, 0] == 0).astype(float),
                       q_logged=q_values(q, data["obs"], data["slates"], steps),
                       v_target=support_values(q, data["obs"], np.zeros((len(steps), 1, 1), np.int64),
                                               np.ones((len(steps), 1)), steps))
    plain = estimate(inputs, ["dm"], n_bootstrap=200)["dm"]
    widened = estimate(inputs, ["dm"], n_bootstrap=200, model_bias=q.diagnostics["bias_bound"])["dm"]
    assert not plain["ci95"][0] <= 5.0 <= plain["ci95"][1]
    assert widened["ci95"][0] <= 5.0 <= widened["ci95"][1]
    np.testing.assert_allclose(np.subtract(widened["ci95"], plain["ci95"]), [-widened["model_bias"],
                                                                            widened["model_bias"]])
    assert "model_bias" not in estimate(inputs, ["dm", "ips"], n_bootstrap=50, model_bias=1.0)["ips"]


def test_behaviour_check_compares_the_logging_policys_model_value_with_its_logged_returns():
    rng = np.random.default_rng(2)
    data, steps, episodes = aliased_sessions(80, 3, rng, reward_noise=0.5)
    next_logged = np.roll(data["slates"], -1, axis=0)
    q = fit_fqe(**data, config=replace(SMALL, iterations=4), steps=steps, episodes=episodes,
                next_logged_slates=next_logged)
    check = q.diagnostics["behaviour_check"]
    returns = np.bincount(episodes, weights=data["rewards"])  # numpy's own session returns
    assert check["sessions"] == 80 and check["logged"] == pytest.approx(returns.mean())
    half = 1.96 * returns.std(ddof=1) / np.sqrt(80)
    assert check["logged_ci95"][0] == pytest.approx(returns.mean() - half, rel=0.02)
    assert abs(check["gap"]) < 0.3 and check["gap"] == pytest.approx(check["model"] - check["logged"])


def test_bootstrap_refits_spread_like_the_sampling_error_of_a_mean():
    # One-step sessions, one item of two, rewards N(mu_a, 1): each refit's Q(a) is a bootstrap mean,
    # whose spread is the standard error 1/sqrt(n_a) of the per-item mean.
    rng = np.random.default_rng(3)
    n = 800
    items = rng.integers(0, 2, n)
    rewards = np.where(items == 0, 1.0, 2.0) + rng.normal(size=n)
    config = replace(SMALL, iterations=1, refits=40, validation_fraction=0.0, min_updates_per_iteration=300)
    q = fit_fqe(np.zeros((n, 1), np.float32), items[:, None], rewards, np.zeros((n, 1), np.float32),
                np.ones(n, bool), np.zeros((n, 1, 1), np.int64), np.ones((n, 1)), 2, 1.0, config,
                episodes=np.arange(n))
    grid = np.zeros((2, 1), np.float32)
    main, refits = q_values(q, grid, np.array([[0], [1]]), refits=True)
    np.testing.assert_array_equal(main, q_values(q, grid, np.array([[0], [1]])))
    assert refits.shape == (40, 2)
    for a in (0, 1):
        observed = rewards[items == a]
        assert main[a] == pytest.approx(observed.mean(), abs=0.08)
        standard_error = observed.std() / np.sqrt(len(observed))
        assert 0.5 < refits[:, a].std(ddof=1) / standard_error < 1.7, (a, refits[:, a].std(ddof=1), standard_error)


def bandit(n: int = 200, seed: int = 4) -> OPEInputs:
    rng = np.random.default_rng(seed)
    reward = rng.random(n)
    return OPEInputs(episode=np.arange(n), reward=reward, behaviour_prob=np.full(n, 0.5),
                     target_prob=rng.integers(0, 2, n).astype(float), q_logged=reward * 0.5, v_target=np.full(n, 0.4))


def test_model_refits_are_bagged_and_widen_the_interval_by_their_spread():
    inputs = bandit()
    n, reps = 200, 400
    base = estimate(inputs, ["dm", "dr", "ips"], n_bootstrap=reps, seed=1)
    shifts = np.array([0.3, -0.1, 0.1])  # three refits: the model + shift everywhere
    refit = estimate(replace(inputs, q_logged_refits=inputs.q_logged + shifts[:, None],
                             v_target_refits=inputs.v_target + shifts[:, None]), ["dm", "dr", "ips"],
                     n_bootstrap=reps, seed=1)
    assert refit["dm"]["model_refits"] == 3 and "model_refits" not in refit["ips"]
    assert refit["ips"]["ci95"] == base["ips"]["ci95"]  # not model-based: untouched
    # By hand, on the same resamples: replicate j uses the model shifted by [0, 0.3, -0.1, 0.1][j % 4].
    offsets = np.r_[0.0, shifts]
    draws = np.random.default_rng(1).integers(0, n, size=(reps, n))
    w = inputs.target_prob / inputs.behaviour_prob
    dm_reps = np.array([inputs.v_target[d].mean() + offsets[j % 4] for j, d in enumerate(draws)])
    dr_reps = np.array([(w[d] * (inputs.reward[d] - inputs.q_logged[d] - offsets[j % 4])
                         + inputs.v_target[d] + offsets[j % 4]).mean() for j, d in enumerate(draws)])
    np.testing.assert_allclose(refit["dm"]["ci95"], np.quantile(dm_reps, [0.025, 0.975]))
    np.testing.assert_allclose(refit["dr"]["ci95"], np.quantile(dr_reps, [0.025, 0.975]))
    # the value is the mean over the four models
    assert refit["dm"]["value"] == pytest.approx(inputs.v_target.mean() + offsets.mean())
    assert refit["dm"]["ci95"][1] - refit["dm"]["ci95"][0] > base["dm"]["ci95"][1] - base["dm"]["ci95"][0] + 0.2


def test_mean_weight_has_a_normal_interval_and_flags_unnormalised_estimators():
    inputs = bandit()
    est = estimate(inputs, ["ips", "snips"], n_bootstrap=100)
    w = inputs.target_prob / inputs.behaviour_prob
    half = 1.96 * w.std(ddof=1) / np.sqrt(len(w))
    np.testing.assert_allclose(est["ips"]["mean_weight"], [w.mean(), w.mean() - half, w.mean() + half])
    # Half of the sessions a target would produce are missing: weights of a third of their size
    thin = estimate(replace(inputs, behaviour_prob=np.full(200, 1.0)), ["ips", "snips"], n_bootstrap=100)
    feasible = (0.0, 1.0)
    reliable, reason = judge(thin["ips"], feasible, "ips")
    assert not reliable and "mean importance weight" in reason and "biased low" in reason
    assert judge(thin["snips"], feasible, "snips")[0]  # self-normalised: the mean weight cancels


def entry(value, ci, **extra):
    return {"value": value, "ci95": list(ci), "n_episodes": 500, **extra}


def test_model_checks_flag_estimates_that_lean_on_a_bad_model():
    feasible = (0.0, 100.0)
    dm = entry(50.0, (49.0, 51.0), model_refits=4)
    bad_fit = {"fit_r2": -0.2}  # worse than predicting the held-out targets' mean
    assert "explains -20%" in judge(dm, feasible, "dm", bad_fit)[1] and not judge(dm, feasible, "dm", bad_fit)[0]
    assert judge(dm, feasible, "dm", {"fit_r2": 0.2})[0]  # a poor fit of noisy one-step targets is not flagged
    # The behaviour member misses the logged return 40 [39, 41] by +5: more than 1 + 1 allows
    off = {"fit_r2": 0.9, "behaviour_check": {"model": 45.0, "logged": 40.0, "logged_ci95": [39.0, 41.0],
                                              "gap": 5.0, "sessions": 500}}
    reliable, reason = judge(dm, feasible, "dm", off)
    assert not reliable and "misses its logged mean return 40 [39, 41] by +5 (+12.5%)" in reason
    close = {**off, "behaviour_check": {**off["behaviour_check"], "model": 41.5, "gap": 1.5}}
    reliable, reason = judge(dm, feasible, "dm", close)
    assert reliable and "interval over 4 model refits" in reason and "held-out R² 0.90" in reason
    # dr with healthy weights does not lean on the model; dros always does
    dr = entry(50.0, (48.0, 52.0), ess=300.0, mean_weight=[1.0, 0.9, 1.1])
    assert judge(dr, feasible, "dr", off)[0] and not judge(dr, feasible, "dros", off)[0]
    # Degenerate weights: dr and sndr are flagged by their ESS; dros and switch_dr, which shrink or switch
    # such weights off, lean on the model and are judged by its checks instead
    few = {**dr, "ess": 2.0}
    for name in ("dr", "sndr"):
        reliable, reason = judge(few, feasible, name, close)
        assert not reliable and reason.startswith("ESS 2.0 of 500")
    for name in ("dros", "switch_dr"):
        assert judge(few, feasible, name, close)[0] and not judge(few, feasible, name, off)[0]
        # shrunk weights far from 1 are their design, not a fault: noted without "not 1"
        reliable, reason = judge({**few, "mean_weight": [0.1, 0.05, 0.15]}, feasible, name, close)
        assert reliable and "mean importance weight 0.1 [0.05, 0.15]" in reason and "not 1" not in reason


def test_support_flag_and_the_mean_weight_tolerance():
    feasible = (0.0, 100.0)
    ips = entry(50.0, (45.0, 55.0), ess=400.0, mean_weight=[1.000005, 1.000004, 1.000006])  # on-policy rounding
    assert judge(ips, feasible, "ips")[0]
    assert judge({**ips, "mean_weight": [0.99, 0.97, 1.01]}, feasible, "ips")[0]  # within 0.02 of 1
    assert not judge({**ips, "mean_weight": [0.95, 0.94, 0.96]}, feasible, "ips")[0]
    # The target puts 10% [5%, 20%] of its probability where the logger acts: every estimator is flagged
    for name in ("ips", "snips", "dm", "dr"):
        reliable, reason = judge(ips, feasible, name, None, [0.1, 0.05, 0.2])
        assert not reliable and "10% [5%, 20%] of its probability" in reason
        assert judge(ips, feasible, name, None, [0.45, 0.3, 0.6])[0]  # the interval reaches 50%


def test_recommended_skips_flagged_estimates_and_selected_falls_back_in_preference_order():
    feasible = (0.0, 100.0)
    off = {"fit_r2": 0.1}
    estimates = {"ips": entry(30.0, (10, 50), ess=50.0, mean_weight=[0.4, 0.3, 0.5]),
                 "snips": entry(60.0, (50, 70), ess=50.0, mean_weight=[0.4, 0.3, 0.5]),
                 "dm": entry(80.0, (79, 81))}
    assert add_verdicts(estimates, feasible, off) == "snips"
    ope = {"estimates": estimates, "recommended": "snips"}
    assert selected(ope, "recommended") == "snips" and selected(ope, "ips") == "ips"
    assert selected({"estimates": estimates, "recommended": None}, "recommended") == "snips"  # first in PREFERENCE
    assert selected({"estimates": {"dm": estimates["dm"]}, "recommended": None}, "recommended") == "dm"
