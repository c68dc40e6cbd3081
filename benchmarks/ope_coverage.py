"""Coverage study of the off-policy estimators (issue 16, item 4): do their 95% intervals hold the truth?

For each RecSim env (at the README's N-K: Interest Evolution 10-2, Long-Term Satisfaction 50-2, Interest
Exploration 10-2), discount gamma, behaviour/target pair and seed, this records a small log of the
behaviour policy, runs every estimator of ``recsys_exp.offline.ope.ALL_ESTIMATORS`` exactly as
``mode=evaluate restore=<target> offline.path=<log>`` does (:func:`recsys_exp.offline.evaluation.policy_estimates`:
FQE, bootstrap intervals, verdicts, the recommended estimator) and compares each estimate with the
target's value simulated on many fresh users. Pairs, from near to far:

* ``on_policy``: SlateQ's logs with a constant epsilon = 0.3; the target is the same policy with its
  exploration (``offline.target=explore``). All weights are 1.
* ``eps_greedy``: the same logs; the target is SlateQ's greedy policy.
* ``linucb_slateq``: LinUCB's logs (its UCB exploration on); the target is SlateQ's greedy policy.
* ``uniform_learned``: uniformly random slates (``algo=random``); the target is SlateQ's greedy policy.

The policies are trained once per env (seed 0, ``--slateq-steps`` / ``--linucb-steps``) and reused by
every case; each seed records its own log (its users and the policies' own draws) and seeds FQE
and the bootstrap. The truth of each (env, target, gamma) is one simulation of ``--truth-episodes``
users with a seed no log uses; its own 95% interval is recorded next to the estimators' widths.
A case counts as covered when the estimator's interval contains the truth's point estimate.

Cost: FQE dominates (200 gradient steps per iteration, one iteration per step of horizon, up to
log(0.01)/log(gamma) = 44 at gamma 0.9). Per greedy-target case, in CPU seconds: about 120 (gamma 1) and
45 (0.9) on Interest Exploration, 60 and 40 on Long-Term Satisfaction, several times more on Interest
Evolution (its item features are 20 x 20 wide) -- the full grid is some hours on 2 shared cores. For the
exploring target of ``on_policy`` FQE evaluates the whole support at every next state (the greedy slate
plus every ordered slate: 91 entries per row on 10-2, 2,451 on 50-2; about 28 CPU s per iteration on
14,000 Interest Evolution rows instead of about 1), so that pair runs the importance-sampling estimators
only, unless ``--on-policy-fqe``.

Trained policies, logs, truths and finished cases are cached under ``--cache`` (a case is reused
only if the OPE code it ran is unchanged, or with ``--reuse-stale``; every case records the hash of
the OPE sources it ran with), so a rerun or a larger grid only computes what is new.
The results (every case, summaries, the "Done when" checks of issue 16) go to ``--out`` after each
case, atomically; a markdown summary is printed at the end.

    nice -n 10 python benchmarks/ope_coverage.py                      # the full grid
    python benchmarks/ope_coverage.py --quick                         # a smoke run of a few minutes
    python benchmarks/ope_coverage.py --envs interest_exploration --gammas 0.9 --pairs eps_greedy --seeds 0 1
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _slateq_one_step import ONE_STEP_SLATEQ

ROOT = Path(__file__).resolve().parents[1]
# N per env (K = 2), cheapest FQE first: a run stopped early has whole envs done
ENVS = {"interest_exploration": 10, "long_term_satisfaction": 50, "interest_evolution": 10}
SLATE_SIZE = 2
PAIRS = {  # name: (logger, target, explore)
    "on_policy": ("slateq_eps", "slateq", True),
    "eps_greedy": ("slateq_eps", "slateq", False),
    "linucb_slateq": ("lin_ucb", "slateq", False),
    "uniform_learned": ("random", "slateq", False),
}
EPSILON = 0.3  # the epsilon-greedy logger's (and the on-policy target's) constant epsilon
TRUTH_SEED = 987_654  # simulation seed of the truths (no log uses it)
OPE_SOURCES = ("offline/fqe.py", "offline/ope.py", "offline/verdict.py", "offline/evaluation.py",
               "runner/policy.py", "algorithms/policy_adapters.py")
ESS_SHARE_CHECK = 0.05  # "Done when": DR within 10% wherever its ESS exceeds 5% of the sessions
COVERAGE_TARGET = 0.85
REL_ERR_TARGET = 0.10


# ------------------------------------------------------------------------- stages (cached)
def env_overrides(env: str) -> list[str]:
    return [f"env={env}", f"env.num_candidates={ENVS[env]}", f"env.slate_size={SLATE_SIZE}"]


def train_policy(cache: Path, env: str, algo: str, steps: int) -> Path:
    """Train ``algo`` on ``env`` for ``steps`` env steps (seed 0) once; returns its run dir."""
    import recsys_exp

    run_dir = cache / env / "policies" / f"{algo}_{steps}"
    if not (run_dir / "checkpoints" / "last").exists():
        log(f"train {algo} on {env} ({steps:,} steps) -> {run_dir}")
        pin = ONE_STEP_SLATEQ if algo == "slateq" else []  # the target SlateQ as when measured
        result = recsys_exp.run([*env_overrides(env), f"algo={algo}", *pin, f"stop.timesteps={steps}", "seed=0",
                                 "logger.mode=disabled", "progress=false", "eval.episodes=100"], run_dir=run_dir)
        if result.status != "completed" or not (run_dir / "checkpoints" / "last").exists():
            raise RuntimeError(f"training {algo} on {env} ended {result.status}: see {run_dir}")
    return run_dir


def policy_config(run_dir: Path | None, env: str, algo: str, seed: int) -> tuple[dict[str, Any], Path | None]:
    """(config, checkpoint) of a trained run (``run_dir``) or, without one, a fresh ``algo`` module."""
    from recsys_exp.run_dir import load_config, locate_checkpoint

    if run_dir is None:
        import recsys_exp

        c = recsys_exp.compose([*env_overrides(env), f"algo={algo}", "logger.mode=disabled"])
        checkpoint = None
    else:
        checkpoint, config_dir = locate_checkpoint(run_dir)
        c = copy.deepcopy(load_config(config_dir / "config.yaml"))
    c["seed"] = seed
    return c, checkpoint


def with_epsilon(c: dict[str, Any], epsilon: float) -> dict[str, Any]:
    """``c`` with a constant epsilon-greedy exploration (as ``mode=offline_study`` records)."""
    c["exploration"].update(type="epsilon_greedy", initial_epsilon=epsilon, final_epsilon=epsilon)
    return c


def logger_config(policies: dict[str, Path], env: str, logger: str, seed: int) -> tuple[dict, Path | None]:
    if logger == "slateq_eps":
        c, ckpt = policy_config(policies["slateq"], env, "slateq", seed)
        return with_epsilon(c, EPSILON), ckpt
    if logger == "lin_ucb":
        return policy_config(policies["lin_ucb"], env, "lin_ucb", seed)
    return policy_config(None, env, "random", seed)


def target_config(policies: dict[str, Path], env: str, explore: bool, seed: int) -> tuple[dict, Path | None]:
    c, ckpt = policy_config(policies["slateq"], env, "slateq", seed)
    if explore:
        with_epsilon(c, EPSILON)
    c["offline"]["target"] = "explore" if explore else "greedy"
    return c, ckpt


def record_log(cache: Path, policies: dict[str, Path], env: str, logger: str, seed: int, sessions: int) -> Path:
    """Exactly ``sessions`` complete sessions of ``logger`` (one per simulated user) with ``seed``."""
    from recsys_exp.offline.recorder import record

    out = cache / env / "logs" / f"{logger}_n{sessions}_seed{seed}"
    if not (out / "manifest.json").exists():
        c, ckpt = logger_config(policies, env, logger, seed)
        # one session per sub-env, no new session after the first step: exactly `sessions` sessions
        c["offline"].update(record_num_envs=sessions, record_steps=1)
        if out.exists():  # an interrupted recording: start over
            for f in out.glob("*.parquet"):
                f.unlink()
        summary = record(c, out, None if ckpt is None else str(ckpt))
        log(f"recorded {logger} on {env}, seed {seed}: {summary['rows']:,} rows, {summary['episodes']} sessions")
    return out


def truth(cache: Path, policies: dict[str, Path], env: str, explore: bool, gamma: float, episodes: int) -> dict:
    """The target's simulated (gamma-discounted) value over ``episodes`` fresh users (cached)."""
    from recsys_exp.offline.evaluation import simulated_value, target_policy

    path = cache / env / "truth" / f"slateq_{'explore' if explore else 'greedy'}_g{gamma}_n{episodes}.json"
    if not path.exists():
        start = time.perf_counter()
        c, ckpt = target_config(policies, env, explore, TRUTH_SEED)
        c["eval"]["num_envs"] = min(500, episodes)
        value = simulated_value(c, target_policy(c, ckpt), explore, gamma, episodes, TRUTH_SEED)
        value["half_width"] = (value["ci95"][1] - value["ci95"][0]) / 2
        value["seconds"] = time.perf_counter() - start
        write_json(path, value)
    return json.loads(path.read_text())


def run_case(policies: dict[str, Path], env: str, gamma: float, pair: str, seed: int, data_dir: Path,
             true: dict, sessions: int, bootstrap: int | None, estimators: list[str]) -> dict[str, Any]:
    """Every estimator of one (env, gamma, pair, seed) as ``mode=evaluate`` computes them, against the truth."""
    from recsys_exp.offline.dataset import LoggedData
    from recsys_exp.offline.evaluation import policy_estimates, target_policy

    _, _, explore = PAIRS[pair]
    c, ckpt = target_config(policies, env, explore, seed)
    c["offline"].update(path=str(data_dir), gamma=gamma, estimators=estimators)
    if bootstrap is not None:
        c["offline"]["bootstrap"] = bootstrap
    # policy_estimates also simulates the target (eval.episodes users): kept tiny, the study's truth is its own
    c["eval"].update(episodes=2, num_envs=2)
    data = LoggedData.read(data_dir)
    start, cpu = time.perf_counter(), time.process_time()
    ope = policy_estimates(c, target_policy(c, ckpt), data, checkpoint=ckpt)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    t = true["value"]
    rows = {}
    for name, e in ope["estimates"].items():
        low, high = e["ci95"]
        ess = e.get("ess")
        rows[name] = {
            "value": e["value"], "ci95": [low, high], "covers": bool(low <= t <= high),
            "rel_err": (e["value"] - t) / abs(t), "ci_half_width": (high - low) / 2,
            "reliable": bool(e["reliable"]), "reason": e["reason"], "ess": ess,
            "ess_share": None if ess is None else ess / e["n_episodes"], "mean_weight": e.get("mean_weight"),
            **{k: e[k] for k in ("lambda", "tau", "switched_share", "model_refits", "model_bias") if k in e}}
    return {"env": env, "num_candidates": ENVS[env], "slate_size": SLATE_SIZE, "gamma": gamma, "pair": pair,
            "logger": PAIRS[pair][0], "target": "slateq " + ("explore (epsilon 0.3)" if explore else "greedy"),
            "seed": seed, "sessions": ope["data"]["episodes"], "rows": ope["data"]["rows"],
            "longest_session": int(np.unique(data.episode_id, return_counts=True)[1].max()),
            "truth": {k: true[k] for k in ("value", "ci95", "half_width", "episodes", "seed")},
            "feasible_range": ope["feasible_range"], "support": ope.get("support"), "recommended": ope["recommended"],
            "estimates": rows,
            "fqe": ope.get("fqe"), "seconds": seconds, "cpu_seconds": cpu}


# ------------------------------------------------------------------------- summaries
def wilson(k: int, n: int) -> list[float] | None:
    """95% Wilson interval of a proportion k/n."""
    if n == 0:
        return None
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def share(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": wilson(k, n)}


def median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per estimator, per (env, gamma, pair) and the issue's "Done when" checks."""
    names = sorted({n for c in cases for n in c["estimates"]}, key=lambda n: ALL_ORDER.index(n))
    per_estimator = {}
    for name in names:
        es = [c["estimates"][name] for c in cases if name in c["estimates"]]
        ok = [e for e in es if e["reliable"]]
        per_estimator[name] = {
            "cases": len(es), "flagged": share(sum(not e["reliable"] for e in es), len(es)),
            "coverage_unflagged": share(sum(e["covers"] for e in ok), len(ok)),
            "coverage_all": share(sum(e["covers"] for e in es), len(es)),
            "median_abs_rel_err_unflagged": median([abs(e["rel_err"]) for e in ok]),
            "median_abs_rel_err_all": median([abs(e["rel_err"]) for e in es]),
            "median_ci_half_width_over_truth_half_width": median(
                [c["estimates"][name]["ci_half_width"] / c["truth"]["half_width"] for c in cases
                 if name in c["estimates"] and c["truth"]["half_width"] > 0])}
    groups: dict[tuple, list] = {}
    for c in cases:
        groups.setdefault((c["env"], c["gamma"], c["pair"]), []).append(c)
    per_group = []
    for (env, gamma, pair), cs in groups.items():
        rec = [c for c in cs if c["recommended"]]
        rec_err = [abs(c["estimates"][c["recommended"]]["rel_err"]) for c in rec]
        dr = [c["estimates"]["dr"] for c in cs if "dr" in c["estimates"]]
        per_group.append({
            "env": env, "gamma": gamma, "pair": pair, "seeds": sorted(c["seed"] for c in cs),
            "truth": cs[0]["truth"]["value"], "truth_half_width": cs[0]["truth"]["half_width"],
            "recommended": {str(n): sum(c["recommended"] == n for c in cs)
                            for n in sorted({c["recommended"] for c in cs}, key=str)},
            "no_recommendation": len(cs) - len(rec),
            "recommended_median_abs_rel_err": median(rec_err),
            "recommended_max_abs_rel_err": max(rec_err) if rec_err else None,
            "recommended_within_10pct": share(sum(x <= REL_ERR_TARGET for x in rec_err), len(rec_err)),
            "recommended_covers": share(sum(c["estimates"][c["recommended"]]["covers"] for c in rec), len(rec)),
            "unflagged_estimators_per_case": float(np.mean([sum(e["reliable"] for e in c["estimates"].values())
                                                            for c in cs])),
            "dr_median_ess_share": median([e["ess_share"] for e in dr if e["ess_share"] is not None]),
            "dr_median_abs_rel_err": median([abs(e["rel_err"]) for e in dr]),
            "median_seconds": median([c["seconds"] for c in cs])})
    # the truth's own interval next to the estimators' widths
    ratios = [e["ci_half_width"] / c["truth"]["half_width"] for c in cases for e in c["estimates"].values()
              if c["truth"]["half_width"] > 0]
    checks = done_when(cases, per_estimator)
    return {"per_estimator": per_estimator, "per_group": per_group, "checks": checks,
            "truth_half_width_vs_ci": {"median_ci_half_width_over_truth_half_width": median(ratios),
                                       "min": min(ratios) if ratios else None}}


def done_when(cases: list[dict[str, Any]], per_estimator: dict[str, Any]) -> dict[str, Any]:
    """Issue 16's second "Done when" line, evaluated on ``cases``."""
    coverage = {}
    for name, s in per_estimator.items():
        cov = s["coverage_unflagged"]
        coverage[name] = {**cov, "pass": None if cov["n"] == 0 else cov["rate"] >= COVERAGE_TARGET}
    coverage_pass = all(v["pass"] is not False for v in coverage.values())

    def within(which: str) -> dict[str, Any]:
        hits, misses = 0, []
        eligible = 0
        for c in cases:
            name = "dr" if which == "dr" else c["recommended"]
            e = c["estimates"].get(name) if name else None
            if e is None or e["ess_share"] is None or e["ess_share"] <= ESS_SHARE_CHECK:
                continue
            eligible += 1
            if abs(e["rel_err"]) <= REL_ERR_TARGET:
                hits += 1
            else:
                misses.append({"env": c["env"], "gamma": c["gamma"], "pair": c["pair"], "seed": c["seed"],
                               "estimator": name, "rel_err": e["rel_err"], "ess_share": e["ess_share"],
                               "reliable": e["reliable"]})
        return {**share(hits, eligible), "misses": misses, "pass": None if eligible == 0 else not misses}

    # the recommended estimate whatever its ESS (dm has none): within 10%?
    rec = [c for c in cases if c["recommended"]]
    rec_hits = sum(abs(c["estimates"][c["recommended"]]["rel_err"]) <= REL_ERR_TARGET for c in rec)
    return {
        "coverage_unflagged_at_least_85pct": {"per_estimator": coverage, "pass": coverage_pass},
        "dr_within_10pct_where_ess_over_5pct": within("dr"),
        "recommended_within_10pct_where_its_ess_over_5pct": within("recommended"),
        "recommended_within_10pct_all_cases": {**share(rec_hits, len(rec)), "no_recommendation": len(cases) - len(rec)},
    }


# ------------------------------------------------------------------------- output
def fmt_share(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "—"
    return f"{s['rate']:.0%} ({s['k']}/{s['n']})"


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = ["| estimator | cases | flagged | coverage, unflagged | coverage, all | median abs. rel. err, "
             "unflagged | median abs. rel. err, all |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in s["per_estimator"].items():
        lines.append(f"| {name} | {e['cases']} | {fmt_share(e['flagged'])} | {fmt_share(e['coverage_unflagged'])} | "
                     f"{fmt_share(e['coverage_all'])} | {fmt(e['median_abs_rel_err_unflagged'])} | "
                     f"{fmt(e['median_abs_rel_err_all'])} |")
    lines += ["", "| env | γ | pair | truth | recommended (cases) | rec. abs. rel. err, median / max | "
              "rec. within 10% | rec. covers | dr ESS share (median) | dr abs. rel. err (median) |",
              "|---|---:|---|---:|---|---:|---:|---:|---:|---:|"]
    for g in s["per_group"]:
        rec = ", ".join(f"{'none' if n == 'None' else n} {k}" for n, k in g["recommended"].items())
        lines.append(f"| {g['env']} {ENVS[g['env']]}-{SLATE_SIZE} | {g['gamma']} | {g['pair']} | "
                     f"{g['truth']:.4g} ± {g['truth_half_width']:.2g} | {rec} | "
                     f"{fmt(g['recommended_median_abs_rel_err'])} / {fmt(g['recommended_max_abs_rel_err'])} | "
                     f"{fmt_share(g['recommended_within_10pct'])} | {fmt_share(g['recommended_covers'])} | "
                     f"{fmt(g['dr_median_ess_share'], '.3f')} | {fmt(g['dr_median_abs_rel_err'])} |")
    c = s["checks"]
    cov = c["coverage_unflagged_at_least_85pct"]
    failing = [f"{n} {fmt_share(v)}" for n, v in cov["per_estimator"].items() if v["pass"] is False]
    dr, rec = c["dr_within_10pct_where_ess_over_5pct"], c["recommended_within_10pct_where_its_ess_over_5pct"]
    ratio = s["truth_half_width_vs_ci"]["median_ci_half_width_over_truth_half_width"]
    lines += ["", f"* Unflagged 95% CIs cover the truth in ≥ 85% of cases, per estimator: "
                  f"{'PASS' if cov['pass'] else 'FAIL'}" + (f" (below: {', '.join(failing)})" if failing else ""),
              f"* dr within 10% of the truth wherever its ESS > 5% of the sessions: "
              f"{verdict_word(dr['pass'])} ({fmt_share(dr)} of the eligible cases)",
              f"* recommended estimate within 10% wherever its ESS > 5% of the sessions: "
              f"{verdict_word(rec['pass'])} ({fmt_share(rec)}); in all cases: "
              f"{fmt_share(c['recommended_within_10pct_all_cases'])}, no recommendation in "
              f"{c['recommended_within_10pct_all_cases']['no_recommendation']}",
              f"* Estimators never unflagged (no coverage to check): "
              f"{', '.join(n for n, v in cov['per_estimator'].items() if v['pass'] is None) or 'none'}",
              f"* The truth's own 95% half-width is {1 / ratio:.2f} of the median estimator CI half-width"]
    return "\n".join(lines)


def verdict_word(passed: bool | None) -> str:
    return "no eligible case" if passed is None else ("PASS" if passed else "FAIL")


# ------------------------------------------------------------------------- plumbing
ALL_ORDER: list[str] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj: Any) -> None:
    from recsys_exp.run_dir import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def code_state() -> dict[str, Any]:
    """The commit, the OPE sources' hash (cases are reused only under the same hash) and dirty files."""
    import recsys_exp

    pkg = Path(recsys_exp.__file__).parent
    digest = hashlib.sha256()
    for rel in OPE_SOURCES:
        digest.update((pkg / rel).read_bytes())

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--", *[f"recsys_exp/{r}" for r in OPE_SOURCES])
             .splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip(), "ope_sources_sha256": digest.hexdigest()[:16],
            "uncommitted_ope_sources": dirty}


# The full grid (issue 16's study) and the smoke run; flags given on the command line win over both.
FULL = {"envs": list(ENVS), "gammas": [1.0, 0.9], "pairs": list(PAIRS), "seeds": [0, 1, 2, 3, 4], "sessions": 200,
        "truth_episodes": 5000, "bootstrap": None, "slateq_steps": 30_000, "linucb_steps": 20_000}
QUICK = {"envs": ["interest_exploration"], "gammas": [0.9], "pairs": ["on_policy", "eps_greedy", "uniform_learned"],
         "seeds": [0, 1], "sessions": 50, "truth_episodes": 1000, "bootstrap": 200, "slateq_steps": 3000,
         "linucb_steps": 2000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), help=f"default: {' '.join(FULL['envs'])}")
    parser.add_argument("--gammas", nargs="+", type=float, help="default: 1.0 0.9")
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), help=f"default: {' '.join(FULL['pairs'])}")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 3 4")
    parser.add_argument("--sessions", type=int, help="logged sessions per case (default 200)")
    parser.add_argument("--truth-episodes", type=int, help="simulated users behind each truth (default 5000)")
    parser.add_argument("--bootstrap", type=int, help="resamples per interval (default: offline.bootstrap's)")
    parser.add_argument("--slateq-steps", type=int, help="SlateQ's training budget, env steps (default 30000)")
    parser.add_argument("--linucb-steps", type=int, help="LinUCB's training budget, env steps (default 20000)")
    parser.add_argument("--on-policy-fqe", action="store_true",
                        help="also run dm and the dr family on the on_policy pair (FQE over the whole support)")
    parser.add_argument("--reuse-stale", action="store_true",
                        help="reuse cached cases even if the OPE sources changed since (each case records its hash)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: interest_exploration, gamma 0.9, 3 pairs, seeds 0 1, 50 sessions, "
                             "tiny training budgets")
    parser.add_argument("--cache", type=Path, default=ROOT / "outputs" / "ope_coverage_cache")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/ope_coverage.json; --quick: under the cache)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.cache = args.cache / "quick"
    return args


def main() -> None:
    args = parse_args()
    default_out = args.cache / "ope_coverage.json" if args.quick else ROOT / "benchmarks/results/ope_coverage.json"
    out = args.out or default_out
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    import recsys_exp.offline.evaluation  # noqa: F401  (the OPE code this run measures, before hashing it)
    import recsys_exp.offline.fqe  # noqa: F401
    import recsys_exp.offline.verdict  # noqa: F401
    from recsys_exp.offline.ope import ALL_ESTIMATORS, MODEL_ESTIMATORS

    ALL_ORDER.extend(ALL_ESTIMATORS)
    code = code_state()
    command = "python benchmarks/ope_coverage.py " + " ".join(sys.argv[1:])
    grid = [(env, gamma, pair, seed) for env in args.envs for gamma in args.gammas for pair in args.pairs
            for seed in args.seeds]
    dirty = ", ".join(code["uncommitted_ope_sources"])
    log(f"{len(grid)} cases; code {code['commit'][:8]}, OPE sources {code['ope_sources_sha256']}"
        + (f" (uncommitted changes in {dirty})" if dirty else ""))
    started = time.perf_counter()
    cases: list[dict[str, Any]] = []
    setup: dict[str, Any] = {}
    for i, (env, gamma, pair, seed) in enumerate(grid):
        policies = {"slateq": train_policy(args.cache, env, "slateq", args.slateq_steps)}
        logger, _, explore = PAIRS[pair]
        if logger == "lin_ucb":
            policies["lin_ucb"] = train_policy(args.cache, env, "lin_ucb", args.linucb_steps)
        setup.setdefault(env, {})["policies"] = {k: str(v) for k, v in policies.items()}
        estimators = [e for e in ALL_ESTIMATORS if not (pair == "on_policy" and not args.on_policy_fqe
                                                         and e in MODEL_ESTIMATORS)]
        key = (f"{pair}_g{gamma}_s{seed}_n{args.sessions}_b{args.bootstrap}_t{args.truth_episodes}_"
               f"{'+'.join(estimators)}_{args.slateq_steps}_{args.linucb_steps}")
        path = args.cache / env / "cases" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
        cached = json.loads(path.read_text()) if path.exists() else None
        if cached and (cached.get("code") == code["ope_sources_sha256"] or args.reuse_stale):
            case = {**cached["case"], "ope_sources_sha256": cached.get("code")}
        else:
            data_dir = record_log(args.cache, policies, env, logger, seed, args.sessions)
            true = truth(args.cache, policies, env, explore, gamma, args.truth_episodes)
            case = run_case(policies, env, gamma, pair, seed, data_dir, true, args.sessions, args.bootstrap, estimators)
            case["ope_sources_sha256"] = code["ope_sources_sha256"]
            write_json(path, {"key": key, "code": code["ope_sources_sha256"], "case": case})
            log(f"[{i + 1}/{len(grid)}] {env} γ={gamma} {pair} seed {seed}: truth {case['truth']['value']:.2f}, "
                f"recommended {case['recommended']}, {case['seconds']:.0f} s")
        cases.append(case)
        result = {"command": command, "finished": i + 1 == len(grid), "cases_done": i + 1, "cases_total": len(grid),
                  "wall_seconds": time.perf_counter() - started, "code": code,
                  "cases_by_ope_sources": dict(Counter(c["ope_sources_sha256"] for c in cases)),
                  "case_seconds_total": sum(c["seconds"] for c in cases),  # when they were computed (cached or not)
                  "case_cpu_seconds_total": sum(c["cpu_seconds"] for c in cases),
                  "settings": {"envs": {e: f"{ENVS[e]}-{SLATE_SIZE}" for e in args.envs}, "gammas": args.gammas,
                               "pairs": {p: PAIRS[p] for p in args.pairs}, "seeds": args.seeds,
                               "sessions": args.sessions, "truth_episodes": args.truth_episodes,
                               "truth_seed": TRUTH_SEED, "bootstrap": args.bootstrap or "offline.bootstrap default",
                               "epsilon": EPSILON, "slateq_steps": args.slateq_steps,
                               "linucb_steps": args.linucb_steps, "on_policy_fqe": args.on_policy_fqe,
                               "cache": str(args.cache)},
                  "setup": setup, "summary": summarise(cases), "cases": cases}
        write_json(out, result)
    print()
    print(markdown(result))
    print(f"\n{len(cases)} cases in {time.perf_counter() - started:.0f} s -> {out}\n\n    {command}")


if __name__ == "__main__":
    main()
