"""Random vs LinUCB vs SlateQ on the e-commerce tutorial simulator (``+experiment=ecommerce_tutorial``).

Each cell is a real ``python -m recsys_exp`` run per seed:

    python -m recsys_exp +experiment=ecommerce_tutorial algo=<algo> seed=<s> stop.timesteps=<budget> ...

and its ``summary.json`` gives the greedy evaluation return (revenue per session, ``--eval-episodes``
fresh shoppers, evaluation seed = seed + 1_000_003). For reference the script also simulates two
policies that read the true model (no learning, same env config): ``oracle_myopic`` ranks the
candidates by expected revenue if examined, a_k·price_k (a_k = the cascade attraction), and
``oracle_clicks`` by attraction alone. Runs that already have a ``summary.json`` under ``--out``
are reused (``--fresh`` to redo).

    python benchmarks/ecommerce_tutorial.py                         # 3 seeds, ~8 minutes on 2 cores
    python benchmarks/ecommerce_tutorial.py --seeds 0 --algos random,lin_ucb
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _slateq_one_step import ONE_STEP_SLATEQ  # noqa: E402
from algorithm_results import mean_ci95  # noqa: E402  (the same t-based CI as the README tables)

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {"random": 2_000, "lin_ucb": 20_000, "slateq": 50_000}
PRESET = "+experiment=ecommerce_tutorial"


def run_one(algo: str, seed: int, args) -> dict | None:
    """Train + evaluate one cell (or reuse its summary)."""
    run_dir = Path(args.out).resolve() / algo / f"seed{seed}"
    summary_path = run_dir / "summary.json"
    if summary_path.exists() and not args.fresh:
        return json.loads(summary_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    # SlateQ with one-step targets, as when the table was measured (its default until targets=monte_carlo)
    pin = ONE_STEP_SLATEQ if algo == "slateq" else []
    cmd = [sys.executable, "-m", "recsys_exp", PRESET, f"algo={algo}", *pin, f"seed={seed}",
           f"stop.timesteps={BUDGETS[algo]}", f"eval.episodes={args.eval_episodes}", "logger.mode=disabled",
           "progress=false", "checkpoint.frequency=0", f"hydra.run.dir={run_dir}"]
    start = time.time()
    with open(run_dir / "benchmark.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    ok = rc == 0 and summary_path.exists()
    print(f"[{time.strftime('%H:%M:%S')}] {algo} seed={seed}: {'ok' if ok else f'FAILED rc={rc}'} "
          f"in {time.time() - start:.0f}s", flush=True)
    return json.loads(summary_path.read_text()) if ok else None


def compose_env() -> dict:
    """The preset's ``env`` group as a validated plain dict (what a run of the preset uses)."""
    from hydra import compose, initialize_config_dir

    from recsys_exp.config.schema import register_configs
    from recsys_exp.config.validate import check_schema

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return check_schema(compose("config", overrides=[PRESET]))["env"]


def oracle_return(rank_by: str, episodes: int, seed: int) -> float:
    """Mean session revenue of a true-model ranking policy over ``episodes`` shoppers.

    ``rank_by="revenue"``: top-K by a_k·price_k; ``"clicks"``: top-K by a_k (a = cascade attraction).
    """
    from recsys_exp.envs.components import gather_slate
    from recsys_exp.envs.registry import make_vector_env

    env_cfg = compose_env()
    n, k = env_cfg["num_candidates"], env_cfg["slate_size"]
    venv = make_vector_env("custom", episodes, num_candidates=n, slate_size=k, seed=seed,
                           max_episode_steps=env_cfg["max_episode_steps"], **env_cfg["params"])
    venv.reset(seed=seed)
    core, sim = venv.core, venv.core.sim
    total, done = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    all_slots = np.tile(np.arange(n), (episodes, 1))
    while not done.all():
        docs = gather_slate(core.docs, all_slots)
        attraction = sim.choice.attractions(sim.user_model.score(core.users, docs))
        value = attraction * docs["price"] if rank_by == "revenue" else attraction
        _, reward, term, trunc, _ = venv.step(np.argsort(-value, axis=1)[:, :k])
        total += reward * ~done  # rows that ended already restart (autoreset): not counted
        done |= term | trunc
    return float(total.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default=",".join(BUDGETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-episodes", type=int, default=500)
    parser.add_argument("--out", default="/tmp/recsys_exp_ecommerce_tutorial")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    algos, seeds = args.algos.split(","), [int(s) for s in args.seeds.split(",")]
    for a in algos:
        if a not in BUDGETS:
            parser.error(f"--algos: unknown {a!r}; allowed: {', '.join(BUDGETS)}")

    lines = ["| policy | training env steps | eval return (revenue / session, mean over seeds) | 95% CI | "
             "per seed |", "|---|---:|---:|---|---|"]
    for algo in algos:
        runs = [run_one(algo, seed, args) for seed in seeds]
        values = [r["eval_return_mean"] for r in runs if r]
        if not values:
            lines.append(f"| {algo} | {BUDGETS[algo]} | – | – | – |")
            continue
        mean, lo, hi = mean_ci95(values)
        lines.append(f"| {algo} | {BUDGETS[algo]} | {mean:.1f} | [{lo:.1f}, {hi:.1f}] | "
                     f"{', '.join(f'{v:.1f}' for v in values)} |")
    for name, rank_by in (("oracle_clicks", "clicks"), ("oracle_myopic", "revenue")):
        values = [oracle_return(rank_by, args.eval_episodes, seed + 1_000_003) for seed in seeds]
        mean, lo, hi = mean_ci95(values)
        lines.append(f"| {name} (true model) | – | {mean:.1f} | [{lo:.1f}, {hi:.1f}] | "
                     f"{', '.join(f'{v:.1f}' for v in values)} |")
    command = "python benchmarks/" + Path(__file__).name + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print("\n".join(lines) + f"\n\nMeasured with `{command.strip()}` ({os.cpu_count()} CPUs).")


if __name__ == "__main__":
    main()
