"""End-to-end runs with tiny budgets: the real CLI where the process is what is under test (run dir
and W&B offline files of a CLI run, kill -9 then resume, a ``-m`` multirun that survives a failed
job), and the in-process API (``recsys_exp.run`` on the session's Ray) for everything else."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import recsys_exp

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


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    links = run_dir / "checkpoints"
    return [p for p in links.iterdir() if p.name.startswith("checkpoint_")] if links.is_dir() else []


def tune_state_saved_after(run_dir: Path, paths: list[Path]) -> bool:
    """Tune's experiment state file of the run was written after every one of ``paths`` (links) appeared."""
    newest = max(p.lstat().st_mtime for p in paths)
    states = list((run_dir / "ray_results").glob("*/experiment_state-*.json"))
    return any(f.stat().st_mtime > newest for f in states)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A two-iteration PPO run of the real CLI with W&B offline (shared by every test below that
    needs a trained run); its terminal output is kept next to the run dir (terminal.out/.err)."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    proc = run_cli(*TINY, "stop.timesteps=1000", "logger.mode=offline", "checkpoint.frequency=1",
                   f"hydra.run.dir={run_dir}")
    (run_dir.parent / "terminal.out").write_text(proc.stdout)
    (run_dir.parent / "terminal.err").write_text(proc.stderr)
    return run_dir


def terminal_section(out: str, title: str) -> list[str]:
    """The indented lines after the line starting with ``title`` in the run's final summary."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


# ---- the CLI's run dir -------------------------------------------------------------------------

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
    assert summary["timesteps"] >= 1000 and summary["eval_episodes"] == 8
    low, high = summary["eval_ci95"]
    assert low <= summary["eval_return_mean"] <= high
    # That eval_return_mean is the greedy return of the last checkpoint is checked against an
    # independent evaluation in test_evaluate_restores_the_trained_policy.

    last = trained_run / "checkpoints" / "last"
    assert (last / "rllib_checkpoint.json").is_file()
    assert (last / "config.yaml").is_file() and (last / "run.json").is_file()
    assert len(checkpoint_dirs(trained_run)) == 2
    assert Path(summary["checkpoint"]) == last.resolve()
    assert (trained_run / "learning_curve.png").stat().st_size > 1000


# What other libraries print on a first run (issue 18): none of it may reach the terminal.
NOISE = ("WARNING", "Tune", "TensorBoard", "DeprecationWarning", "core_worker", "View detailed results", "╭",
         "pid=", "wandb:", "Install gputil", "None")


def test_terminal_shows_only_our_lines_and_a_summary(trained_run: Path):
    """The CLI's terminal: a header, one progress line per metrics.csv row with integer step counts
    (thousands separators, a dash for a missing return), then the summary: the greedy evaluation
    and random slates' with their CIs (summary.json), files that exist, and next commands on this
    run dir. Everything else (Ray, RLlib, Tune, W&B) is in the run's log file."""
    out = (trained_run.parent / "terminal.out").read_text()
    assert (trained_run.parent / "terminal.err").read_text() == ""
    noise = [line for line in out.splitlines() if any(marker in line for marker in NOISE)]
    assert not noise, out
    log = (trained_run / "recsys_exp.log").read_text()
    assert "View detailed results" in log and "DeprecationWarning" in log  # where they went instead

    assert out.splitlines()[0] == ("recsys_exp train: ppo on interest_evolution 10-2 (10 candidates, slates of 2), "
                                   "1,000 env steps, seed 0")
    rows = list(csv.DictReader((trained_run / "metrics.csv").read_text().splitlines()))
    progress = [" ".join(line.split()) for line in out.splitlines() if re.match(r"\[\d\d:\d\d:\d\d\] iter ", line)]
    assert len(progress) == len(rows) == 2, out
    for line, row in zip(progress, rows):
        ret = row["episode_return_mean"]
        assert f"iter {int(row['iteration'])} | env steps {int(float(row['timesteps'])):,} / 1,000 |" in line
        assert f"| return {f'{float(ret):,.2f}' if ret else '-'} |" in line and " steps/s | ETA " in line
    assert "," in f"{int(float(rows[-1]['timesteps'])):,}"  # (so a separator was checked above)

    summary = json.loads((trained_run / "summary.json").read_text())
    evaluation = terminal_section(out, "greedy evaluation, 8 episodes on the same simulated users")
    for line, numbers in zip(evaluation, [(summary["eval_return_mean"], *summary["eval_ci95"]),
                                          (summary["baselines"]["random"]["episode_return_mean"],
                                           *summary["baselines"]["random"]["ci95"])]):
        mean, low, high = (f"{x:,.2f}" for x in numbers)
        assert f" {mean}  95% CI [{low}, {high}]" in line, line
    assert evaluation[0].lstrip().startswith("this run's policy") and evaluation[1].lstrip().startswith("random")
    files = dict([part.strip() for part in line.split("  ") if part.strip()][:2]
                 for line in terminal_section(out, "files:"))
    assert list(files) == ["learning curve", "metrics", "summary", "checkpoint", "W&B (offline)", "full log"], files
    assert all(Path(path).exists() for path in files.values()), files
    assert Path(files["W&B (offline)"]).name.startswith("offline-run-")
    commands = terminal_section(out, "next:")
    assert [line.split()[0] for line in commands] == ["evaluate", "serve", "record"]
    assert all(f"restore={trained_run}" in line for line in commands)
    # (the evaluate command is run in test_evaluate_restores_the_trained_policy)


def test_wandb_offline_files(trained_run: Path):
    runs = list(trained_run.rglob("offline-run-*"))
    assert runs, "no W&B offline run written"
    assert any(p.suffix == ".wandb" for run in runs for p in run.iterdir())


# ---- in process, on the session's Ray ------------------------------------------------------------

def test_evaluate_restores_the_trained_policy(trained_run: Path, ray_session, tmp_path: Path):
    """mode=evaluate on the run dir repeats the training run's final evaluation exactly (same
    checkpoint, episodes and evaluation seed), and takes this command line's eval overrides."""
    summary = json.loads((trained_run / "summary.json").read_text())
    # the evaluate command the training run printed as its next step
    command = next(line for line in (trained_run.parent / "terminal.out").read_text().splitlines()
                   if line.startswith("  evaluate  "))
    assert shlex.split(command)[1:4] == ["python", "-m", "recsys_exp"]
    result = recsys_exp.run(shlex.split(command)[4:], run_dir=tmp_path / "same")
    assert result.status == "completed"
    ev = json.loads((tmp_path / "same" / "evaluation.json").read_text())
    assert ev["episodes"] == summary["eval_episodes"] == 8
    assert ev["episode_return_mean"] == pytest.approx(summary["eval_return_mean"], rel=1e-6)
    assert ev["ci95"] == pytest.approx(summary["eval_ci95"], rel=1e-6)
    assert result.result == ev["episode_return_mean"]
    assert Path(ev["checkpoint"]) == (trained_run / "checkpoints" / "last").resolve()

    recsys_exp.run(["mode=evaluate", f"restore={trained_run}", "eval.episodes=12"], run_dir=tmp_path / "more")
    ev = json.loads((tmp_path / "more" / "evaluation.json").read_text())
    assert ev["episodes"] == 12
    assert ev["ci95"][0] <= ev["episode_return_mean"] <= ev["ci95"][1]
    assert ev["episode_return_std"] > 0
    assert json.loads((tmp_path / "more" / "run.json").read_text())["status"] == "completed"


def test_restore_with_override_starts_from_checkpoint_weights(trained_run: Path, ray_session, tmp_path: Path):
    # lr=0: the restored run cannot move its weights, so its final checkpoint must hold exactly
    # the source's weights -- which a run from fresh initial weights would not.
    result = recsys_exp.run([f"restore={trained_run}", "algo.training.lr=0.0", "stop.timesteps=500",
                             "progress=false"], run_dir=tmp_path)
    assert result.status == "completed" and result.checkpoint == (tmp_path / "checkpoints" / "last").resolve()
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["algo"]["training"]["lr"] == 0.0
    assert config["model"]["hidden_sizes"] == [64, 64]  # the saved config is the base
    assert config["restore"] == str(trained_run)
    source = module_state(trained_run / "checkpoints" / "last")
    restored = module_state(tmp_path / "checkpoints" / "last")
    assert source.keys() == restored.keys()
    for key in source:
        assert (source[key] == restored[key]).all(), key


# Long-Term Satisfaction, 30 steps: LinUCB learns to rank by clickbait within 3000 steps
# (tests/test_algorithms.py); the random policy under the same env, seed and evaluation episodes
# is the baseline a policy that learned nothing would match.
LTS = ["env=long_term_satisfaction", "env.max_episode_steps=30", "seed=3", "eval.episodes=60", "eval.num_envs=60",
       "logger.mode=disabled", "progress=false", "checkpoint.frequency=100"]


def test_training_run_learns_beyond_random(ray_session, tmp_path: Path):
    """The summary of a training run is the evaluation of a policy that learned: LinUCB's final
    greedy return beats the random policy's on the same env, seed and evaluation episodes."""
    learned = recsys_exp.run(["algo=lin_ucb", "stop.timesteps=3000", *LTS], run_dir=tmp_path / "lin_ucb")
    random = recsys_exp.run(["algo=random", "stop.timesteps=100", "algo.training.train_batch_size_per_learner=100",
                             *LTS], run_dir=tmp_path / "random")
    assert learned.status == random.status == "completed"
    assert learned.summary["timesteps"] >= 3000 and learned.summary["eval_episodes"] == 60
    assert learned.result == learned.summary["eval_return_mean"]
    margin = learned.summary["eval_return_mean"] - random.summary["eval_return_mean"]
    assert margin > 40, (learned.summary, random.summary)
    # and its CI clears the baseline's
    assert learned.summary["eval_ci95"][0] > random.summary["eval_ci95"][1], (learned.summary, random.summary)
    # The random baseline a training run measures at its end is what algo=random's own run evaluates
    # to on the same env, seed and episodes (the summary's and the learning curve's reference line).
    baseline = learned.summary["baselines"]["random"]
    assert baseline["overrides"] == ["algo=random"] and baseline["episodes"] == 60
    assert baseline["episode_return_mean"] == pytest.approx(random.summary["eval_return_mean"], rel=1e-9)
    assert baseline["ci95"] == pytest.approx(random.summary["eval_ci95"], rel=1e-9)


# ---- processes: kill -9 and resume, multirun ----------------------------------------------------

@pytest.mark.slow
def test_resume_after_kill(ray_session, tmp_path: Path):
    """A CLI run killed with SIGKILL (driver and its Ray) stays ``running``; ``resume=true``
    (in process here) finishes the same total budget from its last checkpoint."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "recsys_exp", *TINY, "stop.timesteps=3000", "checkpoint.frequency=1",
            "progress=false", f"hydra.run.dir={run_dir}"]
    # The runner makes Tune save its experiment state (which knows the trial's checkpoints) after
    # every result, so the kill point below is one that resume can continue from.
    proc = subprocess.Popen(args, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            # Two checkpoints, and Tune's experiment state saved after the second was linked (on a
            # busy machine the driver can take two results in one step and not have saved yet).
            if len(checkpoint_dirs(run_dir)) >= 2 and tune_state_saved_after(run_dir, checkpoint_dirs(run_dir)):
                break
            assert proc.poll() is None, "run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoints within 180 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert not (run_dir / "summary.json").exists()
    killed_at = max(int(float(line.split(",")[1])) for line in
                    (run_dir / "metrics.csv").read_text().strip().splitlines()[1:])
    assert killed_at < 3000

    result = recsys_exp.run(["resume=true"], run_dir=run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert result.status == record["status"] == "completed"
    assert record["resumed"][0]["previous_status"] == "running"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 3000 <= summary["timesteps"] < 3000 + 500  # the same total budget, not a fresh one on top
    # continued from a checkpoint of the killed run, not from scratch: its first iteration was not
    # trained again. (The kill may land between the newest checkpoint link and Tune's saving of its
    # experiment state, so resume may repeat the one iteration after the checkpoint Tune knew of.)
    iterations = [int(float(line.split(",")[0])) for line in
                  (run_dir / "metrics.csv").read_text().strip().splitlines()[1:]]
    assert iterations.count(1) == 1, iterations


@pytest.mark.slow
def test_multirun_runs_jobs_survives_failed_ones_and_reports(tmp_path: Path):
    """``-m`` through the CLI, then ``python -m recsys_exp.report`` on its sweep dir. Jobs in order:
    random and greedy x slate 2 and slate 11 (which fails validation: the slate is larger than the
    candidate set), so the greedy job after a failed one must still run. Random and greedy
    (2 iterations of 200 env steps, so episodes finish and the learning curves have points) on
    interest_evolution: greedy's default score (user-doc affinity) needs its user features."""
    proc = run_cli("-m", "+experiment=quick", "eval.episodes=5", "eval.num_envs=5", "algo=random,greedy",
                   "seed=0", "env.slate_size=2,11", "stop.timesteps=400", "algo.training.train_batch_size_per_learner=200",
                   "algo.env_runners.num_envs_per_env_runner=4", "checkpoint.frequency=0", "progress=false",
                   f"hydra.sweep.dir={tmp_path}", check=False, timeout=600)
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    assert len(jobs) == 4, proc.stderr[-3000:]
    done = {p.name: (p / "summary.json").exists() for p in jobs}
    assert sum(done.values()) == 2, done
    for name, ok in done.items():
        assert ok == ("slate_size=2" in name), done
    assert done[max(name for name in done if "algo=greedy" in name and "slate_size=2" in name)]  # after failures
    assert proc.returncode != 0  # Hydra reports the failed jobs
    assert "slate_size (11) must be <= num_candidates (10)" in proc.stderr
    # Each job measured the env's baselines, random slates and the myopic policy (greedy by affinity
    # on Interest Evolution): they are the other job's own evaluation with the same seed.
    summaries = {(name.split("algo=")[1].split(",")[0], name.split("seed=")[1].split(",")[0]):
                 json.loads((tmp_path / name / "summary.json").read_text()) for name, ok in done.items() if ok}
    for seed in ("0",):
        random, greedy = summaries["random", seed], summaries["greedy", seed]
        assert greedy["baselines"]["random"]["episode_return_mean"] == pytest.approx(random["eval_return_mean"])
        assert random["baselines"]["myopic"]["episode_return_mean"] == pytest.approx(greedy["eval_return_mean"])
        assert random["baselines"]["myopic"]["overrides"] == ["algo=greedy", "algo.training.score=affinity"]

    from recsys_exp.report.__main__ import main as report_main

    assert report_main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "4 runs found: 2 completed, 0 failed, 2 missing or incomplete." in md  # the slate-11 jobs
    assert "## interest_evolution 10-2" in md
    # The results table of the slate-2 env (not the improvement matrix): the seed evaluated.
    results = md.split("## interest_evolution 10-2\n")[1].split("### Learning curves")[0]
    table = [ln for ln in results.splitlines() if ln.startswith(("| random |", "| greedy |"))]
    assert len(table) == 2 and all(ln.split(" | ")[1] == "1" for ln in table), results
    # The failed slate-11 jobs are their own env section, with no final evaluation.
    failed = md.split("## interest_evolution 10-11\n")[1].split("## ")[0]
    assert "| random | 0 of 1 |" in failed and "| greedy | 0 of 1 |" in failed
    assert (tmp_path / "report_interest_evolution_10-2_curves.png").is_file()
    assert (tmp_path / "report_interest_evolution_10-2_poi.png").is_file()
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
