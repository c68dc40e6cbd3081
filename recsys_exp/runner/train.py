"""Training through ``tune.Tuner`` (one trial with ``tune=none``), resumable after a crash."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from recsys_exp.run_dir import (
    CHECKPOINTS_DIR,
    EXPERIMENT_NAME,
    METRICS_FILE,
    RAY_RESULTS_DIR,
    SUMMARY_FILE,
    atomic_write_json,
    eval_seed,
)


def callbacks(c: dict[str, Any], run_dir: Path, seeds: list[int] | None = None) -> list:
    """Tune callbacks of a run: the run dir's metrics/progress/checkpoint links, and W&B unless disabled.

    ``seeds``: a sweep's per-trial seeds (metrics.csv then gets one row per seed).
    """
    from recsys_exp.runner.console import step_unit
    from recsys_exp.runner.tracking import RunDirCallback

    out = [RunDirCallback(str(run_dir), progress=c["progress"], seeds=seeds, stop=c["stop"], unit=step_unit(c))]
    logger = c["logger"]
    if logger["mode"] != "disabled":
        from ray.air.integrations.wandb import WandbLoggerCallback

        # mode and dir go to wandb.init directly: env vars would not reach a Ray started earlier.
        kwargs: dict[str, Any] = {"config": c, "tags": list(logger["tags"]) or None, "mode": logger["mode"],
                                  "dir": str(run_dir)}
        if logger["run_name"]:
            kwargs["name"] = logger["run_name"]
        # upload_timeout bounds how long the end of the experiment waits for the logging actors.
        out.append(WandbLoggerCallback(project=logger["project"], group=logger["group"],
                                             upload_timeout=30, **kwargs))
    return out


def stop_criteria(c: dict[str, Any]) -> dict[str, int]:
    """Tune ``stop`` of the run's budget (env steps and/or iterations)."""
    stop = {}
    if c["stop"]["timesteps"] is not None:
        stop["num_env_steps_sampled_lifetime"] = c["stop"]["timesteps"]
    if c["stop"]["iterations"] is not None:
        stop["training_iteration"] = c["stop"]["iterations"]
    return stop


def storage_root(c: dict[str, Any], run_dir: Path) -> str:
    """Where Tune keeps the experiment: ``<run dir>/ray_results``, or with ``ray.storage_path`` (a
    directory every node sees, or a URI such as ``s3://bucket/path``) ``<storage_path>/<run name>``,
    where the run name joins the run dir's last two parts (Hydra's date/time or sweep/job)."""
    root = c["ray"]["storage_path"]
    if root is None:
        return str(run_dir / RAY_RESULTS_DIR)
    name = f"{run_dir.parent.name}_{run_dir.name}"
    if "://" in root:
        return f"{root.rstrip('/')}/{name}"
    return str(Path(root).expanduser().resolve() / name)


def fit(c: dict[str, Any], run_dir: Path, algo_cls, algo_config, resume: bool):
    """Run (or resume) the Tune experiment under ``storage_root(c, run_dir)/train``; returns the best Result."""
    from ray import tune

    storage = storage_root(c, run_dir)
    experiment = f"{storage}/{EXPERIMENT_NAME}"
    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable=algo_cls, resume_unfinished=True,
                                   resume_errored=True, param_space=algo_config)
    else:
        ck = c["checkpoint"]
        tuner = tune.Tuner(
            algo_cls,
            param_space=algo_config,
            tune_config=tune.TuneConfig(metric=c["tune"]["metric"], mode=c["tune"]["mode"],
                                        num_samples=c["tune"]["num_samples"],
                                        max_concurrent_trials=c["tune"]["max_concurrent_trials"]),
            run_config=tune.RunConfig(
                name=EXPERIMENT_NAME, storage_path=storage, stop=stop_criteria(c), verbose=0,
                callbacks=callbacks(c, run_dir),
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=ck["frequency"],
                                                        num_to_keep=ck["num_to_keep"], checkpoint_at_end=True),
                failure_config=tune.FailureConfig(max_failures=0)),
        )
    results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"training failed: {str(errors[0]).strip().splitlines()[-1]}")
    return results.get_best_result()


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv rows as floats; the last row wins per (trial, seed, iteration) after a resume
    (``seed`` is only a column in sweeps, where every seed of a trial has its rows)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    rows: dict[tuple[str, int], dict[str, float]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            parsed = {k: (float(v) if v not in ("", None) and k != "trial_id" else v) for k, v in row.items()}
            seed = row.get("seed") or ""
            rows[(row["trial_id"], seed, int(float(row["iteration"])))] = parsed
    return [rows[k] for k in sorted(rows)]


def plot_learning_curve(run_dir: Path, rows: list[dict[str, float]], title: str,
                        evaluation: dict[str, Any] | None = None,
                        baselines: dict[str, dict[str, Any]] | None = None) -> None:
    """learning_curve.png: mean training episode return against env steps; with ``evaluation``
    (``{timesteps, mean, ci95}``) the final greedy evaluation as a point with its 95% interval, and
    each of ``baselines`` (:func:`recsys_exp.runner.baselines.measure_baselines`) as a horizontal
    line with its interval as a band."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch (notebooks keep their plots)

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    pts = [(r["timesteps"], r["episode_return_mean"]) for r in rows if r.get("episode_return_mean") not in (None, "")]
    if pts:
        ax.plot(*zip(*pts), marker="o", ms=3, label="training return (exploring)")
    if evaluation is not None and _finite_ci(evaluation["ci95"]):
        mean, (low, high) = evaluation["mean"], evaluation["ci95"]
        ax.errorbar([evaluation["timesteps"]], [mean], yerr=[[mean - low], [high - mean]], fmt="s", color="black",
                    capsize=4, label=f"greedy evaluation {mean:.4g}")
    styles = zip(("--", ":", "-."), ("tab:red", "tab:green", "tab:purple"))
    for b, (style, color) in zip((baselines or {}).values(), styles):
        mean = b["episode_return_mean"]
        ax.axhline(mean, ls=style, color=color, label=f"{b['label']} {mean:.4g}")
        if _finite_ci(b["ci95"]):
            ax.axhspan(*b["ci95"], color=color, alpha=0.12, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = run_dir / ".learning_curve.tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, run_dir / "learning_curve.png")


def _finite_ci(ci: Any) -> bool:
    return bool(ci) and all(v is not None and np.isfinite(v) for v in ci)


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def off_policy_objective(c: dict[str, Any], checkpoint: Path, run_dir: Path) -> dict[str, Any]:
    """``env=logged``: off-policy estimates of the trained policy on the held-out sessions
    (ope.json); the ``offline.select_by`` estimate as the run's evaluation, with its CI, ESS and n."""
    from recsys_exp.offline.evaluation import objective_block, off_policy_evaluation

    ope = off_policy_evaluation(c, checkpoint, held_out=True)
    atomic_write_json(run_dir / "ope.json", ope)
    objective = objective_block(c, ope)
    return {"episode_return_mean": objective["value"], "ci95": objective["ci95"],
            "episodes": objective["n_episodes"], "objective": objective}


def train(c: dict[str, Any], run_dir: Path, algo_cls, algo_config,
          restore_checkpoint: str | None = None) -> dict[str, Any]:
    """Train the built ``algo_config``, evaluate the final policy, write summary.json.

    The evaluation is greedy episodes in the simulator, next to the env's reference policies measured
    the same way (``baselines``: random slates, the myopic policy; :mod:`recsys_exp.runner.baselines`),
    or with ``env=logged`` (no simulator) the off-policy estimate ``offline.select_by`` on the
    sessions held out of training (ope.json).
    ``restore_checkpoint`` is already wired into ``algo_config`` (its weights load at start).
    """
    from recsys_exp.envs.spec import env_spec
    from recsys_exp.runner.lifecycle import ensure_ray

    start = time.time()
    baselines: dict[str, dict[str, Any]] = {}
    ensure_ray(c, run_dir)
    best = fit(c, run_dir, algo_cls, algo_config, resume=c["resume"])
    rows = read_metrics(run_dir)
    last = Path(run_dir / CHECKPOINTS_DIR / "last").resolve()
    if env_spec(c).is_logged:
        ev = off_policy_objective(c, last, run_dir)
    else:
        from recsys_exp.runner.baselines import measure_baselines
        from recsys_exp.runner.evaluate import evaluate_checkpoint

        ev = evaluate_checkpoint(c, last, c["eval"]["episodes"], c["eval"]["num_envs"], eval_seed(c["seed"]))
        baselines = measure_baselines(c)
    wall = time.time() - start
    timesteps = best.metrics.get("num_env_steps_sampled_lifetime") or (rows[-1]["timesteps"] if rows else 0)
    train_time = best.metrics.get("time_total_s") or wall
    summary = {
        "timesteps": int(timesteps),
        "episode_return_mean": _float(best.metrics.get("env_runners", {}).get("episode_return_mean")),
        "eval_return_mean": ev["episode_return_mean"],
        "eval_ci95": ev["ci95"],
        "eval_episodes": ev["episodes"],
        **({"objective": ev["objective"]} if "objective" in ev else {}),
        "wall_s": wall,
        "env_steps_per_s": timesteps / train_time if train_time else None,
        "iterations": best.metrics.get("training_iteration"),
        "checkpoint": str(last),
        **({"baselines": baselines} if baselines else {}),
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    evaluation = None if env_spec(c).is_logged else {"timesteps": int(timesteps), "mean": ev["episode_return_mean"],
                                                     "ci95": ev["ci95"]}
    plot_learning_curve(run_dir, rows, f"{c['algo']['name']} on {c['env']['name']}", evaluation, baselines)
    return summary
