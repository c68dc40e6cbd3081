"""The run lifecycle, separate from what a run does: run dir, run record, Ray, one mode handler.

``execute(c, run_dir)`` writes ``config.yaml`` and ``run.json`` (status ``running``), calls the
handler registered for ``c["mode"]`` (:func:`register_mode`; the built-in modes live in
:mod:`recsys_exp.runner.modes`), and always leaves ``run.json`` with a final status: completed,
failed or interrupted (a run killed with SIGKILL stays ``running`` until ``resume=true``).

Ray is started by the first handler that needs it (:func:`ensure_ray`) and stopped when the
outermost run ends — unless it was already running (a notebook's or the test session's Ray, or a
cluster joined with ``ray.address``), which is left as it was.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from recsys_exp.run_dir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    atomic_write_json,
    finish_run_record,
    new_run_record,
    write_config,
)


@dataclass
class RunResult:
    """What a finished run left behind: its dir, final status, summary.json (if written), the last
    checkpoint (if any) and the handler's return value (the final greedy evaluation return of a
    training run, a multirun's objective)."""

    run_dir: Path
    status: str
    summary: dict[str, Any] | None = None
    checkpoint: Path | None = None
    result: float | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Mode:
    """A registered mode: ``run(c, run_dir, prepared) -> float | None`` does the work;
    ``prepare(c)`` (optional) runs before anything is written or Ray starts (e.g. building the RLlib
    config, whose errors are then config errors) and its result is handed to ``run``."""

    name: str
    run: Callable[[dict[str, Any], Path, Any], float | None]
    prepare: Callable[[dict[str, Any]], Any] | None = None


MODES: dict[str, Mode] = {}


def register_mode(name: str, prepare: Callable[[dict[str, Any]], Any] | None = None):
    """Decorator registering ``fn(c, run_dir, prepared)`` as the handler of ``mode=<name>``."""

    def register(fn):
        MODES[name] = Mode(name, fn, prepare)
        return fn

    return register


def prepare(c: dict[str, Any]) -> Any:
    """The mode's pre-flight step (before the run dir is written or Ray starts); None if it has none."""
    mode = MODES[c["mode"]]
    return mode.prepare(c) if mode.prepare else None


_state = {"depth": 0, "owns_ray": False, "relay_worker_output": False}


def relay_worker_output(on: bool = True) -> None:
    """Whether a Ray started by the next runs relays its workers' output to this process (Ray's
    ``log_to_driver``): on for the CLI (into the run's log file, or with ``-v`` onto the terminal),
    off by default (a notebook would show every worker's warnings)."""
    _state["relay_worker_output"] = on


def nesting_depth() -> int:
    """How many runs are executing in this process now (a stage of ``offline_study`` is at 2)."""
    return _state["depth"]


def execute(c: dict[str, Any], run_dir: Path, overrides: list[str] | None = None, prepared: Any = None) -> RunResult:
    """Run a validated config in ``run_dir``; always leaves run.json with a final status."""
    overrides = list(overrides or [])
    run_dir = Path(run_dir).expanduser().resolve()  # Tune's storage needs an absolute path
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path = run_dir / RUN_FILE
    if c["resume"] and record_path.exists():
        record = json.loads(record_path.read_text())
        record.setdefault("resumed", []).append({"overrides": overrides, "previous_status": record.get("status")})
        record["status"] = "running"
    else:
        record = new_run_record(c, overrides)
        write_config(run_dir / CONFIG_FILE, c)
    atomic_write_json(record_path, record)
    _state["depth"] += 1
    try:
        result = MODES[c["mode"]].run(c, run_dir, prepared)
    except KeyboardInterrupt:
        finish_run_record(run_dir, record, "interrupted")
        raise
    except BaseException as e:
        finish_run_record(run_dir, record, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            release_ray()
    finish_run_record(run_dir, record, "completed")
    return run_result(run_dir, c, result)


def run_result(run_dir: Path, c: dict[str, Any], result: float | None = None) -> RunResult:
    """The :class:`RunResult` of a run dir, read from its files."""
    record = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).exists() else {}
    summary = json.loads((run_dir / SUMMARY_FILE).read_text()) if (run_dir / SUMMARY_FILE).exists() else None
    last = run_dir / CHECKPOINTS_DIR / "last"
    return RunResult(run_dir=run_dir, status=record.get("status", "unknown"), summary=summary,
                     checkpoint=last.resolve() if last.exists() else None, result=result, config=c)


# --- Ray ---------------------------------------------------------------------------------------
def set_tracking_env(c: dict[str, Any], run_dir: Path) -> None:
    """W&B and Ray variables; set before ``ray.init`` so every worker Ray starts inherits them."""
    logger = c["logger"]
    os.environ["WANDB_MODE"] = logger["mode"]
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")  # never hang long without network
    # Console capture inside Tune's logging actor kept wandb.finish() from returning (seen here).
    os.environ.setdefault("WANDB_CONSOLE", "off")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    # Early iterations may finish no episode, so episode_return_mean can be absent from a result.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Tune saves its experiment state at most every 10 s by default: a run killed within 10 s of a
    # checkpoint would resume from iteration 1. Save it after every result (read by the driver).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")


def ensure_ray(c: dict[str, Any], run_dir: Path) -> None:
    """Make sure Ray runs: reuse a running one, else start a light local Ray (2 cores, no
    dashboard) or join ``ray.address``; registers recsys_exp's envs with Tune."""
    import ray

    from recsys_exp.envs.rllib import register_envs

    set_tracking_env(c, run_dir)
    if not ray.is_initialized():
        r = c["ray"]
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": _state["relay_worker_output"],
                                  "configure_logging": False}
        if r["address"] is None:
            kwargs.update(num_cpus=r["num_cpus"], object_store_memory=r["object_store_memory_mb"] * 1024 ** 2)
        else:
            kwargs["address"] = r["address"]
        ray.init(**kwargs)
        _state["owns_ray"] = True
    register_envs()  # after ray.init: the registry is shared with trial workers through Ray


def release_ray() -> None:
    """Stop Ray if this process's runs started it (a Ray that was running before is left alone)."""
    if _state["owns_ray"] and "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    _state["owns_ray"] = False
