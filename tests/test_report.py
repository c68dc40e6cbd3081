"""``python -m recsys_exp.report``: exact statistics on synthetic run dirs, a sweep dir, the CLI's
errors, and one real tiny multirun of the training CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import mannwhitneyu, trim_mean

from recsys_exp.report import make_report, stats, summarize
from recsys_exp.report.__main__ import main as report_main
from recsys_exp.report.collect import collect, find_run_dirs

ROOT = Path(__file__).resolve().parents[1]
HEADER = "iteration,timesteps,episode_return_mean,episode_len_mean,num_episodes,env_steps_per_s,time_this_iter_s,time_total_s,trial_id"


# ---- statistics ------------------------------------------------------------------------------

def test_iqm_exact():
    assert stats.iqm([1, 2, 3, 4, 100]) == 3.0           # n=5: one cut at each end -> mean(2, 3, 4)
    assert stats.iqm(np.arange(1, 9)) == 4.5              # n=8: two cut at each end -> mean(3, 4, 5, 6)
    assert stats.iqm([5.0, 7.0, 9.0]) == 7.0              # n<4: nothing to cut
    # all runs of all tasks pooled: [1, 2, 3, 4, 10, 20, 30, 40] -> mean(3, 4, 10, 20)
    assert stats.iqm([[1, 2, 3, 4], [10, 20, 30, 40]]) == 9.25
    x = np.random.default_rng(3).normal(size=(7, 3))      # rliable's (runs, tasks) matrix
    assert stats.iqm(x) == pytest.approx(trim_mean(x, 0.25, axis=None))


def test_mean_is_mean_of_task_means():
    assert stats.aggregate_mean([1, 2, 3, 4, 100]) == 22.0
    assert stats.aggregate_mean([[1, 2], [10, 20, 30]]) == 10.75  # (1.5 + 20) / 2


def test_probability_of_improvement_exact():
    assert stats.probability_of_improvement([160, 161, 162, 163, 164], [149, 150, 151, 152, 300]) == 0.8
    assert stats.probability_of_improvement([3] * 5, [1, 2, 3, 4, 10]) == 0.5  # ties count one half
    assert stats.probability_of_improvement([1, 2], [1, 2]) == 0.5
    # per task, then averaged over tasks: (1.0 + 0.5 / 4) / 2
    assert stats.probability_of_improvement([[5, 6], [0, 1]], [[1, 2], [1, 2]]) == 0.5625
    rng = np.random.default_rng(0)
    for _ in range(20):  # Mann-Whitney U / (n m), many ties
        x, y = rng.integers(0, 5, rng.integers(1, 9)), rng.integers(0, 5, rng.integers(1, 9))
        u = mannwhitneyu(x, y, alternative="greater").statistic
        assert stats.probability_of_improvement(x, y) == pytest.approx(u / (len(x) * len(y)))


def test_bootstrap_ci_contains_estimate_reproducible_and_shrinks():
    rng = np.random.default_rng(1)
    few, many = rng.normal(10, 2, 5), rng.normal(10, 2, 50)
    for statistic, point in (("iqm", stats.iqm), ("mean", stats.aggregate_mean)):
        lo, hi = stats.stratified_bootstrap_ci(few, statistic, seed=0)
        assert lo <= point(few) <= hi
        assert (lo, hi) == stats.stratified_bootstrap_ci(few, statistic, seed=0)
        lo2, hi2 = stats.stratified_bootstrap_ci(many, statistic, seed=0)
        assert lo2 <= point(many) <= hi2 and hi2 - lo2 < hi - lo
    assert stats.stratified_bootstrap_ci([4.0], "iqm") == (4.0, 4.0)


def test_bootstrap_is_stratified_by_task():
    # Resampling within each task keeps 3 runs of each: the mean of task means is always 50;
    # pooling the tasks would give resamples between 0 and 100.
    assert stats.stratified_bootstrap_ci([[0, 0, 0], [100, 100, 100]], "mean") == (50.0, 50.0)
    lo, hi = stats.poi_ci([160, 161, 162, 163, 164], [149, 150, 151, 152, 300], seed=0)
    assert lo <= 0.8 <= hi and 0 <= lo and hi <= 1


def test_curve_band():
    band = stats.curve_band([([0, 100, 200], [0, 10, 20]), ([0, 200], [0, 40]), ([0, 100], [np.nan, 60])])
    assert band["steps"].tolist() == [0, 100, 200]
    assert band["mean"].tolist() == [0, 30, 30]   # step 100: (10 + 20 + 60) / 3; NaN point dropped
    assert band["n"].tolist() == [2, 3, 2]        # the third seed's curve is the single point (100, 50)
    assert (band["low"] <= band["mean"]).all() and (band["mean"] <= band["high"]).all()
    # a few steps of overshoot are the same point
    assert stats.curve_band([([400], [1.0]), ([401], [3.0])])["mean"].tolist() == [2.0]
    assert len(stats.curve_band([([1, 2], [np.nan, np.nan])])["steps"]) == 0


# ---- synthetic run dirs ------------------------------------------------------------------------

def write_config(d: Path, env: str, algo: str, seed: int, tune: str = "none", **algo_extra) -> None:
    d.mkdir(parents=True, exist_ok=True)
    config = {"env": {"name": env, "num_candidates": 10, "slate_size": 2, "resample_documents": True},
              "algo": {"name": algo, "training": {"lr": 0.001}, **algo_extra},
              "tune": {"name": tune}, "seed": seed, "mode": "train", "logger": {"mode": "disabled"},
              "stop": {"timesteps": 3000}, "choices": {"algo": algo, "env": env, "tune": tune}}
    (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def write_run(d: Path, env: str, algo: str, seed: int, score: float | None, status: str = "completed",
              error: str | None = None, run_json: bool = True) -> None:
    """A run dir as the runner writes it; metrics reach the final score at 3000 steps."""
    write_config(d, env, algo, seed)
    if run_json:
        (d / "run.json").write_text(json.dumps({"status": status, **({"error": error} if error else {})}))
    if score is not None:
        (d / "summary.json").write_text(json.dumps({
            "timesteps": 3000, "episode_return_mean": score, "eval_return_mean": score,
            "eval_ci95": [score - 1, score + 1], "eval_episodes": 10, "wall_s": 10.0 + seed,
            "env_steps_per_s": 1000.0 * (seed + 1), "iterations": 3, "checkpoint": None}))
    final = 100.0 if score is None else score  # a failed run got somewhere first
    rows = [f"1,1000.0,,,0,1000.0,1.0,1.0,t{seed}",                         # no episode finished yet
            f"2,2000.0,{0.5 * final},50,4,1000.0,1.0,2.0,t{seed}",            # replaced after the resume:
            f"2,2000.0,{0.75 * final},50,4,1000.0,1.0,2.0,t{seed}"]           # the last row wins
    if score is not None:
        rows.append(f"3,3000.0,{final},50,4,1000.0,1.0,3.0,t{seed}")
    (d / "metrics.csv").write_text("\n".join([HEADER, *rows]) + "\n")


# Hand-picked final returns per (env, algo), seeds 0..4; None = no final evaluation.
SCORES = {
    ("interest_evolution", "random"): [150, 152, 149, 151, 300],   # mean 180.4, IQM 151
    ("interest_evolution", "greedy"): [160, 161, 162, 163, 164],   # mean 162, IQM 162
    ("interest_evolution", "slateq"): [170, 100, 171, 172, None],  # seed 4 failed: mean 153.25, IQM 170.5
    ("long_term_satisfaction", "random"): [1, 2, 3, 4, 10],        # mean 4, IQM 3
    ("long_term_satisfaction", "greedy"): [3, 3, 3, 3, 3],         # mean 3, IQM 3
    ("long_term_satisfaction", "slateq"): [10, 11, None, 13, None],  # seed 2: no run.json; seed 4: not started
}
ALGOS, ENVS = ("random", "greedy", "slateq"), ("interest_evolution", "long_term_satisfaction")


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """A Hydra multirun dir of 2 envs x 3 algos x 5 seeds with one failed run, one run without
    run.json and one job never started (no job dir)."""
    mr = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    mr.mkdir(parents=True)
    (mr / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": ["algo=random,greedy,slateq", "env=interest_evolution,long_term_satisfaction",
                               "seed=0,1,2,3,4", "logger.mode=disabled"]}}}))
    num = 0
    for algo in ALGOS:
        for env in ENVS:
            for seed in range(5):
                d = mr / f"{num}_algo={algo},env={env},seed={seed}"
                num += 1
                if (env, algo, seed) == ("interest_evolution", "slateq", 4):
                    write_run(d, env, algo, seed, None, status="failed",
                              error="Traceback ...\nRuntimeError: training failed: boom\n")
                elif (env, algo, seed) == ("long_term_satisfaction", "slateq", 2):
                    write_run(d, env, algo, seed, None, run_json=False)
                elif (env, algo, seed) == ("long_term_satisfaction", "slateq", 4):
                    continue  # job 29: Hydra never got to it
                else:
                    write_run(d, env, algo, seed, SCORES[(env, algo)][seed])
    return mr


def test_collect_finds_every_run(multirun: Path, tmp_path: Path):
    records = collect([multirun])
    assert len(records) == 30
    assert sorted({r.env for r in records} - {None}) == ["interest_evolution 10-2", "long_term_satisfaction 10-2"]
    assert sorted({r.algo for r in records} - {None}) == ["greedy", "random", "slateq"]
    outcomes = [r.outcome for r in records]
    assert (outcomes.count("completed"), outcomes.count("failed"), outcomes.count("missing")) == (27, 1, 2)
    # a parent dir at any depth, and a plain run dir, work too
    assert len(collect([tmp_path])) == 30
    assert len(find_run_dirs(tmp_path)[0]) == 29
    one = collect([next(multirun.glob("0_*"))])
    assert len(one) == 1 and one[0].score == 150


def test_exact_statistics(multirun: Path):
    report = summarize(collect([multirun]), [multirun], reps=2000)
    iev, lts = report.sections
    assert iev.env == "interest_evolution 10-2" and lts.env == "long_term_satisfaction 10-2"
    rows = {a.label: a for a in iev.rows}
    assert [a.label for a in iev.rows] == ["slateq", "greedy", "random"]  # by IQM
    assert (rows["random"].mean, rows["random"].iqm) == (pytest.approx(180.4), 151.0)
    assert (rows["greedy"].mean, rows["greedy"].iqm) == (162.0, 162.0)
    assert (rows["slateq"].mean, rows["slateq"].iqm) == (153.25, 170.5)
    assert (rows["slateq"].runs, rows["slateq"].total) == (4, 5)
    assert rows["greedy"].env_steps_per_s == 3000.0 and rows["greedy"].wall_s == 12.0
    for a in iev.rows:
        assert a.iqm_ci[0] <= a.iqm <= a.iqm_ci[1] and a.mean_ci[0] <= a.mean <= a.mean_ci[1]
    assert iev.poi[("greedy", "random")][0] == 0.8
    assert iev.poi[("slateq", "greedy")][0] == 0.75
    assert iev.poi[("slateq", "random")][0] == 0.6
    assert iev.poi[("random", "slateq")][0] == 0.4
    lrows = {a.label: a for a in lts.rows}
    assert [a.label for a in lts.rows] == ["slateq", "greedy", "random"]  # IQM tie 3 = 3: by name
    assert (lrows["random"].mean, lrows["random"].iqm) == (4.0, 3.0)
    assert lrows["slateq"].mean == pytest.approx(34 / 3) and lrows["slateq"].runs == 3
    assert lts.poi[("greedy", "random")][0] == 0.5 and lts.poi[("slateq", "greedy")][0] == 1.0
    # curves: the failed seed counts up to where it got (2000 steps, its resumed row)
    curve = iev.curves["slateq"]
    assert curve["steps"].tolist() == [2000, 3000]
    assert curve["n"].tolist() == [5, 4]
    assert curve["mean"][1] == pytest.approx(153.25)
    assert curve["mean"][0] == pytest.approx(0.75 * (170 + 100 + 171 + 172 + 100) / 5)
    assert report.counts == {"found": 30, "completed": 27, "failed": 1, "stopped early": 0, "skipped": 0, "missing": 2}


def test_report_files(multirun: Path, tmp_path: Path):
    out = tmp_path / "out"
    assert report_main([str(multirun), "--out", str(out), "--reps", "2000"]) == 0
    md = (out / "report.md").read_text()
    assert "30 runs found: 27 completed, 1 failed, 2 missing or incomplete." in md
    assert "## interest_evolution 10-2" in md and "## long_term_satisfaction 10-2" in md
    assert "| slateq | 4 of 5 | 153.25 | 170.50 | [" in md
    assert "| greedy | 5 | 162.00 | 162.00 | [" in md and "| 3,000 | 12.0 s |" in md
    assert "| random | 5 | 180.40 | 151.00 | [" in md
    assert "| slateq | 3 of 4 | 11.33 | 11.33 | [" in md  # the job never started has no env or algo yet
    # P(greedy > slateq), P(greedy > random) in the IEv matrix (columns slateq, greedy, random)
    assert re.search(r"^\| greedy \| 0\.25 \[[^|]*\] \| — \| 0\.80 \[", md.split("## long_term")[0], re.M)
    missing = md.split("## Missing, failed or incomplete runs")[1]
    assert ("- 24_algo=slateq,env=interest_evolution,seed=4: failed (RuntimeError: training failed: boom) "
            "— no summary.json") in missing
    assert "- 27_algo=slateq,env=long_term_satisfaction,seed=2: status unknown — no run.json, summary.json" in missing
    assert "job 29 (algo=slateq env=long_term_satisfaction seed=4): not started — no job dir" in missing
    for env in ("interest_evolution_10-2", "long_term_satisfaction_10-2"):
        for kind in ("curves", "poi"):
            png = out / f"report_{env}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({png.name})" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<td>153.25</td>" in html
    # reproducible: the same runs give the same statistics and plots
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    paths = make_report([multirun], out, reps=2000)
    assert {p.name: p.read_bytes() for p in paths["png"]} == first
    assert (out / "report.md").read_text().split("\n", 4)[4] == md.split("\n", 4)[4]  # all but the date


def test_configurations_of_one_algorithm_are_told_apart(tmp_path: Path):
    for alpha in (0.5, 1.0):
        for seed in (0, 1):
            d = tmp_path / f"a{alpha}_s{seed}"
            write_run(d, "interest_evolution", "lin_ucb", seed, 100 + alpha + seed)
            c = yaml.safe_load((d / "config.yaml").read_text())
            c["exploration"] = {"alpha": alpha}
            c["logger"]["mode"] = ["offline", "disabled"][seed]  # bookkeeping: not a configuration
            (d / "config.yaml").write_text(yaml.safe_dump(c))
    assert sorted({r.algo for r in collect([tmp_path])}) == ["lin_ucb exploration.alpha=0.5",
                                                              "lin_ucb exploration.alpha=1.0"]


def test_odd_run_dirs_are_named_not_fatal(tmp_path: Path):
    write_run(tmp_path / "ok", "interest_evolution", "random", 0, 150.0)
    write_run(tmp_path / "eval", "interest_evolution", "random", 1, None)
    c = yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())
    (tmp_path / "eval" / "config.yaml").write_text(yaml.safe_dump({**c, "mode": "evaluate"}))
    write_run(tmp_path / "broken", "interest_evolution", "random", 2, 151.0)
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    report = summarize(collect([tmp_path]), [tmp_path])
    assert report.counts == {"found": 3, "completed": 1, "failed": 0, "stopped early": 0, "skipped": 1, "missing": 1}
    assert [(a.label, a.runs, a.total) for a in report.sections[0].rows] == [("random", 1, 2)]
    problems = dict(report.problems)
    assert problems["eval"] == "mode=evaluate run, not a training run — skipped"
    assert problems["broken"].startswith("completed — unreadable summary.json (")


# ---- a sweep dir -------------------------------------------------------------------------------

@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A sweep dir: 4 seeds per trial; one trial stopped early by ASHA, one errored."""
    d = tmp_path / "sweep"
    write_config(d, "interest_evolution", "slateq", 0, tune="slateq_asha")
    (d / "run.json").write_text(json.dumps({"status": "completed"}))
    trials = [
        {"trial_id": "t_00000", "params": {"algo.training.lr": 0.001, "model.hidden_sizes": [64, 64]},
         "status": "TERMINATED", "iterations": 3, "timesteps": 3000, "objective": 160.0,
         "eval_per_seed": {"0": 150.0, "1": 152.0, "2": 154.0, "3": 190.0}, "env_steps_per_s": 1234.0,
         "wall_s": 50.0, "checkpoint": None},
        {"trial_id": "t_00001", "params": {"algo.training.lr": 0.0003, "model.hidden_sizes": [256, 256]},
         "label": "lr=0.0003 hidden=256", "status": "TERMINATED", "iterations": 3, "timesteps": 3000,
         "objective": 150.0, "eval_per_seed": {"0": 140.0, "1": 141.0, "2": 155.0, "3": 142.0},
         "env_steps_per_s": 1000.0, "wall_s": 90.0, "checkpoint": None},
        {"trial_id": "t_00002", "params": {"algo.training.lr": 0.003, "model.hidden_sizes": [64, 64]},
         "status": "TERMINATED", "iterations": 2, "timesteps": 2000, "objective": 120.0,
         "eval_per_seed": None, "env_steps_per_s": 1100.0, "wall_s": 20.0, "checkpoint": None},
        {"trial_id": "t_00003", "params": {"algo.training.lr": 0.0001, "model.hidden_sizes": [64, 64]},
         "status": "ERROR", "iterations": 1, "timesteps": 1000, "objective": None, "eval_per_seed": {},
         "env_steps_per_s": None, "wall_s": 5.0, "checkpoint": None, "error": "ValueError: nan loss"},
    ]
    (d / "sweep.json").write_text(json.dumps({
        "metric": "env_runners/episode_return_mean", "mode": "max", "seeds": [0, 1, 2, 3], "trials": trials,
        "best": {"trial_id": "t_00000", "params": trials[0]["params"], "objective": 160.0}}))
    rows = [HEADER + ",seed"]
    for tid, iters, base in (("t_00000", 3, 100), ("t_00001", 3, 90), ("t_00002", 2, 80), ("t_00003", 1, 70)):
        for seed in range(4):
            rows += [f"{i},{1000 * i}.0,{base + 10 * i + seed},50,4,1000.0,1.0,{i}.0,{tid},{seed}"
                     for i in range(1, iters + 1)]
    (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    return d


def test_sweep_report(sweep_dir: Path):
    report = summarize(collect([sweep_dir]), [sweep_dir], reps=2000)
    (section,) = report.sections
    rows = {a.label: a for a in section.rows}
    best, other = "t_00000 lr=0.001 hidden_sizes=[64, 64] (best)", "t_00001 lr=0.0003 hidden=256"
    assert [a.label for a in section.rows][:2] == [best, other]
    assert (rows[best].mean, rows[best].iqm, rows[best].runs) == (161.5, 153.0, 4)
    assert (rows[other].mean, rows[other].iqm) == (144.5, 141.5)
    assert rows[best].env_steps_per_s == 1234.0 and rows[best].wall_s == 50.0
    assert section.poi[(best, other)][0] == 0.8125  # 13 of 16 pairs
    stopped = "t_00002 lr=0.003 hidden_sizes=[64, 64]"
    assert rows[stopped].runs == 0 and stopped in section.curves  # only in the learning curves
    assert section.curves[stopped]["steps"].tolist() == [1000, 2000]
    assert section.curves[stopped]["mean"].tolist() == [91.5, 101.5]  # 80 + 10 i + mean(seeds 0..3)
    assert report.counts == {"found": 16, "completed": 8, "failed": 4, "stopped early": 4, "skipped": 0, "missing": 0}

    paths = make_report([sweep_dir], reps=2000)
    md = paths["md"].read_text()
    assert f"| {best} | 4 | 161.50 | 153.00 | [" in md and "| 1,234 | 50.0 s |" in md
    assert "- sweep/t_00002: stopped early by the scheduler after 2 iterations, no final evaluation" in md
    assert "- sweep/t_00003: failed (ValueError: nan loss)" in md
    assert md.count("sweep/t_00002:") == 1  # one line per trial, not per seed
    assert "16 runs found: 8 completed, 4 failed, 0 missing or incomplete, 4 stopped early." in md
    assert (sweep_dir / "report_interest_evolution_10-2_curves.png").is_file()


def test_sweep_without_sweep_json(sweep_dir: Path):
    (sweep_dir / "sweep.json").unlink()
    (sweep_dir / "run.json").write_text(json.dumps({"status": "running"}))
    report = summarize(collect([sweep_dir]), [sweep_dir])
    assert report.problems == [("sweep", "sweep running (or killed) — no sweep.json")]


# ---- command line ------------------------------------------------------------------------------

def run_report_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "recsys_exp.report", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_dir(tmp_path: Path):
    missing = tmp_path / "no_such_dir"
    proc = run_report_cli(str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"python -m recsys_exp.report: error: {missing}: no such directory"]
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert report_main([str(empty)]) == 2
    assert not (empty / "report.md").exists()


def test_cli_bad_dir_in_process(tmp_path: Path, capsys):
    (tmp_path / "f.txt").write_text("x")
    assert report_main([str(tmp_path / "f.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f.txt: not a directory" in err[0]


# ---- real runs ---------------------------------------------------------------------------------

# The report on real training runs (a -m multirun through the CLI, failed jobs included) is tested in
# tests/test_runner.py::test_multirun_runs_jobs_survives_failed_ones_and_reports.


# ---- env=logged runs: off-policy scores ----------------------------------------------------------

def test_low_ess_threshold():
    from recsys_exp.report import low_ess
    from recsys_exp.report.collect import OffPolicy

    assert low_ess(OffPolicy("ips", 100, 9.9)) and not low_ess(OffPolicy("ips", 100, 10.0))       # below 10
    assert low_ess(OffPolicy("ips", 2000, 19.9)) and not low_ess(OffPolicy("ips", 2000, 20.0))    # below 1% of n
    assert low_ess(OffPolicy("dm", 9, None)) and not low_ess(OffPolicy("dm", 10, None))  # dm: every session once


def write_logged_run(d: Path, algo: str, seed: int, value: float, ess: float | None, sessions: int,
                     estimator: str = "snips") -> None:
    """A finished env=logged training run: summary.json's objective is an off-policy estimate."""
    write_run(d, "logged", algo, seed, value)
    config = yaml.safe_load((d / "config.yaml").read_text())
    config["env"]["num_candidates"] = 3  # as the README's sample log (N and K come from the data)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "metrics.csv").write_text(HEADER + f"\n1,2560.0,,,,,1.0,1.0,t{seed}\n")  # no episodes: no simulator
    summary = json.loads((d / "summary.json").read_text())
    summary["objective"] = {"kind": "off_policy", "estimator": estimator, "value": value,
                            "ci95": [value - 0.1, value + 0.1], "ess": ess, "n_episodes": sessions,
                            "held_out_fraction": 0.2}
    (d / "summary.json").write_text(json.dumps(summary))


def test_report_on_logged_runs_names_the_estimator_and_flags_low_ess(tmp_path: Path):
    mr = tmp_path / "mr"
    # (algo, seed): (estimate, ESS, held-out sessions); bc seed 2 has ESS 3 (< 10), marwil seed 1
    # ESS 15 of 2,000 sessions (< 1%); the others are well supported.
    runs = {("bc", 0): (0.31, 500.0, 1990), ("bc", 1): (0.30, 480.0, 2000), ("bc", 2): (0.90, 3.0, 2010),
            ("marwil", 0): (0.20, 300.0, 1990), ("marwil", 1): (0.25, 15.0, 2000)}
    for num, ((algo, seed), (value, ess, n)) in enumerate(runs.items()):
        write_logged_run(mr / f"{num}_algo={algo},seed={seed}", algo, seed, value, ess, n)
    # A job that failed before its run began (no config.yaml): its env's sizes are read from its data,
    # relative to the launch dir, so it is counted in the section of its env.
    from recsys_exp.offline.jsonl import import_jsonl

    import_jsonl(ROOT / "examples" / "logs" / "sample.jsonl", tmp_path / "data")
    hydra_dir = mr / "5_algo=bc,seed=3" / ".hydra"
    hydra_dir.mkdir(parents=True)
    (mr / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {}, "overrides": {"task": []}}}))
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump({
        "env": {"name": "logged", "num_candidates": 10, "slate_size": 2}, "algo": {"name": "bc"},
        "offline": {"path": "data"}, "seed": 3}))
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {
        "cwd": str(tmp_path), "choices": {"algo": "bc", "env": "logged"}}}}))
    report = summarize(collect([mr]), [mr], reps=200)
    (section,) = report.sections
    assert section.env == "logged 3-2"
    assert section.off_policy.estimators == ["snips"] and section.off_policy.held_out == (1990, 2010)
    rows = {a.label: a for a in section.rows}
    assert (rows["bc"].runs, rows["bc"].total) == (3, 4)
    assert rows["bc"].ess_min == 3.0 and rows["bc"].flagged == ["2_algo=bc,seed=2 (seed 2)"]
    assert rows["marwil"].flagged == ["4_algo=marwil,seed=1 (seed 1)"]

    assert report_main([str(mr), "--reps", "200"]) == 0
    md = (mr / "report.md").read_text()
    table = md.split("## logged 3-2")[1].split("### Learning curves")[0]
    assert ("| algorithm | runs | mean (snips off-policy estimate, 1,990–2,010 held-out sessions) | IQM |"
            in table)
    assert "Off-policy estimates, not simulated returns" in table and "below 10 or below 1% of the held-out" in table
    assert "| bc ⚠ | 3 of 4 | 0.5033 | 0.5033 |" in table and "| 1,990–2,010 | 3.0 ⚠ (1 of 3 runs) |" in table
    assert "| marwil ⚠ | 2 | 0.2250 |" in table and "| 15.0 ⚠ (1 of 2 runs) |" in table
    flagged = table.split("Estimates too weakly supported to rank by:")[1]
    assert "- 2_algo=bc,seed=2 (seed 2): ESS 3.0 of 2,010 held-out sessions" in flagged
    assert "- 4_algo=marwil,seed=1 (seed 1): ESS 15.0 of 2,000 held-out sessions" in flagged
    assert flagged.count("ESS") == 2
    assert "No learning curves: env=logged has no simulator" in md
    assert "- 5_algo=bc,seed=3: no config.yaml: failed before training began" in md
