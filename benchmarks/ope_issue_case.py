"""Issue 16's case, end to end: are the off-policy estimates on long Interest Evolution sessions trustworthy?

The issue's steps, as a new user runs them (Interest Evolution 10-2, seed 0):

    python -m recsys_exp algo=lin_ucb stop.timesteps=20000                 # the behaviour policy
    python -m recsys_exp mode=record restore=<lin_ucb run>                 # its logs, exploration on
    python -m recsys_exp algo=slateq stop.timesteps=30000                  # a target policy
    python -m recsys_exp mode=evaluate restore=<target> offline.path=<logs> offline.gamma=<gamma>

then, for each target (SlateQ's greedy policy, and LinUCB's own greedy policy on its own logs) and each
gamma (1.0, the default, and 0.9), every estimator of ``recsys_exp.offline.ope.ALL_ESTIMATORS`` exactly as
``mode=evaluate`` computes them (:func:`recsys_exp.offline.evaluation.policy_estimates`: FQE with its
refits and bias bound, bootstrap intervals, verdicts, the recommended estimator), next to the target's
simulated value (``--truth-episodes`` fresh users). It checks the issue's first "Done when" line: every
estimate covers the truth or is flagged; no unflagged estimate is outside the feasible range; the
recommended estimate is within 10% of the truth.

Runs are cached under ``--cache`` (trainings and the recording are reused); the results go to ``--out``
atomically after each case. The FQE fit of the 53k logged rows (117 iterations, 5 ensemble members)
dominates: about 10 CPU-minutes per case at gamma 1.

    python benchmarks/ope_issue_case.py                        # both targets, gamma 1 and 0.9
    python benchmarks/ope_issue_case.py --targets slateq --gammas 1.0
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _slateq_one_step import ONE_STEP_SLATEQ

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["env=interest_evolution", "seed=0", "logger.mode=disabled", "progress=false"]
TARGETS = {"slateq": "slateq", "linucb": "lin_ucb"}  # target name -> its training run


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(run_dir: Path, *overrides: str) -> None:
    """``python -m recsys_exp`` with ``overrides`` into ``run_dir`` (skipped when it completed before)."""
    if (run_dir / "run.json").exists() and json.loads((run_dir / "run.json").read_text()).get("status") == "completed":
        return
    log(f"python -m recsys_exp {' '.join(overrides)} -> {run_dir}")
    cmd = [sys.executable, "-m", "recsys_exp", *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)


def setup(cache: Path) -> dict[str, Path]:
    """The issue's behaviour run, its recording and the SlateQ target (cached)."""
    runs = {"linucb": cache / "lin_ucb", "record": cache / "record", "slateq": cache / "slateq"}
    cli(runs["linucb"], "algo=lin_ucb", "stop.timesteps=20000")
    cli(runs["record"], "mode=record", f"restore={runs['linucb']}")
    # one-step targets, as when the case was measured (SlateQ's default until targets=monte_carlo)
    cli(runs["slateq"], "algo=slateq", *ONE_STEP_SLATEQ, "stop.timesteps=30000")
    return runs


def run_case(runs: dict[str, Path], target: str, gamma: float, truth_episodes: int) -> dict[str, Any]:
    """Every estimator of one (target, gamma) as ``mode=evaluate`` computes them, with the truth."""
    from recsys_exp.offline.dataset import LoggedData
    from recsys_exp.offline.evaluation import policy_estimates, target_policy
    from recsys_exp.offline.ope import ALL_ESTIMATORS
    from recsys_exp.run_dir import load_config, locate_checkpoint

    checkpoint, config_dir = locate_checkpoint(runs[target])
    c = copy.deepcopy(load_config(config_dir / "config.yaml"))
    data_dir = runs["record"] / "data"
    c["offline"].update(path=str(data_dir), gamma=gamma, estimators=list(ALL_ESTIMATORS), target="greedy")
    c["eval"]["episodes"] = truth_episodes
    start = time.perf_counter()
    ope = policy_estimates(c, target_policy(c, checkpoint), LoggedData.read(data_dir), checkpoint=checkpoint)
    truth = ope["simulated"]["value"]
    low, high = ope["feasible_range"]
    rows = {}
    for name, e in ope["estimates"].items():
        rows[name] = {"value": e["value"], "ci95": e["ci95"], "covers": e["ci95"][0] <= truth <= e["ci95"][1],
                      "rel_err": (e["value"] - truth) / abs(truth), "reliable": e["reliable"], "reason": e["reason"],
                      **{k: e[k] for k in ("ess", "mean_weight", "model_bias") if k in e}}
    rec = ope["recommended"]
    checks = {
        "covers_or_flagged": all(r["covers"] or not r["reliable"] for r in rows.values()),
        "no_unflagged_outside_feasible": all(not r["reliable"] or low <= r["value"] <= high for r in rows.values()),
        "recommended_within_10pct": None if rec is None else abs(rows[rec]["rel_err"]) <= 0.10,
    }
    return {"target": target, "gamma": gamma, "truth": ope["simulated"], "recommended": rec,
            "support": ope.get("support"), "feasible_range": ope["feasible_range"], "data": ope["data"],
            "fqe": ope.get("fqe"), "estimates": rows, "checks": checks, "seconds": time.perf_counter() - start}


def print_case(case: dict[str, Any]) -> None:
    truth = case["truth"]
    print(f"\n### target {case['target']} (greedy), gamma {case['gamma']}: simulated {truth['value']:.1f} "
          f"[{truth['ci95'][0]:.1f}, {truth['ci95'][1]:.1f}]")
    support = case["support"]
    if support:
        print(f"support (mean per-decision weight): {support[0]:.2f} [{support[1]:.2f}, {support[2]:.2f}]")
    print("\n| estimator | estimate | 95% CI | covers | verdict |\n|---|---:|---|---|---|")
    for name, r in case["estimates"].items():
        verdict = "reliable" if r["reliable"] else f"⚠ {r['reason']}"
        print(f"| {name} | {r['value']:.1f} | [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | "
              f"{'yes' if r['covers'] else 'no'} | {verdict} |")
    rec = case["recommended"]
    rec_text = "none" if rec is None else f"{rec} ({case['estimates'][rec]['rel_err']:+.1%} from the truth)"
    print(f"\nrecommended: {rec_text}; checks: {case['checks']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--gammas", nargs="+", type=float, default=[1.0, 0.9])
    parser.add_argument("--truth-episodes", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=ROOT / "outputs" / "ope_issue_case")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ope_issue_case.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from recsys_exp.run_dir import atomic_write_json

    runs = setup(args.cache)
    command = "python benchmarks/ope_issue_case.py " + " ".join(sys.argv[1:])
    previous = json.loads(args.out.read_text())["cases"] if args.out.exists() else []
    cases = [c for c in previous if (c["target"], c["gamma"]) not in
             {(t, g) for t in args.targets for g in args.gammas}]
    for target in args.targets:
        for gamma in args.gammas:
            log(f"target {target}, gamma {gamma}")
            case = run_case(runs, target, gamma, args.truth_episodes)
            cases.append(case)
            print_case(case)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out, {"command": command, "cases": cases})
    log(f"-> {args.out}")


if __name__ == "__main__":
    main()
