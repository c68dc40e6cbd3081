"""Files of a run directory: atomic writes, the run record, and locating checkpoints.

Layout of a run dir (Hydra's output dir)::

    config.yaml        fully resolved config (with the chosen group options under ``choices``)
    run.json           run record: command, overrides, git commit, versions, seeds, times, status
    metrics.csv        one row per training iteration
    summary.json       final numbers (timesteps, returns, evaluation CI, wall time, steps/s)
    learning_curve.png
    checkpoints/       links to RLlib checkpoints (``last`` = newest); each holds config.yaml + run.json
    ray_results/       Ray Tune's experiment (trial dirs, W&B offline runs)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE, RUN_FILE, SUMMARY_FILE, METRICS_FILE = "config.yaml", "run.json", "summary.json", "metrics.csv"
CHECKPOINTS_DIR, RAY_RESULTS_DIR, EXPERIMENT_NAME = "checkpoints", "ray_results", "train"
PACKAGES = ("recsys_exp", "ray", "torch", "gymnasium", "numpy", "hydra-core", "omegaconf", "wandb", "pyarrow")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """JSON version of :func:`atomic_write_text`."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Save the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


def load_config(path: Path) -> dict[str, Any]:
    """Load a saved ``config.yaml``."""
    with open(path) as f:
        return yaml.safe_load(f)


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's behaviour."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def new_run_record(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The run record of a starting run (status ``running``)."""
    dirty = _git("status", "--porcelain")
    return {
        "command": [sys.executable, "-m", "recsys_exp", *sys.argv[1:]],
        "cwd": os.getcwd(),
        "overrides": list(overrides),
        "choices": config.get("choices", {}),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "seeds": {"seed": config["seed"], "eval_seed": eval_seed(config["seed"])},
        "mode": config["mode"],
        "restore": config.get("restore"),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "end_time": None,
        "status": "running",
        "resumed": [],
    }


def eval_seed(seed: int) -> int:
    """Seed of evaluation episodes: disjoint from the training env runners' seed + worker_index."""
    return seed + 1_000_003


def finish_run_record(run_dir: Path, record: dict[str, Any], status: str, error: str | None = None) -> None:
    """Stamp the end time and status (completed | failed | interrupted) and save run.json."""
    record["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["status"] = status
    if error:
        record["error"] = error
    atomic_write_json(Path(run_dir) / RUN_FILE, record)


def is_checkpoint_dir(path: Path) -> bool:
    """An RLlib Algorithm checkpoint has ``rllib_checkpoint.json`` at its top."""
    return (Path(path) / "rllib_checkpoint.json").is_file()


def locate_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """Resolve ``restore=`` to (checkpoint dir, dir holding its config.yaml).

    Accepts a run dir (uses ``checkpoints/last``), a sweep dir (the first seed of
    ``best_checkpoint``) or a checkpoint dir (which carries a copy of config.yaml). Raises FileNotFoundError with what was expected.
    """
    p = Path(path).expanduser().resolve()
    if is_checkpoint_dir(p):
        return p, p
    seeds = sorted((p / "best_checkpoint").glob("seed_*"), key=lambda d: int(d.name.split("_")[1]))
    if seeds and is_checkpoint_dir(seeds[0]):  # a sweep dir: the best trial's first seed
        return seeds[0].resolve(), seeds[0].resolve()
    last = p / CHECKPOINTS_DIR / "last"
    if (p / CONFIG_FILE).is_file() and is_checkpoint_dir(last):
        return last.resolve(), p
    raise FileNotFoundError(f"restore={path}: expected a run dir with {CONFIG_FILE} and "
                            f"{CHECKPOINTS_DIR}/last, or an RLlib checkpoint dir (with rllib_checkpoint.json)")
