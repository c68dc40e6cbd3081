"""Offline RL + off-policy evaluation on Interest Evolution (10 candidates, slate 2).

Runs ``python -m recsys_exp +experiment=offline_tutorial`` (SlateQ behaviour, 50k logged steps with
ε = 0.3, bc / marwil / cql trained on them, OPE vs simulation) and prints its table, then measures
the data path on the same logged data:

* recording: rows/s of ``mode=record``'s recorder writing Parquet, as a ratio to the same
  policy stepping the same env without logging (baseline measured in the same run);
* reading: rows/s of ``LoggedData.read`` + rebuilding observations, as a ratio to a bare
  ``pyarrow.parquet.read_table`` of the same files.

    python benchmarks/offline_ope.py [--seed 0] [--out benchmarks/results/offline]

A finished study in ``--out`` is reused (delete it to rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_study(out: Path, seed: int, extra: list[str]) -> dict:
    """The offline_tutorial study of ``seed`` (run once, then reused)."""
    run_dir = out / f"seed{seed}"
    if not (run_dir / "study.json").exists():
        cmd = [sys.executable, "-m", "recsys_exp", "+experiment=offline_tutorial", f"seed={seed}",
               "logger.mode=disabled", "progress=false", f"hydra.run.dir={run_dir}", *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "study.json").read_text())


def data_throughput(run_dir: Path, seconds: float = 5.0) -> dict[str, float]:
    """Recording and reading rows/s on the study's behaviour policy and data, with baselines."""
    import pyarrow.parquet as pq

    from recsys_exp.envs.spec import env_spec
    from recsys_exp.offline.dataset import LoggedData
    from recsys_exp.runner.policy import Policy
    from recsys_exp.offline.recorder import record, rollout
    from recsys_exp.offline.schema import data_files
    from recsys_exp.run_dir import load_config, locate_checkpoint

    c = load_config(run_dir / "record" / "config.yaml")
    checkpoint, _ = locate_checkpoint(run_dir / "behaviour")
    steps = 20_000
    c["offline"]["record_steps"] = steps

    policy = Policy.from_checkpoint(c, checkpoint)
    env = env_spec(c).vector_env(c["offline"]["record_num_envs"], c["seed"])
    start = time.perf_counter()
    rows = sum(len(r["reward"]) for r in rollout(policy, env, steps=steps, seed=c["seed"]))
    bare = rows / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        summary = record(c, Path(tmp) / "data", str(checkpoint))
    recording = summary["rows"] / summary["seconds"]

    data_dir = run_dir / "behaviour" / "data"
    files = data_files(data_dir)
    start = time.perf_counter()
    n = sum(pq.read_table(f).num_rows for f in files)
    raw = n / (time.perf_counter() - start)
    start = time.perf_counter()
    data = LoggedData.read(data_dir)
    data.observations(env_spec(c).observation_space)
    reading = data.num_rows / (time.perf_counter() - start)
    return {"rollout_rows_per_s": bare, "record_rows_per_s": recording, "record_ratio": recording / bare,
            "pyarrow_rows_per_s": raw, "read_rows_per_s": reading, "read_ratio": reading / raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "offline")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the study")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from recsys_exp.offline.study import study_table

    summary = run_study(args.out, args.seed, args.overrides)
    print(study_table(summary))
    run_dir = args.out / f"seed{args.seed}"
    print("| policy | trained on | undiscounted session return, greedy (95% CI) |")
    print("|---|---|---:|")
    for name in ("behaviour", *[p for p in summary["policies"] if not p.startswith("behaviour")]):
        s = json.loads((run_dir / name / "summary.json").read_text())
        source = f"{s['timesteps']:,} env steps online" if name == "behaviour" else f"{s['timesteps']:,} logged rows"
        print(f"| {name} | {source} | {s['eval_return_mean']:.1f} [{s['eval_ci95'][0]:.1f}, {s['eval_ci95'][1]:.1f}] |")
    print()
    t = data_throughput(args.out / f"seed{args.seed}")
    print("| data path | rows/s | baseline | baseline rows/s | ratio |")
    print("|---|---:|---|---:|---:|")
    print(f"| record (Parquet) | {t['record_rows_per_s']:,.0f} | same policy, no logging | "
          f"{t['rollout_rows_per_s']:,.0f} | {t['record_ratio']:.2f} |")
    print(f"| read + rebuild observations | {t['read_rows_per_s']:,.0f} | pyarrow read_table | "
          f"{t['pyarrow_rows_per_s']:,.0f} | {t['read_ratio']:.2f} |")


if __name__ == "__main__":
    main()
