"""env=logged: logs and no simulator — train, evaluate off-policy and serve from the README's JSON-lines log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import requests

import recsys_exp
from recsys_exp.offline.dataset import LoggedData, held_out_sessions

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "logs" / "sample.jsonl"
# The sample has one row without a propensity: the model-based estimator; half of its 3 sessions held out.
OPE = ("offline.estimators=[dm]", "offline.select_by=dm", "offline.eval_fraction=0.5", "offline.bootstrap=100",
       "offline.fqe_iterations=3")
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
     "offline.select_by='ips': one of offline.estimators (dm)"),
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


@pytest.fixture(scope="module")
def bc_run(ray_session, sample_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bc") / "run"
    return recsys_exp.run(["env=logged", "algo=bc", f"offline.path={sample_data}", "stop.timesteps=2560", *OPE,
                           *QUIET], run_dir=run_dir)


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


def test_evaluate_restored_run_off_policy_only(bc_run, sample_data, tmp_path):
    result = recsys_exp.run(["mode=evaluate", f"restore={bc_run.run_dir}", f"offline.path={sample_data}", *QUIET],
                            run_dir=tmp_path / "eval")
    ope = json.loads((tmp_path / "eval" / "ope.json").read_text())
    assert "simulated" not in ope and not (tmp_path / "eval" / "evaluation.json").exists()
    assert ope["data"]["rows"] == LoggedData.read(sample_data).num_rows  # all of the data, not only held out
    assert result.result == ope["estimates"]["dm"]["value"]


def test_serve_a_logged_env_run(bc_run, sample_data, tmp_path):
    """The served slate of a logged observation is the loaded policy's (itself checked against the
    module's own inference in tests/test_policy.py)."""
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recsys_exp.run(["mode=serve", f"restore={bc_run.run_dir}", "serve=http", f"serve.port={port}",
                    "serve.foreground=false", *QUIET], run_dir=tmp_path / "serve")
    try:
        served = json.loads((tmp_path / "serve" / "serve.json").read_text())
        data = LoggedData.read(sample_data)
        body = {"user": data.user[0].tolist(), "docs": data.docs[0].tolist()}
        answer = requests.post(served["url"], json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        policy = recsys_exp.load_policy(bc_run.run_dir)
        obs = {"user": data.user[0], "doc": data.docs[0],
               "response": {k: np.zeros(2, dtype=np.int64 if k == "click" else np.float32)
                            for k in policy.spec.observation_space["response"].spaces}}
        assert answer.json()["slate"] == policy.recommend(obs).tolist()
    finally:
        serve.shutdown()
