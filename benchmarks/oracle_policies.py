"""Reference policies per env: observation-only baselines next to oracles that plan with the true model.

For each results table of the README (its env at its default N-K) this plays fresh users with

* ``random``: K distinct candidates uniformly at random (as ``algo=random``);
* ``greedy``: top-K by the observed score the README's greedy row uses (Interest Evolution
  ⟨user, doc⟩, Long-Term Satisfaction the clickbait score, Interest Exploration the observed quality);
* ``cluster`` (Interest Evolution): top-K by cluster index (``algo=greedy algo.training.score=cluster``,
  issue 17's fixed heuristic; ties to the lower candidate index);
* ``myopic oracle``: the slate with the highest expected immediate reward under the true user state
  and the true choice model (:class:`recsys_exp.envs.oracles.MyopicOracle`);
* ``rollout oracle``: one step of policy improvement over a base policy by simulation from copies of
  the true state with the env's own step and common random numbers
  (:class:`recsys_exp.envs.oracles.RolloutOracle`; in the table: C candidates besides the base
  policy's slate, R rollouts each, simulated depth, z). On Interest Evolution also over the cluster
  heuristic as base.

The oracles read hidden state (budgets, qualities, NPE, topic affinities): they are upper
references for policies that see observations only, not achievable learners, and a rollout policy
is a lower bound on the optimum, not the optimum. Each user plays one episode (``mode=evaluate``'s
protocol); env seeds are ``seed + 1_000_003`` (the README's evaluation seeds) for each ``--seeds``
entry, the same for every row, so all rows start from the same users. The 95% CI is Student-t over
the pooled episodes. Rollout rows also show their difference to their base policy played on the
same users (paired, 95% CI; the env's draws stay aligned until the first session ends, so always in
the fixed-length Long-Term Satisfaction and Interest Exploration sessions).

    python benchmarks/oracle_policies.py                                  # every table
    python benchmarks/oracle_policies.py --settings iev_10_2 --scale 0.2  # fewer episodes
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import recsys_exp
from recsys_exp.envs.oracles import MyopicOracle, RolloutOracle, play_episodes
from recsys_exp.envs.spec import EnvSpec
from recsys_exp.stats import mean_ci95

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED_OFFSET = 1_000_003  # recsys_exp.run_dir's evaluation seed = seed + 1_000_003

# setting -> label, env overrides (the README table's env), greedy's observed score, whether the
# cluster heuristic applies, rollout oracles: (row name, base, parameters, episodes per seed).
SETTINGS = {
    "lts_tutorial": {
        "label": "Tutorial LTS (modified, 20 candidates, slate 2, satisfaction observed)",
        "env": ["env=long_term_satisfaction_tutorial"], "greedy": ("feature", 0), "cluster": False,
        # Satisfaction remembers 0.7^t: after 10 steps 3% of an NPE change is left (truncation bias).
        "rollouts": [("rollout oracle (base: myopic oracle)", "myopic",
                      dict(candidates=None, rollouts=4, depth=10, z=1.0), 20)],
    },
    "iev_10_2": {
        "label": "Interest Evolution, 10 candidates, slate 2",
        "env": ["env=interest_evolution"], "greedy": ("affinity", None), "cluster": True,
        # The value of a saved time budget shows only at the end of the session: no truncation.
        "rollouts": [("rollout oracle (base: myopic oracle)", "myopic",
                      dict(candidates=4, rollouts=8, depth=None, z=1.0), 12),
                     ("rollout oracle (base: cluster heuristic)", "cluster",
                      dict(candidates=2, rollouts=16, depth=None, z=1.0), 16)],
    },
    "lts_50_2": {
        "label": "Long-Term Satisfaction, 50 candidates, slate 2",
        "env": ["env=long_term_satisfaction", "env.num_candidates=50"], "greedy": ("feature", 0), "cluster": False,
        "rollouts": [("rollout oracle (base: myopic oracle)", "myopic",
                      dict(candidates=None, rollouts=4, depth=10, z=1.0), 20)],
    },
    "iexp_10_2": {
        "label": "Interest Exploration (RecSim defaults), 10 candidates, slate 2, 100 steps per user",
        "env": ["env=interest_exploration"], "greedy": ("feature", 2), "cluster": False,
        # Static users: with common random numbers every continuation is the same, so the rollout
        # oracle is the myopic one exactly (a check of the machinery more than a reference).
        "rollouts": [("rollout oracle (base: myopic oracle)", "myopic",
                      dict(candidates=4, rollouts=4, depth=None, z=1.0), 10)],
    },
}
BASELINE_EPISODES = 500  # per seed, for random / greedy / cluster / myopic oracle


# --- observation-only baselines: (obs of the running users) -> slates (B, K) -------------------------
def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The K highest-scoring candidates per row, ties to the lower index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def random_policy(seed: int, k: int):
    """K distinct candidates uniformly at random."""
    rng = np.random.default_rng(seed)
    return lambda obs, users, docs, left: rng.random(obs["doc"].shape[:2]).argsort(1)[:, :k]


def greedy_policy(score: str, index: int | None, k: int):
    """Top-K by ⟨user, doc⟩ (``affinity``) or by ``doc[index]`` (``feature``)."""
    if score == "affinity":
        return lambda obs, users, docs, left: top_k((obs["user"][:, None, :] * obs["doc"]).sum(-1), k)
    return lambda obs, users, docs, left: top_k(obs["doc"][..., index], k)


def cluster_policy(k: int):
    """Top-K by cluster index (the argmax of the cluster one-hot the doc features start with)."""
    return lambda obs, users, docs, left: top_k(obs["doc"].argmax(-1).astype(np.float64), k)


def cluster_base(k: int):
    """The cluster heuristic on the true state (the same slates: docs' cluster ids), a rollout base."""
    return lambda users, docs: top_k(docs["cluster_id"].astype(np.float64), k)


# --- running -----------------------------------------------------------------------------------------
def env_config(setting: str) -> dict:
    """The composed ``env`` group of the setting (the same config as the README's runs)."""
    return recsys_exp.compose(SETTINGS[setting]["env"])["env"]


def play(env_cfg: dict, make_policy, episodes: int, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of ``episodes`` users per seed (env seed = seed + 1_000_003)."""
    returns, lengths = [], []
    for seed in seeds:
        env_seed = seed + EVAL_SEED_OFFSET
        env = EnvSpec.from_config(env_cfg, env_seed).vector_env(episodes, env_seed)
        r, n = play_episodes(env, make_policy(env, seed), episodes, env_seed)
        returns.append(r)
        lengths.append(n)
    return np.concatenate(returns), np.concatenate(lengths)


def row(name: str, returns: np.ndarray, lengths: np.ndarray, seconds: float, params: dict | None = None,
        paired: np.ndarray | None = None) -> dict:
    """One table row: mean return, Student-t 95% CI over episodes, lengths, wall time."""
    mean, std, _, ci = mean_ci95(returns)
    out = {"policy": name, "episodes": int(len(returns)), "return_mean": mean, "return_std": std, "ci95": ci,
           "episode_length_mean": float(lengths.mean()), "seconds": round(seconds, 1), "params": params or {}}
    if paired is not None:
        d_mean, _, _, d_ci = mean_ci95(paired)
        out["vs_base"] = {"mean": d_mean, "ci95": d_ci}
    return out


def run_setting(setting: str, seeds: list[int], scale: float) -> dict:
    """Every policy's row of one setting."""
    s = SETTINGS[setting]
    cfg = env_config(setting)
    k = cfg["slate_size"]
    episodes = max(2, round(BASELINE_EPISODES * scale))
    rows = []

    def timed(name, make_policy, n, params=None, paired_with=None):
        start = time.time()
        returns, lengths = play(cfg, make_policy, n, seeds)
        paired = None if paired_with is None else returns - paired_with
        r = row(name, returns, lengths, time.time() - start, params, paired)
        print(f"[{time.strftime('%H:%M:%S')}] {setting} {name}: {r['return_mean']:.1f} "
              f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] over {r['episodes']} episodes in {r['seconds']:.0f}s",
              flush=True)
        rows.append(r)
        return returns

    def myopic(env, seed):
        return MyopicOracle(env.core.sim, env.core.num_candidates, env.core.slate_size).act

    timed("random", lambda env, seed: random_policy(seed, k), episodes)
    timed(f"greedy ({s['greedy'][0]}{'' if s['greedy'][1] is None else ' ' + str(s['greedy'][1])})",
          lambda env, seed: greedy_policy(*s["greedy"], k), episodes)
    if s["cluster"]:
        timed("cluster heuristic", lambda env, seed: cluster_policy(k), episodes)
    timed("myopic oracle", myopic, episodes)
    for name, base, params, per_seed in s["rollouts"]:
        n = max(2, round(per_seed * scale))
        start = time.time()
        # The base policy on the same users, for the paired difference.
        reference, _ = play(cfg, myopic if base == "myopic" else lambda env, seed: cluster_policy(k), n, seeds)
        ref_seconds = time.time() - start

        def rollout(env, seed, base=base, params=params):
            core = env.core
            return RolloutOracle(core.sim, core.num_candidates, core.slate_size, core.resample_documents,
                                 base=None if base == "myopic" else cluster_base(core.slate_size),
                                 seed=seed, **params).act

        timed(name, rollout, n, params, paired_with=reference)
        rows[-1]["seconds_base_reference"] = round(ref_seconds, 1)
    return {"label": s["label"], "env": s["env"], "env_config": cfg, "rows": rows}


def table(results: dict) -> str:
    """Markdown: one block per setting."""
    lines = []
    for setting in results:
        res = results[setting]
        lines += [f"**{res['label']}**", "",
                  "| policy | sees | episodes | return (mean) | 95% CI | Δ vs its base policy, same users | "
                  "mean length | seconds |", "|---|---|---:|---:|---|---|---:|---:|"]
        for r in res["rows"]:
            sees = "true state" if "oracle" in r["policy"] else "observation"
            vs = r.get("vs_base")
            delta = "–" if vs is None else f"{vs['mean']:+.1f} [{vs['ci95'][0]:+.1f}, {vs['ci95'][1]:+.1f}]"
            name = r["policy"] + (f", {planning(r['params'])}" if r["params"] else "")
            lines.append(f"| {name} | {sees} | {r['episodes']} | {r['return_mean']:.1f} | "
                         f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | {delta} | {r['episode_length_mean']:.1f} | "
                         f"{r['seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def planning(params: dict) -> str:
    """A rollout oracle's parameters, short: candidates C, rollouts R, depth, z."""
    c, depth = params["candidates"], params["depth"]
    return (f"C={'all' if c is None else c}, R={params['rollouts']}, "
            f"depth {'to the end' if depth is None else depth}, z={params['z']:g}")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list; env seeds are seed + 1,000,003")
    parser.add_argument("--scale", type=float, default=1.0,
                        help=f"multiplies the episodes per seed ({BASELINE_EPISODES} for the baselines and the "
                             "myopic oracle, per-setting for the rollout oracles)")
    parser.add_argument("--out", default="benchmarks/results/oracle_policies.json")
    args = parser.parse_args()
    settings = args.settings.split(",")
    for s in settings:
        if s not in SETTINGS:
            parser.error(f"--settings: unknown {s!r}; allowed: {', '.join(SETTINGS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: a comma list of integers, got {args.seeds!r}")
    if not args.scale > 0:
        parser.error(f"--scale: must be > 0, got {args.scale}")
    command = "python benchmarks/" + Path(__file__).name + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"{command.strip()}\nseeds {seeds} (env seeds {[s + EVAL_SEED_OFFSET for s in seeds]})", flush=True)

    start = time.time()
    results = {s: run_setting(s, seeds, args.scale) for s in settings}
    report = table(results)
    text = (f"{report}\nMeasured with `{command.strip()}` (seeds {','.join(map(str, seeds))}, env seeds "
            f"seed + 1,000,003; {os.cpu_count()} CPUs, {time.time() - start:.0f} s in total).\n")
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    write_atomic(out, json.dumps({"command": command.strip(), "seeds": seeds, "env_seed_offset": EVAL_SEED_OFFSET,
                                  "seconds": round(time.time() - start, 1), "settings": results}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
