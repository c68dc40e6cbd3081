"""End-to-end runs of the real CLI (Hydra -> RLlib -> Tune -> W&B offline) with tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ["+experiment=quick", "algo=ppo", "algo.training.train_batch_size_per_learner=500",
        "algo.training.minibatch_size=100", "algo.training.num_epochs=1", "eval.episodes=8", "eval.num_envs=8"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true", RAY_USAGE_STATS_ENABLED="0")
    env.pop("WANDB_MODE", None)  # the run's logger.mode decides
    return env


def run_cli(*overrides: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "recsys_exp", *overrides], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}")
    return proc


def module_state(checkpoint: Path) -> dict:
    import pickle

    path = checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy" / "module_state.pkl"
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A two-iteration PPO run with W&B offline."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    run_cli(*TINY, "stop.timesteps=1000", "logger.mode=offline", "checkpoint.frequency=1",
            f"hydra.run.dir={run_dir}")
    return run_dir


def test_run_dir_contents(trained_run: Path):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["algo"]["name"] == "ppo" and config["env"]["name"] == "interest_evolution"
    assert config["choices"]["experiment"] == "quick" and config["choices"]["model"] == "small"
    assert config["algo"]["training"]["train_batch_size_per_learner"] == 500

    record = json.loads((trained_run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["end_time"] and record["start_time"]
    assert record["packages"]["ray"] == "2.58.0"
    assert record["seeds"]["seed"] == 0
    assert "+experiment=quick" in record["overrides"]
    assert "git_commit" in record

    lines = (trained_run / "metrics.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    assert {"iteration", "timesteps", "episode_return_mean", "env_steps_per_s"} <= set(header)
    assert len(lines) - 1 == 2  # 2 iterations of 500 steps reach stop.timesteps=1000

    summary = json.loads((trained_run / "summary.json").read_text())
    assert {"timesteps", "episode_return_mean", "eval_return_mean", "eval_ci95", "wall_s", "env_steps_per_s"} <= set(summary)
    assert summary["timesteps"] >= 1000
    low, high = summary["eval_ci95"]
    assert low <= summary["eval_return_mean"] <= high
    # Interest Evolution returns are total watch time: ~120-180 for any policy.
    assert 100 < summary["eval_return_mean"] < 220

    last = trained_run / "checkpoints" / "last"
    assert (last / "rllib_checkpoint.json").is_file()
    assert (last / "config.yaml").is_file() and (last / "run.json").is_file()
    assert len([p for p in (trained_run / "checkpoints").iterdir() if p.name.startswith("checkpoint_")]) == 2
    assert (trained_run / "learning_curve.png").stat().st_size > 1000


def test_wandb_offline_files(trained_run: Path):
    runs = list(trained_run.rglob("offline-run-*"))
    assert runs, "no W&B offline run written"
    assert any(p.suffix == ".wandb" for run in runs for p in run.iterdir())


def test_evaluate_from_run(trained_run: Path, tmp_path: Path):
    run_cli("mode=evaluate", f"restore={trained_run}", "eval.episodes=12", f"hydra.run.dir={tmp_path}")
    ev = json.loads((tmp_path / "evaluation.json").read_text())
    assert ev["episodes"] == 12
    assert ev["ci95"][0] <= ev["episode_return_mean"] <= ev["ci95"][1]
    assert ev["episode_return_std"] > 0
    assert Path(ev["checkpoint"]) == (trained_run / "checkpoints" / "last").resolve()


def test_restore_with_override_starts_from_checkpoint_weights(trained_run: Path, tmp_path: Path):
    # lr=0: the restored run cannot move its weights, so its final checkpoint must hold exactly
    # the source's weights -- which a run from fresh initial weights would not.
    run_cli(f"restore={trained_run}", "algo.training.lr=0.0", "stop.timesteps=500", f"hydra.run.dir={tmp_path}")
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["algo"]["training"]["lr"] == 0.0
    assert config["model"]["hidden_sizes"] == [64, 64]  # the saved config is the base
    assert config["restore"] == str(trained_run)
    source = module_state(trained_run / "checkpoints" / "last")
    restored = module_state(tmp_path / "checkpoints" / "last")
    assert source.keys() == restored.keys()
    for key in source:
        assert (source[key] == restored[key]).all(), key


def test_resume_after_kill(tmp_path: Path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "recsys_exp", *TINY, "stop.timesteps=4000", "checkpoint.frequency=1",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            links = run_dir / "checkpoints"
            if links.is_dir() and len([p for p in links.iterdir() if p.name.startswith("checkpoint_")]) >= 2:
                break
            assert proc.poll() is None, "run ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoints within 180 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert not (run_dir / "summary.json").exists()

    run_cli("resume=true", f"hydra.run.dir={run_dir}")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["resumed"][0]["previous_status"] == "running"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 4000 <= summary["timesteps"] < 4000 + 1000  # the same total budget, not a fresh one on top


def test_multirun_runs_jobs_and_survives_a_failed_one(tmp_path: Path):
    # Two real jobs (PPO, DQN) plus two that fail validation (slate larger than the candidate set).
    proc = run_cli("-m", "+experiment=quick", "eval.episodes=8", "eval.num_envs=8", "algo=ppo,dqn",
                   "env.slate_size=2,11", "stop.timesteps=500",
                   f"hydra.sweep.dir={tmp_path}", check=False, timeout=600)
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    assert len(jobs) == 4, proc.stderr[-3000:]
    done = {p.name: (p / "summary.json").exists() for p in jobs}
    assert sum(done.values()) == 2, done
    for name, ok in done.items():
        assert ok == ("slate_size=2" in name), done
    assert proc.returncode != 0  # Hydra reports the failed jobs
