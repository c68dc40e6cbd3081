"""Aggregate statistics over seeds: IQM, stratified bootstrap CIs, probability of improvement.

The estimators of Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS), with the semantics of their ``rliable`` package (1.2.0), re-implemented on
numpy/scipy (rliable needs ``arch`` and ``seaborn``; vectorised resampling is also much faster).

Scores of one method are a list of per-task arrays ``[(n_1,), (n_2,), ...]`` (a task is an env;
the n runs of a task are its seeds; tasks may have different numbers of runs). A bare 1-D array
is one task. Every bootstrap draws from its own ``numpy.random.default_rng(seed)``, so a report
is reproducible and does not depend on the order in which statistics are computed.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy.stats import trim_mean

DEFAULT_REPS = 10_000  # rliable uses 50,000; 10,000 moves 95% bounds by well under 1% of their width


def as_tasks(scores) -> list[np.ndarray]:
    """Normalise scores to a list of 1-D float arrays, one per task (a 1-D array = one task)."""
    if isinstance(scores, np.ndarray) and scores.ndim == 1:
        return [scores.astype(float)]
    if isinstance(scores, np.ndarray) and scores.ndim == 2:  # rliable's (runs, tasks) matrix
        return [scores[:, t].astype(float) for t in range(scores.shape[1])]
    if len(scores) and np.ndim(scores[0]) == 0:  # a plain list of numbers
        return [np.asarray(scores, dtype=float)]
    return [np.asarray(s, dtype=float).ravel() for s in scores]


# ---- point estimates; each also accepts a leading bootstrap axis: arrays (reps, n_t) ----

def _iqm(tasks: list[np.ndarray]) -> np.ndarray | float:
    # All runs of all tasks pooled, then a 25% trim at each end (rliable: trim_mean(axis=None)).
    return trim_mean(np.concatenate(tasks, axis=-1), 0.25, axis=-1)


def _mean(tasks: list[np.ndarray]) -> np.ndarray | float:
    # Mean over tasks of each task's mean over runs (rliable's aggregate_mean).
    return np.mean([t.mean(axis=-1) for t in tasks], axis=0)


def iqm(scores) -> float:
    """Interquartile mean: ``scipy.stats.trim_mean(all runs of all tasks, 0.25)``.

    With n runs, ``int(0.25 n)`` values are cut at each end (n=5: the middle 3; n<4: the mean).
    """
    return float(_iqm(as_tasks(scores)))


def aggregate_mean(scores) -> float:
    """Mean over tasks of the per-task mean over runs."""
    return float(_mean(as_tasks(scores)))


def _resample(tasks: list[np.ndarray], reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified resample: each task's runs drawn with replacement within that task -> (reps, n_t)."""
    return [t[rng.integers(0, len(t), size=(reps, len(t)))] for t in tasks]


def _percentile_ci(boot: np.ndarray, size: float) -> tuple[float, float]:
    alpha = 100 * (1 - size) / 2
    lo, hi = np.percentile(boot, [alpha, 100 - alpha])
    return float(lo), float(hi)


def stratified_bootstrap_ci(scores, statistic: str | Callable = "iqm", reps: int = DEFAULT_REPS,
                            size: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``statistic`` under the stratified bootstrap (runs resampled within tasks).

    ``statistic``: ``"iqm"``, ``"mean"``, or a callable taking the list of ``(reps, n_t)`` resampled
    task arrays and returning ``(reps,)``. With one task this is the plain bootstrap over seeds.
    """
    fn = {"iqm": _iqm, "mean": _mean}.get(statistic, statistic) if isinstance(statistic, str) else statistic
    if not callable(fn):
        raise ValueError(f"unknown statistic {statistic!r}: use 'iqm', 'mean' or a callable")
    rng = np.random.default_rng(seed)
    return _percentile_ci(np.asarray(fn(_resample(as_tasks(scores), reps, rng))), size)


def _poi(tasks_x: list[np.ndarray], tasks_y: list[np.ndarray]) -> np.ndarray | float:
    # Per task: mean over all (x, y) pairs of 1[x > y] + 0.5 * 1[x == y] (= Mann-Whitney U / (n m)).
    per_task = []
    for x, y in zip(tasks_x, tasks_y):
        gt = x[..., :, None] > y[..., None, :]
        eq = x[..., :, None] == y[..., None, :]
        per_task.append((gt + 0.5 * eq).mean(axis=(-2, -1)))
    return np.mean(per_task, axis=0)


def probability_of_improvement(scores_x, scores_y) -> float:
    """P(X > Y): per task the probability that a random run of X beats a random run of Y (ties
    count one half), averaged over tasks. Both methods must have the same tasks."""
    tx, ty = as_tasks(scores_x), as_tasks(scores_y)
    if len(tx) != len(ty):
        raise ValueError(f"probability_of_improvement: {len(tx)} tasks vs {len(ty)}")
    return float(_poi(tx, ty))


def poi_ci(scores_x, scores_y, reps: int = DEFAULT_REPS, size: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of P(X > Y): X's and Y's runs resampled independently within each task
    (rliable's ``StratifiedIndependentBootstrap``)."""
    rng = np.random.default_rng(seed)
    bx = _resample(as_tasks(scores_x), reps, rng)
    by = _resample(as_tasks(scores_y), reps, rng)
    return _percentile_ci(_poi(bx, by), size)


def curve_band(curves: Sequence[tuple[np.ndarray, np.ndarray]], reps: int = 1000, size: float = 0.95,
               seed: int = 0, max_points: int = 200, tol: float = 0.01) -> dict[str, np.ndarray]:
    """Mean learning curve over seeds with a bootstrap CI band.

    ``curves``: one ``(steps, values)`` pair per seed (NaN values are dropped). The common grid is
    the union of all seeds' steps with steps closer than ``tol`` x the largest step merged (seeds
    overshoot a batch by a few env steps: 400 and 401 are one point), or ``max_points`` evenly
    spaced steps if that is longer. Each seed is linearly interpolated onto the grid and counts
    only inside its own step range (widened by that tolerance, where its end value is used), so a
    shorter (partial) run does not drag the tail. At each step the band is the percentile bootstrap
    of the mean over the seeds present. Returns ``steps``, ``mean``, ``low``, ``high`` and ``n``
    (seeds present at each step), each of shape (G,); empty arrays without data.
    """
    clean = []
    for steps, values in curves:
        s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        ok = np.isfinite(s) & np.isfinite(v)
        if ok.any():
            order = np.argsort(s[ok], kind="stable")
            clean.append((s[ok][order], v[ok][order]))
    if not clean:
        empty = np.zeros(0)
        return {"steps": empty, "mean": empty, "low": empty, "high": empty, "n": empty.astype(int)}
    steps = np.unique(np.concatenate([s for s, _ in clean]))
    gap = tol * max(np.abs(steps).max(), 1.0)
    grid = [steps[0]]
    for x in steps[1:]:
        if x - grid[-1] > gap:
            grid.append(x)
    grid = np.array(grid)
    if len(grid) > max_points:
        grid = np.linspace(grid[0], grid[-1], max_points)
    # (seeds, G): each seed's curve on the grid (np.interp holds the end values), NaN outside its range
    table = np.array([np.where((grid >= s[0] - gap) & (grid <= s[-1] + gap), np.interp(grid, s, v), np.nan)
                      for s, v in clean])
    n = np.isfinite(table).sum(axis=0)
    # nanmean warns where no resampled seed covers a step (the band is NaN there): expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(table, axis=0)
        rng = np.random.default_rng(seed)
        boot = np.nanmean(table[rng.integers(0, len(table), size=(reps, len(table)))], axis=1)  # (reps, G)
        alpha = 100 * (1 - size) / 2
        low, high = np.nanpercentile(boot, [alpha, 100 - alpha], axis=0)
    return {"steps": grid, "mean": mean, "low": low, "high": high, "n": n}
