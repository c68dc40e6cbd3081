"""Comparison report of finished (or partly finished) runs.

Usage::

    python -m recsys_exp.report <dir> [<dir> ...] [--out DIR] [--reps N] [--seed S]

Each ``<dir>`` is a Hydra multirun dir (``multirun/<date>/<time>``), a sweep dir (``tune=...``),
a single run dir, or any dir holding run dirs at any depth. Writes ``report.md`` and a
self-contained ``report.html`` (plots embedded) into ``--out`` (default: the first dir), with
the plots as PNG files beside them:

* per env (option name and N-K): final greedy-evaluation return per algorithm over seeds — mean,
  IQM, stratified-bootstrap 95% CIs of both, env steps/s, wall time — sorted by IQM;
* learning curves (training return vs env steps, mean over seeds with a bootstrap 95% band);
* the probability-of-improvement matrix P(row > column) with 95% CIs;
* every run that is missing, failed, still running or stopped early, and what it lacks.

Runs on ``env=logged`` (no simulator) are scored by their off-policy estimate on the sessions held
out of training (summary.json's ``objective``; a sweep trial's ``off_policy``): their section's
table says so, names the estimator and the number of held-out sessions, and flags estimates not to
rank by (:func:`flag_reason`): an effective sample size too small (:func:`low_ess`), or ope.json's
verdict (:mod:`recsys_exp.offline.verdict`) calling the estimate unreliable, with its reason.

Statistics follow Agarwal et al. 2021 (see :mod:`recsys_exp.report.stats`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys_exp.offline.verdict import ESS_MIN, ESS_MIN_SHARE, ess_floor  # noqa: F401  (render reads ESS_MIN*)
from recsys_exp.report import stats
from recsys_exp.report.collect import OffPolicy, RunRecord, collect

OUTCOMES = ("completed", "failed", "stopped early", "skipped", "missing")
# An off-policy estimate is too weakly supported to rank by when its effective sample size (Kish:
# (sum w)^2 / sum w^2 over the held-out sessions' importance weights) is below either bound: ESS_MIN
# (a handful of sessions decide the estimate and its bootstrap CI) or ESS_MIN_SHARE of the held-out
# sessions (the weights are degenerate: the target rarely takes the logged slates, so a few
# large-weight sessions and their propensities decide it). The same floor as ope.json's verdicts
# (recsys_exp.offline.verdict.ess_floor).


def low_ess(op: OffPolicy) -> bool:
    """The estimate's ESS is below ``max(ESS_MIN, ESS_MIN_SHARE * held-out sessions)``. An unweighted
    estimate (``dm``, no ESS) counts every held-out session once: its ESS is their number."""
    ess = effective_sessions(op)
    if ess is None:
        return False
    return ess < ess_floor(op.n_episodes or 0)


def flag_reason(op: OffPolicy) -> str | None:
    """Why an off-policy score should not be ranked by, or None: its ESS below the floor
    (:func:`low_ess`), else the reason ope.json's verdict gave for calling it unreliable."""
    if low_ess(op):
        n = "?" if op.n_episodes is None else f"{op.n_episodes:,}"
        return f"ESS {effective_sessions(op):,.1f} of {n} held-out sessions"
    return op.unreliable


def effective_sessions(op: OffPolicy) -> float | None:
    """The estimate's ESS, or for an unweighted estimator the number of held-out sessions."""
    return op.ess if op.ess is not None else (None if op.n_episodes is None else float(op.n_episodes))


@dataclass
class AlgoRow:
    """One algorithm's line of an env table."""

    label: str
    runs: int                                  # replicates with a final evaluation
    total: int                                 # replicates found (including failed or missing)
    mean: float | None = None
    iqm: float | None = None
    iqm_ci: tuple[float, float] | None = None  # None with fewer than 2 runs: nothing to resample
    mean_ci: tuple[float, float] | None = None
    env_steps_per_s: float | None = None       # mean over runs
    wall_s: float | None = None                # mean over runs
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    # env=logged: the held-out sessions (smallest, largest over runs), the smallest ESS over runs
    # (or sessions, for unweighted estimators) and the runs whose estimate is too weak to rank by
    held_out: tuple[int, int] | None = None
    ess_min: float | None = None
    flagged: list[str] = field(default_factory=list)


@dataclass
class EnvSection:
    """Everything the report shows for one env."""

    env: str
    rows: list[AlgoRow]
    poi: dict[tuple[str, str], tuple[float, tuple[float, float] | None]]  # (x, y) -> P(x > y), CI
    curves: dict[str, dict[str, np.ndarray]]   # label -> stats.curve_band(...)
    off_policy: OffPolicySummary | None = None  # env=logged: what the scores are


@dataclass
class OffPolicySummary:
    """What the off-policy scores of one env's section are."""

    estimators: list[str]                      # offline.select_by of the runs (one, unless they differ)
    held_out: tuple[int, int] | None           # held-out sessions per run: smallest, largest
    held_out_fraction: list[float]
    flagged: list[tuple[str, str]]  # (run, why) of each estimate not to rank by (flag_reason)


@dataclass
class Report:
    """The whole report, before rendering."""

    dirs: list[Path]
    created: str
    counts: dict[str, int]
    sections: list[EnvSection]
    problems: list[tuple[str, str]]           # (run name, what is missing or wrong)
    reps: int
    seed: int


def _mean_of(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def algo_row(label: str, records: list[RunRecord], reps: int, seed: int) -> AlgoRow:
    """Table line of one algorithm on one env from its replicates."""
    done = [r for r in records if r.score is not None]
    scores = np.array([r.score for r in done], dtype=float)
    row = AlgoRow(label, len(done), len(records), scores=scores,
                  env_steps_per_s=_mean_of([r.env_steps_per_s for r in done]),
                  wall_s=_mean_of([r.wall_s for r in done]))
    if len(scores):
        row.mean, row.iqm = stats.aggregate_mean(scores), stats.iqm(scores)
    if len(scores) >= 2:
        row.iqm_ci = stats.stratified_bootstrap_ci(scores, "iqm", reps=reps, seed=seed)
        row.mean_ci = stats.stratified_bootstrap_ci(scores, "mean", reps=reps, seed=seed)
    ops = [r.off_policy for r in done if r.off_policy is not None]
    sessions = [op.n_episodes for op in ops if op.n_episodes is not None]
    if sessions:
        row.held_out = (min(sessions), max(sessions))
    ess = [e for e in map(effective_sessions, ops) if e is not None]
    row.ess_min = min(ess) if ess else None
    row.flagged = [f"{r.name} (seed {r.seed})" if r.seed is not None else r.name
                   for r in done if r.off_policy is not None and flag_reason(r.off_policy)]
    return row


def off_policy_summary(records: list[RunRecord]) -> OffPolicySummary | None:
    """What the scores of an env's records are when they are off-policy estimates (else None)."""
    ops = [(r, r.off_policy) for r in records if r.score is not None and r.off_policy is not None]
    if not ops:
        return None
    sessions = [op.n_episodes for _, op in ops if op.n_episodes is not None]
    flagged = [(f"{r.name} (seed {r.seed})" if r.seed is not None else r.name, flag_reason(op))
               for r, op in ops if flag_reason(op)]
    return OffPolicySummary(sorted({op.estimator for _, op in ops}),
                            (min(sessions), max(sessions)) if sessions else None,
                            sorted({op.held_out_fraction for _, op in ops if op.held_out_fraction is not None}),
                            flagged)


def env_section(env: str, records: list[RunRecord], reps: int, seed: int) -> EnvSection:
    """Table, probability-of-improvement matrix and learning curves of one env."""
    by_algo: dict[str, list[RunRecord]] = {}
    for r in records:
        by_algo.setdefault(r.algo, []).append(r)
    rows = [algo_row(label, recs, reps, seed) for label, recs in by_algo.items()]
    # Best IQM first; algorithms without any final evaluation last, in name order.
    rows.sort(key=lambda a: (a.iqm is None, -(a.iqm or 0.0), a.label))
    scored = [a for a in rows if a.runs]
    poi = {}
    for x in scored:
        for y in scored:
            if x is not y:
                ci = stats.poi_ci(x.scores, y.scores, reps=reps, seed=seed) if min(x.runs, y.runs) >= 2 else None
                poi[(x.label, y.label)] = (stats.probability_of_improvement(x.scores, y.scores), ci)
    curves = {}
    for a in rows:
        seeds = [r.curve for r in by_algo[a.label] if r.curve is not None]
        band = stats.curve_band(seeds, reps=min(reps, 1000), seed=seed)
        if len(band["steps"]) and np.isfinite(band["mean"]).any():
            curves[a.label] = band
    return EnvSection(env, rows, poi, curves, off_policy_summary(records))


def summarize(records: list[RunRecord], dirs: list[Path], reps: int = stats.DEFAULT_REPS, seed: int = 0) -> Report:
    """Group records by env and algorithm and compute every statistic of the report."""
    by_env: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.env is not None and r.algo is not None:
            by_env.setdefault(r.env, []).append(r)
    counts = {"found": len(records), **{o: sum(r.outcome == o for r in records) for o in OUTCOMES}}
    seen, problems = set(), []
    for r in records:
        if r.problem and (r.name, r.problem) not in seen:  # a sweep trial's seeds share one line
            seen.add((r.name, r.problem))
            problems.append((r.name, r.problem))
    return Report([Path(d) for d in dirs], time.strftime("%Y-%m-%d %H:%M:%S %Z"), counts,
                  [env_section(env, recs, reps, seed) for env, recs in sorted(by_env.items())], problems, reps, seed)


def make_report(dirs: list[str | Path], out: str | Path | None = None, reps: int = stats.DEFAULT_REPS,
                seed: int = 0) -> dict[str, Path]:
    """Collect the runs below ``dirs``, write report.md, report.html and the PNGs into ``out``
    (default: the first dir); returns their paths: ``{"md": ..., "html": ..., "png": [...]}``."""
    from recsys_exp.report.render import write_report

    dirs = [Path(d) for d in dirs]
    report = summarize(collect(dirs), dirs, reps=reps, seed=seed)
    return write_report(report, Path(out) if out is not None else dirs[0])
