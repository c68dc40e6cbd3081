"""Off-policy estimators (recsys_exp.offline.ope) and fitted Q evaluation (recsys_exp.offline.fqe).

Small slate problems (N=3 items, slates of K=2, so 6 ordered slates) whose true policy value is
computed exactly; Monte Carlo over many logged datasets checks unbiasedness, and a "complete"
dataset (every context/slate repeated in proportion to its probability) checks the expectation
identities exactly. No Ray.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from recsys_exp.offline.fqe import FQEConfig, fit_fqe, q_values, support_values
from recsys_exp.offline.ope import (
    ALL_ESTIMATORS,
    ESTIMATORS,
    OPEError,
    OPEInputs,
    check_propensities,
    decision_support,
    estimate,
)

N_ITEMS, SLATE_SIZE = 3, 2
SLATES = np.array(list(itertools.permutations(range(N_ITEMS), SLATE_SIZE)))  # (6, 2)
POSITION_BIAS = np.array([0.8, 0.5])  # click probability of slot k = POSITION_BIAS[k] * attraction[x, item]


def slot_marginals(policy: np.ndarray) -> np.ndarray:
    """(X, 6) slate probabilities -> (X, K, N): probability that slot k shows item j."""
    out = np.zeros((len(policy), SLATE_SIZE, N_ITEMS))
    for a, slate in enumerate(SLATES):
        for k, item in enumerate(slate):
            out[:, k, item] += policy[:, a]
    return out


def prefix_probs(policy: np.ndarray, states: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """(n, K) probability that slots 0..k show the logged slate's first k+1 items: slot 0's marginal,
    then (K = 2) the whole slate's probability."""
    first = slot_marginals(policy)[states, 0, SLATES[slates, 0]]
    return np.stack([first, policy[states, slates]], axis=1)


def mean_reward(attraction: np.ndarray) -> np.ndarray:
    """(X, N) attractions -> (X, 6) expected clicks per slate (additive over slots)."""
    return (POSITION_BIAS * attraction[:, SLATES]).sum(-1)


def sample_slates(rng: np.random.Generator, policy: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Slate index drawn from ``policy[state]`` for each state."""
    cum = np.cumsum(policy[states], axis=1)
    return np.minimum((rng.random(len(states))[:, None] > cum).sum(1), len(SLATES) - 1)


# ------------------------------------------------------------------- contextual bandit

# Context distribution and behaviour policy are rationals (tenths and twelfths), so a dataset with
# P_X_COUNTS[x] * MU_COUNTS[x, a] copies of each (x, a) is exactly the logging distribution.
P_X_COUNTS = np.array([5, 3, 2])
MU_COUNTS = np.array([[1, 2, 3, 1, 2, 3], [3, 1, 2, 2, 3, 1], [2, 2, 2, 2, 2, 2]])
P_X = P_X_COUNTS / P_X_COUNTS.sum()
MU = MU_COUNTS / MU_COUNTS.sum(1, keepdims=True)
PI = np.array([[0.3, 0.4, 0.05, 0.05, 0.15, 0.05], [0.05, 0.05, 0.2, 0.4, 0.05, 0.25],
               [0.4, 0.1, 0.3, 0.1, 0.05, 0.05]])
ATTRACTION = np.array([[0.9, 0.3, 0.5], [0.2, 0.7, 0.4], [0.6, 0.6, 0.1]])
R_BAR = mean_reward(ATTRACTION)
V_PI = float(P_X @ (PI * R_BAR).sum(1))
V_MU = float(P_X @ (MU * R_BAR).sum(1))
Q_WRONG = 0.3  # a deliberately wrong reward model for dr: constant, with v_target consistent with it


def bandit_inputs(contexts: np.ndarray, slates: np.ndarray, clicks: np.ndarray) -> OPEInputs:
    """OPE inputs for one-row episodes; ``clicks`` (n, K) are per-slot rewards."""
    n = len(contexts)
    items = SLATES[slates]
    return OPEInputs(
        episode=np.arange(n), reward=clicks.sum(1), behaviour_prob=MU[contexts, slates],
        target_prob=PI[contexts, slates],
        behaviour_slot_prob=slot_marginals(MU)[contexts[:, None], np.arange(SLATE_SIZE), items],
        target_slot_prob=slot_marginals(PI)[contexts[:, None], np.arange(SLATE_SIZE), items],
        slot_reward=clicks, q_logged=np.full(n, Q_WRONG), v_target=np.full(n, Q_WRONG),
        behaviour_prefix_prob=prefix_probs(MU, contexts, slates), target_prefix_prob=prefix_probs(PI, contexts, slates))


def sample_bandit(rng: np.random.Generator, n: int) -> OPEInputs:
    """n logged rows: x ~ P_X, A ~ MU(.|x), a Bernoulli click per slot."""
    contexts = rng.choice(len(P_X), size=n, p=P_X)
    slates = sample_slates(rng, MU, contexts)
    click_prob = POSITION_BIAS * ATTRACTION[contexts[:, None], SLATES[slates]]
    return bandit_inputs(contexts, slates, (rng.random(click_prob.shape) < click_prob).astype(float))


def hand_built_bandit() -> OPEInputs:
    """Four one-step episodes with arbitrary valid numbers (slates of 2)."""
    return OPEInputs(
        episode=np.array([7, 3, 9, 4]), reward=np.array([1.0, 0.0, 2.0, 1.0]),
        behaviour_prob=np.array([0.5, 0.25, 0.2, 0.8]), target_prob=np.array([0.25, 0.5, 0.6, 0.4]),
        q_logged=np.array([0.5, 0.2, 1.0, 0.7]), v_target=np.array([0.6, 0.3, 0.9, 0.8]),
        behaviour_slot_prob=np.array([[0.5, 0.5], [0.25, 1.0], [0.4, 0.5], [0.8, 0.8]]),
        target_slot_prob=np.array([[1.0, 0.5], [0.5, 0.5], [0.2, 1.0], [0.4, 0.2]]),
        slot_reward=np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), gamma=0.5,
        behaviour_prefix_prob=np.array([[0.5, 0.5], [0.25, 0.25], [0.4, 0.2], [0.8, 0.8]]),
        target_prefix_prob=np.array([[1.0, 0.25], [0.5, 0.5], [0.9, 0.6], [0.4, 0.4]]))


def test_hand_built_bandit_matches_closed_forms():
    inputs = hand_built_bandit()
    w = inputs.target_prob / inputs.behaviour_prob  # [0.5, 2, 3, 0.5]
    r = inputs.reward
    result = estimate(inputs, n_bootstrap=0)

    assert list(result) == list(ESTIMATORS)
    assert result["ips"]["value"] == pytest.approx(np.mean(w * r), rel=1e-12)  # = 7.5 / 4
    assert result["snips"]["value"] == pytest.approx(np.sum(w * r) / np.sum(w), rel=1e-12)  # = 7.5 / 6
    assert result["dm"]["value"] == pytest.approx(np.mean(inputs.v_target), rel=1e-12)
    dr = np.mean(w * (r - inputs.q_logged) + inputs.v_target)
    assert result["dr"]["value"] == pytest.approx(dr, rel=1e-12)
    slot_w = inputs.target_slot_prob / inputs.behaviour_slot_prob
    assert result["iips"]["value"] == pytest.approx(np.mean((slot_w * inputs.slot_reward).sum(1)), rel=1e-12)
    assert result["ips"]["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert result["ips"]["n_episodes"] == result["ips"]["n_rows"] == 4
    assert "ess" not in result["dm"]
    assert np.isnan(result["ips"]["std_err"]) and np.isnan(result["ips"]["ci95"]).all()


def test_hand_built_episodes_per_decision_weights():
    """Two episodes (2 steps and 1 step): per-decision weights, snips carries the final weight."""
    inputs = OPEInputs(
        episode=np.array([0, 0, 1]), reward=np.array([1.0, 2.0, 3.0]),
        behaviour_prob=np.array([0.5, 0.5, 0.5]), target_prob=np.array([1.0, 0.25, 0.25]),
        q_logged=np.array([0.5, 1.0, 2.0]), v_target=np.array([0.7, 1.5, 2.5]), gamma=0.9)
    # rho = [2, 0.5 | 0.5]; w = [2, 1 | 0.5], carried to t=1 for episode 1.
    result = estimate(inputs, ["ips", "snips", "dm", "dr"], n_bootstrap=0)
    assert result["ips"]["value"] == pytest.approx((2 * 1 + 0.9 * 1 * 2 + 0.5 * 3) / 2)
    snips = (2 * 1 + 0.5 * 3) / (2 + 0.5) + 0.9 * (1 * 2 + 0) / (1 + 0.5)
    assert result["snips"]["value"] == pytest.approx(snips)
    assert result["dm"]["value"] == pytest.approx((0.7 + 2.5) / 2)
    ep0 = 2 * (1 - 0.5) + 1 * 0.7 + 0.9 * (1 * (2 - 1.0) + 2 * 1.5)
    ep1 = 0.5 * (3 - 2.0) + 1 * 2.5
    assert result["dr"]["value"] == pytest.approx((ep0 + ep1) / 2)
    assert result["ips"]["ess"] == pytest.approx((1 + 0.5) ** 2 / (1 + 0.25))
    assert result["ips"]["n_episodes"] == 2 and result["ips"]["n_rows"] == 3


def test_decision_support_by_hand():
    """The mean per-decision weight: per session the mean of rho_t, then the mean over sessions with
    its Student-t interval; None when a propensity is missing."""
    from scipy import stats

    inputs = OPEInputs(episode=np.array([0, 0, 1, 2, 2, 2]), reward=np.zeros(6),
                       behaviour_prob=np.array([0.5, 0.5, 0.5, 1.0, 1.0, 0.25]),
                       target_prob=np.array([1.0, 0.0, 0.25, 1.0, 0.0, 0.0]))
    per_session = np.array([(2 + 0) / 2, 0.5, (1 + 0 + 0) / 3])
    half = stats.t.ppf(0.975, 2) * per_session.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(decision_support(inputs), [per_session.mean(), per_session.mean() - half,
                                                          per_session.mean() + half])
    assert decision_support(replace(inputs, behaviour_prob=np.r_[np.nan, inputs.behaviour_prob[1:]])) is None


def test_hand_built_bandit_new_estimators_match_obp():
    """One-step rows: sndr, dros (fixed lambda), switch_dr (fixed tau), rips and clipping from their
    formulas, written as OBP (github.com/st-tech/zr-obp, obp/ope/estimators.py and
    estimators_slate.py) computes them on the same inputs: each round's q_hat(x, pi) + weight *
    (r - q_hat(x, a)), averaged (SelfNormalizedDoublyRobust divides the weight by the mean weight;
    DoublyRobustWithShrinkage's weight is lambda w / (w^2 + lambda); SwitchDoublyRobust's w 1{w <= tau};
    DoublyRobust / InverseProbabilityWeighting with lambda_ = c clip to min(w, c)); RIPS sums each
    slot's reward times its cascade weight and divides by the number of slates. OBP's SNIPW and SNDR
    do not clip; our clipped snips and sndr are checked against the formula with min(w, c)."""
    inputs = hand_built_bandit()
    w = inputs.target_prob / inputs.behaviour_prob  # [0.5, 2, 3, 0.5]
    r, q, v = inputs.reward, inputs.q_logged, inputs.v_target
    lam, tau, c = 1.5, 1.0, 1.5
    result = estimate(inputs, ["sndr", "dros", "switch_dr", "rips"], n_bootstrap=0, dros_lambda=lam, switch_tau=tau)

    assert result["sndr"]["value"] == pytest.approx(np.mean(v + w * (r - q) / w.mean()), rel=1e-12)  # = 1.15
    shrunk = lam * w / (w ** 2 + lam)
    assert result["dros"]["value"] == pytest.approx(np.mean(v + shrunk * (r - q)), rel=1e-12)
    switched = w * (w <= tau)  # [0.5, 0, 0, 0.5]
    assert result["switch_dr"]["value"] == pytest.approx(np.mean(v + switched * (r - q)), rel=1e-12)
    cascade = inputs.target_prefix_prob / inputs.behaviour_prefix_prob
    assert result["rips"]["value"] == pytest.approx(np.sum(inputs.slot_reward * cascade) / 4, rel=1e-12)
    assert result["dros"]["ess"] == pytest.approx(shrunk.sum() ** 2 / (shrunk ** 2).sum())
    assert result["switch_dr"]["ess"] == pytest.approx(1.0 ** 2 / 0.5)  # two weights of 0.5
    assert (result["dros"]["lambda"], result["dros"]["tuned"]) == (lam, False)
    assert (result["switch_dr"]["tau"], result["switch_dr"]["tuned"], result["switch_dr"]["switched_share"]) == (
        tau, False, 0.5)
    assert result["sndr"]["clip"] is None and result["rips"]["clip"] is None

    clipped = estimate(inputs, ["ips", "snips", "dr", "sndr", "iips", "rips", "dros"], n_bootstrap=0, clip=c,
                       dros_lambda=lam)
    wc = np.minimum(w, c)  # [0.5, 1.5, 1.5, 0.5]
    assert clipped["ips"]["value"] == pytest.approx(np.mean(wc * r), rel=1e-12)
    assert clipped["snips"]["value"] == pytest.approx(np.sum(wc * r) / np.sum(wc), rel=1e-12)
    assert clipped["dr"]["value"] == pytest.approx(np.mean(v + wc * (r - q)), rel=1e-12)
    assert clipped["sndr"]["value"] == pytest.approx(np.mean(v) + np.sum(wc * (r - q)) / np.sum(wc), rel=1e-12)
    slot_w = np.minimum(inputs.target_slot_prob / inputs.behaviour_slot_prob, c)
    assert clipped["iips"]["value"] == pytest.approx(np.mean((slot_w * inputs.slot_reward).sum(1)), rel=1e-12)
    assert clipped["rips"]["value"] == pytest.approx(np.mean((np.minimum(cascade, c) * inputs.slot_reward).sum(1)),
                                                     rel=1e-12)
    assert clipped["ips"]["ess"] == pytest.approx(wc.sum() ** 2 / (wc ** 2).sum())
    for name in ("ips", "snips", "dr", "sndr", "iips", "rips"):
        assert clipped[name]["clip"] == c, name
    # dros shrinks its own weights and ignores clip.
    assert "clip" not in clipped["dros"] and clipped["dros"]["value"] == result["dros"]["value"]


def test_dros_and_switch_dr_tuning_minimise_obps_mse_score():
    """Tuned lambda / tau: the candidate minimising OBP's ``_estimate_mse_score`` with
    ``use_bias_upper_bound=False`` (DoublyRobustWithShrinkage / SwitchDoublyRobust, as their
    ``...Tuning(tuning_method="mse")`` classes use it): np.var(round rewards) / n + |mean((w - w_hat)
    (r - q))|^2, over {inf, the powers of two 2^3 .. 2^-2 around the weights 0.5 .. 3 (squared for
    lambda), 0}, the first (larger) one on ties."""
    inputs = hand_built_bandit()
    w = inputs.target_prob / inputs.behaviour_prob
    r, q, v = inputs.reward, inputs.q_logged, inputs.v_target
    powers = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]

    def obp_score(w_hat: np.ndarray) -> tuple[float, float]:
        rounds = v + w_hat * (r - q)
        return np.var(rounds) / len(r) + abs(np.mean((w - w_hat) * (r - q))) ** 2, rounds.mean()

    lambdas = [np.inf, *[p ** 2 for p in powers], 0.0]
    dros = [obp_score(w if lam == np.inf else lam * w / (w ** 2 + lam)) for lam in lambdas]
    taus = [np.inf, *powers, 0.0]
    switch = [obp_score(w * (w <= tau)) for tau in taus]
    best_lambda, best_tau = (int(np.argmin([score for score, _ in scores])) for scores in (dros, switch))
    assert (lambdas[best_lambda], taus[best_tau]) == (4.0, 1.0)  # neither dr (inf) nor dm (0)

    result = estimate(inputs, ["dros", "switch_dr"], n_bootstrap=0)
    assert (result["dros"]["lambda"], result["dros"]["tuned"]) == (4.0, True)
    assert result["dros"]["value"] == pytest.approx(dros[best_lambda][1], rel=1e-12)
    assert (result["switch_dr"]["tau"], result["switch_dr"]["tuned"]) == (1.0, True)
    assert result["switch_dr"]["value"] == pytest.approx(switch[best_tau][1], rel=1e-12)


def test_hand_built_episodes_new_estimators():
    """The episodes of test_hand_built_episodes_per_decision_weights (w = [2, 1 | 0.5]) with slates of 2:
    sndr, clipping, dros, switch_dr (which stays switched) and rips, per decision, by hand."""
    inputs = OPEInputs(
        episode=np.array([0, 0, 1]), reward=np.array([1.0, 2.0, 3.0]),
        behaviour_prob=np.array([0.5, 0.5, 0.5]), target_prob=np.array([1.0, 0.25, 0.25]),
        q_logged=np.array([0.5, 1.0, 2.0]), v_target=np.array([0.7, 1.5, 2.5]), gamma=0.9,
        slot_reward=np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 1.0]]),
        behaviour_prefix_prob=np.array([[0.8, 0.5], [0.6, 0.5], [0.9, 0.5]]),
        target_prefix_prob=np.array([[1.0, 1.0], [0.5, 0.25], [0.5, 0.25]]))
    g = 0.9
    result = estimate(inputs, ["sndr", "dros", "switch_dr", "rips"], n_bootstrap=0, dros_lambda=2.0,
                      switch_tau=1.5)
    # sndr: t=0 correction (2 * 0.5 + 0.5 * 1) / (2 + 0.5), model (0.7 + 2.5) / 2; t=1 correction
    # (1 * 1 + 0) / (1 + 0.5), model (2 * 1.5 + 0) / (2 + 0.5) (episode 1 carries its weight 0.5).
    sndr = 1.5 / 2.5 + 3.2 / 2 + g * (1 / 1.5 + 3 / 2.5)
    assert result["sndr"]["value"] == pytest.approx(sndr)
    # dros, lambda = 2: 2w / (w^2 + 2) = 2/3 for w = 2 and w = 1, 4/9 for w = 0.5.
    ep0 = 2 / 3 * 0.5 + 0.7 + g * (2 / 3 * 1 + 2 / 3 * 1.5)
    ep1 = 4 / 9 * 1 + 2.5
    assert result["dros"]["value"] == pytest.approx((ep0 + ep1) / 2)
    # switch_dr, tau = 1.5: episode 0's weight 2 > 1.5 at t=0, so the model carries it from there (its
    # weight 1 at t=1 stays switched off); episode 1 (0.5) keeps its correction. 2 of 3 rows switched.
    assert result["switch_dr"]["value"] == pytest.approx((0.7 + (0.5 * 1 + 2.5)) / 2)
    assert result["switch_dr"]["switched_share"] == pytest.approx(2 / 3)
    # rips: slot k weighted by w_{t-1} * prefix ratio; w_{t-1} = 2 at episode 0's second step.
    ep0 = (1 / 0.8) * 1 + g * 2 * ((0.5 / 0.6) * 1 + (0.25 / 0.5) * 1)
    ep1 = (0.5 / 0.9) * 2 + (0.25 / 0.5) * 1
    assert result["rips"]["value"] == pytest.approx((ep0 + ep1) / 2)
    # ESS of the last steps' mean slot weights: 2 * (5/6 + 1/2) / 2 = 4/3 and (5/9 + 1/2) / 2 = 19/36.
    last = np.array([4 / 3, 19 / 36])
    assert result["rips"]["ess"] == pytest.approx(last.sum() ** 2 / (last ** 2).sum())

    clipped = estimate(inputs, ["ips", "dr", "sndr"], n_bootstrap=0, clip=1.5)  # w -> [1.5, 1 | 0.5]
    assert clipped["ips"]["value"] == pytest.approx((1.5 * 1 + g * 1 * 2 + 0.5 * 3) / 2)
    ep0 = 1.5 * (1 - 0.5) + 0.7 + g * (1 * (2 - 1.0) + 1.5 * 1.5)
    ep1 = 0.5 * (3 - 2.0) + 2.5
    assert clipped["dr"]["value"] == pytest.approx((ep0 + ep1) / 2)
    sndr = (1.5 * 0.5 + 0.5 * 1) / 2.0 + 3.2 / 2 + g * (1 / 1.5 + 1.5 * 1.5 / 2.0)
    assert clipped["sndr"]["value"] == pytest.approx(sndr)


def test_sequential_dros_tuning_by_hand():
    """Tuned dros on the two episodes above: each episode's per-decision value written out for every
    candidate lambda in {inf, 16, 4, 1, 1/4, 1/16, 0} (powers 2^2 .. 2^-2 around the weights 0.5 .. 2),
    scored by Var_n / n + (mean (dr - dros))^2."""
    inputs = OPEInputs(
        episode=np.array([0, 0, 1]), reward=np.array([1.0, 2.0, 3.0]),
        behaviour_prob=np.array([0.5, 0.5, 0.5]), target_prob=np.array([1.0, 0.25, 0.25]),
        q_logged=np.array([0.5, 1.0, 2.0]), v_target=np.array([0.7, 1.5, 2.5]), gamma=0.9)

    def episodes(f) -> np.ndarray:  # f maps a weight to the weight used
        return np.array([f(2) * (1 - 0.5) + 0.7 + 0.9 * (f(1) * (2 - 1) + f(2) * 1.5), f(0.5) * (3 - 2) + 2.5])

    dr = episodes(lambda x: x)
    lambdas = [np.inf, 16.0, 4.0, 1.0, 0.25, 0.0625, 0.0]
    values = [dr if lam == np.inf else episodes(lambda x, lam=lam: lam * x / (x ** 2 + lam)) for lam in lambdas]
    scores = [np.var(e) / 2 + np.mean(dr - e) ** 2 for e in values]
    best = int(np.argmin(scores))
    assert lambdas[best] == 16.0  # shrinks: neither dr nor dm
    result = estimate(inputs, ["dros"], n_bootstrap=0)["dros"]
    assert result["lambda"] == (None if lambdas[best] == np.inf else lambdas[best])
    assert result["value"] == pytest.approx(values[best].mean())


def test_estimator_settings_are_checked():
    inputs = hand_built_bandit()
    for kwargs, match in [({"clip": 0}, "clip must be a number > 0"), ({"clip": -1.0}, "clip must"),
                          ({"dros_lambda": -0.5}, "dros_lambda must be a number >= 0"),
                          ({"switch_tau": float("nan")}, "switch_tau must"), ({"clip": "big"}, "clip must")]:
        with pytest.raises(OPEError, match=match):
            estimate(inputs, ["ips"], n_bootstrap=0, **kwargs)
    # dm = dros with lambda 0 = switch_dr with tau 0; no clipping = clip inf
    zero = estimate(inputs, ["dm", "dros", "switch_dr"], n_bootstrap=0, dros_lambda=0, switch_tau=0)
    assert zero["dros"]["value"] == zero["switch_dr"]["value"] == pytest.approx(zero["dm"]["value"], rel=1e-12)
    assert estimate(inputs, ["ips"], n_bootstrap=0, clip=np.inf)["ips"]["value"] == estimate(
        inputs, ["ips"], n_bootstrap=0)["ips"]["value"]
    assert set(ALL_ESTIMATORS) == set(ESTIMATORS) | {"sndr", "dros", "switch_dr", "rips"}


def test_prefix_probabilities():
    """Target cascade probabilities from an enumerated slate distribution; behaviour ones from the logs
    (slot 0's marginal and the slate's propensity; unknown in between)."""
    from types import SimpleNamespace

    from recsys_exp.offline.evaluation import (
        behaviour_prefix_probability,
        prefix_probability,
    )

    support = np.array([[[0, 1], [0, 2], [1, 0]]] * 3)
    probs = np.array([[0.5, 0.3, 0.2]] * 3)
    logged = np.array([[0, 2], [2, 0], [1, 0]])
    np.testing.assert_allclose(prefix_probability(support, probs, logged), [[0.8, 0.3], [0.0, 0.0], [0.2, 0.2]])
    data = SimpleNamespace(num_rows=2, slate_size=3, propensity=np.array([0.1, 0.05]),
                           slot_propensity=np.array([[0.5, 0.4, 0.3], [0.2, 0.2, 0.2]]))
    np.testing.assert_array_equal(behaviour_prefix_probability(data), [[0.5, np.nan, 0.1], [0.2, np.nan, 0.05]])


def test_rips_without_middle_prefix_propensities_says_why():
    inputs = episodic_inputs()
    inputs.behaviour_prefix_prob = np.array([[0.5, np.nan, 0.25]] * 6)
    inputs.target_prefix_prob = np.full((6, 3), 0.25)
    inputs.slot_reward = np.ones((6, 3))
    with pytest.raises(OPEError, match=r"^behaviour prefix propensity missing \(NaN\) in 6 rows: .*; IS-based "
                                       r"estimators \(rips\) need it — rips needs the behaviour probability of every "
                                       r"slate prefix; .*slates of up to 2 items$"):
        check_propensities(inputs, ["rips"])


def test_complete_bandit_dataset_gives_the_true_value_exactly():
    """Each (x, A) repeated p(x) mu(A|x) * 120 times with its mean reward: E_mu[estimate] == V(pi)."""
    pairs = [(x, a) for x in range(len(P_X)) for a in range(len(SLATES))
             for _ in range(P_X_COUNTS[x] * MU_COUNTS[x, a])]
    contexts, slates = map(np.array, zip(*pairs))
    clicks = POSITION_BIAS * ATTRACTION[contexts[:, None], SLATES[slates]]  # expected per-slot rewards
    inputs = bandit_inputs(contexts, slates, clicks)  # dr with the wrong constant model
    result = estimate(inputs, n_bootstrap=0)
    for name in ("ips", "snips", "dr", "iips"):
        assert result[name]["value"] == pytest.approx(V_PI, rel=1e-12), name
    # sndr (the mean weight is exactly 1 here), rips (the additive reward satisfies the cascade
    # assumption), and dros / switch_dr without shrinkage or switching, all with the wrong model.
    new = estimate(inputs, ["sndr", "rips", "dros", "switch_dr"], n_bootstrap=0, dros_lambda=np.inf,
                   switch_tau=np.inf)
    for name, entry in new.items():
        assert entry["value"] == pytest.approx(V_PI, rel=1e-12), name
    # With the true model dm is exact too (and the dr family still is, whatever lambda / tau).
    true_model = replace(inputs, q_logged=R_BAR[contexts, slates], v_target=(PI * R_BAR).sum(1)[contexts])
    for name, entry in estimate(true_model, ["dm", "dr", "sndr", "dros", "switch_dr"], n_bootstrap=0).items():
        assert entry["value"] == pytest.approx(V_PI, rel=1e-12), name
    fixed = estimate(true_model, ["dros", "switch_dr"], n_bootstrap=0, dros_lambda=0.5, switch_tau=1.0)
    for name, entry in fixed.items():
        assert entry["value"] == pytest.approx(V_PI, rel=1e-12), name


def test_bandit_estimators_are_unbiased():
    rng = np.random.default_rng(1)
    n_datasets, n_rows = 2000, 50
    names = ("ips", "dr", "iips", "rips", "snips")
    values = np.array([[estimate(sample_bandit(rng, n_rows), names, n_bootstrap=0)[name]["value"] for name in names]
                       for _ in range(n_datasets)])
    mean, sem = values.mean(0), values.std(0, ddof=1) / np.sqrt(n_datasets)
    for j, name in enumerate(names[:4]):
        assert abs(mean[j] - V_PI) < 4 * sem[j], (name, mean[j], V_PI, sem[j])
    # The test has power: the logging policy's own value is far away, and iips is the tightest.
    assert abs(V_MU - V_PI) > 15 * sem.max()
    assert sem[2] < sem[0]
    # snips is biased at n=50 but consistent: close on one large dataset.
    big = estimate(sample_bandit(rng, 20_000), ["snips", "ips"], n_bootstrap=200, seed=3)
    assert abs(big["snips"]["value"] - V_PI) < 4 * big["snips"]["std_err"] < 0.05


def test_bandit_ips_with_wrong_propensities_is_detected_as_biased():
    """Sanity check of the Monte Carlo test's power: uniform instead of the logged propensities."""
    rng = np.random.default_rng(2)
    values = []
    for _ in range(500):
        inputs = sample_bandit(rng, 50)
        inputs.behaviour_prob = np.full(50, 1 / len(SLATES))
        values.append(estimate(inputs, ["ips"], n_bootstrap=0)["ips"]["value"])
    assert abs(np.mean(values) - V_PI) > 6 * np.std(values) / np.sqrt(len(values))


def test_bootstrap_ci_covers_the_truth_and_shrinks_with_data():
    rng = np.random.default_rng(4)

    def intervals(n_datasets: int, n_rows: int) -> np.ndarray:
        return np.array([estimate(sample_bandit(rng, n_rows), ["ips"], n_bootstrap=400, seed=i)["ips"]["ci95"]
                         for i in range(n_datasets)])

    small = intervals(100, 200)
    covered = int(((small[:, 0] <= V_PI) & (V_PI <= small[:, 1])).sum())
    assert covered >= 85, covered
    large = intervals(20, 800)  # 4x the data: about half the width
    width_ratio = np.diff(large).mean() / np.diff(small).mean()
    assert 0.35 < width_ratio < 0.65, width_ratio


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    inputs = sample_bandit(np.random.default_rng(5), 300)
    first = estimate(inputs, n_bootstrap=300, seed=11)
    assert first == estimate(inputs, n_bootstrap=300, seed=11)
    assert first != estimate(inputs, n_bootstrap=300, seed=12)
    for name in ("ips", "snips", "dr", "iips"):
        low, high = first[name]["ci95"]
        assert low <= first[name]["value"] <= high and first[name]["std_err"] > 0, name
    assert first["dm"]["ci95"] == pytest.approx([Q_WRONG, Q_WRONG])  # a constant model has no spread
    extra = estimate(inputs, ["sndr", "dros", "switch_dr", "rips"], n_bootstrap=300, seed=11, clip=20.0)
    for name, entry in extra.items():
        low, high = entry["ci95"]
        assert low <= entry["value"] <= high and entry["std_err"] > 0, name
    narrow = estimate(inputs, ["ips"], n_bootstrap=300, seed=11, confidence=0.5)["ips"]["ci95"]
    assert first["ips"]["ci95"][0] < narrow[0] < narrow[1] < first["ips"]["ci95"][1]


# ------------------------------------------------------------------- sequential (3-step MDP)

GAMMA, HORIZON = 0.9, 3
P0 = np.array([0.6, 0.4])
MU_SEQ = np.array([[0.3, 0.1, 0.2, 0.1, 0.2, 0.1], [0.1, 0.2, 0.1, 0.3, 0.1, 0.2]])
PI_SEQ = np.array([[0.1, 0.05, 0.45, 0.1, 0.2, 0.1], [0.05, 0.4, 0.05, 0.1, 0.1, 0.3]])
ATTRACTION_SEQ = np.array([[0.8, 0.2, 0.5], [0.3, 0.9, 0.4]])
R_SEQ = mean_reward(ATTRACTION_SEQ)
TO_STATE_1 = np.array([[0.2, 0.7, 0.5], [0.4, 0.9, 0.1]])  # P(s' = 1 | s, item in slot 0)
STOP = np.array([[0.1, 0.3, 0.2], [0.2, 0.1, 0.4]])  # P(episode ends after this step | s, item in slot 0)


def true_q_seq(policy: np.ndarray) -> np.ndarray:
    """(H, S, 6) exact finite-horizon Q_t(s, A) of ``policy`` by backward induction."""
    q = np.zeros((HORIZON, 2, len(SLATES)))
    v_next = np.zeros(2)
    first = SLATES[:, 0]
    for t in reversed(range(HORIZON)):
        p1 = TO_STATE_1[:, first]
        q[t] = R_SEQ + GAMMA * (1 - STOP[:, first]) * ((1 - p1) * v_next[0] + p1 * v_next[1])
        v_next = (policy * q[t]).sum(1)
    return q


Q_SEQ = true_q_seq(PI_SEQ)
V_SEQ_PI = float(P0 @ (PI_SEQ * Q_SEQ[0]).sum(1))
V_SEQ_MU = float(P0 @ (MU_SEQ * true_q_seq(MU_SEQ)[0]).sum(1))


def sample_episodes(rng: np.random.Generator, n_episodes: int, true_model: bool = False) -> OPEInputs:
    """Logged episodes under MU_SEQ; the q model is the true Q^pi_t or a wrong constant."""
    states = rng.choice(2, size=n_episodes, p=P0)
    alive = np.ones(n_episodes, dtype=bool)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("alive", "state", "slate", "clicks", "step")}
    for t in range(HORIZON):
        slates = sample_slates(rng, MU_SEQ, states)
        click_prob = POSITION_BIAS * ATTRACTION_SEQ[states[:, None], SLATES[slates]]
        clicks = (rng.random(click_prob.shape) < click_prob).astype(float)
        for key, value in zip(columns, (alive.copy(), states, slates, clicks, np.full(n_episodes, t))):
            columns[key].append(value)
        first = SLATES[slates, 0]
        alive &= rng.random(n_episodes) >= STOP[states, first]
        states = (rng.random(n_episodes) < TO_STATE_1[states, first]).astype(int)
    # (E, H, ...) -> rows in episode-major order, only the steps actually played
    stacked = {k: np.stack(v, axis=1) for k, v in columns.items()}
    keep = stacked.pop("alive")
    rows = {k: v[keep] for k, v in stacked.items()}
    s, a, step = rows["state"], rows["slate"], rows["step"]
    items = SLATES[a]
    if true_model:
        q_logged, v_target = Q_SEQ[step, s, a], (PI_SEQ[s] * Q_SEQ[step, s]).sum(1)
    else:
        q_logged, v_target = np.full(len(s), 0.5), np.full(len(s), 0.5)
    return OPEInputs(
        episode=np.repeat(np.arange(n_episodes), keep.sum(1)), reward=rows["clicks"].sum(1),
        behaviour_prob=MU_SEQ[s, a], target_prob=PI_SEQ[s, a],
        behaviour_slot_prob=slot_marginals(MU_SEQ)[s[:, None], np.arange(SLATE_SIZE), items],
        target_slot_prob=slot_marginals(PI_SEQ)[s[:, None], np.arange(SLATE_SIZE), items],
        slot_reward=rows["clicks"], q_logged=q_logged, v_target=v_target, gamma=GAMMA,
        behaviour_prefix_prob=prefix_probs(MU_SEQ, s, a), target_prefix_prob=prefix_probs(PI_SEQ, s, a))


def test_sequential_estimators_are_unbiased():
    rng = np.random.default_rng(6)
    n_datasets = 800
    names = ("ips", "dr", "iips", "rips")
    wrong, right = [], []
    for _ in range(n_datasets):
        wrong.append([estimate(sample_episodes(rng, 40), names, n_bootstrap=0)[n]["value"] for n in names])
        result = estimate(sample_episodes(rng, 40, true_model=True), ["dm", "dr"], n_bootstrap=0)
        right.append([result["dm"]["value"], result["dr"]["value"]])
    for label, values in (("wrong q", np.array(wrong)), ("true q", np.array(right))):
        mean, sem = values.mean(0), values.std(0, ddof=1) / np.sqrt(n_datasets)
        assert (np.abs(mean - V_SEQ_PI) < 4 * sem).all(), (label, mean, V_SEQ_PI, sem)
    # The test has power (the logging policy's value is far away) and episodes vary in length.
    assert abs(V_SEQ_MU - V_SEQ_PI) > 10 * np.std(wrong, axis=0).max() / np.sqrt(n_datasets)
    assert set(np.bincount(sample_episodes(rng, 200).episode)) == {1, 2, 3}
    # A good model makes dr less variable than ips (the click noise remains).
    assert np.std(right, axis=0)[1] < np.std(wrong, axis=0)[0]


def test_sequential_snips_is_consistent():
    result = estimate(sample_episodes(np.random.default_rng(7), 20_000), ["snips"], n_bootstrap=200)["snips"]
    assert abs(result["value"] - V_SEQ_PI) < 4 * result["std_err"] < 0.1
    assert result["n_rows"] > result["n_episodes"] == 20_000


# ------------------------------------------------------------------- propensity checks


def episodic_inputs() -> OPEInputs:
    """3 episodes (ids 10, 11, 12) of 2 steps with valid propensities and models."""
    n = 6
    return OPEInputs(
        episode=np.repeat([10, 11, 12], 2), reward=np.ones(n), behaviour_prob=np.full(n, 0.5),
        target_prob=np.full(n, 0.25), q_logged=np.zeros(n), v_target=np.zeros(n),
        behaviour_slot_prob=np.full((n, 2), 0.5), target_slot_prob=np.full((n, 2), 0.5), slot_reward=np.ones((n, 2)))


def test_missing_and_zero_propensities_name_the_rows():
    inputs = episodic_inputs()
    inputs.behaviour_prob[[0, 3, 5]] = np.nan
    with pytest.raises(OPEError) as err:
        check_propensities(inputs, ["ips", "dm", "dr"])
    message = str(err.value)
    assert message.startswith("behaviour propensity missing (NaN) in 3 rows: row 0 (episode 10, step 0), "
                              "row 3 (episode 11, step 1), row 5 (episode 12, step 1);")
    assert "(ips, dr)" in message and "estimators=[dm]" in message and "\n" not in message
    with pytest.raises(OPEError, match="missing"):
        estimate(inputs, ["snips"])

    # dm alone needs no propensities: NaN or not given at all.
    check_propensities(inputs, ["dm"])
    assert estimate(inputs, ["dm"], n_bootstrap=10)["dm"]["value"] == 0.0
    no_propensities = replace(inputs, behaviour_prob=None, target_prob=None, reward=None)
    assert estimate(no_propensities, ["dm"], n_bootstrap=10)["dm"]["value"] == 0.0

    inputs = episodic_inputs()
    inputs.behaviour_prob[[1, 4]] = 0.0
    inputs.row_labels = [f"log line {i + 100}" for i in range(6)]
    with pytest.raises(OPEError, match=r"^behaviour propensity 0 in 2 rows: log line 101, log line 104;"):
        check_propensities(inputs, ["ips"])


def test_many_bad_rows_are_counted_and_truncated():
    inputs = OPEInputs(episode=np.arange(9), reward=np.ones(9), behaviour_prob=np.full(9, np.nan),
                       target_prob=np.ones(9))
    with pytest.raises(OPEError) as err:
        check_propensities(inputs, ["ips"])
    message = str(err.value)
    assert "in 9 rows:" in message and "row 4 (episode 4, step 0), ...;" in message and "row 5" not in message


@pytest.mark.parametrize(("field", "value", "match"), [
    ("target_prob", 1.5, "target propensity outside"),
    ("target_prob", np.nan, "target propensity outside"),
    ("behaviour_prob", 1.2, r"behaviour propensity outside \(0, 1\] in 1 row:"),
    ("behaviour_prob", -0.1, "behaviour propensity outside"),
    ("reward", np.inf, "reward not finite"),
])
def test_out_of_range_values_raise(field, value, match):
    inputs = episodic_inputs()
    getattr(inputs, field)[2] = value
    with pytest.raises(OPEError, match=match):
        check_propensities(inputs, ["ips"])


def test_iips_checks_slot_propensities_but_not_the_unused_last_slate_propensity():
    inputs = episodic_inputs()
    inputs.behaviour_slot_prob[4, 1] = 0.0
    with pytest.raises(OPEError, match=r"behaviour slot propensity 0 in 1 row: row 4 \(episode 12, step 0\)"):
        check_propensities(inputs, ["iips"])
    # iips only multiplies by w_{t-1}: the slate propensity of each episode's last step is never used.
    inputs = episodic_inputs()
    inputs.behaviour_prob[[1, 3, 5]] = np.nan
    check_propensities(inputs, ["iips"])
    assert np.isfinite(estimate(inputs, ["iips"], n_bootstrap=20)["iips"]["value"])
    with pytest.raises(OPEError, match="in 3 rows"):
        check_propensities(inputs, ["iips", "ips"])


def test_missing_fields_and_bad_layout_raise():
    inputs = episodic_inputs()
    with pytest.raises(OPEError, match="^v_target is missing; needed by dm, dr$"):
        check_propensities(replace(inputs, v_target=None), ["ips", "dm", "dr"])
    with pytest.raises(OPEError, match="behaviour_slot_prob is missing; needed by iips"):
        check_propensities(replace(inputs, behaviour_slot_prob=None), ["iips"])
    with pytest.raises(OPEError, match="unknown estimators"):
        check_propensities(inputs, ["ips", "magic"])
    with pytest.raises(OPEError, match="not contiguous"):
        check_propensities(replace(inputs, episode=np.array([10, 11, 10, 11, 12, 12])), ["ips"])
    with pytest.raises(OPEError, match=r"slot_reward has shape \(6, 3\)"):
        check_propensities(replace(inputs, slot_reward=np.ones((6, 3))), ["iips"])
    with pytest.raises(OPEError, match="gamma"):
        check_propensities(replace(inputs, gamma=1.5), ["ips"])


# ------------------------------------------------------------------- fitted Q evaluation

# A 2-step MDP whose state (one-hot of 4) encodes the step: states 0/1 at step 0, 2/3 at step 1.
FQE_GAMMA = 0.8
FQE_PI = np.array([[0.6, 0.1, 0.1, 0.1, 0.05, 0.05], [0.1, 0.1, 0.5, 0.1, 0.1, 0.1]])  # at states 2, 3
FQE_R = mean_reward(np.array([[0.9, 0.1, 0.5], [0.2, 0.6, 0.3], [0.7, 0.4, 0.1], [0.1, 0.3, 0.9]]))
FQE_TO_3 = np.array([[0.1, 0.8, 0.5], [0.9, 0.3, 0.2]])  # P(s' = 3 | s in {0, 1}, item in slot 0)


def fqe_true_q() -> np.ndarray:
    """(4, 6) exact Q^pi."""
    v_second = (FQE_PI * FQE_R[2:]).sum(1)
    p3 = FQE_TO_3[:, SLATES[:, 0]]
    return np.vstack([FQE_R[:2] + FQE_GAMMA * ((1 - p3) * v_second[0] + p3 * v_second[1]), FQE_R[2:]])


def fqe_data(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n transitions, half from step 0, half from step 1 (terminal), uniform slates, noisy rewards."""
    states = np.r_[rng.integers(0, 2, n // 2), rng.integers(2, 4, n - n // 2)]
    slates = rng.integers(0, len(SLATES), n)
    first = states < 2
    next_states = np.where(first, 2 + (rng.random(n) < FQE_TO_3[states % 2, SLATES[slates, 0]]), 0)
    eye = np.eye(4, dtype=np.float32)
    return dict(
        obs=eye[states], slates=SLATES[slates], rewards=FQE_R[states, slates] + rng.normal(0, 0.1, n),
        next_obs=eye[next_states], dones=~first,
        next_support=np.broadcast_to(SLATES, (n, *SLATES.shape)), next_support_prob=FQE_PI[next_states % 2])


FQE_CONFIG = FQEConfig(hidden_sizes=(32, 32), iterations=4, epochs_per_iteration=5, batch_size=128, lr=3e-3, refits=0)


def test_fqe_recovers_the_true_q_and_value():
    data = fqe_data(np.random.default_rng(8), 6000)
    q = fit_fqe(**data, num_candidates=N_ITEMS, gamma=FQE_GAMMA, config=FQE_CONFIG)
    states, slates = np.repeat(np.arange(4), len(SLATES)), np.tile(np.arange(len(SLATES)), 4)
    obs = np.eye(4, dtype=np.float32)[states]
    fitted = q_values(q, obs, SLATES[slates]).reshape(4, len(SLATES))
    truth = fqe_true_q()
    assert np.abs(fitted - truth).max() < 0.08, np.abs(fitted - truth).max()
    # support_values is the policy-weighted average of q_values: V^pi at the step-1 states.
    v = support_values(q, obs[[12, 18]], np.broadcast_to(SLATES, (2, *SLATES.shape)), FQE_PI)
    np.testing.assert_allclose(v, (FQE_PI * fitted[2:]).sum(1), rtol=1e-5)
    np.testing.assert_allclose(v, (FQE_PI * truth[2:]).sum(1), atol=0.05)


def test_fqe_is_deterministic_given_the_seed():
    data = fqe_data(np.random.default_rng(9), 600)
    config = replace(FQE_CONFIG, iterations=2, epochs_per_iteration=2)
    rng_state = torch.get_rng_state()
    first = q_values(fit_fqe(**data, num_candidates=N_ITEMS, gamma=FQE_GAMMA, config=config), data["obs"],
                     data["slates"])
    assert torch.equal(rng_state, torch.get_rng_state())  # the caller's torch RNG is untouched
    again = q_values(fit_fqe(**data, num_candidates=N_ITEMS, gamma=FQE_GAMMA, config=config), data["obs"],
                     data["slates"])
    other = q_values(fit_fqe(**data, num_candidates=N_ITEMS, gamma=FQE_GAMMA, config=replace(config, seed=1)),
                     data["obs"], data["slates"])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_fqe_rejects_bad_inputs():
    data = fqe_data(np.random.default_rng(10), 20)
    with pytest.raises(OPEError, match="slates invalid"):
        fit_fqe(**{**data, "slates": data["slates"] + 2}, num_candidates=N_ITEMS, gamma=FQE_GAMMA)
    with pytest.raises(OPEError, match=r"next_support_prob has shape"):
        fit_fqe(**{**data, "next_support_prob": data["next_support_prob"][:, :3]}, num_candidates=N_ITEMS,
                gamma=FQE_GAMMA)
    # Done rows' next state is ignored, even if it is garbage.
    next_obs = data["next_obs"].copy()
    next_obs[data["dones"]] = np.nan
    q = fit_fqe(**{**data, "next_obs": next_obs}, num_candidates=N_ITEMS, gamma=FQE_GAMMA,
                config=replace(FQE_CONFIG, iterations=2, epochs_per_iteration=1))
    assert np.isfinite(q_values(q, data["obs"], data["slates"])).all()
