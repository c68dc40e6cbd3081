"""Environment steps per second: the original recsim 0.2.4 vs the native batched envs.

For each env it measures, for ``--seconds`` each (time-bounded, after a short warm-up):

* the original through the reference wrapper (``make_env(name, backend="recsim")``, one env),
* the raw original ``RecSimGymEnv`` (old gym API, no wrapper) — skip with ``--no-raw``,
* the native single env (``make_env(name)``),
* the native vector env (``make_vector_env(name, B)``) for every ``--batch-sizes`` B,

with uniformly random slates (duplicates allowed) sampled *before* the timed loop, so the
policy costs nothing. A vector step counts as B env steps; episode ends are included (reset
for the single envs, NEXT_STEP autoreset for the vector env). Prints a markdown table with
steps/s and the ratio to the original (reference wrapper), plus the command line.

    python benchmarks/env_throughput.py                       # N=10, K=2, 2.5 s per cell
    python benchmarks/env_throughput.py --num-candidates 50 --seconds 3 --envs interest_evolution
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from typing import Callable

import numpy as np

from recsys_exp.envs import ENV_NAMES, make_env, make_vector_env
from recsys_exp.envs.registry import resolve_settings

ACTION_POOL = 4096  # pre-sampled slates per single env (cycled)
VECTOR_POOL_STEPS = 64  # pre-sampled batched actions per vector env (cycled)


def _timed(step: Callable[[int], int], seconds: float, warmup: int = 20) -> float:
    """Call ``step(i)`` (returns the env steps it made) until ``seconds`` pass; steps per second."""
    for i in range(warmup):
        step(i)
    steps, i = 0, warmup
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(16):  # check the clock every 16 calls
            steps += step(i)
            i += 1
        now = time.perf_counter()
        if now >= deadline:
            return steps / (now - start)


def _single_env_stepper(env, actions: np.ndarray) -> Callable[[int], int]:
    env.reset(seed=0)

    def step(i: int) -> int:
        _, _, terminated, truncated, _ = env.step(actions[i % len(actions)])
        if terminated or truncated:
            env.reset()
        return 1

    return step


def _raw_env_stepper(raw, actions: list) -> Callable[[int], int]:
    np.random.seed(0)  # the original's noise comes from the global np.random
    raw.reset()

    def step(i: int) -> int:
        _, _, done, _ = raw.step(actions[i % len(actions)])
        if done:
            raw.reset()
        return 1

    return step


def _vector_env_stepper(venv, actions: np.ndarray) -> Callable[[int], int]:
    venv.reset(seed=0)
    batch = actions.shape[1]

    def step(i: int) -> int:
        venv.step(actions[i % len(actions)])
        return batch

    return step


def measure(name: str, args, rng: np.random.Generator) -> list[tuple[str, int, float]]:
    """Rows (backend label, B, steps/s) for one env."""
    n, k = args.num_candidates, args.slate_size
    kw = dict(num_candidates=n, slate_size=k, seed=0)
    single_actions = rng.integers(0, n, (ACTION_POOL, k))
    rows = []
    if args.recsim_available:
        env = make_env(name, backend="recsim", **kw)
        rows.append(("original (reference gymnasium wrapper)", 1,
                     _timed(_single_env_stepper(env, single_actions), args.seconds)))
        if not args.no_raw:
            from recsys_exp.envs.recsim_backend import make_original_env

            raw = make_original_env(resolve_settings(name, **kw), 0)
            rows.append(("original (raw RecSimGymEnv, old gym API)", 1,
                         _timed(_raw_env_stepper(raw, single_actions.tolist()), args.seconds)))
    rows.append(("native single env (SlateEnv)", 1,
                 _timed(_single_env_stepper(make_env(name, **kw), single_actions), args.seconds)))
    for b in args.batch_sizes:
        actions = rng.integers(0, n, (VECTOR_POOL_STEPS, b, k))
        rows.append(("native vector env (SlateVectorEnv)", b,
                     _timed(_vector_env_stepper(make_vector_env(name, b, **kw), actions), args.seconds)))
    return rows


def _recsim_available() -> tuple[bool, str]:
    try:
        import recsys_exp.envs.recsim_backend  # noqa: F401
    except ImportError as exc:
        return False, str(exc)
    return True, ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-candidates", "-N", type=int, default=10, help="N (default 10)")
    parser.add_argument("--slate-size", "-K", type=int, default=2, help="K (default 2)")
    parser.add_argument("--seconds", type=float, default=2.5, help="seconds per measurement (default 2.5)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024],
                        help="native vector env sizes B (default 1 64 1024)")
    parser.add_argument("--envs", nargs="+", default=list(ENV_NAMES), choices=ENV_NAMES)
    parser.add_argument("--no-raw", action="store_true", help="skip the raw RecSimGymEnv measurement")
    args = parser.parse_args(argv)
    args.recsim_available, why = _recsim_available()

    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv])
    print(f"Command: `{command}`")
    print(f"N={args.num_candidates}, K={args.slate_size}, {args.seconds:g} s per cell, random slates "
          f"pre-sampled; Python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or platform.platform()})")
    if not args.recsim_available:
        print(f"(original not measured: {why})")
    print()
    print("| env | backend | B | env steps/s | × original |")
    print("|---|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name in args.envs:
        rows = measure(name, args, rng)
        base = rows[0][2] if args.recsim_available else None
        for label, b, rate in rows:
            ratio = f"{rate / base:,.2f}" if base else "–"
            print(f"| {name} | {label} | {b} | {rate:,.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
