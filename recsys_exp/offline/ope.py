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

With one row per episode (the contextual-bandit case) these are the standard bandit IPS, SNIPS,
DM, DR and IIPS estimators. Confidence intervals are percentile bootstraps over episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr", "iips")
IS_ESTIMATORS = ("ips", "snips", "dr", "iips")

# The input fields each estimator reads (besides ``episode``).
_NEEDS: dict[str, tuple[str, ...]] = {
    "ips": ("reward", "behaviour_prob", "target_prob"),
    "snips": ("reward", "behaviour_prob", "target_prob"),
    "dm": ("v_target",),
    "dr": ("reward", "behaviour_prob", "target_prob", "q_logged", "v_target"),
    "iips": ("behaviour_prob", "target_prob", "behaviour_slot_prob", "target_slot_prob", "slot_reward"),
}
_SLOT_FIELDS = ("behaviour_slot_prob", "target_slot_prob", "slot_reward")
_VALUE_FIELDS = ("reward", "q_logged", "v_target", "slot_reward")
_MAX_LISTED_ROWS = 5
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


@dataclass(frozen=True)
class _Weights:
    """Importance weights per row and on the padded grid (weights carried past the episode end)."""

    grid: np.ndarray  # (E, T) w_{i,t}
    row: np.ndarray  # (n,) w_{i,t}
    prev: np.ndarray  # (n,) w_{i,t-1}
    discount: np.ndarray  # (n,) gamma^t


def check_propensities(inputs: OPEInputs, estimators: Sequence[str]) -> None:
    """Raise :class:`OPEError` unless ``inputs`` hold everything ``estimators`` need, valid.

    IS-based estimators need finite behaviour propensities in (0, 1] (iips also per slot) and
    target probabilities in [0, 1]; dm and dr need the model outputs. The message counts the bad
    rows and names the first few.
    """
    _validate(_as_arrays(inputs), _check_names(estimators))


def estimate(inputs: OPEInputs, estimators: Sequence[str] = ESTIMATORS, n_bootstrap: int = 1000,
             seed: int = 0, confidence: float = 0.95) -> dict[str, dict]:
    """Estimate ``V(pi)`` with each of ``estimators``, with bootstrap confidence intervals.

    Returns ``{name: {"value", "ci95": [low, high], "std_err", "n_episodes", "n_rows"}}`` in the
    requested order, plus ``"ess"`` for IS estimators. ``ci95`` is the percentile interval at
    ``confidence`` (the key keeps its name) over ``n_bootstrap`` resamples of whole episodes
    drawn with ``numpy.random.default_rng(seed)``; ``std_err`` is the bootstrap standard
    deviation. ``n_bootstrap=0`` skips the bootstrap (ci95 and std_err are NaN).
    """
    names = _check_names(estimators)
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise OPEError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}")
    if not 0.0 < confidence < 1.0:
        raise OPEError(f"confidence must be in (0, 1), got {confidence!r}")
    inputs = _as_arrays(inputs)
    layout = _validate(inputs, names)
    weights = _weights(inputs, layout, names)
    terms = {name: _TERMS[name](inputs, layout, weights) for name in names}
    replicates = _bootstrap(terms, layout.n_episodes, n_bootstrap, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    results: dict[str, dict] = {}
    for name in names:
        num, den = terms[name]
        reps = replicates[name]
        ci = np.quantile(reps, [alpha / 2, 1 - alpha / 2]) if n_bootstrap else [np.nan, np.nan]
        entry = {
            "value": float(_ratio_value(num.sum(0), den.sum(0))),
            "ci95": [float(ci[0]), float(ci[1])],
            "std_err": float(reps.std(ddof=1)) if n_bootstrap > 1 else float("nan"),
            "n_episodes": layout.n_episodes,
            "n_rows": len(layout.index),
        }
        if name in IS_ESTIMATORS:
            entry["ess"] = _ess(_final_weights(name, inputs, layout, weights))
        results[name] = entry
    return results


# --------------------------------------------------------------------------- validation


def _check_names(estimators: Sequence[str]) -> tuple[str, ...]:
    if isinstance(estimators, str):
        estimators = (estimators,)
    names = tuple(dict.fromkeys(estimators))
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        problem = f"unknown estimators {unknown}" if unknown else "no estimators requested"
        raise OPEError(f"{problem}; choose from {list(ESTIMATORS)}")
    return names


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
    """Rows whose slate propensity is used: all for ips/snips/dr; iips uses only w_{t-1}."""
    if any(name in ("ips", "snips", "dr") for name in names):
        return np.ones(len(layout.index), dtype=bool)
    if "iips" in names:
        return ~layout.is_last
    return np.zeros(len(layout.index), dtype=bool)


def _check_propensity_values(inputs: OPEInputs, layout: _Layout, names: tuple[str, ...],
                             labels: Callable[[int], str]) -> None:
    users = ", ".join(name for name in names if name in IS_ESTIMATORS)
    rows = _behaviour_rows(layout, names)
    checks = [("behaviour propensity", inputs.behaviour_prob, "target propensity", inputs.target_prob, rows)]
    if "iips" in names:
        all_rows = np.ones(len(layout.index), dtype=bool)
        checks.append(("behaviour slot propensity", inputs.behaviour_slot_prob,
                       "target slot propensity", inputs.target_slot_prob, all_rows))
    for b_name, b_prob, t_name, t_prob, used in checks:
        if not used.any():
            continue
        b, t = b_prob.reshape(len(used), -1), t_prob.reshape(len(used), -1)
        missing = np.isnan(b)
        zero = b == 0
        outside = ~(missing | zero) & ~((b > 0) & (b <= 1))
        need = f"IS-based estimators ({users})"
        _fail_rows(used & missing.any(1), f"{b_name} missing (NaN)",
                   f"{need} need it — use estimators=[dm] or log propensities", labels)
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
    row = grid[layout.index, layout.step]
    prev = np.where(layout.step > 0, grid[layout.index, np.maximum(layout.step - 1, 0)], 1.0)
    return _Weights(grid=grid, row=row, prev=prev, discount=float(inputs.gamma) ** layout.step)


# Each estimator is a pair of per-episode arrays (num, den), each (E, T'), with
# V = sum_t' (sum_i num_{i,t'}) / (sum_i den_{i,t'}); the bootstrap reweights the episodes i.
_Terms = tuple[np.ndarray, np.ndarray]


def _mean_terms(per_episode: np.ndarray) -> _Terms:
    return per_episode, np.ones_like(per_episode)


def _ips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights) -> _Terms:
    return _mean_terms(layout.episode_sum(w.discount * w.row * inputs.reward))


def _snips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights) -> _Terms:
    num = layout.pad(w.discount * w.row * inputs.reward, fill=0.0)
    return num, w.grid


def _dm_terms(inputs: OPEInputs, layout: _Layout, w: _Weights) -> _Terms:
    first = layout.step == 0
    return _mean_terms(inputs.v_target[first][:, None])


def _dr_terms(inputs: OPEInputs, layout: _Layout, w: _Weights) -> _Terms:
    correction = w.row * (inputs.reward - inputs.q_logged) + w.prev * inputs.v_target
    return _mean_terms(layout.episode_sum(w.discount * correction))


def _slot_ratio(inputs: OPEInputs) -> np.ndarray:
    return inputs.target_slot_prob / inputs.behaviour_slot_prob


def _iips_terms(inputs: OPEInputs, layout: _Layout, w: _Weights) -> _Terms:
    slot_term = (_slot_ratio(inputs) * inputs.slot_reward).sum(1)
    return _mean_terms(layout.episode_sum(w.discount * w.prev * slot_term))


_TERMS: dict[str, Callable[[OPEInputs, _Layout, _Weights], _Terms]] = {
    "ips": _ips_terms, "snips": _snips_terms, "dm": _dm_terms, "dr": _dr_terms, "iips": _iips_terms,
}


def _ratio_value(num_sum: np.ndarray, den_sum: np.ndarray) -> np.ndarray:
    """sum over the last axis of num/den, a zero denominator giving a zero term."""
    safe = np.where(den_sum != 0, den_sum, 1.0)
    return np.where(den_sum != 0, num_sum / safe, 0.0).sum(-1)


def _bootstrap(terms: dict[str, _Terms], n_episodes: int, n_bootstrap: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap replicates of every estimator, sharing the same episode resamples.

    A resample is a vector of episode counts, so a chunk of replicates is one matrix product
    with the per-episode terms (SNIPS resamples its numerator and denominator sums together).
    """
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // n_episodes)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in terms}
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n_episodes, size=(b, n_episodes))
        flat = (draws + n_episodes * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_episodes).reshape(b, n_episodes).astype(np.float64)
        for name, (num, den) in terms.items():
            parts[name].append(_ratio_value(counts @ num, counts @ den))
    return {name: np.concatenate(p) if p else np.empty(0) for name, p in parts.items()}


def _final_weights(name: str, inputs: OPEInputs, layout: _Layout, w: _Weights) -> np.ndarray:
    """Each episode's final weight; for iips, w_{T-2} times the mean slot ratio of the last step."""
    if name != "iips":
        return w.grid[:, -1]
    last = layout.is_last
    return w.prev[last] * _slot_ratio(inputs)[last].mean(1)


def _ess(weights: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (0 when every weight is 0)."""
    sq = float(np.sum(weights ** 2))
    return float(np.sum(weights) ** 2 / sq) if sq > 0 else 0.0
