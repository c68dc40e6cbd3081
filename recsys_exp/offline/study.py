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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

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


@dataclass(frozen=True)
class Stage:
    """One step of the study: an ordinary run of ``make_config()`` in ``run_dir``; skipped when ``done``
    exists already (a re-run of the study continues where it stopped). The config is composed and
    validated only when the stage runs: validation reads the data of earlier stages, which exists by then."""

    name: str
    make_config: Callable[[], dict[str, Any]]
    run_dir: Path
    done: Path
    overrides: tuple[str, ...]


def study_stages(c: dict[str, Any], run_dir: Path) -> list[Stage]:
    """The study's pipeline: train the behaviour policy, record it, train each offline algorithm."""
    from recsys_exp.run_dir import CHECKPOINTS_DIR

    s = c["study"]
    behaviour_dir, data_dir = run_dir / "behaviour", run_dir / "behaviour" / "data"
    eps = s["record_epsilon"]
    stages = [
        Stage("behaviour", partial(stage_config, c, s["behaviour_algo"], mode="train",
                                   **{"stop.timesteps": s["behaviour_steps"]}),
              behaviour_dir, behaviour_dir / CHECKPOINTS_DIR / "last",
              (f"study.behaviour_algo={s['behaviour_algo']}",)),
        Stage("record", partial(stage_config, c, s["behaviour_algo"], mode="record", restore=str(behaviour_dir),
                                **{"exploration.type": "epsilon_greedy", "exploration.initial_epsilon": eps,
                                   "exploration.final_epsilon": eps, "offline.path": str(data_dir)}),
              run_dir / "record", data_dir / "manifest.json", ("mode=record",)),
    ]
    for algo in s["algos"]:
        algo_dir = run_dir / algo
        stages.append(Stage(algo, partial(stage_config, c, algo, mode="train", **{"offline.path": str(data_dir),
                                                                                 "stop.timesteps": s["train_steps"]}),
                            algo_dir, algo_dir / CHECKPOINTS_DIR / "last", (f"algo={algo}",)))
    return stages


def run_study(c: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run the stages (:func:`study_stages`), then estimate every learned policy (and the behaviour
    policy's greedy version) off-policy and in the simulator; writes study.json and study.md."""
    from recsys_exp.offline.evaluation import off_policy_evaluation
    from recsys_exp.run_dir import load_config, locate_checkpoint
    from recsys_exp.runner.lifecycle import execute

    stages = study_stages(c, run_dir)
    for stage in stages:
        if not stage.done.exists():
            execute(stage.make_config(), stage.run_dir, list(stage.overrides))
    data_dir = stages[0].run_dir / "data"
    policies = {"behaviour (greedy)": stages[0].run_dir, **{st.name: st.run_dir for st in stages[2:]}}
    results: dict[str, Any] = {}
    for name, path in policies.items():
        checkpoint, config_dir = locate_checkpoint(path)
        ev = copy.deepcopy(load_config(config_dir / "config.yaml"))
        ev.update(mode="evaluate", restore=str(path), eval=c["eval"], seed=c["seed"])
        ev["offline"] = {**c["offline"], "path": str(data_dir)}
        ope = off_policy_evaluation(ev, checkpoint)
        atomic_write_json(Path(path) / "ope.json", ope)
        results[name] = ope
    summary = {"data": str(data_dir), "gamma": c["offline"]["gamma"], "record_epsilon": c["study"]["record_epsilon"],
               "policies": results}
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
