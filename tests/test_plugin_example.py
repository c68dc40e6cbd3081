"""A user's own algorithm as a plugin outside the package (examples/plugin_algorithm), through the CLI.

The commands here are the documented contract (examples/plugin_algorithm/README.md): the example's
config dir on Hydra's search path, its package on PYTHONPATH (inherited by the Ray workers), then
train, ``mode=evaluate restore=<run>`` and ``restore=<run> stop.timesteps=...`` (continue).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/plugin_algorithm"
TARGET = "my_recsys_algos.plugins.ClickLogit"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE}/conf]"  # relative to the launch dir (cwd=ROOT)
# Interest Exploration: reward = clicks, driven by the document's topic and quality (observed).
COMMON = ["env=interest_exploration", "seed=0", "logger.mode=disabled", "progress=false",
          "eval.episodes=50", "eval.num_envs=50"]
TRAIN_STEPS, EPOCHS, MINIBATCHES = 6000, 4, 4  # the YAML's num_epochs, batch 1000 / minibatch 250
CONTINUE_STEPS = 2000


def cli_env(plugin_on_path: bool = True) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true", RAY_USAGE_STATS_ENABLED="0")
    env.pop("WANDB_MODE", None)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and "plugin_algorithm" not in p]
    env["PYTHONPATH"] = os.pathsep.join(([EXAMPLE] if plugin_on_path else []) + paths)
    return env


def run_cli(*overrides: str, check: bool = True, plugin_on_path: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "recsys_exp", *overrides], cwd=ROOT,
                          env=cli_env(plugin_on_path), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}")
    return proc


def module_state(run_dir: Path) -> dict:
    path = run_dir / "checkpoints" / "last" / "learner_group" / "learner" / "rl_module" / "default_policy"
    with open(path / "module_state.pkl", "rb") as f:
        return pickle.load(f)


def click_weights(run_dir: Path) -> list[float]:
    """[slot 0, slot 1, topic 0, topic 1, quality] weights of the logistic click model."""
    return [float(w) for w in module_state(run_dir)["click.weight"].reshape(-1)]


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory) -> dict[str, Path]:
    """Train the plugin, evaluate it, continue it (the CLI under test); and the random baseline on the
    same env, seed and evaluation episodes (in process: it is only the reference)."""
    import recsys_exp

    root = tmp_path_factory.mktemp("plugin")
    dirs = {name: root / name for name in ("train", "evaluate", "continue", "random")}
    run_cli(SEARCHPATH, "algo=click_logit", *COMMON, f"stop.timesteps={TRAIN_STEPS}",
            "exploration.epsilon_timesteps=3000", f"hydra.run.dir={dirs['train']}")
    run_cli("mode=evaluate", f"restore={dirs['train']}", "logger.mode=disabled", "progress=false",
            f"hydra.run.dir={dirs['evaluate']}")
    run_cli(f"restore={dirs['train']}", f"stop.timesteps={CONTINUE_STEPS}", "logger.mode=disabled", "progress=false",
            f"hydra.run.dir={dirs['continue']}")
    # Random slates learn nothing: one short iteration, then the same 50 evaluation episodes.
    recsys_exp.run(["algo=random", *COMMON, "stop.timesteps=500", "algo.training.train_batch_size_per_learner=500"],
                   run_dir=dirs["random"])
    return dirs


@pytest.mark.slow
def test_train_writes_the_run_dir(runs):
    run = runs["train"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["algo"]["_target_"] == TARGET and config["algo"]["name"] == "click_logit"
    assert config["choices"]["algo"] == "click_logit" and config["exploration"]["type"] == "epsilon_greedy"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["timesteps"] >= TRAIN_STEPS and summary["eval_episodes"] == 50
    assert (run / "checkpoints" / "last").is_dir()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_learns_what_drives_clicks(runs):
    """Its greedy evaluation beats uniform random slates on the same users (same env, seed, episodes),
    and its weights rank topic 0 above topic 1, as the env's constants do (both user types click
    topic 0 more on average: mean affinity 0.52 vs 0.28 plus quality ≈ 2.2 vs 1.2); the initial
    weights are all zero and rank nothing."""
    learned = json.loads((runs["train"] / "summary.json").read_text())
    random = json.loads((runs["random"] / "summary.json").read_text())
    assert learned["eval_ci95"][0] > random["eval_ci95"][1], (learned, random)
    assert learned["eval_return_mean"] > random["eval_return_mean"] + 5.0, (learned, random)
    _, _, topic0, topic1, _ = click_weights(runs["train"])
    assert topic0 > topic1 + 0.5


def test_evaluate_restores_the_run(runs):
    ev = json.loads((runs["evaluate"] / "evaluation.json").read_text())
    summary = json.loads((runs["train"] / "summary.json").read_text())
    assert ev["episodes"] == 50
    # The same checkpoint on the same evaluation users: the same greedy return.
    assert ev["episode_return_mean"] == pytest.approx(summary["eval_return_mean"])
    assert Path(ev["checkpoint"]).resolve() == (runs["train"] / "checkpoints" / "last").resolve()


def test_continue_starts_from_the_trained_weights(runs):
    cont, trained = runs["continue"], runs["train"]
    config = yaml.safe_load((cont / "config.yaml").read_text())
    assert config["algo"]["_target_"] == TARGET and config["restore"] == str(trained)
    updates = lambda run: int(module_state(run)["num_updates"])  # noqa: E731
    per_iteration = EPOCHS * MINIBATCHES
    assert updates(trained) == TRAIN_STEPS // 1000 * per_iteration
    assert updates(cont) == updates(trained) + CONTINUE_STEPS // 1000 * per_iteration  # counted on, not from 0
    w0, w1 = click_weights(trained), click_weights(cont)
    moved = sum((a - b) ** 2 for a, b in zip(w0, w1)) ** 0.5
    assert moved < 0.5 * sum(a ** 2 for a in w0) ** 0.5  # near the trained weights, far from the zero init
    summary = json.loads((cont / "summary.json").read_text())
    random = json.loads((runs["random"] / "summary.json").read_text())
    assert summary["eval_return_mean"] > random["eval_return_mean"] + 5.0


def test_plugin_checks_and_loader_errors(tmp_path):
    """The plugin's own checks and the loader's message run before Ray starts (exit 2, one line)."""
    base = [SEARCHPATH, "algo=click_logit", "env=interest_exploration", f"hydra.run.dir={tmp_path}"]
    bad = run_cli(*base, "algo.training.l2=-1", check=False)
    assert bad.returncode == 2 and "algo.training.l2=-1: must be >= 0" in bad.stderr
    bad = run_cli(*base, "algo.training.features=full", check=False)
    assert bad.returncode == 2 and "algo.training.features=full: env=interest_exploration" in bad.stderr
    missing = run_cli(*base, check=False, plugin_on_path=False)
    assert missing.returncode == 2 and f"algo._target_={TARGET}: cannot import it" in missing.stderr


def test_package_does_not_name_the_plugin():
    names = ("click_logit", "ClickLogit", "my_recsys_algos", "plugin_algorithm")
    hits = [f"{path}: {name}" for path in (ROOT / "recsys_exp").rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            for name in names if name in path.read_text(errors="ignore")]
    assert not hits, hits
