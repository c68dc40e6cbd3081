"""What one Hydra job does: resolve the config, record the run, then train or evaluate.

The run record (run.json) always ends with a status: completed, failed or interrupted; a run
killed with SIGKILL stays ``running`` until ``resume=true`` completes it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recsys_exp.config.schema import GROUPS
from recsys_exp.errors import ConfigError
from recsys_exp.config.validate import is_sweep
from recsys_exp.run_dir import (
    CONFIG_FILE,
    RUN_FILE,
    atomic_write_json,
    eval_seed,
    finish_run_record,
    locate_checkpoint,
    new_run_record,
    write_config,
)

log = logging.getLogger("recsys_exp")


def _hydra_context() -> tuple[Path, list[str], dict[str, str], bool]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if k in GROUPS or k == "experiment"}
    return (Path(hc.runtime.output_dir), list(hc.overrides.task), choices, hc.mode == RunMode.MULTIRUN)


def run(cfg: DictConfig) -> float | None:
    """Entry point of a job; returns the final greedy evaluation return (the sweep objective)."""
    from recsys_exp.config.compose import resolve_run_config

    run_dir, overrides, choices, multirun = _hydra_context()
    try:
        c = resolve_run_config(cfg, overrides, choices, run_dir)
        built = build(c)
    except ConfigError as e:
        if multirun:  # let Hydra report it and go on with the other jobs
            raise
        print(f"recsys_exp: config error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        return execute(c, run_dir, overrides, built)
    except ConfigError as e:  # found while running (e.g. logged data the estimators cannot use)
        if multirun:
            raise
        print(f"recsys_exp: config error: {e}", file=sys.stderr)
        sys.exit(2)


def build(c: dict[str, Any]):
    """For training: ``(algo class, AlgorithmConfig, checkpoint to start from)``; RLlib's own
    checks of the algo keys run here, before anything is written or Ray starts."""
    if c["mode"] != "train":
        return None
    from recsys_exp.runner.build import build_algorithm_config

    if is_sweep(c):
        from recsys_exp.sweep.run import check_with_rllib

        check_with_rllib(c)
        return None

    checkpoint = str(locate_checkpoint(c["restore"])[0]) if c["restore"] else None
    return (*build_algorithm_config(c, checkpoint), checkpoint)


def execute(c: dict[str, Any], run_dir: Path, overrides: list[str], built=None) -> float | None:
    """Run a validated config in ``run_dir``; always leaves run.json with a final status."""
    import json

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
    try:
        if c["mode"] == "train" and is_sweep(c):
            from recsys_exp.sweep.run import run_sweep

            summary = run_sweep(c, run_dir)
            result = summary["eval_return_mean"]
            log.info("sweep summary: %s", summary)
        elif c["mode"] == "train":
            from recsys_exp.runner.train import train

            summary = train(c, run_dir, *(built or build(c)))
            result = summary["eval_return_mean"]
            log.info("summary: %s", summary)
        elif c["mode"] == "record":
            result = record_data(c, run_dir)
        elif c["mode"] == "serve":
            from recsys_exp.serve.deployment import run_serve

            run_serve(c, run_dir)
            result = None
        elif c["mode"] == "offline_study":
            from recsys_exp.offline.study import run_study

            run_study(c, run_dir)
            result = None
        else:
            result = evaluate(c, run_dir)
    except KeyboardInterrupt:
        finish_run_record(run_dir, record, "interrupted")
        raise
    except BaseException as e:
        finish_run_record(run_dir, record, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        _shutdown_ray()
    finish_run_record(run_dir, record, "completed")
    return result


def evaluate(c: dict[str, Any], run_dir: Path) -> float:
    """``mode=evaluate``: greedy episodes of the restored checkpoint (evaluation.json) and, with
    ``offline.path``, off-policy estimates from that logged data (ope.json)."""
    from recsys_exp.runner.evaluate import evaluate_checkpoint

    checkpoint, _ = locate_checkpoint(c["restore"])
    if c["offline"]["path"]:  # the cheaper, more likely to fail part first
        from recsys_exp.offline.evaluation import off_policy_evaluation

        ope = off_policy_evaluation(c, checkpoint)
        atomic_write_json(run_dir / "ope.json", ope)
        sim = ope["simulated"]
        print(f"ope (gamma {ope['gamma']}): simulated {sim['value']:.2f} (95% CI {sim['ci95'][0]:.2f}.."
              f"{sim['ci95'][1]:.2f})", flush=True)
        for name, est in ope["estimates"].items():
            print(f"ope {name}: {est['value']:.2f} (95% CI {est['ci95'][0]:.2f}..{est['ci95'][1]:.2f})", flush=True)
    ev = evaluate_checkpoint(c, checkpoint, c["eval"]["episodes"], c["eval"]["num_envs"], eval_seed(c["seed"]))
    atomic_write_json(run_dir / "evaluation.json", ev)
    print(f"evaluation: return {ev['episode_return_mean']:.2f} (95% CI {ev['ci95'][0]:.2f}..{ev['ci95'][1]:.2f}) "
          f"over {ev['episodes']} episodes -> {run_dir / 'evaluation.json'}", flush=True)
    return ev["episode_return_mean"]


def record_data(c: dict[str, Any], run_dir: Path) -> None:
    """``mode=record``: log the behaviour policy's steps as Parquet (offline.path or <run dir>/data)."""
    from recsys_exp.offline.recorder import record as record_steps

    checkpoint = str(locate_checkpoint(c["restore"])[0]) if c["restore"] else None
    out = Path(c["offline"]["path"]).expanduser() if c["offline"]["path"] else run_dir / "data"
    summary = record_steps(c, out, checkpoint)
    print(f"recorded {summary['rows']} steps in {summary['episodes']} sessions ({summary['rows_per_s']:.0f} rows/s) "
          f"-> {out}", flush=True)
    return None


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
