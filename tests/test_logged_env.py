"""env=logged: logs and no simulator — train, evaluate off-policy, serve and report from the README's JSON-lines
log; the README's chain (import -> train as a -m multirun -> evaluate -> serve -> report) through the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

import recsys_exp
from recsys_exp.offline.dataset import LoggedData, held_out_sessions
from recsys_exp.runner.lifecycle import RunResult

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "logs" / "sample.jsonl"
# The sample has one row without a propensity: the model-based estimator; half of its 3 sessions held out.
OPE = ("offline.estimators=[dm]", "offline.select_by=dm", "offline.eval_fraction=0.5", "offline.bootstrap=100",
       "offline.fqe_iterations=3", "offline.fqe_refits=0")
QUIET = ("logger.mode=disabled", "progress=false")


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory) -> Path:
    from recsys_exp.offline.jsonl import import_jsonl

    out = tmp_path_factory.mktemp("logged") / "sample"
    import_jsonl(SAMPLE, out)
    return out


def test_sizes_and_spaces_come_from_the_data(sample_data):
    c = recsys_exp.compose(["env=logged", "algo=bc", f"offline.path={sample_data}", *OPE])
    meta = LoggedData.read(sample_data).meta
    assert (c["env"]["num_candidates"], c["env"]["slate_size"]) == (meta["num_candidates"], meta["slate_size"]) == (3, 2)
    from recsys_exp.envs.spec import env_spec

    space = env_spec(c).observation_space
    assert space["user"].shape == (meta["user_dim"],) and space["doc"].shape == (3, meta["doc_dim"])
    assert set(space["response"].spaces) == {"click", *meta["response_fields"]}


@pytest.mark.parametrize(("overrides", "message"), [
    (["algo=bc"], "env=logged takes its sizes and spaces from logged data: set offline.path"),
    (["algo=slateq", "offline.path={data}"], "algo.name='slateq': slateq samples the simulator"),
    (["algo=bc", "mode=record", "offline.path={data}"], "mode='record': env=logged has no simulator"),
    (["algo=bc", "mode=offline_study", "offline.path={data}"], "mode='offline_study': env=logged has no simulator"),
    (["algo=bc", "offline.path={data}", "offline.eval_fraction=0"], "offline.eval_fraction=0.0: must be in (0, 1)"),
    (["algo=bc", "offline.path={data}", "offline.select_by=ips", "offline.estimators=[dm]"],
     "offline.select_by='ips': recommended (ope.json's recommended estimate) or one of offline.estimators (dm)"),
])
def test_what_needs_a_simulator_is_refused_before_ray(sample_data, overrides, message):
    with pytest.raises(recsys_exp.ConfigError) as e:
        recsys_exp.compose(["env=logged", *[o.format(data=sample_data) for o in overrides]])
    assert message in str(e.value)


def test_missing_propensities_are_named_before_training(sample_data, tmp_path):
    with pytest.raises(recsys_exp.ConfigError, match=r"need behaviour propensities, missing in 1 held-out row"):
        recsys_exp.run(["env=logged", "algo=bc", f"offline.path={sample_data}", "offline.eval_fraction=0.5", *QUIET],
                       run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_held_out_sessions_are_a_seeded_per_session_split():
    ids = np.repeat(np.arange(20_000), 3)  # 20,000 sessions of 3 rows
    held = held_out_sessions(ids, 0.2, seed=0)
    per_session = held.reshape(-1, 3)
    assert (per_session == per_session[:, :1]).all()  # a session is never split
    share = per_session[:, 0].mean()
    assert abs(share - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 20_000)  # binomial: within 4 standard errors
    shuffled = np.random.default_rng(1).permutation(len(ids))
    np.testing.assert_array_equal(held_out_sessions(ids[shuffled], 0.2, seed=0), held[shuffled])  # order-free
    assert (held_out_sessions(ids, 0.2, seed=1) != held).any()  # the seed changes the split


def cli_env() -> dict[str, str]:
    """The environment of a CLI run: this one without the user's recsys_exp and W&B settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "WANDB_"))}
    return {**env, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "WANDB_MODE": "disabled"}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python <args>`` from the project root; fails the test with the end of its output unless it exits 0."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args[:3]}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def cli_chain(tmp_path_factory) -> dict[str, Path]:
    """The README's commands for logs without a simulator, through the CLI: import the README's
    JSON-lines log, then train bc on it as a ``-m`` multirun (the job dir holds the run)."""
    tmp = tmp_path_factory.mktemp("cli")
    data, multirun = tmp / "data", tmp / "multirun"
    cli("-m", "recsys_exp.offline.jsonl", str(SAMPLE), str(data))
    cli("-m", "recsys_exp", "-m", "env=logged", "algo=bc", f"offline.path={data}", "stop.timesteps=2560", *OPE, *QUIET,
        f"hydra.sweep.dir={multirun}")
    (job,) = [p for p in multirun.iterdir() if p.is_dir()]  # offline.path is not in the job dir's name
    return {"data": data, "multirun": multirun, "run": job}


@pytest.fixture(scope="module")
def bc_run(cli_chain) -> RunResult:
    """The multirun's bc run as :func:`recsys_exp.run` would have returned it."""
    run_dir = cli_chain["run"]
    return RunResult(run_dir, json.loads((run_dir / "run.json").read_text())["status"],
                     json.loads((run_dir / "summary.json").read_text()),
                     config=yaml.safe_load((run_dir / "config.yaml").read_text()))


@pytest.mark.slow
def test_training_never_sees_the_held_out_sessions(bc_run, sample_data):
    from recsys_exp.offline.training import LoggedRows
    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(bc_run.config)
    rows = LoggedRows(config.logged_data_path, config.env, config.env_config, bc_run.config["seed"],
                      config.logged_holdout)
    data = LoggedData.read(sample_data)
    held = set(data.episode_id[held_out_sessions(data.episode_id, 0.5, bc_run.config["seed"])].tolist())
    trained = set(rows.data.episode_id.tolist())
    assert held and trained and not held & trained and held | trained == set(data.episode_id.tolist())


@pytest.mark.slow
def test_training_ends_with_an_off_policy_evaluation_on_held_out_sessions(bc_run):
    assert bc_run.status == "completed"
    ope = json.loads((bc_run.run_dir / "ope.json").read_text())
    assert "simulated" not in ope and ope["held_out"] is True
    est = ope["estimates"]["dm"]
    objective = bc_run.summary["objective"]
    assert objective["kind"] == "off_policy" and objective["estimator"] == "dm"
    assert objective["value"] == est["value"] == bc_run.summary["eval_return_mean"]
    assert objective["n_episodes"] == est["n_episodes"] == bc_run.summary["eval_episodes"] >= 1
    assert est["ci95"][0] <= est["value"] <= est["ci95"][1]


@pytest.mark.slow
def test_cli_chain_evaluate_serve_report(cli_chain, tmp_path):
    """After import and training (the fixture): serve the run and answer a request with the policy's own
    slate (the loaded policy is itself checked against the module's own inference in tests/test_policy.py);
    while the server starts, evaluate the run off-policy on all of the data and report on the multirun."""
    data, run, multirun = cli_chain["data"], cli_chain["run"], cli_chain["multirun"]
    port, errors = free_port(), tmp_path / "serve.stderr"
    # A multirun job dir's name holds "=" and ",": Hydra's override grammar needs it quoted.
    with open(errors, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "recsys_exp", "mode=serve", f'restore="{run}"', "serve=http",
                                 f"serve.port={port}", f"hydra.run.dir={tmp_path / 'serve'}", *QUIET],
                                cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        out = cli("-m", "recsys_exp", "env=logged", "mode=evaluate", f'restore="{run}"', f"offline.path={data}",
                  *OPE, *QUIET, f"hydra.run.dir={tmp_path / 'eval'}").stdout
        cli("-m", "recsys_exp.report", str(multirun), "--reps", "200")
        deadline = time.monotonic() + 180
        while not (tmp_path / "serve" / "serve.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, errors.read_text()[-3000:]
            time.sleep(0.5)
        url = json.loads((tmp_path / "serve" / "serve.json").read_text())["url"]
        logged = LoggedData.read(data)
        answer = requests.post(url, json={"user": logged.user[0].tolist(), "docs": logged.docs[0].tolist()},
                               timeout=30)
        assert answer.status_code == 200, answer.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, errors.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    policy = recsys_exp.load_policy(run)
    obs = {"user": logged.user[0], "doc": logged.docs[0],
           "response": {k: np.zeros(2, dtype=np.int64 if k == "click" else np.float32)
                        for k in policy.spec.observation_space["response"].spaces}}
    assert answer.json()["slate"] == policy.recommend(obs).tolist()

    ope = json.loads((tmp_path / "eval" / "ope.json").read_text())
    assert "simulated" not in ope and not (tmp_path / "eval" / "evaluation.json").exists()
    assert ope["data"]["rows"] == logged.num_rows  # all of the data, not only the held-out sessions
    assert f"ope dm: {ope['estimates']['dm']['value']:.4g} (95% CI" in out

    md = (multirun / "report.md").read_text()
    n = json.loads((run / "summary.json").read_text())["objective"]["n_episodes"]
    assert f"| algorithm | runs | mean (dm off-policy estimate, {n} held-out sessions) |" in md
    assert "1 runs found: 1 completed" in md and "| bc ⚠ | 1 |" in md  # 1-2 held-out sessions: too few to rank by


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
