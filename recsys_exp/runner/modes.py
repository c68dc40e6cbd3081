"""The built-in modes as registered handlers of the run lifecycle (:mod:`recsys_exp.runner.lifecycle`).

``train`` (one Tune trial, or a sweep with ``tune=...``), ``evaluate`` (greedy episodes in the
simulator and, with ``offline.path``, off-policy estimates), ``record`` (logged data), ``serve``
(Ray Serve) and ``offline_study`` (a pipeline of the others). Each is ``fn(c, run_dir, prepared)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys_exp.envs.spec import env_spec
from recsys_exp.run_dir import atomic_write_json, eval_seed, locate_checkpoint
from recsys_exp.runner.lifecycle import nesting_depth, register_mode


def is_sweep(c: dict[str, Any]) -> bool:
    """A Tune sweep (search space, seeds, scheduler) rather than one training run."""
    return c["tune"]["name"] != "none"


def prepare_train(c: dict[str, Any]):
    """For training: ``(algo class, AlgorithmConfig, checkpoint to start from)``; RLlib's own
    checks of the algo keys run here, before anything is written or Ray starts. Sweeps check every
    probe value of their search space instead (and return None)."""
    from recsys_exp.runner.build import build_algorithm_config

    if env_spec(c).is_logged:  # the final off-policy evaluation must be possible before training starts
        from recsys_exp.config.search_space import seed_list
        from recsys_exp.offline.evaluation import check_held_out

        for seed in seed_list(c) if is_sweep(c) else [c["seed"]]:  # each seed holds out its own sessions
            check_held_out({**c, "seed": seed})
    if is_sweep(c):
        from recsys_exp.sweep.run import check_with_rllib

        check_with_rllib(c)
        return None
    checkpoint = str(locate_checkpoint(c["restore"])[0]) if c["restore"] else None
    return (*build_algorithm_config(c, checkpoint), checkpoint)


@register_mode("train", prepare=prepare_train)
def train_mode(c: dict[str, Any], run_dir: Path, prepared) -> float | None:
    """Train (one trial, or a Tune sweep), evaluate greedily, write summary.json, print the summary."""
    from recsys_exp.runner import console
    from recsys_exp.runner.quiet import active_log_file

    if is_sweep(c):
        from recsys_exp.sweep.run import run_sweep

        summary = run_sweep(c, run_dir)
        console.say(console.sweep_summary(c, run_dir, summary, active_log_file()))
        return summary["eval_return_mean"]
    from recsys_exp.runner.train import train

    summary = train(c, run_dir, *(prepared or prepare_train(c)))
    if nesting_depth() > 1:  # a stage of a pipeline (offline_study), which prints its own summary
        console.say(console.stage_line(c, run_dir, summary))
    else:
        console.say(console.train_summary(c, run_dir, summary, active_log_file()))
    return summary["eval_return_mean"]


@register_mode("evaluate")
def evaluate_mode(c: dict[str, Any], run_dir: Path, prepared=None) -> float:
    """Greedy episodes of the restored checkpoint (evaluation.json) and, with ``offline.path``,
    off-policy estimates from that logged data (ope.json)."""
    from recsys_exp.runner.evaluate import evaluate_checkpoint

    checkpoint, _ = locate_checkpoint(c["restore"])
    if c["offline"]["path"]:  # the cheaper, more likely to fail part first
        from recsys_exp.offline.evaluation import off_policy_evaluation

        ope = off_policy_evaluation(c, checkpoint)
        atomic_write_json(run_dir / "ope.json", ope)
        print_ope(ope)
        if env_spec(c).is_logged:  # no simulator to evaluate in: the estimates are the evaluation
            from recsys_exp.offline.evaluation import objective_block

            return objective_block(c, ope)["value"]
    ev = evaluate_checkpoint(c, checkpoint, c["eval"]["episodes"], c["eval"]["num_envs"], eval_seed(c["seed"]))
    atomic_write_json(run_dir / "evaluation.json", ev)
    print(f"evaluation: return {ev['episode_return_mean']:.2f} (95% CI {ev['ci95'][0]:.2f}..{ev['ci95'][1]:.2f}) "
          f"over {ev['episodes']} episodes -> {run_dir / 'evaluation.json'}", flush=True)
    return ev["episode_return_mean"]


def print_ope(ope: dict[str, Any]) -> None:
    """One line per estimate with its 95% interval (and ESS) and its verdict (unreliable ones say
    why), after the simulated value if there is one; then the recommended estimate."""
    sim = ope.get("simulated")
    if sim:
        print(f"ope (gamma {ope['gamma']}): simulated {sim['value']:.2f} (95% CI {sim['ci95'][0]:.2f}.."
              f"{sim['ci95'][1]:.2f})", flush=True)
    for name, est in ope["estimates"].items():
        ess = f", ESS {est['ess']:.1f} of {est['n_episodes']} sessions" if "ess" in est else ""
        verdict = "" if est.get("reliable", True) else f"  UNRELIABLE: {est['reason']}"
        print(f"ope {name}: {est['value']:.4g} (95% CI {est['ci95'][0]:.4g}..{est['ci95'][1]:.4g}{ess}){verdict}",
              flush=True)
    fqe = ope.get("fqe") or {}
    if fqe.get("fit_r2") is not None or fqe.get("behaviour_check"):
        check = fqe.get("behaviour_check")
        r2 = "" if fqe.get("fit_r2") is None else f"held-out R² {fqe['fit_r2']:.2f}"
        gap = "" if not check else (f"{', ' if r2 else ''}behaviour check {check['gap']:+.4g} vs the logged mean "
                                    f"return {check['logged']:.4g}")
        bias = "" if fqe.get("bias_bound") is None else f", bias bound ±{fqe['bias_bound']:.3g}"
        print(f"ope model (FQE, {fqe.get('iterations')} iterations, {fqe.get('refits', 0)} refits): {r2}{gap}{bias}",
              flush=True)
    support = ope.get("support")
    if support:
        print(f"ope support: the target puts {support[0]:.0%} (95% CI {support[1]:.0%}..{support[2]:.0%}) of its "
              f"probability on slates the logging policy could show", flush=True)
    if "recommended" in ope:
        best = ope["recommended"]
        print(f"ope recommended: {best} ({ope['estimates'][best]['value']:.4g})" if best else
              "ope recommended: none (no estimate is reliable; see the reasons above)", flush=True)


@register_mode("record")
def record_mode(c: dict[str, Any], run_dir: Path, prepared=None) -> None:
    """Log the behaviour policy's steps as Parquet (``offline.path`` or ``<run dir>/data``)."""
    from recsys_exp.offline.recorder import record as record_steps

    checkpoint = str(locate_checkpoint(c["restore"])[0]) if c["restore"] else None
    out = Path(c["offline"]["path"]).expanduser() if c["offline"]["path"] else run_dir / "data"
    summary = record_steps(c, out, checkpoint)
    print(f"recorded {summary['rows']} steps in {summary['episodes']} sessions ({summary['rows_per_s']:.0f} rows/s) "
          f"-> {out}", flush=True)
    return None


@register_mode("serve")
def serve_mode(c: dict[str, Any], run_dir: Path, prepared=None) -> None:
    """Deploy the restored checkpoint (or ``serve.candidates``) on Ray Serve."""
    from recsys_exp.serve.deployment import run_serve

    run_serve(c, run_dir)
    return None


@register_mode("offline_study")
def offline_study_mode(c: dict[str, Any], run_dir: Path, prepared=None) -> None:
    """Behaviour policy -> logged data -> offline algorithms -> OPE vs simulation (study.json, study.md)."""
    from recsys_exp.offline.study import run_study

    run_study(c, run_dir)
    return None
