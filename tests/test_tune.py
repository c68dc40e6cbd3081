"""Tune sweeps: search spaces of every preset, validation before Ray, multi-seed trials, ASHA end
to end, resume of an interrupted sweep, best_config.yaml as a preset.

Spec: recsys_exp/sweep/{space,trainable,run}.py, issue 7 items 1-3.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_config

from recsys_exp.config.validate import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# The algorithm each preset is meant for (its search space names that algorithm's keys).
PRESET_ALGO = {"slateq_asha": "slateq", "bandit_alpha": "lin_ucb", "sweep": "slateq", "none": "slateq"}


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "WANDB_"))}
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", WANDB_MODE="disabled", WANDB_SILENT="true")
    return env


def tune_presets() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "tune").glob("*.yaml"))


def test_every_preset_has_a_known_algorithm():
    assert set(tune_presets()) == set(PRESET_ALGO)


# ---------------------------------------------------------------------------------------------
# 1. search-space conversion


@pytest.mark.parametrize("preset", tune_presets())
def test_preset_search_space_converts_to_tune_domains(preset):
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

    from recsys_exp.config.search_space import flatten_space
    from recsys_exp.sweep.run import to_tune_space

    c = compose_config(f"algo={PRESET_ALGO[preset]}", f"tune={preset}")
    flat = flatten_space(c["tune"]["search_space"])
    space = to_tune_space(flat)
    assert set(space) == set(flat)
    for key, spec in flat.items():
        domain = space[key]
        if spec["type"] == "grid":
            assert domain == {"grid_search": spec["values"]}
            continue
        expected = {"choice": Categorical, "uniform": Float, "loguniform": Float, "randint": Integer}[spec["type"]]
        assert isinstance(domain, expected), key
        if spec["type"] in ("uniform", "loguniform"):
            sampler = domain.get_sampler()
            assert isinstance(sampler, LogUniform if spec["type"] == "loguniform" else Uniform), key
        for _ in range(20):
            value = domain.sample()
            if spec["type"] == "choice":
                assert value in spec["values"]
            else:
                assert spec["low"] <= value <= spec["high"]


def test_nested_and_dotted_keys_flatten_alike():
    from recsys_exp.config.search_space import flatten_space

    nested = {"algo": {"training": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}},
              "model.hidden_sizes": {"type": "choice", "values": [[8], [16]]}}
    assert flatten_space(nested) == {"algo.training.lr": {"type": "uniform", "low": 0.1, "high": 0.2},
                                     "model.hidden_sizes": {"type": "choice", "values": [[8], [16]]}}


def test_apply_params_changes_only_a_copy():
    from recsys_exp.config.search_space import apply_params

    c = compose_config("tune=slateq_asha")
    lr, hidden = c["algo"]["training"]["lr"], list(c["model"]["hidden_sizes"])
    assert lr != 0.5 and hidden != [8]
    out = apply_params(c, {"algo.training.lr": 0.5, "model.hidden_sizes": [8]})
    assert out["algo"]["training"]["lr"] == 0.5 and out["model"]["hidden_sizes"] == [8]
    assert c["algo"]["training"]["lr"] == lr and c["model"]["hidden_sizes"] == hidden


def test_command_line_search_space_composes():
    c = compose_config("algo=lin_ucb", "tune=sweep",
                       "+tune.search_space.exploration.alpha={type: loguniform, low: 0.01, high: 10.0}")
    assert c["tune"]["search_space"] == {"exploration": {"alpha": {"type": "loguniform", "low": 0.01, "high": 10.0}}}


# ---------------------------------------------------------------------------------------------
# 2. validation before Ray starts: one line naming the key


@pytest.mark.parametrize(("overrides", "message"), [
    (["tune=sweep", "+tune.search_space.algo.training.lr={type: normal, low: 0.1, high: 1}"],
     "tune.search_space.algo.training.lr.type='normal': allowed: choice, grid, uniform, loguniform, randint"),
    (["tune=sweep", "+tune.search_space.algo.training.lr={type: uniform, low: 1, high: 0.5}"],
     "tune.search_space.algo.training.lr: low=1 must be < high=0.5"),
    (["tune=sweep", "+tune.search_space.algo.training.lr={type: loguniform, low: 0, high: 1}"],
     "tune.search_space.algo.training.lr: loguniform needs low > 0"),
    (["tune=sweep", "+tune.search_space.algo.training.lr={type: choice, values: []}"],
     "tune.search_space.algo.training.lr.values=[]: must be a non-empty list"),
    (["tune=sweep", "+tune.search_space.algo.training.lr={type: choice, low: 1}"],
     "tune.search_space.algo.training.lr: type choice takes values; unknown low; missing values"),
    (["tune=sweep", "+tune.search_space.seed={type: choice, values: [1, 2]}"],
     "tune.search_space.seed: only keys of the algo, model, exploration groups can be searched"),
    (["tune=sweep", "+tune.search_space.model.width={type: choice, values: [1, 2]}"],
     "tune.search_space.model.width: model has no key 'width'"),
    (["tune=sweep", "+tune.search_space.exploration.alpha={type: uniform, low: 0.1, high: 1}"],
     "tune.search_space.exploration.alpha: algo=slateq explores with epsilon_greedy, which does not read alpha"),
    (["tune=sweep", "+tune.search_space.exploration.final_epsilon={type: uniform, low: 0.0, high: 1.5}"],
     "tune.search_space.exploration.final_epsilon: value 1.5 is invalid: exploration.final_epsilon=1.5: "
     "must be in [0, 1]"),
    (["tune=sweep", "+tune.search_space.model.hidden_sizes={type: choice, values: [[8], []]}"],
     "tune.search_space.model.hidden_sizes: value [] is invalid: model.hidden_sizes=[]"),
    (["algo=lin_ucb", "tune=bandit_alpha", "tune.search_alg=optuna"],
     "Optuna samples its own points: use choice instead of grid"),
    (["tune=slateq_asha", "tune.search_space.algo.training.lr.low=0.1"],
     "tune.search_space.algo.training.lr: low=0.1 must be < high=0.003"),
    (["algo=lin_ucb", "tune=bandit_alpha", "tune.scheduler=pbt"],
     "tune.scheduler='pbt': pbt perturbs choice/uniform/loguniform/randint keys"),
    (["tune.seeds=3"], "tune.seeds=3: tune=none trains one configuration"),
    (["tune=sweep", "tune.scheduler=hyperband"], "tune.scheduler='hyperband': allowed: none, asha, pbt"),
    (["tune=sweep", "tune.search_alg=hyperopt"], "tune.search_alg='hyperopt': allowed: random, optuna"),
    (["tune=slateq_asha", "tune.asha.reduction_factor=1"], "tune.asha.reduction_factor=1.0: must be > 1"),
])
def test_bad_sweep_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        compose_config(*overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_sweep_in_evaluate_mode_is_one_clear_line():
    # Composing restore=<missing dir> now fails on the restore dir first; the sweep check itself is
    # the config validation of a config that has both.
    from recsys_exp.config.validate import check_semantics

    c = compose_config("tune=sweep")
    c["mode"], c["restore"] = "evaluate", "somewhere"
    with pytest.raises(ConfigError) as e:
        check_semantics(c)
    assert "sweeps train; mode=evaluate runs without Tune" in str(e.value) and "\n" not in str(e.value)


def test_unknown_rllib_key_in_search_space_is_named_before_ray():
    from recsys_exp.sweep.run import check_with_rllib

    c = compose_config("tune=sweep", "+tune.search_space.algo.training.lrr={type: choice, values: [0.1]}")
    with pytest.raises(ConfigError, match=r"tune.search_space.algo.training.lrr: value 0.1 is invalid: "
                                          r"algo.training.lrr: not a parameter of"):
        check_with_rllib(c)


# ---------------------------------------------------------------------------------------------
# 3. the pieces of a multi-seed trial


def test_average_results_is_nan_aware_and_drops_tune_keys():
    from recsys_exp.sweep.trainable import average_results

    results = [{"env_runners": {"episode_return_mean": 1.0, "note": "a"}, "learners": {"x": {"loss": 2.0}},
                "num_env_steps_sampled_lifetime": 100, "training_iteration": 3, "only_here": 1.0},
               {"env_runners": {"episode_return_mean": math.nan, "note": "b"}, "learners": {"x": {"loss": 4.0}},
                "num_env_steps_sampled_lifetime": 300, "training_iteration": 3}]
    out = average_results(results)
    assert out["env_runners"]["episode_return_mean"] == 1.0  # NaN seeds do not blank the mean
    assert out["learners"]["x"]["loss"] == 3.0
    assert out["num_env_steps_sampled_lifetime"] == 200.0
    assert "training_iteration" not in out and "only_here" not in out and "note" not in out["env_runners"]


def test_trial_config_is_a_restorable_single_run():
    from recsys_exp.config.validate import check_semantics
    from recsys_exp.sweep.trainable import seed_list, trial_config

    c = compose_config("tune=slateq_asha", "seed=7")
    assert seed_list(c) == [7, 8]
    tc = trial_config(c, {"algo.training.lr": 0.002}, 8)
    assert tc["seed"] == 8 and tc["algo"]["training"]["lr"] == 0.002 and tc["tune"]["name"] == "none"
    check_semantics(tc)


def _trial(tid, objective, evals, status="TERMINATED"):
    return {"trial_id": tid, "objective": objective, "status": status, "eval_per_seed": evals,
            "eval_return_mean": sum(evals.values()) / len(evals) if evals else None}


def test_best_trial_prefers_full_budget_then_metric_then_evaluation():
    from recsys_exp.sweep.run import best_trial

    c = compose_config("tune=sweep")
    trials = [_trial("a", 10.0, {"0": 5.0}), _trial("b", 50.0, {}),  # b: stopped early by ASHA
              _trial("c", 12.0, {"0": 1.0}), _trial("d", 99.0, {"0": 9.0}, status="ERROR")]
    assert best_trial(c, trials)[0]["trial_id"] == "c"
    c["tune"]["mode"] = "min"
    assert best_trial(c, trials)[0]["trial_id"] == "a"
    no_metric = [_trial("a", None, {"0": 5.0}), _trial("b", None, {"0": 7.0})]
    best, ranked_by = best_trial(c, no_metric)
    assert best["trial_id"] == "b" and ranked_by == "evaluation/episode_return_mean"


def test_pbt_perturbations_stay_inside_the_domain():
    from recsys_exp.sweep.run import clip_to_space, scheduler
    from recsys_exp.config.search_space import flatten_space

    c = compose_config("tune=slateq_asha", "tune.scheduler=pbt")
    flat = flatten_space(c["tune"]["search_space"])
    explore = clip_to_space(flat)
    out = explore({"algo.training.lr": 1.0, "algo.training.choice_lr": 1e-9,
                   "algo.training.target_network_update_freq": 2000})
    assert out == {"algo.training.lr": 3.0e-3, "algo.training.choice_lr": 1.0e-3,
                   "algo.training.target_network_update_freq": 2000}
    pbt = scheduler(c, flat)
    assert type(pbt).__name__ == "PopulationBasedTraining"
    assert set(pbt._hyperparam_mutations) == set(flat)


# ---------------------------------------------------------------------------------------------
# 4. end to end through the CLI


SWEEP = ["algo=slateq", "tune=slateq_asha", "tune.num_samples=4", "tune.seeds=2", "tune.asha.grace_period=400",
         "stop.timesteps=1600", "algo.env_runners.num_envs_per_env_runner=4",
         "algo.env_runners.rollout_fragment_length=50",  # 200 env steps and one update per iteration
         "algo.training.num_steps_sampled_before_learning_starts=100", "eval.episodes=4", "eval.num_envs=4",
         "logger.mode=disabled", "progress=false"]


@pytest.fixture(scope="module")
def asha_sweep(ray_session, tmp_path_factory) -> Path:
    """An ASHA sweep of 4 trials x 2 seeds, run in process on the session's Ray (the same run dir
    as ``python -m recsys_exp`` writes). IEv with 4 users per EnvRunner: episodes (~85 steps) end
    within the first iteration."""
    import recsys_exp

    run_dir = tmp_path_factory.mktemp("sweep") / "asha"
    result = recsys_exp.run(SWEEP, run_dir=run_dir)
    assert result.status == "completed"
    assert result.result == json.loads((run_dir / "summary.json").read_text())["eval_return_mean"]
    return run_dir


@pytest.mark.slow
def test_asha_sweep_end_to_end(asha_sweep: Path):
    sweep = json.loads((asha_sweep / "sweep.json").read_text())
    trials = sweep["trials"]
    assert len(trials) == 4 and all(tr["status"] == "TERMINATED" for tr in trials)
    assert sweep["seeds"] == [0, 1]
    # ASHA cut at least one trial at the first rung; the others ran the full budget and were
    # evaluated greedily under both seeds.
    stopped = [tr for tr in trials if not tr["eval_per_seed"]]
    full = [tr for tr in trials if tr["eval_per_seed"]]
    assert stopped and full
    assert all(tr["timesteps"] < 1600 for tr in stopped) and all(tr["timesteps"] >= 1600 for tr in full)
    assert all(set(tr["eval_per_seed"]) == {"0", "1"} for tr in full)
    for tr in trials:  # sampled values stay in their domains
        p = tr["params"]
        assert 1e-4 <= p["algo.training.lr"] <= 3e-3 and p["model.hidden_sizes"] in ([64, 64], [256, 256])
    best = sweep["best"]
    assert best["trial_id"] in {tr["trial_id"] for tr in full}
    summary = json.loads((asha_sweep / "summary.json").read_text())
    assert summary["best_trial"] == best["trial_id"] and summary["params"] == best["params"]
    # metrics.csv: one row per seed of every iteration of every trial
    with open(asha_sweep / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert len(rows) == 2 * sum(tr["iterations"] for tr in trials)
    assert json.loads((asha_sweep / "run.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_best_checkpoint_and_config_are_reusable(asha_sweep: Path, tmp_path: Path):
    from hydra import compose, initialize_config_dir

    from recsys_exp.config.schema import register_configs
    from recsys_exp.config.validate import check_schema, check_semantics
    from recsys_exp.run_dir import locate_checkpoint

    best = json.loads((asha_sweep / "sweep.json").read_text())["best"]
    link = asha_sweep / "best_checkpoint"
    assert link.is_symlink() and (link / "seed_0" / "config.yaml").is_file() and (link / "seed_1").is_dir()
    checkpoint, config_dir = locate_checkpoint(asha_sweep)  # restore=<sweep dir>
    assert checkpoint == (link / "seed_0").resolve() and config_dir == checkpoint
    # best_config.yaml is a preset: copied to conf/experiment it composes to the best trial's values.
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    shutil.copy(asha_sweep / "best_config.yaml", conf / "experiment" / "best.yaml")
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=best"])
    c = check_schema(cfg)
    check_semantics(c)
    assert c["tune"]["name"] == "none"
    assert c["algo"]["training"]["lr"] == best["params"]["algo.training.lr"]
    assert c["algo"]["training"]["target_network_update_freq"] == best["params"]["algo.training.target_network_update_freq"]
    assert c["model"]["hidden_sizes"] == best["params"]["model.hidden_sizes"]
    assert c["env"]["name"] == "interest_evolution" and c["stop"]["timesteps"] == 1600


def _rows_per_trial(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            counts[row["trial_id"]] = counts.get(row["trial_id"], 0) + 1
    return counts


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_redoing_finished_trials(ray_session, tmp_path: Path):
    """SIGINT to a CLI sweep after the first trial finished; ``resume=true`` (in process here)
    completes the others only. Optuna's searcher state is restored with the experiment."""
    run_dir = tmp_path / "sweep"
    args = [sys.executable, "-m", "recsys_exp", "algo=lin_ucb", "env=long_term_satisfaction", "tune=sweep",
            "tune.num_samples=3", "tune.max_concurrent_trials=1", "tune.search_alg=optuna",
            "+tune.search_space.exploration.alpha={type: uniform, low: 0.1, high: 4.0}", "stop.iterations=3",
            "algo.training.train_batch_size_per_learner=64", "algo.env_runners.num_envs_per_env_runner=8",
            "eval.episodes=2", "eval.num_envs=2", "checkpoint.frequency=1", "logger.mode=disabled",
            "progress=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # wait until the second trial has reported
            if (run_dir / "metrics.csv").exists() and len(_rows_per_trial(run_dir)) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the sweep never reached its second trial")
        os.kill(proc.pid, signal.SIGINT)  # the driver only: Tune saves its state and stops the trials
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert not (run_dir / "sweep.json").exists()
    before = _rows_per_trial(run_dir)
    first = next(iter(before))  # metrics.csv order: the trial that ran first
    assert before[first] == 3  # the first trial finished all 3 iterations before the interrupt

    import recsys_exp

    assert recsys_exp.run([*args[3:-1], "resume=true"], run_dir=run_dir).status == "completed"
    sweep = json.loads((run_dir / "sweep.json").read_text())
    assert len(sweep["trials"]) == 3 and all(tr["status"] == "TERMINATED" for tr in sweep["trials"])
    after = _rows_per_trial(run_dir)
    assert after[first] == 3  # the finished trial was not trained again
    assert set(before) <= set(after) and len(after) == 3
    assert all(tr["eval_per_seed"] for tr in sweep["trials"])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed"][0]["previous_status"] == "interrupted"


# ---------------------------------------------------------------------------------------------
# 5. env=logged: trials ranked by their off-policy estimate on held-out sessions


# The logging policy of the test log: slate [0, 1] with probability 1/2, each of the other five
# ordered slates of 2 of 3 candidates with 1/10 (the exact propensities are logged).
LOGGED_SLATES = [(a, b) for a in range(3) for b in range(3) if a != b]
LOGGED_PROBS = [0.5 if s == (0, 1) else 0.1 for s in LOGGED_SLATES]


@pytest.fixture(scope="module")
def bandit_log(tmp_path_factory) -> Path:
    """60 one-step sessions with exact propensities, imported from JSON lines. A candidate's first
    feature is its click probability in the first slot; candidate 0 has the highest, then 1, then 2,
    so policies that learn pick [0, 1], the logging policy's slate half of the time."""
    import numpy as np

    from recsys_exp.offline.jsonl import import_jsonl

    rng = np.random.default_rng(0)
    lines = []
    for i in range(60):
        k = int(rng.choice(len(LOGGED_SLATES), p=LOGGED_PROBS))
        slate = LOGGED_SLATES[k]
        docs = np.column_stack([rng.uniform([0.7, 0.4, 0.0], [1.0, 0.6, 0.3]), rng.random(3)]).round(3)
        click = 0 if rng.random() < docs[slate[0], 0] else None
        lines.append({"session": f"s{i}", "user": rng.random(2).round(3).tolist(), "candidates": docs.tolist(),
                      "slate": list(slate), "click": click, "reward": 0.0 if click is None else 1.0,
                      "propensity": LOGGED_PROBS[k]})
    d = tmp_path_factory.mktemp("bandit_log")
    (d / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    import_jsonl(d / "log.jsonl", d / "data")
    return d / "data"


def _hand_ips(checkpoint: Path, data_path: Path, fraction: float, seed: int) -> tuple[float, float, int]:
    """(IPS, Kish ESS, n sessions) of the checkpoint's greedy policy on the held-out one-step sessions,
    by hand: the restored module's own slate for each logged observation, weight 1/propensity where
    it equals the logged slate."""
    import numpy as np

    import recsys_exp
    from recsys_exp.offline.dataset import LoggedData, held_out_sessions

    data = LoggedData.read(data_path)
    rows = np.flatnonzero(held_out_sessions(data.episode_id, fraction, seed))
    policy = recsys_exp.load_policy(checkpoint)
    fields = policy.spec.observation_space["response"].spaces
    w = []
    for i in rows:
        obs = {"user": data.user[i], "doc": data.docs[i],
               "response": {k: np.zeros(2, dtype=np.int64 if k == "click" else np.float32) for k in fields}}
        w.append(float((policy.recommend(obs) == data.slate[i]).all()) / data.propensity[i])
    w = np.array(w)
    ess = w.sum() ** 2 / (w ** 2).sum() if w.any() else 0.0
    return float(np.mean(w * data.reward[rows])), float(ess), len(rows)


@pytest.mark.slow
def test_logged_sweep_ranks_trials_by_their_held_out_estimate(ray_session, bandit_log: Path):
    """A sweep on env=logged: each trial's objective is the IPS estimate of its own checkpoint on its
    held-out sessions (recomputed by hand from the restored policy), sweep.json and summary.json say
    so, the best trial is the best estimate, and the report names the estimator and flags the estimate
    (fewer than 10 held-out sessions: its ESS, known by hand, is below 10)."""
    import recsys_exp
    from recsys_exp.report import make_report

    run_dir = bandit_log.parent / "sweep"
    result = recsys_exp.run(["env=logged", "algo=bc", f"offline.path={bandit_log}", "offline.eval_fraction=0.15",
                             "offline.estimators=[ips,snips]", "offline.select_by=ips", "offline.bootstrap=50",
                             "tune=sweep", "tune.num_samples=1", "stop.timesteps=2560",
                             "+tune.search_space.algo.training.lr={type: grid, values: [1.0e-6, 0.01]}",
                             "logger.mode=disabled", "progress=false"], run_dir=run_dir)
    assert result.status == "completed"
    sweep = json.loads((run_dir / "sweep.json").read_text())
    assert sweep["metric"] == "off_policy/value"
    assert sweep["objective"]["kind"] == "off_policy" and sweep["objective"]["estimator"] == "ips"
    assert sweep["objective"]["held_out_fraction"] == 0.15
    for trial in sweep["trials"]:
        checkpoint = Path(trial["checkpoint"]) / "seed_0"
        ips, ess, n = _hand_ips(checkpoint, bandit_log, 0.15, seed=0)
        assert trial["objective"] == pytest.approx(ips) == trial["eval_per_seed"]["0"]
        own = json.loads((checkpoint / "ope.json").read_text())["estimates"]["ips"]  # the trial's ope.json
        assert own["value"] == trial["objective"] and own["n_episodes"] == n
        estimate = trial["off_policy"]["per_seed"]["0"]
        assert estimate["ess"] == pytest.approx(ess) and estimate["n_episodes"] == n < 10
    best = max(sweep["trials"], key=lambda tr: tr["objective"])
    assert len({tr["objective"] for tr in sweep["trials"]}) == 2  # an untrained (lr 1e-6) and a trained policy
    assert sweep["best"]["trial_id"] == best["trial_id"]
    summary = json.loads((run_dir / "summary.json").read_text())
    objective = summary["objective"]
    assert (objective["kind"], objective["estimator"], objective["value"]) == ("off_policy", "ips", best["objective"])
    assert objective["n_episodes"] == n and objective["ess"] == best["off_policy"]["ess"]
    assert objective["ci95"][0] <= objective["value"] <= objective["ci95"][1]
    # best_config.yaml keeps the data and its held-out split (the offline group is not chosen by name)
    conf = bandit_log.parent / "conf"
    shutil.copytree(CONF_DIR, conf)
    shutil.copy(run_dir / "best_config.yaml", conf / "experiment" / "best.yaml")
    c = recsys_exp.compose(["+experiment=best"], config_dir=conf)
    assert (c["offline"]["path"], c["offline"]["eval_fraction"], c["offline"]["select_by"]) == (
        str(bandit_log), 0.15, "ips")
    assert c["algo"]["training"]["lr"] == best["params"]["algo.training.lr"] and c["env"]["name"] == "logged"

    md = make_report([run_dir], reps=200)["md"].read_text()
    assert f"mean (ips off-policy estimate, {n} held-out sessions)" in md
    flagged = md.split("Estimates too weakly supported to rank by:")[1].split("###")[0]
    for trial in sweep["trials"]:
        ess = trial["off_policy"]["per_seed"]["0"]["ess"]
        assert f"sweep/{trial['trial_id']} (seed 0): ESS {ess:,.1f} of {n} held-out sessions" in flagged


def test_logged_bandit_trial_ends_after_its_one_pass_with_its_estimate(ray_session, bandit_log: Path, tmp_path: Path,
                                                                        monkeypatch):
    """A trial of a bandit learned from logs (one pass over the training rows, then its Algorithm
    reports done) ends there with its estimate, though the stop budget is far away; the estimate is
    the checkpoint's, recomputed by hand. The trainable is driven directly (no Tune loop)."""
    import ray.tune.trainable.trainable as trainable_module
    from ray import tune

    from recsys_exp.sweep.trainable import SeedAveragedTrainable

    monkeypatch.setattr(trainable_module, "DEFAULT_STORAGE_PATH", str(tmp_path))  # its log dir, outside Tune
    c = compose_config("env=logged", "algo=lin_ucb", f"offline.path={bandit_log}", "offline.eval_fraction=0.15",
                       "offline.estimators=[ips]", "offline.select_by=ips", "offline.bootstrap=0", "tune=sweep",
                       "+tune.search_space.exploration.alpha={type: choice, values: [1.0]}",
                       "algo.training.train_batch_size_per_learner=32", "stop.timesteps=100000")
    trial = tune.with_parameters(SeedAveragedTrainable, base=c)(config={"exploration.alpha": 1.0})
    try:
        results = [trial.train()]
        while not results[-1].get("done"):
            assert len(results) < 5, "the trial did not end after one pass over the training rows"
            results.append(trial.train())
        trial.save(str(tmp_path / "checkpoint"))
    finally:
        trial.stop()
    last = results[-1]
    ips, ess, n = _hand_ips(tmp_path / "checkpoint" / "seed_0", bandit_log, 0.15, seed=0)
    assert len(results) == 2 and last["num_env_steps_sampled_lifetime"] == 60 - n  # every training row once
    assert math.isnan(results[0]["off_policy"]["value"])  # no scheduler: estimated after the last iteration
    assert last["off_policy"]["value"] == pytest.approx(ips) == last["evaluation"]["episode_return_mean"]
    assert last["off_policy"]["ess"] == pytest.approx(ess) and last["off_policy"]["n_episodes"] == n
    assert ess >= 1  # the learned policy shows some of the logged slates: the estimate is not trivially 0
