"""A verdict next to every off-policy estimate: whether it can be relied on, why, and which
estimate to read.

Each estimate of ope.json gets ``"reliable"`` (bool) and ``"reason"`` (one line); the file names a
``"recommended"`` estimator (or None when no estimate is reliable) and the ``"feasible_range"``
the checks used. An estimate is unreliable when

* its value is not finite, or it has no interval (``offline.bootstrap=0``);
* it weights sessions and its effective sample size (Kish, (Σw)²/Σw²) is below
  ``max(ESS_MIN, ESS_MIN_SHARE · sessions)``: a handful of sessions then decide the estimate and
  its bootstrap interval;
* its value lies outside the feasible range of session returns: with per-step rewards in the
  logged range [r_min, r_max] and sessions no longer than the longest logged one (H steps),
  a (γ-discounted) session return lies in ``[min(0, r_min)·G, max(0, r_max)·G]``,
  ``G = Σ_{t<H} γ^t``. (An estimate outside it is wrong whatever its interval says; one inside
  it can still be wrong.)

The recommended estimate is the first reliable one in :data:`PREFERENCE`: the doubly robust family
first (unbiased when the behaviour propensities are right, lower variance than plain importance
sampling when the model is good), then the self-normalised and plain importance-sampling
estimators, the slate-structured ones, and the model-only ``dm`` last (biased when the model is,
and its interval holds the fitted model fixed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

ESS_MIN = 10.0  # effective sessions below which an importance-weighted estimate is not trusted
ESS_MIN_SHARE = 0.01  # ... or below this share of the sessions (degenerate weights)
PREFERENCE = ("dr", "sndr", "dros", "switch_dr", "snips", "ips", "iips", "rips", "dm")


def ess_floor(n_sessions: int) -> float:
    """The smallest ESS an importance-weighted estimate over ``n_sessions`` sessions is trusted with:
    ``max(ESS_MIN, ESS_MIN_SHARE · n_sessions)`` (also the report's low-ESS flag)."""
    return max(ESS_MIN, ESS_MIN_SHARE * n_sessions)


def feasible_range(reward: np.ndarray, episode: np.ndarray, gamma: float) -> tuple[float, float]:
    """``(low, high)``: the range of (γ-discounted) session returns that per-step rewards in the
    logged range and sessions no longer than the longest logged one allow (module docstring).
    ``reward`` (n,), ``episode`` (n,) session ids of the logged rows."""
    if len(reward) == 0:
        return 0.0, 0.0
    horizon = int(np.unique(episode, return_counts=True)[1].max())
    discount_sum = float(horizon) if gamma == 1.0 else (1.0 - gamma ** horizon) / (1.0 - gamma)
    return min(0.0, float(np.min(reward))) * discount_sum, max(0.0, float(np.max(reward))) * discount_sum


def judge(estimate: Mapping[str, Any], feasible: tuple[float, float]) -> tuple[bool, str]:
    """``(reliable, reason)`` of one estimate (an entry of :func:`recsys_exp.offline.ope.estimate`:
    ``value``, ``ci95``, ``n_episodes`` and, for weighted estimators, ``ess``)."""
    value, (low_ci, high_ci) = estimate["value"], estimate["ci95"]
    n, ess = estimate["n_episodes"], estimate.get("ess")
    low, high = feasible
    if not math.isfinite(value):
        return False, "the estimate is not finite (importance weights overflowed or no weight was positive)"
    if not (math.isfinite(low_ci) and math.isfinite(high_ci)):
        return False, "no confidence interval (offline.bootstrap=0)"
    slack = 1e-9 * max(1.0, abs(low), abs(high))
    if value < low - slack or value > high + slack:
        return False, (f"{value:.4g} is outside the feasible range [{low:.4g}, {high:.4g}] of session returns "
                       f"(logged per-step rewards, the longest logged session)")
    if ess is not None:
        floor = ess_floor(n)
        if not ess >= floor:
            return False, (f"ESS {ess:.1f} of {n} sessions is below {floor:.4g} (max({ESS_MIN:g}, "
                           f"{ESS_MIN_SHARE:.0%} of the sessions)): a few sessions decide the estimate and its CI")
        return True, f"ESS {ess:.1f} of {n} sessions; inside the feasible range"
    return True, ("model-based (no importance weights; the interval holds the fitted model fixed); "
                  "inside the feasible range")


def add_verdicts(estimates: dict[str, dict[str, Any]], feasible: tuple[float, float]) -> str | None:
    """Add ``reliable`` and ``reason`` to every estimate in place; return the recommended
    estimator (the first reliable one in :data:`PREFERENCE`, then any other reliable one), or None."""
    for est in estimates.values():
        est["reliable"], est["reason"] = judge(est, feasible)
    ranked = [name for name in PREFERENCE if name in estimates] + [n for n in estimates if n not in PREFERENCE]
    return next((name for name in ranked if estimates[name]["reliable"]), None)
