"""Greedy-evaluation return and training throughput of every algorithm, over seeds (README results table).

Each cell is a real ``python -m recsys_exp`` run (the same runner users call) per seed:

    python -m recsys_exp algo=<algo> env=<env> seed=<s> stop.timesteps=<budget> eval.episodes=<E> ...

then its ``summary.json`` is read: the greedy evaluation return after training (``eval.episodes``
fresh users, evaluation seed = seed + 1_000_003) and the training throughput (env steps per
second of Tune's training time, setup excluded). Per (env, algo) the table shows the mean over
seeds with a t-based 95% CI across seeds, and the mean steps/s. Runs that already have a
``summary.json`` under ``--out`` are reused, so an interrupted benchmark continues where it
stopped (``--fresh`` to redo). ``--jobs`` runs that many trainings at once (each is one process
with its own local Ray; throughput per run drops when they share the 2 cores).

    python benchmarks/algorithm_results.py                                  # everything, 5 seeds
    python benchmarks/algorithm_results.py --settings iev_10_2 --algos random,slateq --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from recsys_exp.stats import mean_ci95 as stats_mean_ci95

ROOT = Path(__file__).resolve().parents[1]

# Setting -> (label, env overrides, SlateQ / PPO budget, overrides of dqn/ppo).
# SlateQ runs as the bare `algo=slateq` everywhere (its defaults: Monte Carlo targets, gamma 1).
# DQN and PPO bootstrap: on Long-Term Satisfaction they use a shorter horizon than the default 0.99
# (satisfaction remembers ~3 steps, memory_discount 0.7): gamma 0.9 on 50-2, 0.95 on the tutorial env,
# where the gamma-optimal policy (value iteration on the true model) returns 1175 at gamma 0.9 but 1189
# at 0.95 (benchmarks/lts_tutorial_optimum.py).
SETTINGS = {
    "lts_tutorial": ("Tutorial LTS (modified, 20 candidates, slate 2, satisfaction observed)",
                     ["env=long_term_satisfaction_tutorial"], 200_000, ["algo.training.gamma=0.95"]),
    "iev_10_2": ("Interest Evolution, 10 candidates, slate 2", ["env=interest_evolution"], 100_000, []),
    "lts_50_2": ("Long-Term Satisfaction, 50 candidates, slate 2",
                 ["env=long_term_satisfaction", "env.num_candidates=50"], 200_000, ["algo.training.gamma=0.9"]),
}
ALGOS = ("random", "greedy", "lin_ucb", "lin_ts", "slateq", "dqn", "ppo")
BANDIT_BUDGET = 50_000  # the budget for lin_ucb / lin_ts
DQN_BUDGET = 50_000  # RLlib's DQN over N**K flat actions: a generic comparison, kept short (slowest learner)
BASELINE_BUDGET = 2_000  # random / greedy do not learn: a token training run, then the evaluation


def budget(setting: str, algo: str) -> int:
    """Env steps of training for one cell."""
    if algo in ("random", "greedy"):
        return BASELINE_BUDGET
    if algo in ("lin_ucb", "lin_ts"):
        return BANDIT_BUDGET
    if algo == "dqn":
        return DQN_BUDGET
    return SETTINGS[setting][2]


def overrides(setting: str, algo: str, seed: int, eval_episodes: int, run_dir: Path) -> list[str]:
    """The command-line overrides of one run."""
    extra = []
    if algo == "greedy" and setting.startswith("lts"):
        extra = ["algo.training.score=feature", "algo.training.feature_index=0"]  # highest clickbait first
    if algo in ("dqn", "ppo"):
        extra = list(SETTINGS[setting][3])
    return [f"algo={algo}", *SETTINGS[setting][1], f"seed={seed}", f"stop.timesteps={budget(setting, algo)}",
            f"eval.episodes={eval_episodes}", "logger.mode=disabled", "progress=false",
            "checkpoint.frequency=0", f"hydra.run.dir={run_dir}", *extra]


def run_one(setting: str, algo: str, seed: int, args) -> dict | None:
    """Train + evaluate one cell (or reuse its summary); return the summary or None on failure."""
    run_dir = Path(args.out).resolve() / setting / algo / f"seed{seed}"
    summary_path = run_dir / "summary.json"
    if summary_path.exists() and not args.fresh:
        return json.loads(summary_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "recsys_exp", *overrides(setting, algo, seed, args.eval_episodes, run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.time()
    with open(run_dir / "benchmark.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    status = "ok" if rc == 0 and summary_path.exists() else f"FAILED rc={rc} (see {run_dir}/benchmark.log)"
    print(f"[{time.strftime('%H:%M:%S')}] {setting} {algo} seed={seed}: {status} in {time.time() - start:.0f}s",
          flush=True)
    return json.loads(summary_path.read_text()) if status == "ok" else None


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): :func:`recsys_exp.stats.mean_ci95`'s t-based 95% CI over seeds (NaN bounds
    for one seed)."""
    mean, _, _, (low, high) = stats_mean_ci95(values)
    return (mean, math.nan, math.nan) if len(values) < 2 else (mean, low, high)


def table(results: dict, settings: list[str], algos: list[str]) -> str:
    """Markdown: one block per setting, one row per algorithm."""
    lines = []
    for setting in settings:
        lines += [f"**{SETTINGS[setting][0]}**", "",
                  "| algorithm | training env steps | greedy eval return (mean over seeds) | 95% CI | seeds | "
                  "train env steps/s |", "|---|---:|---:|---|---:|---:|"]
        for algo in algos:
            runs = [r for r in results.get(setting, {}).get(algo, []) if r]
            if not runs:
                lines.append(f"| {algo} | {budget(setting, algo)} | – | – | 0 | – |")
                continue
            mean, lo, hi = mean_ci95([r["eval_return_mean"] for r in runs])
            sps = np.mean([r["env_steps_per_s"] for r in runs if r.get("env_steps_per_s")])
            lines.append(f"| {algo} | {budget(setting, algo)} | {mean:.1f} | [{lo:.1f}, {hi:.1f}] | {len(runs)} | "
                         f"{sps:,.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--eval-episodes", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once")
    parser.add_argument("--out", default="benchmarks/results/algorithms")
    parser.add_argument("--fresh", action="store_true", help="redo runs that already have a summary")
    args = parser.parse_args()
    settings, algos = args.settings.split(","), args.algos.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for s in settings:
        if s not in SETTINGS:
            parser.error(f"--settings: unknown {s!r}; allowed: {', '.join(SETTINGS)}")
    for a in algos:
        if a not in ALGOS:
            parser.error(f"--algos: unknown {a!r}; allowed: {', '.join(ALGOS)}")

    cells = [(s, a, seed) for s in settings for a in algos for seed in seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        summaries = list(pool.map(lambda cell: run_one(*cell, args), cells))
    results: dict = {}
    for (s, a, _), summary in zip(cells, summaries):
        results.setdefault(s, {}).setdefault(a, []).append(summary)

    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = table(results, settings, algos)
    command = "python benchmarks/" + Path(__file__).name + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = f"{report}\nMeasured with `{command.strip()}` ({args.jobs} runs at a time, {os.cpu_count()} CPUs).\n"
    tmp = out / "results.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "results.md")
    print(text)


if __name__ == "__main__":
    main()
