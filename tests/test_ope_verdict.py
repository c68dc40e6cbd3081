"""The verdict next to every off-policy estimate (recsys_exp/offline/verdict.py): the feasible range
by hand, the ESS floor at its boundary, out-of-range values flagged, the recommended estimate."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_exp.offline.verdict import add_verdicts, feasible_range, judge


def est(value, ci=(0.0, 1.0), n=100, ess=None):
    entry = {"value": value, "ci95": list(ci), "n_episodes": n}
    if ess is not None:
        entry["ess"] = ess
    return entry


def test_feasible_range_by_hand():
    # rewards in [-1, 2]; sessions of 3, 1 and 2 steps: the longest has 3
    reward = np.array([0.5, 2.0, -1.0, 1.0, 0.0, 0.0])
    episode = np.array([7, 7, 7, 3, 9, 9])
    assert feasible_range(reward, episode, 1.0) == pytest.approx((-3.0, 6.0))
    g = 1 + 0.5 + 0.25
    assert feasible_range(reward, episode, 0.5) == pytest.approx((-1.0 * g, 2.0 * g))
    # non-negative rewards: the range starts at 0 (a session may earn nothing)
    assert feasible_range(np.array([1.0, 3.0]), np.array([1, 2]), 0.9) == pytest.approx((0.0, 3.0))


def test_ess_floor_is_max_of_ten_and_one_percent_of_sessions():
    feasible = (0.0, 10.0)
    assert judge(est(1.0, n=100, ess=9.99), feasible)[0] is False
    assert judge(est(1.0, n=100, ess=10.0), feasible)[0] is True
    assert judge(est(1.0, n=5000, ess=49.9), feasible)[0] is False  # 1% of 5000 = 50
    reliable, reason = judge(est(1.0, n=5000, ess=50.0), feasible)
    assert reliable and "ESS 50.0 of 5000" in reason
    assert "below 50" in judge(est(1.0, n=5000, ess=3.0), feasible)[1]


def test_out_of_range_not_finite_and_no_interval_are_unreliable():
    feasible = (0.0, 6.0)
    reliable, reason = judge(est(7.5, ci=(7.0, 8.0)), feasible)  # a model-based estimate, tight interval
    assert not reliable and "outside the feasible range [0, 6]" in reason
    assert judge(est(-0.1), feasible)[0] is False
    assert judge(est(6.0, ci=(5.0, 6.0)), feasible)[0] is True  # on the boundary: feasible
    assert judge(est(float("nan"), ess=50.0), feasible)[0] is False
    assert "offline.bootstrap=0" in judge(est(1.0, ci=(float("nan"), float("nan"))), feasible)[1]
    # ips of 0 with [0, 0]: no weighted session had a click (seen on the Open Bandit Dataset's sample)
    reliable, reason = judge(est(0.0, ci=(0.0, 0.0), ess=50.0), feasible)
    assert not reliable and "zero width" in reason


def test_recommended_is_the_first_reliable_in_preference_order():
    feasible = (0.0, 10.0)
    estimates = {"ips": est(2.0, ess=40.0), "snips": est(2.1, ess=40.0), "dm": est(3.0), "dr": est(2.2, ess=5.0)}
    assert add_verdicts(estimates, feasible) == "snips"  # dr first, but its ESS is below 10
    assert estimates["dr"]["reliable"] is False and estimates["snips"]["reliable"] is True
    assert all(isinstance(e["reason"], str) and e["reason"] for e in estimates.values())
    only_bad = {"ips": est(2.0, ess=1.0), "dm": est(11.0)}
    assert add_verdicts(only_bad, feasible) is None
