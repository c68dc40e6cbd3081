"""Off-policy evaluation (OPE) of a slate policy from logged episodes, in numpy.

Each row of the logged data is one step ``t`` of an episode ``i``: a state ``s_t``, the logged
slate ``A_t`` (K distinct items out of N candidates), the reward ``r_t`` and the behaviour
policy's probability ``mu(A_t|s_t)``. We estimate the value of a target policy ``pi``,
``V(pi) = E_pi[sum_t gamma^t r_t]``, from ``n`` logged episodes.

Notation: ``rho_t = pi(A_t|s_t) / mu(A_t|s_t)``; the cumulative weight
``w_{i,t} = prod_{t' <= t} rho_{i,t'}`` with ``w_{i,-1} = 1``.

* ``ips`` -- per-decision importance sampling (Precup, Sutton & Singh 2000)::

      V = (1/n) sum_i sum_t gamma^t w_{i,t} r_{i,t}

* ``snips`` -- weighted (self-normalised) per-decision IS, normalised per time index::

      V = sum_t gamma^t (sum_i w_{i,t} r_{i,t}) / (sum_i w_{i,t})

  An episode shorter than ``t`` keeps its final cumulative weight and reward 0, so every time
  index averages over all episodes; a zero denominator gives a zero term. Biased but consistent.

* ``dm`` -- direct method: ``V = (1/n) sum_i v_target_{i,0}`` with
  ``v_target = V^pi(s) = sum_A pi(A|s) Q(s, A)`` from a fitted model (see :mod:`.fqe`).

* ``dr`` -- sequential doubly robust (Jiang & Li 2016, in the form of Thomas & Brunskill 2016)::

      V = (1/n) sum_i sum_t gamma^t [w_{i,t} (r_{i,t} - q_logged_{i,t}) + w_{i,t-1} v_target_{i,t}]

  Unbiased whatever the Q model when the propensities are right; low variance when it is good.

* ``iips`` -- item-position IPS for slates (Li et al. 2018, "Offline evaluation of ranking
  policies with click models"; OBP's IIPS), made per-decision::

      V = (1/n) sum_i sum_t gamma^t w_{i,t-1} sum_k [pi_k / mu_k]_{i,t} slot_reward_{i,t,k}

  where ``pi_k`` / ``mu_k`` are the probabilities that slot ``k`` shows the logged item.
  Unbiased when the reward is a sum of per-slot terms that depend only on the item in that slot,
  with far lower variance than whole-slate weights.

* ``sndr`` -- self-normalised (weighted) per-decision DR, the WDR of Thomas & Brunskill 2016
  ("Data-efficient off-policy policy evaluation for reinforcement learning", ICML)::

      V = sum_t gamma^t [ (sum_i w_{i,t} (r_{i,t} - q_logged_{i,t})) / (sum_i w_{i,t})
                        + (sum_i w_{i,t-1} v_target_{i,t}) / (sum_i w_{i,t-1}) ]

  padded as snips (past its end an episode keeps its final weight and contributes 0). With one
  step per episode: ``DM + sum_i w_i (r_i - q_i) / sum_i w_i`` (OBP's SelfNormalizedDoublyRobust).

* ``dros`` -- DR with optimistic shrinkage (Su, Dimakopoulou, Krishnamurthy & Dudik, "Doubly robust
  off-policy evaluation with shrinkage", ICML 2020), made per-decision: dr with every weight
  ``w_{i,t}`` (t >= 0) replaced by ``lambda w / (w^2 + lambda)``; ``lambda = 0`` is dm, ``lambda -> inf``
  is dr. ``lambda`` is given (``dros_lambda``) or tuned: the candidate minimising the estimated MSE
  ``Var_n(V_i(lambda)) / n + (mean_i [V_i(dr) - V_i(lambda)])^2`` (``V_i`` an episode's term, ``Var_n``
  with ddof 0; Su et al.'s Sec. 5 with the direct bias estimate, as OBP's
  ``DoublyRobustWithShrinkageTuning(tuning_method="mse", use_bias_upper_bound=False)``) over
  ``lambda`` in {inf, 4^k for every 2^k from just above the largest to just below the smallest
  positive weight (at most 64), 0}; on ties the larger ``lambda``.

* ``switch_dr`` -- switch-DR (Wang, Agarwal & Dudik, "Optimal and adaptive off-policy evaluation in
  contextual bandits", ICML 2017), made per-decision: dr with ``w_{i,t}`` replaced by
  ``w_{i,t} 1{max_{t' <= t} w_{i,t'} <= tau}``, so once an episode's cumulative weight exceeds
  ``tau`` its model term ``w_{i,t-1} v_target_{i,t}`` carries the rest of it. With one step:
  ``DM + (1/n) sum_i w_i 1{w_i <= tau} (r_i - q_i)`` (OBP's SwitchDoublyRobust). ``tau`` is given
  (``switch_tau``) or tuned as dros's ``lambda`` over {inf, the same powers 2^k, 0}.

* ``rips`` -- reward-interaction IPS for slates (McInerney, Brost, Chandar, Mehrotra & Carterette,
  "Counterfactual evaluation of slate recommendations with sequential reward interactions", KDD
  2020; the IPS part of Kiyohara et al.'s cascade-DR, WSDM 2022; OBP's SlateRewardInteractionIPS),
  made per-decision::

      V = (1/n) sum_i sum_t gamma^t w_{i,t-1} sum_k [pi_{0:k} / mu_{0:k}]_{i,t} slot_reward_{i,t,k}

  where ``pi_{0:k} = pi(slots 0..k show A_0..A_k | s) = prod_{j <= k} pi(A_j | s, A_0..A_{j-1})``:
  slot k's weight is the product of the per-slot (conditional) weights of slots 0..k. Unbiased
  under the cascade assumption (slot k's expected reward depends on the state and slots 0..k
  only), which the item-position model of iips is a special case of.

Weight clipping (``clip = c``; Ionides 2008, "Truncated importance sampling"): in ips, snips, dr,
sndr, iips and rips every importance weight that multiplies a reward or model term -- ``w_{i,t}``,
``w_{i,t-1}`` for t >= 1, ``w_{i,t-1} pi_k / mu_k`` and ``w_{i,t-1} pi_{0:k} / mu_{0:k}`` -- becomes
``min(weight, c)`` (``w_{i,-1} = 1`` is not a weight). dros and switch_dr bound their weights
themselves and do not clip.

With one row per episode (the contextual-bandit case) these are the standard bandit IPS, SNIPS,
DM, DR, SNDR, DRos, switch-DR, IIPS and RIPS estimators. Confidence intervals are percentile
bootstraps over episodes (dros's ``lambda`` and switch_dr's ``tau`` are chosen once on all episodes
and held fixed in the resamples, as OBP does: the interval leaves out the tuning's variability).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

# The default set (``offline.estimators``'s default) and every estimator.
ESTIMATORS = ("ips", "snips", "dm", "dr", "iips")
ALL_ESTIMATORS = (*ESTIMATORS, "sndr", "dros", "switch_dr", "rips")
IS_ESTIMATORS = ("ips", "snips", "dr", "iips", "sndr", "dros", "switch_dr", "rips")
MODEL_ESTIMATORS = ("dm", "dr", "sndr", "dros", "switch_dr")  # read q_logged / v_target
# lean on the model where the weights do not correct it (dros and switch_dr shrink or switch weights off)
MODEL_LEANING = ("dm", "dros", "switch_dr")

_DR = ("reward", "behaviour_prob", "target_prob", "q_logged", "v_target")
# The input fields each estimator reads (besides ``episode``).
_NEEDS: dict[str, tuple[str, ...]] = {
    "ips": ("reward", "behaviour_prob", "target_prob"),
    "snips": ("reward", "behaviour_prob", "target_prob"),
    "dm": ("v_target",),
    "dr": _DR, "sndr": _DR, "dros": _DR, "switch_dr": _DR,
    "iips": ("behaviour_prob", "target_prob", "behaviour_slot_prob", "target_slot_prob", "slot_reward"),
    "rips": ("behaviour_prob", "target_prob", "behaviour_prefix_prob", "target_prefix_prob", "slot_reward"),
}
# Estimators that weight each row by the current slate weight (all rows' propensities are used);
# iips and rips use only w_{t-1} and their per-slot weights.
_SLATE_WEIGHTED = ("ips", "snips", "dr", "sndr", "dros", "switch_dr")
_SLOT_FIELDS = ("behaviour_slot_prob", "target_slot_prob", "slot_reward", "behaviour_prefix_prob",
                "target_prefix_prob")
_VALUE_FIELDS = ("reward", "q_logged", "v_target", "slot_reward")
_MAX_LISTED_ROWS = 5
_MAX_CANDIDATES = 64  # powers of two tried by dros / switch_dr tuning (besides 0 and inf)
# Bootstrap resample counts held in memory at once (float64 cells, i.e. 16 MB).
_BOOTSTRAP_CHUNK_CELLS = 2_000_000


class OPEError(ValueError):
    """Unusable OPE input; the message is one line naming the field and the offending rows."""


@dataclass
class OPEInputs:
    """Logged rows (grouped by episode, ordered by step) and the model outputs the estimators use."""

    episode: np.ndarray  # (n,) int64 episode ids; rows of an episode are contiguous and ordered by step
    reward: np.ndarray  # (n,) float64
    behaviour_prob: np.ndarray  # (n,) mu(A_t|s_t); may contain NaN (missing) or 0
    target_prob: np.ndarray  # (n,) pi(A_t|s_t)
    behaviour_slot_prob: np.ndarray | None = None  # (n, K) mu(slot k = A_t,k | s_t)
    target_slot_prob: np.ndarray | None = None  # (n, K) pi(slot k = A_t,k | s_t)
    slot_reward: np.ndarray | None = None  # (n, K) reward credited to slot k
    q_logged: np.ndarray | None = None  # (n,) Q(s_t, A_t) from a fitted model
    v_target: np.ndarray | None = None  # (n,) V^pi(s_t) = sum_A pi(A|s_t) Q(s_t, A)
    gamma: float = 1.0
    row_labels: Sequence[str] | None = None  # e.g. "row 17 (episode 3, step 4)", for error messages
    behaviour_prefix_prob: np.ndarray | None = None  # (n, K) mu(slots 0..k = A_t,0..A_t,k | s_t), for rips
    target_prefix_prob: np.ndarray | None = None  # (n, K) pi(slots 0..k = A_t,0..A_t,k | s_t)
    q_logged_refits: np.ndarray | None = None  # (R, n) q_logged of R refits of the model on resampled sessions
    v_target_refits: np.ndarray | None = None  # (R, n) v_target of the same refits


@dataclass(frozen=True)
class _Settings:
    """The estimators' hyperparameters (None: no clipping; dros / switch_dr tuned)."""

    clip: float | None = None
    dros_lambda: float | None = None
    switch_tau: float | None = None


@dataclass(frozen=True)
class _Layout:
    """Where each row sits in the (episode, step) grid."""

    index: np.ndarray  # (n,) episode index 0..E-1
    step: np.ndarray  # (n,) step within the episode
    lengths: np.ndarray  # (E,) rows per episode

    @property
    def n_episodes(self) -> int:
        return len(self.lengths)

    @property
    def horizon(self) -> int:
        return int(self.lengths.max())

    @property
    def is_last(self) -> np.ndarray:
        return self.step == self.lengths[self.index] - 1

    def pad(self, values: np.ndarray, fill: float) -> np.ndarray:
        """Per-row values -> an (E, T) grid, ``fill`` after each episode's last step."""
        grid = np.full((self.n_episodes, self.horizon), fill, dtype=np.float64)
        grid[self.index, self.step] = values
        return grid

    def episode_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-row values -> (E, 1) per-episode sums."""
        return np.bincount(self.index, weights=values, minlength=self.n_episodes)[:, None]

    def at_rows(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An (E, T) weight grid -> per-row (w_{i,t}, w_{i,t-1}), the latter 1 at step 0."""
        row = grid[self.index, self.step]
        prev = np.where(self.step > 0, grid[self.index, np.maximum(self.step - 1, 0)], 1.0)
        return row, prev


@dataclass(frozen=True)
class _Weights:
    """Importance weights per row and on the padded grid (weights carried past the episode end)."""

    grid: np.ndarray  # (E, T) w_{i,t}
    row: np.ndarray  # (n,) w_{i,t}
    prev: np.ndarray  # (n,) w_{i,t-1}
    discount: np.ndarray  # (n,) gamma^t


@dataclass(frozen=True)
class _Terms:
    """One estimator as per-episode terms: V = sum_t' (sum_i num_{i,t'}) / (sum_i den_{i,t'})."""

    num: np.ndarray  # (E, T')
    den: np.ndarray  # (E, T')
    ess_weights: np.ndarray | None = None  # (E,) each episode's final weight as used (IS estimators)
    info: dict = dataclasses.field(default_factory=dict)  # settings recorded next to the estimate


def check_propensities(inputs: OPEInputs, estimators: Sequence[str]) -> None:
    """Raise :class:`OPEError` unless ``inputs`` hold everything ``estimators`` need, valid.

    IS-based estimators need finite behaviour propensities in (0, 1] (iips also per slot, rips
    per slate prefix) and target probabilities in [0, 1]; dm and the dr family need the model
    outputs. The message counts the bad rows and names the first few.
    """
    _validate(_as_arrays(inputs), _check_names(estimators))


def estimate(inputs: OPEInputs, estimators: Sequence[str] = ESTIMATORS, n_bootstrap: int = 1000,
             seed: int = 0, confidence: float = 0.95, clip: float | None = None,
             dros_lambda: float | None = None, switch_tau: float | None = None,
             model_bias: float | None = None) -> dict[str, dict]:
    """Estimate ``V(pi)`` with each of ``estimators``, with bootstrap confidence intervals.

    Returns ``{name: {"value", "ci95": [low, high], "std_err", "n_episodes", "n_rows"}}`` in the
    requested order, plus ``"ess"`` (Kish, of the episodes' final weights as the estimator uses
    them) for IS estimators. ``ci95`` is the percentile interval at ``confidence`` (the key keeps
    its name) over ``n_bootstrap`` resamples of whole episodes drawn with
    ``numpy.random.default_rng(seed)``; ``std_err`` is the bootstrap standard deviation.
    ``n_bootstrap=0`` skips the bootstrap (ci95 and std_err are NaN). IS estimators also get
    ``"mean_weight"``: ``[mean, low, high]`` of the episodes' final weights with a 95% normal
    interval; its expectation is 1 under the behaviour policy, so an interval without 1 says the
    logs lack the target's likely sessions (or the weights are clipped or shrunk).

    Model uncertainty: with ``q_logged_refits`` / ``v_target_refits`` (R models fitted on bootstrap
    resamples of the sessions), dm and the dr family are computed with the main model and each refit:
    the value is their mean (bagging), and replicate j evaluates with model j mod (R + 1) on its own
    resample of episodes, so the interval holds the model's variation too, not only the spread of
    one fixed model's predictions. Their entries record ``"model_refits"`` (R, or 0).

    Model bias: ``model_bias`` (>= 0, value units; e.g. FQE's ``bias_bound``, the held-out Bellman
    residual accumulated over a session) widens both ends of the intervals of the estimators that
    lean on the model where the weights do not correct it (``MODEL_LEANING``: dm, dros, switch_dr),
    which record it as ``"model_bias"``: resampling and refits measure the model's variance, not
    its bias.

    ``clip`` (> 0; None = none) caps the importance weights of ips, snips, dr, sndr, iips and rips,
    whose entries record it as ``"clip"``. ``dros_lambda`` (>= 0) and ``switch_tau`` (>= 0) fix
    dros's shrinkage and switch_dr's threshold; None tunes them (module docstring). dros's entry
    holds ``"lambda"``, switch_dr's ``"tau"`` and ``"switched_share"`` (the share of rows whose
    weight is switched off), each with ``"tuned"``; None stands for infinity (no shrinkage, no switch).
    """
    names = _check_names(estimators)
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise OPEError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}")
    if not 0.0 < confidence < 1.0:
        raise OPEError(f"confidence must be in (0, 1), got {confidence!r}")
    model_bias = _check_setting("model_bias", model_bias, zero_ok=True)
    settings = _Settings(clip=_check_setting("clip", clip, zero_ok=False),
                         dros_lambda=_check_setting("dros_lambda", dros_lambda, zero_ok=True),
                         switch_tau=_check_setting("switch_tau", switch_tau, zero_ok=True))
    inputs = _as_arrays(inputs)
    layout = _validate(inputs, names)
    weights = _weights(inputs, layout, names)
    terms = {name: _TERMS[name](inputs, layout, weights, settings) for name in names}
    variants = {name: [(t.num, t.den)] for name, t in terms.items()}
    refits = _refit_inputs(inputs)
    for name in (n for n in names if n in MODEL_ESTIMATORS and refits):
        # dros's lambda and switch_dr's tau stay as tuned on the main model (held fixed, as in the resamples)
        fixed = replace(settings, dros_lambda=_fixed(terms[name].info.get("lambda"), settings.dros_lambda),
                        switch_tau=_fixed(terms[name].info.get("tau"), settings.switch_tau))
        variants[name] += [(t.num, t.den) for t in (_TERMS[name](r, layout, weights, fixed) for r in refits)]
    replicates = _bootstrap(variants, layout.n_episodes, n_bootstrap, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    results: dict[str, dict] = {}
    for name in names:
        term = terms[name]
        reps = replicates[name]
        ci = np.quantile(reps, [alpha / 2, 1 - alpha / 2]) if n_bootstrap else np.array([np.nan, np.nan])
        widen = model_bias if model_bias is not None and name in MODEL_LEANING else None
        if widen is not None:
            ci = ci + np.array([-widen, widen])
        entry = {
            # with model refits, the bagged value: the mean over the main model and its refits
            "value": float(np.mean([_ratio_value(num.sum(0), den.sum(0)) for num, den in variants[name]])),
            "ci95": [float(ci[0]), float(ci[1])],
            "std_err": float(reps.std(ddof=1)) if n_bootstrap > 1 else float("nan"),
            "n_episodes": layout.n_episodes,
            "n_rows": len(layout.index),
        }
        if term.ess_weights is not None:
            entry["ess"] = _ess(term.ess_weights)
            entry["mean_weight"] = _mean_with_ci(term.ess_weights)
        if name in MODEL_ESTIMATORS:
            entry["model_refits"] = len(variants[name]) - 1
        if widen is not None:
            entry["model_bias"] = widen
        results[name] = {**entry, **term.info}
    return results


def decision_support(inputs: OPEInputs) -> list[float] | None:
    """``[mean, low, high]``: how much of the target's probability falls on slates the logging
    policy could show, from the per-decision weights ``rho_t = pi(A_t|s_t) / mu(A_t|s_t)``.

    Under the logging policy ``E[rho_t | s_t] = sum_{A: mu(A|s_t) > 0} pi(A|s_t)``: 1 when the target
    only shows what the logger could, the share inside the logger's support otherwise (e.g. the
    share of decisions where a deterministic logger and a deterministic target agree). Each session
    contributes the mean of its rows' rho_t; the value is the mean over sessions with its Student-t
    95% interval (:func:`recsys_exp.stats.mean_ci95`). None when some row has no behaviour propensity.
    """
    from recsys_exp.stats import mean_ci95

    inputs = _as_arrays(inputs)
    layout = _layout(inputs.episode)
    mu = inputs.behaviour_prob
    if not (np.isfinite(mu).all() and (mu > 0).all()):
        return None
    per_session = layout.episode_sum(inputs.target_prob / mu)[:, 0] / layout.lengths
    mean, _, _, ci = mean_ci95(per_session)
    return [mean, ci[0], ci[1]]


# --------------------------------------------------------------------------- validation


def _check_names(estimators: Sequence[str]) -> tuple[str, ...]:
    if isinstance(estimators, str):
        estimators = (estimators,)
    names = tuple(dict.fromkeys(estimators))
    unknown = [n for n in names if n not in ALL_ESTIMATORS]
    if unknown or not names:
        problem = f"unknown estimators {unknown}" if unknown else "no estimators requested"
        raise OPEError(f"{problem}; choose from {list(ALL_ESTIMATORS)}")
    return names


def _check_setting(name: str, value: float | None, zero_ok: bool) -> float | None:
    """None, or ``value`` as a float >= 0 (> 0 unless ``zero_ok``); infinity allowed."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= 0 and (zero_ok or number > 0)):  # also rejects NaN
        raise OPEError(f"{name} must be a number {'>=' if zero_ok else '>'} 0 or None, got {value!r}")
    return number


def _as_arrays(inputs: OPEInputs) -> OPEInputs:
    """A shallow copy with every given numeric field as a float64 array (episode ids as they are)."""
    numeric = [f for f in ("reward", "behaviour_prob", "target_prob", *_SLOT_FIELDS, "q_logged", "v_target")
               if getattr(inputs, f) is not None]
    return replace(inputs, episode=np.asarray(inputs.episode),
                   **{f: np.asarray(getattr(inputs, f), dtype=np.float64) for f in numeric})


def _validate(inputs: OPEInputs, names: tuple[str, ...]) -> _Layout:
    """All checks of :func:`check_propensities`; returns the episode layout."""
    layout = _layout(inputs.episode)
    n = len(layout.index)
    needed = list(dict.fromkeys(f for name in names for f in _NEEDS[name]))
    for field in needed:
        if getattr(inputs, field) is None:
            users = ", ".join(name for name in names if field in _NEEDS[name])
            raise OPEError(f"{field} is missing; needed by {users}")
    _check_shapes(inputs, needed, n)
    if not (np.isfinite(inputs.gamma) and 0.0 <= inputs.gamma <= 1.0):
        raise OPEError(f"gamma must be in [0, 1], got {inputs.gamma!r}")
    labels = _labeller(inputs, layout)
    for field in (f for f in _VALUE_FIELDS if f in needed):
        bad = ~np.isfinite(getattr(inputs, field))
        _fail_rows(bad.reshape(n, -1).any(1), f"{field} not finite", "the estimators need finite values", labels)
    _check_propensity_values(inputs, layout, names, labels)
    return layout


def _layout(episode: np.ndarray) -> _Layout:
    episode = np.asarray(episode)
    if episode.ndim != 1 or len(episode) == 0:
        raise OPEError(f"episode must be a non-empty 1-D array, got shape {episode.shape}")
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    ids = episode[starts]
    if len(np.unique(ids)) != len(ids):
        raise OPEError("episode ids are not contiguous: group the rows of each episode together, ordered by step")
    lengths = np.diff(np.r_[starts, len(episode)])
    index = np.repeat(np.arange(len(starts)), lengths)
    step = np.arange(len(episode)) - starts[index]
    return _Layout(index=index, step=step, lengths=lengths)


def _check_shapes(inputs: OPEInputs, fields: list[str], n: int) -> None:
    slot_shape = None
    for field in fields:
        shape = np.shape(getattr(inputs, field))
        if field in _SLOT_FIELDS:
            slot_shape = slot_shape or shape
            ok = len(shape) == 2 and shape[0] == n and shape == slot_shape
            expected = f"({n}, K) like {_SLOT_FIELDS[0]}"
        else:
            ok, expected = shape == (n,), f"({n},)"
        if not ok:
            raise OPEError(f"{field} has shape {shape}, expected {expected}")
    if inputs.row_labels is not None and len(inputs.row_labels) != n:
        raise OPEError(f"row_labels has {len(inputs.row_labels)} entries, expected {n}")


def _labeller(inputs: OPEInputs, layout: _Layout) -> Callable[[int], str]:
    if inputs.row_labels is not None:
        return lambda i: str(inputs.row_labels[i])
    return lambda i: f"row {i} (episode {inputs.episode[i]}, step {layout.step[i]})"


def _fail_rows(bad: np.ndarray, what: str, advice: str, labels: Callable[[int], str]) -> None:
    """Raise ``"<what> in <count> rows: <first labels>; <advice>"`` if any row is bad."""
    rows = np.flatnonzero(bad)
    if rows.size == 0:
        return
    listed = ", ".join(labels(int(i)) for i in rows[:_MAX_LISTED_ROWS])
    more = ", ..." if rows.size > _MAX_LISTED_ROWS else ""
    noun = "row" if rows.size == 1 else "rows"
    raise OPEError(f"{what} in {rows.size} {noun}: {listed}{more}; {advice}")


def _behaviour_rows(layout: _Layout, names: tuple[str, ...]) -> np.ndarray:
    """Rows whose slate propensity is used: all for the slate-weighted estimators (ips, snips and
    the dr family); iips and rips use only w_{t-1}."""
    if any(name in _SLATE_WEIGHTED for name in names):
        return np.ones(len(layout.index), dtype=bool)
    if any(name in ("iips", "rips") for name in names):
        return ~layout.is_last
    return np.zeros(len(layout.index), dtype=bool)


_LOG_IT = "use estimators=[dm] or log propensities"
_PREFIX_ADVICE = ("rips needs the behaviour probability of every slate prefix; logs give it only for slot 0 "
                  "(slot_propensity) and the whole slate (propensity), i.e. for slates of up to 2 items")


def _check_propensity_values(inputs: OPEInputs, layout: _Layout, names: tuple[str, ...],
                             labels: Callable[[int], str]) -> None:
    users = ", ".join(name for name in names if name in IS_ESTIMATORS)
    rows = _behaviour_rows(layout, names)
    all_rows = np.ones(len(layout.index), dtype=bool)
    checks = [("behaviour propensity", inputs.behaviour_prob, "target propensity", inputs.target_prob, rows,
               _LOG_IT)]
    if "iips" in names:
        checks.append(("behaviour slot propensity", inputs.behaviour_slot_prob,
                       "target slot propensity", inputs.target_slot_prob, all_rows, _LOG_IT))
    if "rips" in names:
        checks.append(("behaviour prefix propensity", inputs.behaviour_prefix_prob,
                       "target prefix propensity", inputs.target_prefix_prob, all_rows, _PREFIX_ADVICE))
    for b_name, b_prob, t_name, t_prob, used, missing_advice in checks:
        if not used.any():
            continue
        b, t = b_prob.reshape(len(used), -1), t_prob.reshape(len(used), -1)
        missing = np.isnan(b)
        zero = b == 0
        outside = ~(missing | zero) & ~((b > 0) & (b <= 1))
        need = f"IS-based estimators ({users})"
        _fail_rows(used & missing.any(1), f"{b_name} missing (NaN)", f"{need} need it — {missing_advice}", labels)
        _fail_rows(used & zero.any(1), f"{b_name} 0",
                   f"{need} divide by it — the logged slate must be possible under the behaviour policy", labels)
        _fail_rows(used & outside.any(1), f"{b_name} outside (0, 1]", f"{need} need a probability", labels)
        t_bad = ~((t >= 0) & (t <= 1))  # also catches NaN
        _fail_rows(used & t_bad.any(1), f"{t_name} outside [0, 1] or NaN",
                   "target probabilities must be in [0, 1]", labels)


# --------------------------------------------------------------------------- estimators


def _weights(inputs: OPEInputs, layout: _Layout, names: tuple[str, ...]) -> _Weights:
    used = _behaviour_rows(layout, names)
    rho = np.ones(len(used))
    # Rows whose propensity no requested estimator reads keep rho = 1 (it is never looked at).
    if used.any():
        rho[used] = inputs.target_prob[used] / inputs.behaviour_prob[used]
    grid = np.cumprod(layout.pad(rho, fill=1.0), axis=1)
    row, prev = layout.at_rows(grid)
    return _Weights(grid=grid, row=row, prev=prev, discount=float(inputs.gamma) ** layout.step)


def _clip(weights: np.ndarray, clip: float | None) -> np.ndarray:
    """min(weights, clip); the weights themselves when ``clip`` is None."""
    return weights if clip is None else np.minimum(weights, clip)


def _shrink(weights: np.ndarray, lam: float) -> np.ndarray:
    """DRos's shrunk weights lam w / (w^2 + lam), as 1 / (1/w + w/lam) (no overflow of w^2)."""
    if lam == 0:
        return np.zeros_like(weights)
    if np.isinf(lam):
        return weights
    with np.errstate(divide="ignore"):
        return 1.0 / (1.0 / weights + weights / lam)


def _switch(grid: np.ndarray, tau: float) -> np.ndarray:
    """Switch-DR's weights: w_{i,t} while every w_{i,t'} (t' <= t) is <= tau, then 0."""
    return np.where(np.maximum.accumulate(grid, axis=1) <= tau, grid, 0.0)


def _mean_terms(per_episode: np.ndarray, ess_weights: np.ndarray | None = None, **info) -> _Terms:
    return _Terms(per_episode, np.ones_like(per_episode), ess_weights, info)


def _ips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """ips (module docstring) with clipped weights."""
    grid = _clip(w.grid, s.clip)
    row, _ = layout.at_rows(grid)
    return _mean_terms(layout.episode_sum(w.discount * row * inputs.reward), grid[:, -1], clip=s.clip)


def _snips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """snips (module docstring): clipped weights in numerator and denominator."""
    grid = _clip(w.grid, s.clip)
    row, _ = layout.at_rows(grid)
    num = layout.pad(w.discount * row * inputs.reward, fill=0.0)
    return _Terms(num, grid, grid[:, -1], {"clip": s.clip})


def _dm_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """dm: the model's value of each episode's first state."""
    first = layout.step == 0
    return _mean_terms(inputs.v_target[first][:, None])


def _dr_episodes(inputs: OPEInputs, layout: _Layout, w: _Weights, grid: np.ndarray) -> np.ndarray:
    """Per-episode (E, 1) sum_t gamma^t [g_t (r_t - q_logged_t) + g_{t-1} v_target_t] for the weight
    grid ``g`` (g_{-1} = 1)."""
    cur, prev = layout.at_rows(grid)
    return layout.episode_sum(w.discount * (cur * (inputs.reward - inputs.q_logged) + prev * inputs.v_target))


def _dr_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """dr (module docstring) with clipped weights."""
    grid = _clip(w.grid, s.clip)
    return _mean_terms(_dr_episodes(inputs, layout, w, grid), grid[:, -1], clip=s.clip)


def _sndr_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """sndr, the weighted DR of Thomas & Brunskill 2016 (module docstring), with clipped weights:
    per time index one self-normalised correction term and one self-normalised model term."""
    grid = _clip(w.grid, s.clip)
    cur, prev = layout.at_rows(grid)
    correction = layout.pad(w.discount * cur * (inputs.reward - inputs.q_logged), fill=0.0)
    model = layout.pad(w.discount * prev * inputs.v_target, fill=0.0)
    prev_grid = np.hstack([np.ones((layout.n_episodes, 1)), grid[:, :-1]])
    return _Terms(np.hstack([correction, model]), np.hstack([grid, prev_grid]), grid[:, -1], {"clip": s.clip})


def _tuned(candidates: Sequence[float], grid_of: Callable[[float], np.ndarray], inputs: OPEInputs,
           layout: _Layout, w: _Weights) -> float:
    """The candidate whose dr-form estimate minimises the estimated MSE
    ``Var_n(V_i) / n + (mean_i [V_i(dr) - V_i])^2`` (Su et al. 2020, Sec. 5, direct bias estimate);
    the first candidate on ties, the last if no score is finite."""
    reference = _dr_episodes(inputs, layout, w, w.grid)[:, 0]
    best, best_score = candidates[-1], np.inf
    for candidate in candidates:
        values = _dr_episodes(inputs, layout, w, grid_of(candidate))[:, 0]
        score = values.var() / len(values) + (reference - values).mean() ** 2
        if score < best_score:
            best, best_score = candidate, score
    return best


def _powers_of_two(weights: np.ndarray) -> np.ndarray:
    """2^k, k descending, from just above the largest to just below the smallest positive finite
    weight (at most ``_MAX_CANDIDATES`` of them, evenly spread over k)."""
    positive = weights[(weights > 0) & np.isfinite(weights)]
    if positive.size == 0:
        return np.empty(0)
    low = max(int(np.floor(np.log2(positive.min()))) - 1, -500)
    high = min(int(np.ceil(np.log2(positive.max()))) + 1, 500)
    exponents = np.arange(low, high + 1)
    if len(exponents) > _MAX_CANDIDATES:
        exponents = np.unique(np.round(np.linspace(low, high, _MAX_CANDIDATES)).astype(int))
    return 2.0 ** exponents[::-1]


def _finite_or_none(value: float) -> float | None:
    return None if np.isinf(value) else float(value)


def _dros_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """dros (module docstring): dr with weights lam w / (w^2 + lam); lam given or tuned over
    {inf, 4^k, 0}."""
    lam = s.dros_lambda
    if lam is None:
        candidates = [np.inf, *(_powers_of_two(w.row) ** 2), 0.0]
        lam = _tuned(candidates, lambda c: _shrink(w.grid, c), inputs, layout, w)
    grid = _shrink(w.grid, lam)
    return _mean_terms(_dr_episodes(inputs, layout, w, grid), grid[:, -1], **{
        "lambda": _finite_or_none(lam), "tuned": s.dros_lambda is None})


def _switch_dr_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """switch_dr (module docstring): dr with an episode's weights set to 0 from the step its
    cumulative weight first exceeds tau; tau given or tuned over {inf, 2^k, 0}."""
    tau = s.switch_tau
    if tau is None:
        candidates = [np.inf, *_powers_of_two(w.row), 0.0]
        tau = _tuned(candidates, lambda c: _switch(w.grid, c), inputs, layout, w)
    grid = _switch(w.grid, tau)
    switched = np.maximum.accumulate(w.grid, axis=1)[layout.index, layout.step] > tau
    return _mean_terms(_dr_episodes(inputs, layout, w, grid), grid[:, -1], tau=_finite_or_none(tau),
                       tuned=s.switch_tau is None, switched_share=float(switched.mean()))


def _slot_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings, ratio: np.ndarray) -> _Terms:
    """sum_t gamma^t sum_k min(w_{t-1} ratio_k, clip) slot_reward_k per episode; the ESS weight of an
    episode is the mean over slots of its last step's (clipped) slot weights."""
    slot_weights = _clip(w.prev[:, None] * ratio, s.clip)
    per_row = (slot_weights * inputs.slot_reward).sum(1)
    return _mean_terms(layout.episode_sum(w.discount * per_row), slot_weights[layout.is_last].mean(1), clip=s.clip)


def _iips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """iips (module docstring): slot k weighted by w_{t-1} pi_k / mu_k, clipped."""
    return _slot_terms(inputs, layout, w, s, inputs.target_slot_prob / inputs.behaviour_slot_prob)


def _rips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights, s: _Settings) -> _Terms:
    """rips (module docstring): slot k weighted by w_{t-1} pi_{0:k} / mu_{0:k}, clipped."""
    return _slot_terms(inputs, layout, w, s, inputs.target_prefix_prob / inputs.behaviour_prefix_prob)


_TERMS: dict[str, Callable[[OPEInputs, _Layout, _Weights, _Settings], _Terms]] = {
    "ips": _ips_terms, "snips": _snips_terms, "dm": _dm_terms, "dr": _dr_terms, "iips": _iips_terms,
    "sndr": _sndr_terms, "dros": _dros_terms, "switch_dr": _switch_dr_terms, "rips": _rips_terms,
}


def _refit_inputs(inputs: OPEInputs) -> list[OPEInputs]:
    """One copy of ``inputs`` per model refit (their q_logged / v_target), [] without refits."""
    if inputs.q_logged_refits is None or inputs.v_target_refits is None:
        return []
    q_r, v_r = np.asarray(inputs.q_logged_refits, np.float64), np.asarray(inputs.v_target_refits, np.float64)
    n = len(inputs.episode)
    if q_r.ndim != 2 or q_r.shape != v_r.shape or q_r.shape[1] != n:
        raise OPEError(f"q_logged_refits / v_target_refits have shapes {q_r.shape} / {v_r.shape}, expected (R, {n})")
    if not (np.isfinite(q_r).all() and np.isfinite(v_r).all()):
        raise OPEError("q_logged_refits / v_target_refits not finite; the estimators need finite values")
    return [replace(inputs, q_logged=q, v_target=v) for q, v in zip(q_r, v_r)]


def _fixed(tuned: float | None, given: float | None) -> float:
    """A tuned setting as recorded (None = infinity) -> the float to hold fixed."""
    if given is not None:
        return given
    return np.inf if tuned is None else float(tuned)


def _mean_with_ci(weights: np.ndarray) -> list[float]:
    """[mean, low, high]: the mean of ``weights`` with its 95% normal interval."""
    mean = float(weights.mean())
    half = 1.96 * float(weights.std(ddof=1)) / np.sqrt(len(weights)) if len(weights) > 1 else float("nan")
    return [mean, mean - half, mean + half]


def _ratio_value(num_sum: np.ndarray, den_sum: np.ndarray) -> np.ndarray:
    """sum over the last axis of num/den, a zero denominator giving a zero term."""
    safe = np.where(den_sum != 0, den_sum, 1.0)
    return np.where(den_sum != 0, num_sum / safe, 0.0).sum(-1)


def _bootstrap(variants: dict[str, list[tuple[np.ndarray, np.ndarray]]], n_episodes: int, n_bootstrap: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap replicates of every estimator, sharing the same episode resamples.

    A resample is a vector of episode counts, so a chunk of replicates is one matrix product
    with the per-episode terms (the self-normalised estimators resample their numerator and
    denominator sums together). An estimator with several ``variants`` (per-episode terms under
    several model refits) evaluates replicate j with variant j mod len(variants).
    """
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // n_episodes)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n_episodes, size=(b, n_episodes))
        flat = (draws + n_episodes * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_episodes).reshape(b, n_episodes).astype(np.float64)
        for name, terms in variants.items():
            which = (start + np.arange(b)) % len(terms)
            values = np.empty(b)
            for v, (num, den) in enumerate(terms):
                rows = which == v
                if rows.any():
                    values[rows] = _ratio_value(counts[rows] @ num, counts[rows] @ den)
            parts[name].append(values)
    return {name: np.concatenate(p) if p else np.empty(0) for name, p in parts.items()}


def _ess(weights: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (0 when every weight is 0)."""
    sq = float(np.sum(weights ** 2))
    return float(np.sum(weights) ** 2 / sq) if sq > 0 else 0.0
