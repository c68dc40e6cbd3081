"""SlateQ ablation (issue 17): which setting makes SlateQ stall, and which default works on every env.

Each cell is a real ``python -m recsys_exp`` run per seed, as in ``benchmarks/algorithm_results.py``:

    python -m recsys_exp <variant overrides> <env overrides> seed=<s> stop.timesteps=<budget> eval.episodes=<E>

then its ``summary.json`` is read (greedy evaluation return on ``eval.episodes`` fresh users,
evaluation seed = seed + 1_000_003, and training env steps/s). A variant is a list of overrides on
top of the bare ``algo=slateq`` (or another algo, for the myopic references); the table shows per
(variant, env) the mean over seeds with a t-based 95% CI and the mean steps/s. Runs are cached
under ``--out`` (a run with a ``summary.json`` is reused), so an interrupted study resumes; runs
go one at a time (the machine has 2 cores). ``--write`` stores the table and all per-seed returns
in ``benchmarks/results/slateq_ablation.{md,json}`` (merged with what is already there).

    python benchmarks/slateq_ablation.py --envs iev --variants default,gamma1 --seeds 0,1
    python benchmarks/slateq_ablation.py --list
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
from pathlib import Path

import numpy as np
from _slateq_one_step import ONE_STEP_SLATEQ

from recsys_exp.stats import mean_ci95

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# env key -> (label, env overrides, SlateQ budget in env steps, extra overrides of the greedy reference)
ENVS = {
    "iev": ("Interest Evolution 10-2", ["env=interest_evolution"], 100_000, []),
    "lts50": ("Long-Term Satisfaction 50-2", ["env=long_term_satisfaction", "env.num_candidates=50"], 200_000,
              ["algo.training.score=feature", "algo.training.feature_index=0"]),
    "tutorial": ("Tutorial LTS 20-2", ["env=long_term_satisfaction_tutorial"], 200_000,
                 ["algo.training.score=feature", "algo.training.feature_index=0"]),
}

# variant -> overrides (on top of algo=slateq unless they set algo=...); "default" is the bare algo=slateq
# (Monte Carlo targets, gamma 1, lr 3e-4 annealed to 3e-5 over 200k env steps); "td" the bare algo=slateq
# before it (gamma 0.99, target sync every 2000 env steps, lr 1e-3, batch 256, 1-step targets, uniform
# replay), which the others change.
VARIANTS = {
    # myopic references (no learning of long-term effects); greedy trains 2k steps, lin_ucb 50k
    "greedy": ["algo=greedy"],
    "lin_ucb": ["algo=lin_ucb"],
    # the bare default (Monte Carlo targets, gamma 1, annealed lr) and the one-step default before it
    "default": [],
    "td": [],
    "gamma0.9": ["algo.training.gamma=0.9"],
    "gamma0.95": ["algo.training.gamma=0.95"],
    "gamma0.995": ["algo.training.gamma=0.995"],
    "gamma1": ["algo.training.gamma=1.0"],
    "sync500": ["algo.training.target_network_update_freq=500"],
    "sync8000": ["algo.training.target_network_update_freq=8000"],
    "intensity4": ["+algo.training.training_intensity=4"],
    "intensity8": ["+algo.training.training_intensity=8"],
    "batch1024": ["algo.training.train_batch_size_per_learner=1024"],
    "per_gamma1": ["algo.training.replay_buffer_config.type="
                   "recsys_exp.algorithms.slateq.replay.SlateQPrioritizedEpisodeReplayBuffer",
                   "+algo.training.replay_buffer_config.alpha=0.6", "+algo.training.replay_buffer_config.beta=0.4",
                   "algo.training.gamma=1.0"],
    "lr3e-4": ["algo.training.lr=0.0003"],
    "anneal": ["algo.training.lr=[[0,0.001],[100000,0.0001]]"],
    "anneal_b512": ["algo.training.lr=[[0,0.001],[100000,0.0001]]", "algo.training.train_batch_size_per_learner=512"],
    "anneal_gamma1": ["algo.training.lr=[[0,0.001],[100000,0.0001]]", "algo.training.gamma=1.0"],
    "huber": ["algo.training.td_error_loss_fn=huber"],
    "no_double_q": ["algo.training.double_q=false"],
    "clipped": ["+algo.training.clipped_double_q=true"],
    "clipped_gamma1": ["+algo.training.clipped_double_q=true", "algo.training.gamma=1.0"],
    "eps10k": ["exploration.epsilon_timesteps=10000"],
    "eps50k": ["exploration.epsilon_timesteps=50000"],
    "per": ["algo.training.replay_buffer_config.type="
            "recsys_exp.algorithms.slateq.replay.SlateQPrioritizedEpisodeReplayBuffer",
            "+algo.training.replay_buffer_config.alpha=0.6", "+algo.training.replay_buffer_config.beta=0.4"],
    "top_k": ["algo.training.slate_optimizer=top_k"],
    "n3": ["algo.training.n_step=3"],
    "n4": ["algo.training.n_step=4"],
    "n8": ["algo.training.n_step=8", "algo.env_runners.rollout_fragment_length=8"],
    # the one-step option tuned for the tutorial env until the annealed Monte Carlo default replaced it
    "steady": ["algo.training.targets=td", "algo.training.gamma=0.95", "algo.training.target_network_update_freq=8000",
               "algo.training.train_batch_size_per_learner=512", "algo.training.lr=[[0,0.001],[200000,0.0001]]"],
}
BASELINE_BUDGET = {"greedy": 2_000, "lin_ucb": 50_000}
# The variants below "td" change one setting of the one-step SlateQ that was the default until
# targets=monte_carlo became it: they run on top of these overrides.
TD_BASE = ONE_STEP_SLATEQ
NOT_TD = {"greedy", "lin_ucb", "default", "steady"}


def budget(variant: str, env: str) -> int:
    return BASELINE_BUDGET.get(variant, ENVS[env][2])


def overrides(variant: str, env: str, seed: int, eval_episodes: int, run_dir: Path) -> list[str]:
    spec = VARIANTS[variant]
    algo = [o for o in spec if o.startswith("algo=")] or ["algo=slateq"]
    rest = [o for o in spec if not o.startswith("algo=")]
    if variant not in NOT_TD:
        rest = [o for o in TD_BASE if o.split("=")[0] not in {r.split("=")[0] for r in rest}] + rest
    if variant == "greedy":
        rest += ENVS[env][3]
    return [*algo, *ENVS[env][1], f"seed={seed}", f"stop.timesteps={budget(variant, env)}",
            f"eval.episodes={eval_episodes}", "logger.mode=disabled", "progress=false", "checkpoint.frequency=0",
            f"hydra.run.dir={run_dir}", *rest]


def run_one(variant: str, env: str, seed: int, args) -> dict | None:
    run_dir = Path(args.out).resolve() / variant / env / f"seed{seed}"
    summary_path = run_dir / "summary.json"
    if summary_path.exists() and not args.fresh:
        return json.loads(summary_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "recsys_exp", *overrides(variant, env, seed, args.eval_episodes, run_dir)]
    start = time.time()
    with open(run_dir / "run.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    ok = rc == 0 and summary_path.exists()
    summary = json.loads(summary_path.read_text()) if ok else None
    ret = f"{summary['eval_return_mean']:.1f}" if ok else f"FAILED rc={rc} (see {run_dir}/run.log)"
    print(f"[{time.strftime('%H:%M:%S')}] {variant} {env} seed={seed}: {ret} in {time.time() - start:.0f}s",
          flush=True)
    return summary


def item_values_by_cluster(run_dir: Path, users: int = 2_000) -> str:
    """Interest Evolution: what a trained SlateQ learned per document cluster. For random users
    (interests ~ U(-1, 1)^20) the item value of a document of each cluster relative to the no-click
    value, Q̄(s, c) - Q̄(s, ⊥), averaged over the users, next to the cluster's mean quality (recsim.md
    §3.1). A session's length is set by the quality of what is clicked (budget cost 4·(1 - 0.2647·q)
    per click, 0.5 per no-click), so a policy that lengthens sessions needs this column to rise with quality."""
    import torch
    from omegaconf import OmegaConf

    from recsys_exp.runner.policy import build_module

    c = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    checkpoint = sorted(run_dir.glob("ray_results/*/*/checkpoint_*"))[-1]
    m = build_module(c, checkpoint.resolve())
    u_dim, n = m.user_dim, m.doc_dim
    user = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (users, u_dim)), dtype=torch.float32)
    docs = torch.eye(n)[None].expand(users, n, n)
    feats = m._standardize(torch.cat([user[:, None, :].expand(users, n, u_dim), docs], -1))
    null = torch.cat([feats[:, :1, :u_dim], torch.zeros(users, 1, n)], -1)
    flag = torch.zeros(users, n + 1, 1)
    flag[:, n] = 1.0
    with torch.no_grad():
        q = m.q_net(torch.cat([torch.cat([feats, null], 1), flag], -1))[..., 0]
    quality = np.concatenate([np.linspace(-3, 0, 14), np.linspace(0, 3, 6)])
    adv = (q[:, :n] - q[:, n:]).mean(0).numpy()
    lines = [f"{run_dir}: mean Q̄(s, ⊥) = {q[:, n].mean():.1f}; corr(quality, Q̄ - Q̄⊥) = "
             f"{np.corrcoef(quality, adv)[0, 1]:.2f}", "", "| cluster | mean quality | Q̄(s, c) - Q̄(s, ⊥) |",
             "|---:|---:|---:|"]
    lines += [f"| {k} | {quality[k]:+.2f} | {adv[k]:+.2f} |" for k in range(n)]
    return "\n".join(lines)


def row(variant: str, env: str, seeds: list[int], returns: list[float], sps: list[float],
        greedy: dict[int, float]) -> dict:
    """One table row; ``greedy`` = the greedy reference's return per seed (same evaluation users per seed),
    for the paired difference."""
    mean, _, half, _ = mean_ci95(returns)
    diffs = [r - greedy[s] for s, r in zip(seeds, returns) if s in greedy]
    d_mean, _, d_half, _ = mean_ci95(diffs) if len(diffs) > 1 else (math.nan, 0, math.nan, 0)
    return {"variant": variant, "env": env, "overrides": VARIANTS[variant], "budget": budget(variant, env),
            "seeds": len(returns), "seed_list": seeds, "returns": returns, "mean": mean,
            "ci95": [mean - half, mean + half] if len(returns) > 1 else [math.nan, math.nan],
            "vs_greedy": [d_mean, d_mean - d_half, d_mean + d_half] if len(diffs) > 1 else [math.nan] * 3,
            "steps_per_s": float(np.mean(sps)) if sps else math.nan}


def table(rows: list[dict]) -> str:
    lines = ["| variant | env | env steps | seeds | greedy eval return | t-95% CI | minus greedy, paired by seed "
             "[t-95% CI] | train env steps/s | overrides |", "|---|---|---:|---:|---:|---|---|---:|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        d, dlo, dhi = r.get("vs_greedy", [math.nan] * 3)
        paired = "–" if r["variant"] == "greedy" or math.isnan(d) else f"{d:+.1f} [{dlo:+.1f}, {dhi:+.1f}]"
        ov = " ".join(f"`{o}`" for o in r["overrides"]) or "(bare `algo=slateq`)"
        lines.append(f"| {r['variant']} | {r['env']} | {r['budget']:,} | {r['seeds']} | {r['mean']:.1f} | "
                     f"[{lo:.1f}, {hi:.1f}] | {paired} | {r['steps_per_s']:,.0f} | {ov} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="iev", help=f"comma list of {', '.join(ENVS)}")
    parser.add_argument("--variants", default="greedy,default")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--eval-episodes", type=int, default=500)
    parser.add_argument("--out", default="outputs/slateq_ablation")
    parser.add_argument("--fresh", action="store_true", help="redo runs that already have a summary")
    parser.add_argument("--write", action="store_true", help="merge the rows into benchmarks/results/slateq_ablation.*")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--item-values", action="store_true",
                        help="Interest Evolution: print each cached run's learned item values per cluster, no training")
    args = parser.parse_args()
    if args.item_values:
        command = "python benchmarks/slateq_ablation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        text = ("# What SlateQ learned on Interest Evolution 10-2, per document cluster\n\n"
                f"Made by `{command.strip()}` from the ablation's cached runs.\n\n")
        for variant in args.variants.split(","):
            for seed in args.seeds.split(","):
                run_dir = Path(args.out).resolve() / variant / "iev" / f"seed{seed}"
                if (run_dir / "summary.json").exists():
                    ret = json.loads((run_dir / "summary.json").read_text())["eval_return_mean"]
                    table_text = item_values_by_cluster(run_dir).replace(str(run_dir), f"{variant}, seed {seed}")
                    text += f"## {variant}, seed {seed} (greedy eval return {ret:.1f})\n\n{table_text}\n\n"
        print(text)
        if args.write:
            (RESULTS / "slateq_item_values.md").write_text(text)
        return
    if args.list:
        for name, spec in VARIANTS.items():
            print(f"{name:14s} {' '.join(spec)}")
        return
    envs, variants = args.envs.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for e in envs:
        if e not in ENVS:
            parser.error(f"--envs: unknown {e!r}; allowed: {', '.join(ENVS)}")
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown {v!r}; see --list")

    rows = []
    for env in envs:
        greedy = {}  # the greedy reference per seed, for the paired differences (cheap: 2k steps)
        for seed in seeds:
            summary = run_one("greedy", env, seed, args)
            if summary:
                greedy[seed] = summary["eval_return_mean"]
        for variant in variants:
            done = [(seed, s) for seed in seeds if (s := run_one(variant, env, seed, args))]
            if done:
                rows.append(row(variant, env, [seed for seed, _ in done], [s["eval_return_mean"] for _, s in done],
                                [s["env_steps_per_s"] for _, s in done if s.get("env_steps_per_s")], greedy))
    command = "python benchmarks/slateq_ablation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(table(rows))
    print(f"\nMeasured with `{command.strip()}` (one run at a time, {os.cpu_count()} CPUs).")
    if args.write:
        path = RESULTS / "slateq_ablation.json"
        stored = json.loads(path.read_text()) if path.exists() else {"rows": []}
        keep = {(r["variant"], r["env"]): r for r in stored["rows"]}
        for r in rows:
            keep[(r["variant"], r["env"])] = {**r, "command": command.strip()}
        merged = sorted(keep.values(), key=lambda r: (list(ENVS).index(r["env"]), list(VARIANTS).index(r["variant"])
                                                      if r["variant"] in VARIANTS else 99))
        path.write_text(json.dumps({"rows": merged}, indent=1) + "\n")
        text = ("# SlateQ ablation (issue 17)\n\nMade by `benchmarks/slateq_ablation.py`; each row's command is in "
                "slateq_ablation.json. Greedy-evaluation return on 500 fresh users per seed (mean over seeds, "
                "t-based 95% CI; the paired difference uses greedy's return on the same seed's evaluation users). "
                "Per-seed returns are in the json. Steps/s were measured while other jobs shared the 2 cores (load "
                "4-10): compare them within a table only.\n\n")
        for env in ENVS:
            env_rows = [r for r in merged if r["env"] == env]
            if env_rows:
                text += f"## {ENVS[env][0]}\n\n{table(env_rows)}\n\n"
        (RESULTS / "slateq_ablation.md").write_text(text)


if __name__ == "__main__":
    main()
