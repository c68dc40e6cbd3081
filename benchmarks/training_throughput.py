"""Training throughput (env steps per second, end to end) of every algorithm, against sampling alone.

For each algorithm it builds the RLlib algorithm exactly as the runner does (``algo=<name>`` with
this repo's configs, on one env setting), trains ``--warmup`` iterations (SlateQ/DQN then also
fill their replay buffers), then times ``algo.train()`` until ``--seconds`` have passed and
reports sampled env steps per second of wall time — sampling, replay, learner updates and weight
sync included. The baseline, measured in the same process, is ``algo=random``: sampling with
RLlib's EnvRunner and the native vector env and nothing else; the ratio column is
algorithm / baseline. Everything runs in one process with ``OMP_NUM_THREADS=1``; run it on an
otherwise idle machine.

    python benchmarks/training_throughput.py                       # Interest Evolution 10-2
    python benchmarks/training_throughput.py --env long_term_satisfaction_tutorial --seconds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

ALGOS = ("random", "greedy", "lin_ucb", "lin_ts", "slateq", "dqn", "ppo")


def steps_per_second(overrides: list[str], warmup: int, seconds: float) -> float:
    """Env steps sampled per wall-clock second of ``algo.train()`` after ``warmup`` iterations."""
    from conftest import compose_config

    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(compose_config(*overrides))
    algo = config.build_algo()
    try:
        def sampled():
            return algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"), default=0)

        for _ in range(warmup):
            algo.train()
        start_steps, start = sampled(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            algo.train()
        return (sampled() - start_steps) / (time.perf_counter() - start)
    finally:
        algo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="interest_evolution")
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every algorithm")
    args = parser.parse_args()

    import ray
    import torch

    from recsys_exp.envs.rllib import register_envs

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    register_envs()
    common = [f"env={args.env}", "algo.training.num_steps_sampled_before_learning_starts=0", *args.overrides]
    rows = []
    baseline = steps_per_second(["algo=random", f"env={args.env}", *args.overrides], args.warmup, args.seconds)
    for name in args.algos.split(","):
        extra = common if name in ("slateq", "dqn") else [f"env={args.env}", *args.overrides]
        sps = baseline if name == "random" else steps_per_second([f"algo={name}", *extra], args.warmup, args.seconds)
        rows.append((name, sps))
        print(f"{name}: {sps:,.0f} env steps/s", flush=True)
    ray.shutdown()

    print(f"\n| algorithm | env steps/s (training, end to end) | ratio to sampling only (algo=random) |\n|---|---:|---:|")
    for name, sps in rows:
        print(f"| {name} | {sps:,.0f} | {sps / baseline:.2f} |")
    command = "python benchmarks/training_throughput.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\nMeasured with `{command.strip()}` on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {args.seconds:g} s per algorithm after "
          f"{args.warmup} warm-up iterations.")


if __name__ == "__main__":
    main()
