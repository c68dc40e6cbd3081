"""A Tune sweep in one run dir: schedulers, searchers, resume, and what it leaves behind.

Files of a sweep dir (besides config.yaml, run.json, metrics.csv with a ``seed`` column)::

    sweep.json          every trial: params, status, objective, greedy evaluation per seed
                        (env=logged: off-policy estimates on held-out sessions, and ``objective``
                        says which: estimator, held-out share, target, when they are computed)
    summary.json        the best trial's numbers (same keys as a training run's summary)
    best_config.yaml    the best configuration as a preset (copy to conf/experiment/)
    best_checkpoint     -> the best trial's last checkpoint (seed_<s>/ per seed)
    ray_results/train/  Tune's experiment (trial dirs, experiment state for resume=true)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from recsys_exp.config.search_space import flatten_space, params_label, probe_values, trial_config
from recsys_exp.errors import ConfigError
from recsys_exp.run_dir import EXPERIMENT_NAME, SUMMARY_FILE, atomic_write_json, atomic_write_text

SWEEP_FILE, BEST_CONFIG_FILE, BEST_CHECKPOINT = "sweep.json", "best_config.yaml", "best_checkpoint"
DEFAULT_METRIC = "env_runners/episode_return_mean"  # tune.metric's default: the training return
OFF_POLICY_METRIC = "off_policy/value"  # env=logged: the trials' off-policy estimate (sweep/trainable.py)


def is_logged(c: dict[str, Any]) -> bool:
    """The sweep's env is ``env=logged``: no simulator, trials are evaluated off-policy."""
    from recsys_exp.envs.spec import env_spec

    return env_spec(c).is_logged


def objective_metric(c: dict[str, Any]) -> str:
    """The result key Tune ranks and schedules trials by: ``tune.metric``, except that with
    ``env=logged`` (no training episodes) the default training return stands for the trials'
    off-policy estimate ``off_policy/value``."""
    metric = c["tune"]["metric"]
    return OFF_POLICY_METRIC if metric == DEFAULT_METRIC and is_logged(c) else metric


def off_policy_description(c: dict[str, Any]) -> dict[str, Any]:
    """What a logged-env sweep's objective is: sweep.json's ``objective``."""
    off = c["offline"]
    return {"kind": "off_policy", "metric": objective_metric(c), "estimator": off["select_by"],
            "estimators": list(off["estimators"]), "held_out_fraction": off["eval_fraction"],
            "target": off["target"], "gamma": off["gamma"], "bootstrap": off["bootstrap"],
            "computed": "after every iteration" if c["tune"]["scheduler"] != "none" else "after the last iteration"}


def max_t(c: dict[str, Any]) -> int:
    """ASHA's budget in ``tune.time_attr`` units: ``tune.asha.max_t`` or the run's stop budget."""
    t = c["tune"]
    if t["asha"]["max_t"] is not None:
        return t["asha"]["max_t"]
    if t["time_attr"] == "num_env_steps_sampled_lifetime":
        return c["stop"]["timesteps"]
    return c["stop"]["iterations"] or 100


def clip_to_space(flat: dict[str, dict[str, Any]]):
    """PBT ``custom_explore_fn``: keep perturbed values (x0.8 / x1.2) inside their domain."""

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        for key, spec in flat.items():
            if key in config and spec["type"] in ("uniform", "loguniform", "randint"):
                value = min(max(config[key], spec["low"]), spec["high"])
                config[key] = int(min(round(value), spec["high"] - 1)) if spec["type"] == "randint" else value
        return config

    return explore


def scheduler(c: dict[str, Any], flat: dict[str, dict[str, Any]]):
    """The Tune trial scheduler of ``tune.scheduler`` (None = FIFO)."""
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    t = c["tune"]
    if t["scheduler"] == "asha":
        a = t["asha"]
        return ASHAScheduler(time_attr=t["time_attr"], max_t=max_t(c), grace_period=a["grace_period"],
                             reduction_factor=a["reduction_factor"])
    if t["scheduler"] == "pbt":
        p = t["pbt"]
        space = to_tune_space({k: s for k, s in flat.items() if s["type"] != "grid"})
        return PopulationBasedTraining(time_attr=t["time_attr"], perturbation_interval=p["perturbation_interval"],
                                       hyperparam_mutations=space, quantile_fraction=p["quantile_fraction"],
                                       resample_probability=p["resample_probability"],
                                       custom_explore_fn=clip_to_space(flat))
    return None


def search_alg(c: dict[str, Any]):
    """Seeded random/grid sampling, or Optuna's TPE through Tune's ``OptunaSearch``."""
    t = c["tune"]
    if t["search_alg"] == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=c["seed"]))
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=c["seed"])


def run_sweep(c: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run (or with ``resume=true`` continue) the sweep of config ``c``; returns summary.json's dict."""
    from ray import tune

    from recsys_exp.runner.lifecycle import ensure_ray
    from recsys_exp.runner.train import callbacks, stop_criteria, storage_root
    from recsys_exp.sweep.trainable import SeedAveragedTrainable, seed_list, trial_resources

    start = time.time()
    flat = flatten_space(c["tune"]["search_space"])
    resources = trial_resources(c)  # builds an AlgorithmConfig: RLlib's errors come before Ray starts
    ensure_ray(c, run_dir)
    trainable = tune.with_resources(tune.with_parameters(SeedAveragedTrainable, base=c), resources)
    param_space = to_tune_space(flat)
    storage = storage_root(c, run_dir)
    experiment = f"{storage}/{EXPERIMENT_NAME}"
    t, ck = c["tune"], c["checkpoint"]
    if c["resume"] and tune.Tuner.can_restore(experiment):
        # Finished trials keep their results; unfinished and errored ones continue from their
        # last checkpoint (or start over without one); the searcher's state is restored.
        tuner = tune.Tuner.restore(experiment, trainable=trainable, param_space=param_space,
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=objective_metric(c), mode=t["mode"], num_samples=t["num_samples"],
                                        max_concurrent_trials=t["max_concurrent_trials"],
                                        scheduler=scheduler(c, flat), search_alg=search_alg(c),
                                        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
            run_config=tune.RunConfig(
                name=EXPERIMENT_NAME, storage_path=storage, stop=stop_criteria(c), verbose=0,
                callbacks=callbacks(c, run_dir, seeds=seed_list(c)),
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=ck["frequency"],
                                                        num_to_keep=ck["num_to_keep"], checkpoint_at_end=True),
                failure_config=tune.FailureConfig(max_failures=0)))
    results = tuner.fit()
    trials = describe_trials(c, results)
    # Tune returns normally after Ctrl-C; trials not yet created (searchers suggest lazily) or
    # not finished tell an interrupted sweep from a complete one.
    unfinished = [tr for tr in trials if tr["status"] not in ("TERMINATED", "ERROR")]
    if unfinished or len(trials) < expected_trials(c, flat):
        raise KeyboardInterrupt(f"sweep interrupted after {len(trials) - len(unfinished)} of "
                                f"{expected_trials(c, flat)} trials; continue with resume=true")
    summary = write_outputs(c, run_dir, trials, time.time() - start)
    errors = [tr for tr in trials if tr["status"] == "ERROR"]
    if errors and len(errors) == len(trials):
        raise RuntimeError(f"every trial failed; first: {errors[0]['error']}")
    return summary


def expected_trials(c: dict[str, Any], flat: dict[str, dict[str, Any]]) -> int:
    """Trials of a complete sweep: ``num_samples`` x every grid point."""
    n = c["tune"]["num_samples"]
    for spec in flat.values():
        if spec["type"] == "grid":
            n *= len(spec["values"])
    return n


def _finite(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def describe_trials(c: dict[str, Any], results) -> list[dict[str, Any]]:
    """One record per trial of a finished ``ResultGrid`` (the rows of sweep.json)."""
    from recsys_exp.runner.tracking import result_value

    status = {tr.trial_id: tr.status for tr in results._experiment_analysis.trials}
    metric, seeds, logged = objective_metric(c), c["tune"]["seeds"], is_logged(c)
    out = []
    for r in results:
        m = r.metrics or {}
        trial_id = m.get("trial_id") or Path(r.path).name.removeprefix("trial_")
        steps = result_value(m, "num_env_steps_sampled_lifetime")
        secs = m.get("time_total_s")
        ev = result_value(m, "evaluation") or {}
        record = {
            "trial_id": trial_id,
            "params": {k: r.config[k] for k in sorted(r.config)},
            "label": params_label(r.config),
            "status": status.get(trial_id, "ERROR" if r.error else "UNKNOWN"),
            "iterations": m.get("training_iteration"),
            "timesteps": steps,
            "objective": _finite(result_value(m, metric)),
            "eval_return_mean": _finite(ev.get("episode_return_mean")),
            "eval_per_seed": ev.get("per_seed") or {},
            "env_steps_per_s": steps * seeds / secs if steps and secs else None,
            "wall_s": secs,
            "checkpoint": r.checkpoint.path if r.checkpoint else None,
            "node_id": m.get("node_id"),
            "error": str(r.error).strip().splitlines()[-1] if r.error else None,
        }
        if logged:  # the last estimate (the final evaluation's for trials that ran their budget)
            record["off_policy"] = _off_policy_record(ev.get("off_policy") or result_value(m, "off_policy"))
        out.append(record)
    return out


def _off_policy_record(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A trial's ``off_policy`` result as sweep.json keeps it: NaN -> None, CI as a pair."""
    if not result:
        return None
    per_seed = {s: {"value": _finite(r.get("value")), "ci95": [_finite(r.get("ci95_low")), _finite(r.get("ci95_high"))],
                    "ess": _finite(r.get("ess")), "n_episodes": _count(r.get("n_episodes"))}
                for s, r in (result.get("per_seed") or {}).items()}
    return {"value": _finite(result.get("value")), "ess": _finite(result.get("ess")),
            "n_episodes": _count(result.get("n_episodes")), "per_seed": per_seed}


def _count(x: Any) -> int | None:
    x = _finite(x)
    return None if x is None else int(x)


def best_trial(c: dict[str, Any], trials: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The best trial and what ranked it.

    Ranked by ``tune.metric`` (its last value), among the trials that ran their whole budget if
    any did (ASHA-stopped trials were compared on a shorter budget). When no trial reported a
    finite ``tune.metric`` (e.g. no episode ended within a short budget), by the greedy evaluation.
    """
    done = [tr for tr in trials if tr["status"] == "TERMINATED"]
    full = [tr for tr in done if tr["eval_per_seed"]] or done
    sign = 1 if c["tune"]["mode"] == "max" else -1
    scored = [tr for tr in full if tr["objective"] is not None]
    if scored:
        return max(scored, key=lambda tr: sign * tr["objective"]), objective_metric(c)
    evaluated = [tr for tr in full if tr["eval_return_mean"] is not None]
    if evaluated:
        return max(evaluated, key=lambda tr: tr["eval_return_mean"]), "evaluation/episode_return_mean"
    return None, objective_metric(c)


def best_config_yaml(c: dict[str, Any], best: dict[str, Any], run_dir: Path, ranked_by: str) -> str:
    """The best trial as a ``+experiment=`` preset: group options plus the fully resolved blocks."""

    tc = trial_config(c, best["params"], c["seed"])
    choices = c.get("choices", {})
    defaults = [{f"override /{g}": choices[g]} for g in ("env", "algo", "offline") if g in choices]
    defaults.append({"override /tune": "none"})
    body = {"defaults": defaults, "seed": tc["seed"]}
    score = best["objective"] if ranked_by == objective_metric(c) else best["eval_return_mean"]
    for key in ("env", "algo", "exploration", "model", "stop", "eval"):
        body[key] = tc[key]
    if tc["offline"]["name"] != "none" or tc["offline"]["path"]:  # env=logged: the data and its held-out split
        body["offline"] = tc["offline"]
    header = (f"# @package _global_\n"
              f"# Best configuration of the sweep in {run_dir} (trial {best['trial_id']}: {best['label']};\n"
              f"# {ranked_by} = {score:.4g}, mean over seeds {_seeds(c)}).\n"
              f"# Use: cp {BEST_CONFIG_FILE} conf/experiment/<name>.yaml && python -m recsys_exp +experiment=<name>\n")
    return header + yaml.safe_dump(body, sort_keys=False)


def _seeds(c: dict[str, Any]) -> list[int]:
    from recsys_exp.sweep.trainable import seed_list

    return seed_list(c)


def write_outputs(c: dict[str, Any], run_dir: Path, trials: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """sweep.json, summary.json, best_config.yaml and the best_checkpoint link."""
    from recsys_exp.runner.tracking import symlink_atomic

    best, ranked_by = best_trial(c, trials)
    metric, logged = objective_metric(c), is_logged(c)
    if best is not None and ranked_by != metric:
        print(f"recsys_exp: no trial reported a finite tune.metric={metric} at its end (a typo, or no "
              f"episode finished); the best trial is ranked by {ranked_by}", file=sys.stderr, flush=True)
    if best is not None:
        evaluation = (f"off-policy estimate ({c['offline']['select_by']}, held-out sessions)" if logged
                      else "greedy evaluation")
        print(f"best trial {best['trial_id']} ({best['label']}): {ranked_by} "
              f"{best['objective'] if ranked_by == metric else best['eval_return_mean']:.4g}, "
              f"{evaluation} {best['eval_return_mean']} -> {run_dir / BEST_CONFIG_FILE}", flush=True)
    atomic_write_json(run_dir / SWEEP_FILE, {
        "metric": metric, "mode": c["tune"]["mode"], "seeds": _seeds(c),
        **({"objective": off_policy_description(c)} if logged else {}),
        "search_space": flatten_space(c["tune"]["search_space"]), "scheduler": c["tune"]["scheduler"],
        "search_alg": c["tune"]["search_alg"], "trials": trials,
        "best": None if best is None else {"ranked_by": ranked_by, **{
            k: best[k] for k in ("trial_id", "params", "label", "objective", "eval_return_mean", "checkpoint")}}})
    summary: dict[str, Any] = {"trials": len(trials), "wall_s": wall, "best_trial": None, "eval_return_mean": None,
                               "ranked_by": ranked_by}
    if best is not None:
        per_seed = list(best["eval_per_seed"].values())
        summary.update({
            "best_trial": best["trial_id"], "params": best["params"], "objective": best["objective"],
            "timesteps": best["timesteps"], "episode_return_mean": best["objective"],
            "eval_return_mean": best["eval_return_mean"], "eval_per_seed": best["eval_per_seed"],
            "eval_ci95": _t_interval(per_seed), "env_steps_per_s": best["env_steps_per_s"],
            "iterations": best["iterations"], "checkpoint": best["checkpoint"]})
        if logged and best.get("off_policy"):
            summary["objective"] = summary_objective(c, best["off_policy"])
        atomic_write_text(run_dir / BEST_CONFIG_FILE, best_config_yaml(c, best, run_dir, ranked_by))
        if best["checkpoint"] and "://" not in best["checkpoint"]:
            symlink_atomic(Path(best["checkpoint"]), run_dir / BEST_CHECKPOINT)
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary


def summary_objective(c: dict[str, Any], off_policy: dict[str, Any]) -> dict[str, Any]:
    """A logged-env sweep's summary.json ``objective``, shaped as a logged-env training run's: the best
    trial's ``offline.select_by`` estimate on the held-out sessions — ``value`` the mean over its seeds,
    ``ci95`` the bootstrap interval with one seed (None with several: each seed's is in ``per_seed``),
    ``ess`` and ``n_episodes`` the smallest over the seeds."""
    per_seed = off_policy["per_seed"]
    one = next(iter(per_seed.values())) if len(per_seed) == 1 else None
    return {"kind": "off_policy", "estimator": c["offline"]["select_by"], "value": off_policy["value"],
            "ci95": one["ci95"] if one else None, "ess": off_policy["ess"], "n_episodes": off_policy["n_episodes"],
            "held_out_fraction": c["offline"]["eval_fraction"], "per_seed": per_seed}


def _t_interval(values: list[float]) -> list[float] | None:
    if len(values) < 2:
        return None
    from recsys_exp.stats import mean_ci95

    return mean_ci95(values)[3]


def check_with_rllib(c: dict[str, Any]) -> None:
    """Build the RLlib config of every ``algo.*`` probe value: RLlib rejects unknown keywords and
    bad values here, before Ray starts, and the error names the search-space key."""
    from recsys_exp.runner.build import build_algorithm_config

    flat = flatten_space(c["tune"]["search_space"])
    probes = [(k, v) for k, spec in flat.items() if k.startswith("algo.") for v in probe_values(spec)]
    for key, value in probes or [(None, None)]:
        try:
            build_algorithm_config(trial_config(c, {} if key is None else {key: value}, c["seed"]))
        except ConfigError as e:
            if key is None:
                raise
            raise ConfigError(f"tune.search_space.{key}: value {value!r} is invalid: {e}") from None


def to_tune_space(flat: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flat space -> Tune ``param_space`` ({dotted key: tune domain})."""
    from ray import tune

    convert = {"choice": lambda s: tune.choice(s["values"]), "grid": lambda s: tune.grid_search(s["values"]),
               "uniform": lambda s: tune.uniform(s["low"], s["high"]),
               "loguniform": lambda s: tune.loguniform(s["low"], s["high"]),
               "randint": lambda s: tune.randint(s["low"], s["high"])}
    return {key: convert[spec["type"]](spec) for key, spec in flat.items()}
