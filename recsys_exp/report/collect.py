"""Read run dirs, Hydra multirun dirs and sweep dirs into one flat list of :class:`RunRecord`.

One record is one replicate: a training run (one seed), or one seed of one sweep trial. Records
also stand for what is not there (a job dir that never wrote its config, a job Hydra never
started, a failed run), so the report can name every gap.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from recsys_exp.run_dir import CONFIG_FILE, METRICS_FILE, RUN_FILE, SUMMARY_FILE

MULTIRUN_FILE, SWEEP_FILE = "multirun.yaml", "sweep.json"
# Config keys that never make two runs different algorithms (replicate index, bookkeeping).
IGNORED_KEYS = ("seed", "choices", "logger", "progress", "ray", "checkpoint", "restore", "resume", "eval.num_envs")
# Sweep trial status (Ray Tune) -> run status
TRIAL_STATUS = {"TERMINATED": "completed", "ERROR": "failed", "RUNNING": "running", "PENDING": "running",
                "PAUSED": "interrupted"}


class NoRunsFound(FileNotFoundError):
    """A dir given to the report holds no run dir and no multirun dir."""


@dataclass(frozen=True)
class OffPolicy:
    """What an off-policy score is: the estimator, how many held-out sessions it used, its ESS."""

    estimator: str
    n_episodes: int | None           # held-out sessions the estimate averages over
    ess: float | None                # Kish effective sample size; None for unweighted estimators (dm)
    held_out_fraction: float | None = None
    unreliable: str | None = None    # ope.json's verdict: why the estimate is unreliable (None: reliable or unknown)

    @classmethod
    def from_objective(cls, objective: Any) -> OffPolicy | None:
        """From a summary.json ``objective`` block (``kind: off_policy``); None for anything else."""
        if not isinstance(objective, dict) or objective.get("kind") != "off_policy":
            return None
        n = _finite(objective.get("n_episodes"))
        unreliable = str(objective.get("reason")) if objective.get("reliable") is False else None
        return cls(str(objective.get("estimator")), None if n is None else int(n), _finite(objective.get("ess")),
                   _finite(objective.get("held_out_fraction")), unreliable)


@dataclass
class RunRecord:
    """One replicate (or a gap where one should be)."""

    name: str                        # how the report names it: job dir, or <sweep dir>/<trial id>
    path: Path
    status: str                      # completed | failed | running | interrupted | stopped | unknown | missing | skipped
    env: str | None = None           # env label, e.g. "interest_evolution 10-2"
    algo: str | None = None          # algorithm label (choices.algo, or a sweep trial)
    seed: int | None = None
    score: float | None = None       # final greedy-evaluation return
    env_steps_per_s: float | None = None
    wall_s: float | None = None
    timesteps: float | None = None
    curve: tuple[np.ndarray, np.ndarray] | None = None  # (env steps, training episode return)
    problem: str | None = None       # what is missing or wrong, for the report's gap list
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    off_policy: OffPolicy | None = None  # env=logged: the score is this off-policy estimate

    @property
    def outcome(self) -> str:
        """completed (has a final evaluation) | failed | stopped early | skipped | missing."""
        if self.score is not None:
            return "completed"
        return {"failed": "failed", "stopped": "stopped early", "skipped": "skipped"}.get(self.status, "missing")


# ---- discovery -------------------------------------------------------------------------------

def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(run dirs, multirun dirs) below ``root``, at any depth.

    A run dir is a dir with config.yaml; its subdirs (checkpoints, ray_results) are not searched.
    Every non-hidden subdir of a multirun dir (one with multirun.yaml) is a job dir, even one that
    died before writing its config. Hidden dirs (``.hydra``, which holds an unresolved config.yaml)
    are skipped.
    """
    root = Path(root)
    if (root / CONFIG_FILE).is_file():
        return [root], []
    runs, multiruns = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if here != root and CONFIG_FILE in filenames:
            runs.append(here)
            dirnames[:] = []
        elif MULTIRUN_FILE in filenames:
            multiruns.append(here)
            runs.extend(here / d for d in dirnames)
            dirnames[:] = []
    return sorted(runs, key=_natural_key), multiruns


def _natural_key(path: Path) -> list:
    # Hydra job dirs 0_..., 1_..., 10_...: number order, not string order (re.split keeps
    # strings at even and numbers at odd positions, so keys always compare)
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", str(path)))]


def expected_jobs(multirun_dir: Path) -> list[tuple[int, str]]:
    """``(job number, its swept overrides)`` of every job a basic-sweeper multirun launches, from
    multirun.yaml; empty if that cannot be worked out (another sweeper, unreadable file)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_cfg = yaml.safe_load((multirun_dir / MULTIRUN_FILE).read_text())["hydra"]
        sweeper = hydra_cfg.get("sweeper") or {}
        if "BasicSweeper" not in str(sweeper.get("_target_", "BasicSweeper")):
            return []
        # As BasicSweeper.sweep: hydra.sweeper.params first, then the command-line overrides.
        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides(params + list(hydra_cfg["overrides"]["task"]))
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
    except Exception:  # noqa: BLE001 - best effort: the report still lists the job dirs it found
        return []
    swept = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1] if jobs else []
    return [(n, " ".join(job[i] for i in swept)) for n, job in enumerate(jobs)]


# ---- reading one run dir ---------------------------------------------------------------------

def _read_json(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as e:
        return None, f"unreadable {path.name} ({e})"


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _finite(x: Any) -> float | None:
    v = _num(x)
    return v if math.isfinite(v) else None


def _curve(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    if not rows:
        return None
    steps = np.array([_num(r.get("timesteps")) for r in rows])
    returns = np.array([_num(r.get("episode_return_mean")) for r in rows])
    order = np.argsort(steps, kind="stable")
    return steps[order], returns[order]


def env_label(config: dict[str, Any]) -> str:
    """``<env option> <N>-<K>``, e.g. ``interest_evolution 10-2`` (the option name tells the
    tutorial LTS from the plain one)."""
    env = config.get("env") or {}
    name = (config.get("choices") or {}).get("env") or env.get("name", "?")
    return f"{name} {env.get('num_candidates', '?')}-{env.get('slate_size', '?')}"


def algo_label(config: dict[str, Any]) -> str:
    """The chosen algo option (e.g. ``lin_ucb``), else ``algo.name``."""
    return str((config.get("choices") or {}).get("algo") or (config.get("algo") or {}).get("name", "?"))


def _status_text(status: str, run: dict | None) -> str:
    if status == "failed":
        error = str((run or {}).get("error") or "no error recorded").strip().splitlines()
        line = error[-1] if error else "no error recorded"
        return f"failed ({line[:200]})"
    return {"running": "running (or killed)", "unknown": "status unknown", "completed": "completed"}.get(status, status)


def load_run(path: Path, name: str) -> list[RunRecord]:
    """The records of one run dir (a sweep dir gives one per trial and seed)."""
    if not (path / CONFIG_FILE).is_file():
        return [_unstarted_job(path, name)]
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        return [RunRecord(name, path, "missing", problem=f"unreadable {CONFIG_FILE} ({e})")]
    if (config.get("tune") or {}).get("name", "none") != "none":
        return load_sweep(path, name, config)
    return [_load_plain_run(path, name, config)]


def _unstarted_job(path: Path, name: str) -> RunRecord:
    """A job dir without config.yaml: the job failed before its run began (a config error, say)
    or is just starting. Hydra's own ``.hydra/`` files still tell its env, algorithm and seed."""
    present = sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) if path.is_dir() else []
    what = f"dir holds only {', '.join(present[:5])}" if present else "empty dir"
    logs = [p for p in path.glob("*.log") if p.is_file() and p.stat().st_size]
    last = [ln for ln in logs[0].read_text(errors="replace").splitlines() if ln.strip()][-1:] if logs else []
    rec = RunRecord(name, path, "missing", problem=f"no {CONFIG_FILE}: failed before training began or still "
                    f"starting ({what}{'; log: ' + last[0].strip()[:200] if last else ''})")
    try:  # the unresolved config and Hydra's choices (no config: not used to tell configurations apart)
        cfg = yaml.safe_load((path / ".hydra" / "config.yaml").read_text()) or {}
        runtime = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]
        guess = {"env": cfg.get("env") or {}, "algo": cfg.get("algo") or {}, "choices": runtime["choices"] or {}}
        logged = _logged_sizes(cfg, runtime.get("cwd"))
        if logged is not None:
            guess["env"] = {**guess["env"], **logged}
        rec.env, rec.algo, rec.seed = env_label(guess), algo_label(guess), cfg.get("seed")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError):
        # env=logged with unreadable data: its sizes, hence its section, are unknown
        rec.env = rec.algo = None
    return rec


def _logged_sizes(cfg: dict[str, Any], cwd: str | None) -> dict[str, int] | None:
    """``env=logged`` (an unresolved config): N and K from the metadata of its ``offline.path``, read
    relative to the job's launch dir as the run would have (None for other envs). Raises OSError or
    ValueError when the data cannot be read."""
    from recsys_exp.envs import logged

    if (cfg.get("env") or {}).get("name") != logged.NAME:
        return None
    data = Path((cfg.get("offline") or {}).get("path") or "")
    meta = logged.logged_meta(str(data if data.is_absolute() else Path(cwd or ".") / data))
    return {"num_candidates": meta["num_candidates"], "slate_size": meta["slate_size"]}


def _load_plain_run(path: Path, name: str, config: dict[str, Any]) -> RunRecord:
    from recsys_exp.runner.train import read_metrics

    run, run_err = _read_json(path / RUN_FILE)
    summary, summary_err = _read_json(path / SUMMARY_FILE)
    status = str((run or {}).get("status") or "unknown")
    rec = RunRecord(name, path, status, env=env_label(config), algo=algo_label(config), seed=config.get("seed"),
                    config=config)
    try:
        rec.curve = _curve(read_metrics(path))
    except (OSError, ValueError, KeyError) as e:
        summary_err = summary_err or f"unreadable {METRICS_FILE} ({e})"
    if summary:
        rec.score = _finite(summary.get("eval_return_mean"))
        rec.off_policy = OffPolicy.from_objective(summary.get("objective"))
        rec.env_steps_per_s = _finite(summary.get("env_steps_per_s"))
        rec.wall_s = _finite(summary.get("wall_s"))
        rec.timesteps = _finite(summary.get("timesteps"))
    mode = config.get("mode", "train")
    missing = [f for f in (RUN_FILE, SUMMARY_FILE, METRICS_FILE) if not (path / f).is_file()]
    problems = [e for e in (run_err, summary_err) if e]
    if mode != "train":  # evaluate, record, serve, offline_study: no training result to compare
        rec.status, rec.env, rec.algo, rec.score = "skipped", None, None, None
        rec.problem = f"mode={mode} run, not a training run — skipped"
    elif rec.score is None:
        if summary is not None:
            problems.append(f"{SUMMARY_FILE} has no eval_return_mean")
        rec.problem = " — ".join([_status_text(status, run)] + ([f"no {', '.join(missing)}"] if missing else []) + problems)
    elif missing or problems or status != "completed":
        # The evaluation is used, but say what looks off.
        rec.problem = " — ".join([f"{_status_text(status, run)}, final evaluation used"]
                                 + ([f"no {', '.join(missing)}"] if missing else []) + problems)
    return rec


# ---- reading a sweep dir ---------------------------------------------------------------------

def read_sweep_metrics(path: Path) -> dict[tuple[str, int | None], list[dict[str, Any]]]:
    """A sweep's metrics.csv rows per (trial id, seed), by iteration (``read_metrics``: the last
    row wins per (trial, seed, iteration) after a resume)."""
    from recsys_exp.runner.train import read_metrics

    out: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for row in read_metrics(path):
        seed = _finite(row.get("seed"))
        out.setdefault((row.get("trial_id") or "", None if seed is None else int(seed)), []).append(row)
    return out


def _params_label(params: dict[str, Any]) -> str:
    # "lr=0.001 hidden_sizes=[64, 64]": the last part of each dotted key
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}" for k, v in sorted(params.items()))


def load_sweep(path: Path, name: str, config: dict[str, Any]) -> list[RunRecord]:
    """One record per (trial, seed) of a sweep dir's sweep.json; a trial's label is its id and
    parameters, its replicates are the seeds' final greedy evaluations (``eval_per_seed``)."""
    sweep, err = _read_json(path / SWEEP_FILE)
    env = env_label(config)
    if sweep is None:
        run, _ = _read_json(path / RUN_FILE)
        status = str((run or {}).get("status") or "unknown")
        return [RunRecord(name, path, status if status == "failed" else "missing", env=env,
                          problem=f"sweep {_status_text(status, run)} — {err or f'no {SWEEP_FILE}'}")]
    curves = read_sweep_metrics(path)
    best = (sweep.get("best") or {}).get("trial_id")
    objective = sweep.get("objective") or {}  # env=logged: the trials' scores are off-policy estimates
    seeds = [int(s) for s in sweep.get("seeds") or []]
    records = []
    for trial in sweep.get("trials") or []:
        tid = str(trial.get("trial_id"))
        label = f"{tid} {trial.get('label') or _params_label(trial.get('params') or {})}".strip()
        label += " (best)" if tid == best else ""
        per_seed = {int(k): _finite(v) for k, v in (trial.get("eval_per_seed") or {}).items()}
        status = TRIAL_STATUS.get(str(trial.get("status")), str(trial.get("status")).lower())
        if status == "completed" and not per_seed:
            status = "stopped"  # ASHA (or another scheduler) ended it before its final evaluation
        for seed in seeds + sorted(set(per_seed) - set(seeds)):
            rows = curves.get((tid, seed)) or (curves.get((tid, None)) if len(seeds) == 1 else None)
            rec = RunRecord(f"{name}/{tid}", path, status, env=env, algo=label, seed=seed,
                            score=per_seed.get(seed), env_steps_per_s=_finite(trial.get("env_steps_per_s")),
                            wall_s=_finite(trial.get("wall_s")), timesteps=_finite(trial.get("timesteps")),
                            curve=_curve(rows or []), config=config)
            seed_estimate = ((trial.get("off_policy") or {}).get("per_seed") or {}).get(str(seed))
            if rec.score is not None and seed_estimate is not None:
                rec.off_policy = OffPolicy.from_objective({**objective, **seed_estimate})
            if status == "stopped":
                rec.problem = f"stopped early by the scheduler after {trial.get('iterations')} iterations, no final evaluation"
            elif status == "failed":
                rec.problem = _status_text("failed", {"error": trial.get("error")})
            elif rec.score is None:
                rec.problem = f"{_status_text(status, None)} — seed {seed}: no final evaluation"
            records.append(rec)
    if not records:
        records.append(RunRecord(name, path, "missing", env=env, problem=f"{SWEEP_FILE} lists no trials"))
    return records


# ---- labels ----------------------------------------------------------------------------------

def _flatten(d: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(d, dict):
        out: dict[str, str] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(d, sort_keys=True)}


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def _short(key: str) -> str:
    for prefix in ("algo.training.", "algo."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def disambiguate(records: list[RunRecord]) -> None:
    """Make labels tell configurations apart: runs sharing an env and algorithm label whose
    configs differ in more than seed and bookkeeping (e.g. ``-m exploration.alpha=0.5,1``) get the
    differing keys appended, ``lin_ucb exploration.alpha=0.5``; same for env labels."""
    for attr, scope in (("env", lambda r: r.env), ("algo", lambda r: (r.env, r.algo))):
        groups: dict[Any, list[RunRecord]] = {}
        for r in records:
            if r.config and getattr(r, attr) is not None:
                groups.setdefault(scope(r), []).append(r)
        for members in groups.values():
            flat = [{k: v for k, v in _flatten(r.config).items() if not _ignored(k)
                     and (attr == "algo" or k.startswith("env."))} for r in members]
            keys = sorted({k for f in flat for k in f})
            varying = [k for k in keys if len({f.get(k) for f in flat}) > 1]
            if attr == "algo":
                varying = [k for k in varying if not k.startswith("env.")]  # different envs: other sections
            for r, f in zip(members, flat):
                if varying:
                    extra = " ".join(f"{_short(k)}={f.get(k, 'unset')}" for k in varying)
                    setattr(r, attr, f"{getattr(r, attr)} {extra}")


# ---- everything under some dirs ----------------------------------------------------------------

def collect(dirs: list[Path]) -> list[RunRecord]:
    """Records of every run below ``dirs`` (plus not-started jobs of their multiruns); raises
    :class:`NoRunsFound` naming a dir that holds no run at all."""
    records: list[RunRecord] = []
    seen: set[Path] = set()
    for root in map(Path, dirs):
        runs, multiruns = find_run_dirs(root)
        if not runs and not multiruns:
            raise NoRunsFound(f"{root}: no run found (no {CONFIG_FILE} or {MULTIRUN_FILE} in it or below it)")
        prefix = f"{root.resolve().name}/" if len(dirs) > 1 else ""
        for path in runs:
            if path.resolve() in seen:  # the same dir given twice (or nested in another given dir)
                continue
            seen.add(path.resolve())
            name = prefix + (path.relative_to(root).as_posix() if path != root else root.resolve().name)
            try:
                records.extend(load_run(path, name))
            except Exception as e:  # noqa: BLE001 - one odd dir must not cost the whole report
                records.append(RunRecord(name, path, "missing", problem=f"could not be read ({type(e).__name__}: {e})"))
        for mr in multiruns:
            records.extend(_not_started(mr, root, prefix))
    disambiguate(records)
    # A job that never wrote its config keeps its plain algo label; where that label was split into
    # configurations (``lin_ucb alpha=0.5``) it cannot be placed, so it is only listed as missing.
    labels = {(r.env, r.algo) for r in records if r.config}
    for r in records:
        if not r.config and r.algo is not None and (r.env, r.algo) not in labels and any(
                e == r.env and a.startswith(f"{r.algo} ") for e, a in labels):
            r.algo = None
    return records


def _not_started(multirun_dir: Path, root: Path, prefix: str) -> list[RunRecord]:
    """Jobs multirun.yaml asks for that have no ``<num>_...`` job dir."""
    started = {p.name.split("_", 1)[0] for p in multirun_dir.iterdir() if p.is_dir()}
    jobs = expected_jobs(multirun_dir)
    if not jobs or not any(str(n) in started for n, _ in jobs):
        return []  # a custom hydra.sweep.subdir: job dirs cannot be matched to job numbers
    rel = multirun_dir.relative_to(root).as_posix() if multirun_dir != root else ""
    base = prefix + (rel + "/" if rel else "")
    return [RunRecord(f"{base}job {n} ({overrides})", multirun_dir / str(n), "missing",
                      problem="not started — no job dir") for n, overrides in jobs if str(n) not in started]
