"""``mode=offline_study`` (the tutorial's offline chapter, ``+experiment=offline_tutorial``).

One command runs the whole path, each stage an ordinary run dir under the study's dir:

1. ``behaviour/``: train ``study.behaviour_algo`` online for ``study.behaviour_steps`` env steps;
2. ``behaviour/data/``: record ``offline.record_steps`` steps of it with ε-greedy exploration
   (constant ``study.record_epsilon``), propensities included;
3. ``<algo>/`` for each of ``study.algos`` (bc, marwil, cql, ...): train on that data for
   ``study.train_steps`` logged rows;
4. evaluate every learned policy (and the behaviour policy's greedy version) both ways: off-policy
   estimates from the logged data (ope.json) and its true value in the simulator.

``study.json`` and ``study.md`` (a table: true value vs each estimator with its 95% interval)
collect the results; each stage's run dir keeps its own config.yaml, run.json and checkpoints,
so every checkpoint can be restored, evaluated or served later.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from recsys_exp.run_dir import atomic_write_json, atomic_write_text


def stage_config(c: dict[str, Any], algo: str, **changes: Any) -> dict[str, Any]:
    """The study's config with another algorithm (its own algo, exploration and model group
    defaults, composed by Hydra) and ``changes`` applied; validated like a CLI run."""
    from hydra import compose
    from omegaconf import OmegaConf

    from recsys_exp.config.validate import check_schema, check_semantics

    composed = OmegaConf.to_container(compose("config", overrides=[f"algo={algo}"]), resolve=True)
    sub = copy.deepcopy(c)
    for key in ("algo", "exploration"):  # the study's env, model, seed, eval, ... stay
        sub[key] = composed[key]
    sub["choices"] = {**c["choices"], "algo": algo}
    for dotted, value in changes.items():
        node = sub
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    sub = check_schema(sub)
    check_semantics(sub)
    return sub


def run_study(c: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Behaviour → record → offline training → OPE + simulation; writes study.json and study.md."""
    from recsys_exp.offline.evaluation import off_policy_evaluation
    from recsys_exp.runner.app import execute
    from recsys_exp.run_dir import CHECKPOINTS_DIR, load_config, locate_checkpoint

    s = c["study"]
    stages: dict[str, Any] = {}
    behaviour_dir = run_dir / "behaviour"
    data_dir = behaviour_dir / "data"
    behaviour = stage_config(c, s["behaviour_algo"], mode="train", **{"stop.timesteps": s["behaviour_steps"]})
    if not (behaviour_dir / CHECKPOINTS_DIR / "last").exists():
        execute(behaviour, behaviour_dir, [f"study.behaviour_algo={s['behaviour_algo']}"])
    if not (data_dir / "manifest.json").exists():
        eps = s["record_epsilon"]
        record = stage_config(c, s["behaviour_algo"], mode="record", restore=str(behaviour_dir),
                              **{"exploration.type": "epsilon_greedy", "exploration.initial_epsilon": eps,
                                 "exploration.final_epsilon": eps, "offline.path": str(data_dir)})
        execute(record, run_dir / "record", ["mode=record"])
    policies = {"behaviour (greedy)": behaviour_dir}
    for algo in s["algos"]:
        algo_dir = run_dir / algo
        if not (algo_dir / CHECKPOINTS_DIR / "last").exists():
            sub = stage_config(c, algo, mode="train", **{"offline.path": str(data_dir),
                                                         "stop.timesteps": s["train_steps"]})
            execute(sub, algo_dir, [f"algo={algo}"])
        policies[algo] = algo_dir
    for name, path in policies.items():
        checkpoint, config_dir = locate_checkpoint(path)
        ev = copy.deepcopy(load_config(config_dir / "config.yaml"))
        ev.update(mode="evaluate", restore=str(path), eval=c["eval"], seed=c["seed"])
        ev["offline"] = {**c["offline"], "path": str(data_dir)}
        ope = off_policy_evaluation(ev, checkpoint)
        atomic_write_json(Path(path) / "ope.json", ope)
        stages[name] = ope
    summary = {"data": str(data_dir), "gamma": c["offline"]["gamma"], "record_epsilon": s["record_epsilon"],
               "policies": stages}
    atomic_write_json(run_dir / "study.json", summary)
    atomic_write_text(run_dir / "study.md", study_table(summary))
    print(study_table(summary), flush=True)
    return summary


def study_table(summary: dict[str, Any]) -> str:
    """Markdown: per policy, the simulated value and each estimate with its 95% interval."""
    policies = summary["policies"]
    estimators = list(next(iter(policies.values()))["estimates"]) if policies else []
    fmt = lambda e: f"{e['value']:.1f} [{e['ci95'][0]:.1f}, {e['ci95'][1]:.1f}]"  # noqa: E731
    ess = "ips" in estimators  # how many sessions the importance weights effectively keep
    lines = [f"Return discounted with γ = {summary['gamma']}; logged data: {summary['data']}", "",
             "| policy | simulated | " + " | ".join(estimators) + (" | ips ESS (sessions) |" if ess else " |"),
             "|---|---:|" + "---:|" * (len(estimators) + ess)]
    for name, ope in policies.items():
        cells = [fmt(ope["simulated"])] + [fmt(ope["estimates"][e]) for e in estimators]
        if ess:
            ips = ope["estimates"]["ips"]
            cells.append(f"{ips['ess']:.0f} of {ips['n_episodes']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
