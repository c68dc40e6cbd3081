"""Tune callbacks that keep the run dir current: progress line, metrics.csv, checkpoint links."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

from ray.tune import Callback

from recsys_exp.run_dir import CHECKPOINTS_DIR, CONFIG_FILE, METRICS_FILE, RUN_FILE

# (csv column, result key) — result keys use Tune's "/" notation into the nested result dict.
METRIC_COLUMNS = (
    ("iteration", "training_iteration"),
    ("timesteps", "num_env_steps_sampled_lifetime"),
    ("episode_return_mean", "env_runners/episode_return_mean"),
    ("episode_len_mean", "env_runners/episode_len_mean"),
    ("num_episodes", "env_runners/num_episodes"),
    ("env_steps_per_s", "env_runners/num_env_steps_sampled_throughput"),
    ("time_this_iter_s", "time_this_iter_s"),
    ("time_total_s", "time_total_s"),
)


PER_SEED = ("env_runners/", "num_env_steps")  # result keys a sweep trial also reports per seed


def result_value(result: dict[str, Any], key: str) -> Any:
    """``result["a"]["b"]`` for ``key="a/b"``, also for already-flattened dicts; None if absent."""
    if key in result:
        return result[key]
    node: Any = result
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _steps_per_s(result: dict[str, Any]) -> float | None:
    steps = result_value(result, "env_runners/num_env_steps_sampled")
    secs = result_value(result, "time_this_iter_s")
    return steps / secs if steps and secs else None


class RunDirCallback(Callback):
    """Writes metrics.csv rows, prints a progress line and links checkpoints into ``checkpoints/``.

    ``stop``: the run's stop budget (``timesteps``, ``iterations``), for the progress line's ETA;
    ``unit``: what its step counts count (``env steps``, ``logged rows``).
    """

    def __init__(self, run_dir: str, progress: bool = True, seeds: list[int] | None = None,
                 stop: dict[str, Any] | None = None, unit: str = "env steps"):
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.seeds = seeds  # a sweep: one metrics row per seed of each trial
        self.stop = dict(stop or {})
        self.unit = unit

    def _rows(self, trial, result) -> list[dict[str, Any]]:
        if self.seeds is None:
            row = {col: result_value(result, key) for col, key in METRIC_COLUMNS}
            row["env_steps_per_s"] = _steps_per_s(result)
            return [{**row, "trial_id": trial.trial_id}]
        rows = []
        for seed in self.seeds:
            row = {col: result_value(result, f"seeds/{seed}/{key}" if key.startswith(PER_SEED) else key)
                   for col, key in METRIC_COLUMNS}
            sampled = result_value(result, f"seeds/{seed}/env_runners/num_env_steps_sampled")
            secs = result_value(result, "time_this_iter_s")  # the seeds of a trial share the iteration
            row["env_steps_per_s"] = sampled / secs if sampled and secs else None
            rows.append({**row, "trial_id": trial.trial_id, "seed": seed})
        return rows

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rows = self._rows(trial, result)
        path = self.run_dir / METRICS_FILE
        new = not path.exists()
        fields = [c for c, _ in METRIC_COLUMNS] + ["trial_id"] + (["seed"] if self.seeds is not None else [])
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
        row = {col: result_value(result, key) for col, key in METRIC_COLUMNS}
        row["env_steps_per_s"] = _steps_per_s(result)
        if self.progress:
            from recsys_exp.runner.console import progress_line, say

            one_trial = len(trials) == 1 and self.seeds is None
            say(progress_line(row, self.stop, trial=None if one_trial else trial.trial_id, unit=self.unit))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        ckpt = Path(checkpoint.path)
        # The resolved config and run record travel with every checkpoint (a sweep's per-seed
        # checkpoints carry their own trial config instead).
        for name in (CONFIG_FILE, RUN_FILE):
            if (self.run_dir / name).exists() and (self.seeds is None or name == RUN_FILE):
                shutil.copy2(self.run_dir / name, ckpt / name)
        links = self.run_dir / CHECKPOINTS_DIR
        links.mkdir(exist_ok=True)
        name = ckpt.name if len(trials) == 1 and self.seeds is None else f"{trial.trial_id}_{ckpt.name}"
        symlink_atomic(ckpt, links / name)
        if self.seeds is None:  # a sweep's checkpoint to continue from is best_checkpoint
            symlink_atomic(ckpt, links / "last")
        for link in links.iterdir():  # Tune deleted checkpoints beyond num_to_keep
            if link.is_symlink() and not link.exists():
                link.unlink()


def symlink_atomic(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` (relative) in one rename: readers never see it missing."""
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    # Relative links keep working when the whole run dir is moved or copied.
    tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    os.replace(tmp, link)
