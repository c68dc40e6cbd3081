"""A verdict next to every off-policy estimate: whether it can be relied on, why, and which
estimate to read.

Each estimate of ope.json gets ``"reliable"`` (bool) and ``"reason"`` (one line); the file names a
``"recommended"`` estimator (or None when no estimate is reliable) and the ``"feasible_range"``
the checks used. An estimate is unreliable when

* its value is not finite, or it has no interval (``offline.bootstrap=0``), or a zero-width one
  (every resample gives the same number, e.g. no session with weight earned a reward);
* its value lies outside the feasible range of session returns: with per-step rewards in the
  logged range [r_min, r_max] and sessions no longer than the longest logged one (H steps),
  a (γ-discounted) session return lies in ``[min(0, r_min)·G, max(0, r_max)·G]``,
  ``G = Σ_{t<H} γ^t``. (An estimate outside it is wrong whatever its interval says; one inside
  it can still be wrong.)
* the target acts where the logs are silent: the mean per-decision weight ``pi(A_t|s_t) / mu(A_t|s_t)``
  (:func:`recsys_exp.offline.ope.decision_support`; its expectation is the share of the target's
  probability on slates the logging policy could show) has its 95% interval below
  :data:`SUPPORT_MIN`. Importance weights then collapse and the Q model extrapolates to slates it
  never saw rewarded, so no estimator has data behind it (every estimate gets this flag);
* it weights sessions and its effective sample size (Kish, (Σw)²/Σw²) is below
  ``max(ESS_MIN, ESS_MIN_SHARE · sessions)``: a handful of sessions then decide the estimate and
  its bootstrap interval. (Not for dros and switch_dr, which shrink or switch off large weights and
  lean on the model instead: they get the model checks below.)
* it is an unnormalised importance-weighted estimate (ips, iips, rips, dr) and the 95% interval of
  the mean of the sessions' final weights stays more than :data:`MEAN_WEIGHT_TOL` away from 1.
  Under the behaviour policy that mean is exactly 1 in expectation; far below 1, the logs hold too
  few of the sessions the target would produce (often the long ones: a deterministic target
  matches a whole long session rarely) and the estimate is biased low however tight its
  interval. (The tolerance absorbs float rounding of on-policy weights and a bias of a few
  percent at most.)
* it leans on the fitted Q model (dm, dros, switch_dr) and the model fails a check of
  :mod:`recsys_exp.offline.fqe`'s diagnostics: its held-out fit explains less than
  :data:`R2_MIN` of the targets' variance (it predicts worse than their mean), or the same model
  class, fitted for the logging policy on the same sessions (the behaviour check), misses the
  logged mean return by more than the two intervals' half-widths together: a model that is wrong
  where the truth is known is not trusted where it is not. Their intervals already carry the
  model's bias bound (FQE's ``bias_bound``, see :func:`recsys_exp.offline.ope.estimate`).

The recommended estimate is the first reliable one in :data:`PREFERENCE`: the doubly robust family
first (unbiased when the behaviour propensities are right, lower variance than plain importance
sampling when the model is good), then the self-normalised and plain importance-sampling
estimators, the slate-structured ones, and the model-only ``dm`` last (biased when the model is).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from recsys_exp.offline.ope import MODEL_LEANING

ESS_MIN = 10.0  # effective sessions below which an importance-weighted estimate is not trusted
ESS_MIN_SHARE = 0.01  # ... or below this share of the sessions (degenerate weights)
PREFERENCE = ("dr", "sndr", "dros", "switch_dr", "snips", "ips", "iips", "rips", "dm")
UNNORMALISED = ("ips", "iips", "rips", "dr")  # their expected mean final weight is 1
R2_MIN = 0.0  # held-out R² of the Q model below which (worse than predicting the mean) it is not trusted
MEAN_WEIGHT_TOL = 0.02  # how far from 1 the mean final weight's interval may stay
SUPPORT_MIN = 0.5  # share of the target's probability on the logger's slates below which nothing is trusted


def ess_floor(n_sessions: int) -> float:
    """The smallest ESS an importance-weighted estimate over ``n_sessions`` sessions is trusted with:
    ``max(ESS_MIN, ESS_MIN_SHARE · n_sessions)`` (also the report's low-ESS flag)."""
    return max(ESS_MIN, ESS_MIN_SHARE * n_sessions)


def discount_sum(gamma: float, steps: np.ndarray | int | None) -> np.ndarray:
    """``G = Σ_{j<h} γ^j`` for ``h = steps`` (array or int, negatives count as 0): ``h`` at γ = 1,
    ``(1 - γ^h) / (1 - γ)`` otherwise; ``steps=None``: infinitely many, ``1/(1-γ)`` (inf at γ = 1)."""
    if steps is None:
        return np.asarray(np.inf if gamma >= 1.0 else 1.0 / (1.0 - gamma))
    h = np.maximum(np.asarray(steps, np.float64), 0.0)
    return h if gamma == 1.0 else (1.0 - gamma ** h) / (1.0 - gamma)


def return_bounds(reward_low: float, reward_high: float, gamma: float,
                  remaining: np.ndarray | int | None) -> tuple[np.ndarray, np.ndarray]:
    """The range of (γ-discounted) returns of ``remaining`` steps with per-step rewards in
    ``[reward_low, reward_high]``: ``[min(0, r_low)·G, max(0, r_high)·G]``, ``G`` =
    :func:`discount_sum` of ``remaining`` (None: infinitely many steps, unbounded at γ = 1).
    The feasible range below, and the bounds :mod:`recsys_exp.offline.fqe` clips its targets to."""
    total = discount_sum(gamma, remaining)
    with np.errstate(invalid="ignore"):  # 0 * inf -> 0: a zero reward bound stays 0
        low = np.nan_to_num(min(0.0, reward_low) * np.asarray(total), nan=0.0, neginf=-np.inf)
        high = np.nan_to_num(max(0.0, reward_high) * np.asarray(total), nan=0.0, posinf=np.inf)
    return low, high


def feasible_range(reward: np.ndarray, episode: np.ndarray, gamma: float) -> tuple[float, float]:
    """``(low, high)``: the range of (γ-discounted) session returns that per-step rewards in the
    logged range and sessions no longer than the longest logged one allow (module docstring).
    ``reward`` (n,), ``episode`` (n,) session ids of the logged rows."""
    if len(reward) == 0:
        return 0.0, 0.0
    horizon = int(np.unique(episode, return_counts=True)[1].max())
    low, high = return_bounds(float(np.min(reward)), float(np.max(reward)), gamma, horizon)
    return float(low), float(high)


def judge(estimate: Mapping[str, Any], feasible: tuple[float, float], name: str = "",
          fqe: Mapping[str, Any] | None = None, support: list[float] | None = None) -> tuple[bool, str]:
    """``(reliable, reason)`` of one estimate ``name`` (an entry of :func:`recsys_exp.offline.ope.estimate`:
    ``value``, ``ci95``, ``n_episodes`` and, for weighted estimators, ``ess`` and ``mean_weight``),
    with the FQE diagnostics ``fqe`` (``fit_r2``, ``behaviour_check``) for model-based ones and the
    target's ``support`` ``[mean, low, high]`` (:func:`recsys_exp.offline.ope.decision_support`; None:
    unknown, not checked)."""
    value, (low_ci, high_ci) = estimate["value"], estimate["ci95"]
    n, ess = estimate["n_episodes"], estimate.get("ess")
    low, high = feasible
    if not math.isfinite(value):
        return False, "the estimate is not finite (importance weights overflowed or no weight was positive)"
    if not (math.isfinite(low_ci) and math.isfinite(high_ci)):
        return False, "no confidence interval (offline.bootstrap=0)"
    if high_ci - low_ci <= 0 and n > 1:
        return False, ("the interval has zero width: every resample gives the same number (e.g. no weighted session "
                       "earned a reward), so it says nothing about the estimate's uncertainty")
    slack = 1e-9 * max(1.0, abs(low), abs(high))
    if value < low - slack or value > high + slack:
        return False, (f"{value:.4g} is outside the feasible range [{low:.4g}, {high:.4g}] of session returns "
                       f"(logged per-step rewards, the longest logged session)")
    if support is not None and math.isfinite(support[2]) and support[2] < SUPPORT_MIN:
        return False, (f"the target puts {support[0]:.0%} [{support[1]:.0%}, {support[2]:.0%}] of its probability on "
                       f"slates the logging policy could show (mean per-decision weight; < {SUPPORT_MIN:.0%}): the "
                       f"logs rarely hold what it would do, so weights collapse and the Q model extrapolates")
    notes = []
    leans_on_model = name in MODEL_LEANING
    if ess is not None:
        floor = ess_floor(n)
        if not ess >= floor and not leans_on_model:
            return False, (f"ESS {ess:.1f} of {n} sessions is below {floor:.4g} (max({ESS_MIN:g}, "
                           f"{ESS_MIN_SHARE:.0%} of the sessions)): a few sessions decide the estimate and its CI")
        notes.append(f"ESS {ess:.1f} of {n} sessions")
    weights_ok, weight_note = _mean_weight_check(estimate)
    unnormalised_fault = name in UNNORMALISED and not weights_ok  # the others rescale or shrink their weights
    if weight_note:
        notes.append(weight_note)
    if unnormalised_fault:
        direction = " low" if estimate["mean_weight"][0] < 1 else ""
        return False, (f"{weight_note}, not 1 ± {MEAN_WEIGHT_TOL:g}: the logs hold too few of the sessions the "
                       f"target would have, so the estimate is biased{direction}")
    if leans_on_model:
        model_ok, model_note = _model_check(estimate, fqe)
        if not model_ok:
            return False, model_note
        notes.append(model_note)
    notes.append("inside the feasible range")
    return True, "; ".join(notes)


def _mean_weight_check(estimate: Mapping[str, Any]) -> tuple[bool, str]:
    """(ok, note): whether the 95% interval of the mean final importance weight reaches 1 ± MEAN_WEIGHT_TOL,
    and the weight's mean and interval as a note."""
    mean_weight = estimate.get("mean_weight")
    if mean_weight is None:
        return True, ""
    mean, low, high = mean_weight
    ok = not (math.isfinite(low) and math.isfinite(high)) or (low <= 1.0 + MEAN_WEIGHT_TOL
                                                              and high >= 1.0 - MEAN_WEIGHT_TOL)
    return ok, f"mean importance weight {mean:.3g} [{low:.3g}, {high:.3g}]"


def _model_check(estimate: Mapping[str, Any], fqe: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(ok, note) of the fitted Q model behind a model-based estimate (module docstring)."""
    if not fqe:
        return True, "model-based (no model diagnostics)"
    r2 = fqe.get("fit_r2")
    if r2 is not None and not r2 >= R2_MIN:
        return False, (f"the fitted Q model explains {r2:.0%} of its held-out targets' variance (< {R2_MIN:.0%}: "
                       f"worse than predicting their mean): it does not fit, and its errors compound over the horizon")
    check = fqe.get("behaviour_check")
    refits = estimate.get("model_refits", 0)
    note = f"model-based, interval over {refits} model refits" if refits else "model-based"
    if estimate.get("model_bias") is not None:
        note += f" and ± {estimate['model_bias']:.3g} of model bias (held-out Bellman residual x session length)"
    if check:
        logged_half = (check["logged_ci95"][1] - check["logged_ci95"][0]) / 2
        own_half = (estimate["ci95"][1] - estimate["ci95"][0]) / 2
        gap, logged = check["gap"], check["logged"]
        share = f" ({gap / abs(logged):+.1%})" if logged else ""
        if abs(gap) > logged_half + own_half:
            return False, (f"the same Q model, fitted for the logging policy, misses its logged mean return "
                           f"{logged:.4g} [{check['logged_ci95'][0]:.4g}, {check['logged_ci95'][1]:.4g}] by "
                           f"{gap:+.4g}{share}: more than the intervals allow")
        note += f"; behaviour check {gap:+.3g}{share} of the logged return"
    if r2 is not None:
        note += f"; held-out R² {r2:.2f}"
    return True, note


def add_verdicts(estimates: dict[str, dict[str, Any]], feasible: tuple[float, float],
                 fqe: Mapping[str, Any] | None = None, support: list[float] | None = None) -> str | None:
    """Add ``reliable`` and ``reason`` to every estimate in place (``fqe``: the model's diagnostics,
    ``support``: the target's, see :func:`judge`); return the recommended estimator (the first
    reliable one in :data:`PREFERENCE`, then any other reliable one), or None."""
    for name, est in estimates.items():
        est["reliable"], est["reason"] = judge(est, feasible, name, fqe, support)
    ranked = [name for name in PREFERENCE if name in estimates] + [n for n in estimates if n not in PREFERENCE]
    return next((name for name in ranked if estimates[name]["reliable"]), None)


def selected(ope: Mapping[str, Any], select_by: str) -> str:
    """The estimator a run or trial is judged by (``offline.select_by``): that estimator, or for
    ``recommended`` ope.json's recommended one; when no estimate is reliable, the first of
    :data:`PREFERENCE` among the estimates (its verdict, unreliable, goes with it)."""
    if select_by != "recommended":
        return select_by
    if ope.get("recommended"):
        return ope["recommended"]
    names = list(ope["estimates"])
    return next((name for name in PREFERENCE if name in names), names[0])
