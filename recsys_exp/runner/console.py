"""What a run tells a person on the terminal: a header (what runs, where), one progress line per
training iteration, and a summary at the end (the result next to its baselines, where the files
are, what to run next). Text only: :mod:`recsys_exp.runner.quiet` keeps other libraries' output
off the terminal, the mode handlers decide when to print.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from pathlib import Path
from typing import Any, Mapping

from recsys_exp.run_dir import CHECKPOINTS_DIR, METRICS_FILE, SUMMARY_FILE, eval_seed

LEARNING_CURVE = "learning_curve.png"


# --- numbers -------------------------------------------------------------------------------------
def count(x: Any) -> str:
    """An integer count with thousands separators (``1,024``); ``-`` for a missing value."""
    return "-" if _missing(x) else f"{int(x):,}"


def number(x: Any, digits: int = 2) -> str:
    """A real number with ``digits`` decimals and thousands separators; ``-`` for a missing value."""
    return "-" if _missing(x) else f"{float(x):,.{digits}f}"


def duration(seconds: Any) -> str:
    """``45s``, ``2m 07s``, ``1h 05m``; ``-`` if unknown."""
    if _missing(seconds):
        return "-"
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _missing(x: Any) -> bool:
    return x is None or x == "" or (isinstance(x, float) and not math.isfinite(x))


def interval(ci: Any, digits: int = 2) -> str:
    """``[low, high]`` of a 95% interval; ``-`` if there is none."""
    if not ci or any(_missing(v) for v in ci):
        return "-"
    return f"[{number(ci[0], digits)}, {number(ci[1], digits)}]"


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read and to
    paste: the next commands run from here), else absolute."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def override(key: str, value: str | Path) -> str:
    """``key=value`` as one shell word that Hydra parses back to ``value`` (paths with ``=``, ``,``
    or spaces, e.g. a multirun job dir, are quoted for Hydra and for the shell)."""
    text = str(value)
    if all(ch.isalnum() or ch in "/._-~+:@" for ch in text):
        return f"{key}={text}"
    return shlex.quote(f'{key}="{text}"')


# --- header ----------------------------------------------------------------------------------------
def _slate_size(c: Mapping[str, Any]) -> str:
    """`` 10-2 (10 candidates, slates of 2)`` for slate envs, the entry point for env=gym."""
    from recsys_exp.envs.spec import env_spec

    spec = env_spec(c)
    if spec.is_gym:
        return f" ({spec.entry_point})"
    try:
        nvec = spec.action_space.nvec
    except (AttributeError, ValueError, OSError):
        return ""
    n, k = int(nvec[0]), len(nvec)
    return f" {n}-{k} ({n} candidates, slates of {k})"


def step_unit(c: Mapping[str, Any]) -> str:
    """What a run's step counts count: ``logged rows`` when it learns from ``offline.path``, else
    ``env steps``."""
    from recsys_exp.algorithms.plugin import load_plugin

    return "logged rows" if c["offline"]["path"] and load_plugin(c["algo"]).learns_from_logs else "env steps"


def plural(n: Any, word: str) -> str:
    """``1 iteration``, ``3 iterations`` (``-`` for a missing count)."""
    return f"{count(n)} {word}" + ("" if not _missing(n) and int(n) == 1 else "s")


def budget(stop: Mapping[str, Any], unit: str = "env steps") -> str:
    """The stop budget in words: ``100,000 env steps``, ``20 iterations`` or both."""
    parts = []
    if stop.get("timesteps") is not None:
        parts.append(f"{count(stop['timesteps'])} {unit}")
    if stop.get("iterations") is not None:
        parts.append(plural(stop["iterations"], "iteration"))
    return " or ".join(parts) or "no budget"


def header(c: Mapping[str, Any], run_dir: Path, log_file: Path | None) -> str:
    """What is run: mode, algorithm, env with N-K, budget or checkpoint, seed, run dir and log."""
    mode, algo, env = c["mode"], c["algo"]["name"], c["env"]["name"]
    what = f"{algo} on {env}{_slate_size(c)}"
    if mode == "train":
        tune = c["tune"]
        if tune["name"] != "none":
            what += (f", Tune sweep tune={c.get('choices', {}).get('tune', tune['name'])} "
                     f"({plural(tune['num_samples'], 'sample')} x {plural(tune['seeds'], 'seed')})")
        what += f", {budget(c['stop'], step_unit(c))}"
        if c["restore"]:
            what += f", starting from {display_path(c['restore'])}"
    elif c["restore"]:
        what += f", from {display_path(c['restore'])}"
    lines = [f"recsys_exp {mode}: {what}, seed {c['seed']}", f"run dir: {display_path(run_dir)}"]
    if log_file is not None:
        lines.append(f"output and warnings of Ray and the other libraries: {display_path(log_file)} "
                     "(-v shows them here)")
    return "\n".join(lines)


# --- progress --------------------------------------------------------------------------------------
def eta_seconds(row: Mapping[str, Any], stop: Mapping[str, Any]) -> float | None:
    """Seconds until the stop budget at the trial's pace so far (the smaller of the env-step and
    iteration budgets); None before the pace is known."""
    elapsed, steps, iters = row.get("time_total_s"), row.get("timesteps"), row.get("iteration")
    if _missing(elapsed) or not elapsed:
        return None
    left = []
    if stop.get("timesteps") is not None and steps:
        left.append(max(0.0, stop["timesteps"] - steps) * elapsed / steps)
    if stop.get("iterations") is not None and iters:
        left.append(max(0, stop["iterations"] - iters) * elapsed / iters)
    return min(left) if left else None


def progress_line(row: Mapping[str, Any], stop: Mapping[str, Any], trial: str | None = None,
                  unit: str = "env steps") -> str:
    """One line per iteration: iteration, steps of the budget, training return, steps/s, ETA."""
    of_steps = f" / {count(stop['timesteps'])}" if stop.get("timesteps") is not None else ""
    of_iters = f"/{count(stop['iterations'])}" if stop.get("iterations") is not None else ""
    width = len(count(stop["timesteps"])) if stop.get("timesteps") is not None else 9
    who = f"trial {trial} " if trial else ""
    sps = row.get("env_steps_per_s")
    return (f"[{time.strftime('%H:%M:%S')}] {who}iter {count(row.get('iteration')):>3}{of_iters} | "
            f"{unit} {count(row.get('timesteps')):>{width}}{of_steps} | "
            f"return {number(row.get('episode_return_mean')):>9} | "
            f"{count(None if _missing(sps) else round(sps)):>6} steps/s | "
            f"ETA {duration(eta_seconds(row, stop))}")


# --- summary ----------------------------------------------------------------------------------------
def next_commands(c: Mapping[str, Any], run_dir: Path) -> dict[str, str]:
    """What to run next on this run dir: evaluate, serve (slate envs) and record (simulators)."""
    from recsys_exp.envs.spec import env_spec

    spec = env_spec(c)
    restore = override("restore", display_path(run_dir))
    out = {"evaluate": f"python -m recsys_exp mode=evaluate {restore}"}
    if not spec.is_gym:
        out["serve"] = f"python -m recsys_exp mode=serve {restore} serve=http"
    if not spec.is_gym and not spec.is_logged:
        out["record"] = f"python -m recsys_exp mode=record {restore}"
    return out


def _wandb_run(run_dir: Path) -> Path | None:
    runs = sorted((run_dir / "wandb").glob("offline-run-*")) + sorted((run_dir / "wandb").glob("run-*"))
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _files(c: Mapping[str, Any], run_dir: Path, log_file: Path | None, extra: dict[str, Path]) -> list[str]:
    files: dict[str, str] = {name: display_path(path) for name, path in extra.items() if path.exists()}
    mode = c["logger"]["mode"]
    wandb_run = _wandb_run(run_dir) if mode != "disabled" else None
    if wandb_run is not None:
        upload = "  (upload it with wandb sync)" if mode == "offline" else ""
        files[f"W&B ({mode})"] = display_path(wandb_run) + upload
    else:
        files["W&B"] = f"none (logger.mode={mode})"
    if log_file is not None and log_file.exists():
        files["full log"] = display_path(log_file)
    width = max(map(len, files))
    return [f"  {name:<{width}}  {path}" for name, path in files.items()]


def _result_line(label: str, value: Any, ci: Any, width: int, extra: str = "") -> str:
    return f"  {label:<{width}}  {number(value):>10}  95% CI {interval(ci)}{extra}"


def _evaluation_lines(c: Mapping[str, Any], run_dir: Path, summary: Mapping[str, Any]) -> list[str]:
    objective = off_policy_objective(summary)
    if objective:
        return _off_policy_lines(run_dir, objective)
    baselines = summary.get("baselines") or {}
    head = (f"greedy evaluation, {count(summary.get('eval_episodes'))} episodes on the same simulated users "
            f"(evaluation seed {eval_seed(c['seed'])}):")
    rows = [("this run's policy", summary.get("eval_return_mean"), summary.get("eval_ci95"), "")]
    mine = summary.get("eval_return_mean")
    for b in baselines.values():
        gap = ""
        if not _missing(mine) and not _missing(b["episode_return_mean"]):
            diff = mine - b["episode_return_mean"]
            rel = f", {diff / abs(b['episode_return_mean']):+.1%}" if b["episode_return_mean"] else ""
            gap = f"   (this run {diff:+,.2f}{rel};  {' '.join(b['overrides'])})"
        rows.append((b["label"], b["episode_return_mean"], b["ci95"], gap))
    if "random" not in baselines:
        rows.append(("random slates", None, None, "   (not measured on this env)"))
    width = max(len(r[0]) for r in rows)
    return [head, *(_result_line(*r[:3], width, r[3]) for r in rows)]


def off_policy_objective(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """summary.json's off-policy objective block (env=logged), else None (a sweep's ``objective``
    is the best trial's metric, a number)."""
    objective = summary.get("objective")
    return objective if isinstance(objective, dict) and objective.get("kind") == "off_policy" else None


def _off_policy_lines(run_dir: Path, objective: Mapping[str, Any]) -> list[str]:
    """env=logged: the off-policy estimate on held-out sessions, its ESS and verdict (ope.json)."""
    est, n = objective["estimator"], objective.get("n_episodes")
    ess = "" if _missing(objective.get("ess")) else f", ESS {number(objective['ess'], 1)}"
    lines = [f"off-policy estimate of this run's policy ({est}, {count(n)} held-out sessions; no simulator, "
             f"so no greedy evaluation or random baseline):",
             f"  {est:<8}  {number(objective['value'], 4):>10}  95% CI {interval(objective['ci95'], 4)}{ess}"]
    ope_file = run_dir / "ope.json"
    if ope_file.exists():
        ope = json.loads(ope_file.read_text())
        chosen = ope.get("estimates", {}).get(est, {})
        if chosen.get("reliable") is False:
            lines.append(f"  UNRELIABLE: {chosen.get('reason')}")
        best = ope.get("recommended")
        if "recommended" in ope and best != est:
            lines.append(f"  recommended estimator: {best or 'none (no estimate is reliable)'}"
                         f"{'' if not best else ' ' + number(ope['estimates'][best]['value'], 4)}; "
                         f"every estimate in {display_path(ope_file)}")
    return lines


def in_multirun() -> bool:
    """This process runs the jobs of a Hydra ``-m`` multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train_summary(c: Mapping[str, Any], run_dir: Path, summary: Mapping[str, Any], log_file: Path | None) -> str:
    """The end of a training run: budget used and wall time, the evaluation next to the baselines
    (or the off-policy estimate), where the files are, and the next commands (a job of a ``-m``
    multirun names its dir and the report instead)."""
    steps_s, unit = summary.get("env_steps_per_s"), step_unit(c)
    rate = count(None if _missing(steps_s) else round(steps_s))
    lines = ["", f"done in {duration(summary.get('wall_s'))}: {count(summary.get('timesteps'))} {unit} in "
                 f"{plural(summary.get('iterations'), 'iteration')} ({rate} {unit}/s while training)"]
    lines += _evaluation_lines(c, run_dir, summary)
    if in_multirun():
        sweep_dir = shlex.quote(display_path(run_dir.parent))
        lines.append(f"files: {display_path(run_dir)}; all jobs compared: python -m recsys_exp.report {sweep_dir}")
        return "\n".join(lines)
    lines.append("files:")
    extra = {"learning curve": run_dir / LEARNING_CURVE, "metrics": run_dir / METRICS_FILE,
             "summary": run_dir / SUMMARY_FILE, "checkpoint": run_dir / CHECKPOINTS_DIR / "last"}
    lines += _files(c, run_dir, log_file, extra)
    lines.append("next:")
    lines += [f"  {name:<8}  {cmd}" for name, cmd in next_commands(c, run_dir).items()]
    return "\n".join(lines)


def stage_line(c: Mapping[str, Any], run_dir: Path, summary: Mapping[str, Any]) -> str:
    """One line for a training run inside a pipeline: its evaluation, random's, and its run dir."""
    objective = off_policy_objective(summary)
    what = (f"off-policy estimate ({objective['estimator']})" if objective
            else "greedy evaluation")
    random = (summary.get("baselines") or {}).get("random")
    vs = f", random slates {number(random['episode_return_mean'])}" if random else ""
    return (f"trained {c['algo']['name']} ({count(summary.get('timesteps'))} {step_unit(c)}, "
            f"{duration(summary.get('wall_s'))}): {what} {number(summary.get('eval_return_mean'))} "
            f"95% CI {interval(summary.get('eval_ci95'))}{vs} -> {display_path(run_dir)}")


def sweep_summary(c: Mapping[str, Any], run_dir: Path, summary: Mapping[str, Any], log_file: Path | None) -> str:
    """The end of a Tune sweep: trials and wall time, the best trial's evaluation, files, next commands."""
    lines = ["", f"done in {duration(summary.get('wall_s'))}: {plural(summary.get('trials'), 'trial')}"]
    if summary.get("best_trial"):
        what = ("off-policy estimate" if off_policy_objective(summary)
                else "greedy evaluation, mean over seeds")
        lines.append(f"best trial {summary['best_trial']} ({what}): {number(summary.get('eval_return_mean'))}  "
                     f"95% CI {interval(summary.get('eval_ci95'))}  params {summary.get('params')}")
    lines.append("files:")
    extra = {"trials": run_dir / "sweep.json", "best config": run_dir / "best_config.yaml",
             "best checkpoint": run_dir / "best_checkpoint", "metrics": run_dir / METRICS_FILE,
             "summary": run_dir / SUMMARY_FILE}
    lines += _files(c, run_dir, log_file, extra)
    lines.append("next:")
    lines += [f"  {name:<8}  {cmd}" for name, cmd in next_commands(c, run_dir).items()]
    lines.append(f"  {'report':<8}  python -m recsys_exp.report {shlex.quote(display_path(run_dir))}")
    return "\n".join(lines)


def say(text: str) -> None:
    """Print ``text`` for the person at the terminal (under a quiet terminal: there and in the log)."""
    print(text, flush=True)


def verbose_from_env() -> bool:
    """``RECSYS_EXP_VERBOSE=1`` (what ``-v`` sets): keep other libraries' output on the terminal."""
    return os.environ.get("RECSYS_EXP_VERBOSE", "") not in ("", "0", "false")
