"""Logged data, offline training and off-policy evaluation against the simulator's ground truth.

* recording (no Ray): one row per env step of complete sessions, the documented schema, and
  propensities equal to the behaviour policy's own probabilities;
* OPE (no Ray): data logged by a known stochastic policy, a different target policy, estimates
  whose 95% intervals cover the target's true value measured by simulation;
* offline training on real RLlib (one shared Ray): BC on a good policy's data beats random; CQL
  stays finite and beats BC on data mixed from a good and a bad policy;
* the CLI path record → train offline → evaluate with ope.json → continue online.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import compose_config

from recsys_exp.envs.spec import env_spec
from recsys_exp.errors import ConfigError
from recsys_exp.offline.dataset import LoggedData
from recsys_exp.offline.evaluation import ope_inputs, simulated_value
from recsys_exp.offline.ope import OPEError, estimate
from recsys_exp.offline.recorder import record, rollout
from recsys_exp.runner.policy import Policy, build_module

GREEDY_EPS = ("algo=greedy", "exploration=epsilon_greedy", "exploration.initial_epsilon=0.5",
              "exploration.final_epsilon=0.5")
LTS = ("env=long_term_satisfaction", "env.max_episode_steps=30")
GOOD = ("algo=greedy", "algo.training.score=feature")  # most clickbait first: ≈ 562 on LTS-30
BAD = (*GOOD, "algo.training.descending=false")  # least clickbait first: ≈ 395 (random ≈ 477)


def policy_of(c: dict) -> Policy:
    return Policy.from_checkpoint(c, None)


# ---------------------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------------------
class StepCounter:
    """Wraps a vector env; remembers each sub-env's step count when its first session ends."""

    def __init__(self, env):
        self.env, self.first_session = env, np.zeros(env.num_envs, dtype=np.int64)
        self.single_observation_space, self.num_envs = env.single_observation_space, env.num_envs

    def reset(self, **kw):
        return self.env.reset(**kw)

    def step(self, actions):
        out = self.env.step(actions)
        done = (out[2] | out[3]) & (self.first_session == 0)
        self.first_session[done] = self.env._elapsed[done]
        return out


def test_rollout_logs_one_row_per_env_step_of_each_session():
    c = compose_config(*GREEDY_EPS)
    env = StepCounter(env_spec(c).vector_env(8, 3))
    rows = list(rollout(policy_of(c), env, episodes=8, seed=3))
    episode = np.concatenate([r["episode_id"] for r in rows])
    assert (env.first_session > 0).all()
    assert len(episode) == env.first_session.sum()  # every env step of every logged session, once
    np.testing.assert_array_equal(np.bincount(episode), env.first_session)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    c = compose_config(*GREEDY_EPS, "offline.record_steps=2000", "offline.record_num_envs=16")
    out = tmp_path_factory.mktemp("rec") / "data"
    return c, out, record(c, out)


def test_recorded_data_follows_the_schema(recorded):
    c, out, summary = recorded
    files = sorted(out.glob("*.parquet"))
    assert [f.name for f in files] == [f["file"] for f in summary["files"]]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left behind"
    schema = pq.read_schema(files[0])
    for name in ("episode_id", "step", "user", "docs", "slate", "click", "response_watch_time", "response_quality",
                 "response_cluster_id", "reward", "terminated", "truncated", "propensity", "slot_propensity",
                 "next_user", "next_docs"):
        assert name in schema.names, name
    assert schema.field("docs").type.list_size == 10 and schema.field("docs").type.value_type.list_size == 20
    data = LoggedData.read(out)
    assert data.num_rows == summary["rows"] >= 2000
    assert json.loads((out / "manifest.json").read_text())["rows"] == data.num_rows
    first, last = data.first_rows(), data.last_rows()
    assert (data.step[first] == 0).all() and (np.diff(data.step)[~first[1:]] == 1).all()  # complete sessions
    assert (data.terminated | data.truncated)[last].all() and not (data.terminated | data.truncated)[~last].any()
    assert np.isfinite(data.next_user[last]).all() and np.isnan(data.next_user[~last]).all()
    assert 0 < data.click.max() and (data.click >= -1).all() and (data.click < 2).all()
    with pytest.raises(FileExistsError, match="already holds logged data"):
        record(c, out)


def test_recorded_propensities_are_the_behaviour_policys(recorded):
    """ε-greedy: P(slate) = (1-ε)·[slate = greedy] + ε/#slates; per slot (1-ε)·[item = greedy] + ε/N."""
    c, out, _ = recorded
    data = LoggedData.read(out)
    obs, _, _ = data.observations(env_spec(c).observation_space)
    greedy = policy_of(c).greedy(obs)
    same = (data.slate == greedy)
    np.testing.assert_allclose(data.propensity, 0.5 * same.all(-1) + 0.5 / 90, rtol=1e-6)
    np.testing.assert_allclose(data.slot_propensity, 0.5 * same + 0.05, rtol=1e-6)
    assert ((data.propensity > 0) & (data.propensity <= 1)).all()
    assert 0.4 < same.all(-1).mean() < 0.65  # half the slates are the greedy ones


def test_flat_action_policies_record_with_their_epsilon_greedy_propensities(tmp_path):
    """RLlib's DQN (flat Discrete(N**K), ε-greedy inside the module): P = (1-ε)·[greedy] + ε/N**K."""
    c = compose_config("algo=dqn", "exploration.initial_epsilon=0.5", "exploration.final_epsilon=0.5",
                       "env.num_candidates=5", "offline.record_steps=400", "offline.record_num_envs=20")
    record(c, tmp_path / "dqn")
    data = LoggedData.read(tmp_path / "dqn")
    obs, _, _ = data.observations(env_spec(c).observation_space)
    same = (data.slate == policy_of(c).greedy(obs)).all(-1)
    np.testing.assert_allclose(data.propensity, 0.5 * same + 0.5 / 25, rtol=1e-6)


def test_rebuilt_observations_carry_the_previous_response(recorded):
    c, out, _ = recorded
    data = LoggedData.read(out)
    space = env_spec(c).observation_space
    obs, next_obs, has_next = data.observations(space)
    probe = build_module(c)
    clicks = probe.clicks(__import__("torch").as_tensor(obs)).numpy()
    first = data.first_rows()
    prev_click = np.where(first, -1, np.roll(data.click, 1))
    np.testing.assert_array_equal(np.where(clicks.any(-1), clicks.argmax(-1), -1), prev_click)
    np.testing.assert_array_equal(next_obs[:-1][~first[1:]], obs[1:][~first[1:]])
    assert has_next.all()


def test_episode_chunks_stay_inside_their_session(recorded):
    """Learners get chunks of consecutive logged steps; a chunk never crosses into the next session."""
    from recsys_exp.offline.dataset import to_episodes

    c, out, _ = recorded
    data = LoggedData.read(out)
    obs, next_obs, has_next = data.observations(env_spec(c).observation_space)
    last = np.flatnonzero(data.last_rows())
    starts = np.array([0, last[0] - 2, last[0], last[0] + 1])
    chunks = to_episodes(data, obs, next_obs, has_next, data.slate, starts, length=4)
    assert [len(e) for e in chunks] == [4, 3, 1, 4]
    assert [e.is_terminated for e in chunks] == [False, True, True, False]
    np.testing.assert_array_equal(chunks[1].get_observations(-1), next_obs[last[0]])
    np.testing.assert_array_equal(chunks[3].get_actions(), data.slate[last[0] + 1:last[0] + 5])
    np.testing.assert_allclose(chunks[3].get_rewards(), data.reward[last[0] + 1:last[0] + 5])


# ---------------------------------------------------------------------------------------
# off-policy evaluation vs the simulator
# ---------------------------------------------------------------------------------------
SMALL_IEV = ("env.num_candidates=4", "env.slate_size=2", "env.max_episode_steps=3")


@pytest.fixture(scope="module")
def uniform_logs(tmp_path_factory):
    """3000 three-step sessions of uniformly random slates (12 possible) on a small IEv."""
    c = compose_config("algo=random", *SMALL_IEV, "offline.record_steps=9000", "offline.record_num_envs=500")
    out = tmp_path_factory.mktemp("uniform") / "data"
    record(c, out)
    return LoggedData.read(out)


@pytest.mark.parametrize("explore", [True, False], ids=["eps_greedy_target", "greedy_target"])
def test_ope_intervals_cover_the_simulated_value(uniform_logs, explore):
    target_c = compose_config(*GREEDY_EPS[:2], "exploration.initial_epsilon=0.3", "exploration.final_epsilon=0.3",
                              *SMALL_IEV)
    policy = policy_of(target_c)
    truth = simulated_value(target_c, policy, explore, 1.0, 20_000, seed=99)
    names = ["ips", "snips", "dm", "dr", "iips"]
    space = env_spec(target_c).observation_space
    inputs, _ = ope_inputs(uniform_logs, policy, space, explore, 1.0, names, None, seed=0,
                           fqe_refits=0)  # the model's own intervals are tests/test_fqe_trust.py's
    est = estimate(inputs, names, n_bootstrap=500, seed=0)
    half = (truth["ci95"][1] - truth["ci95"][0]) / 2  # the truth's own Monte Carlo error
    for name in ("ips", "snips", "dr"):
        low, high = est[name]["ci95"]
        assert low - half <= truth["value"] <= high + half, (name, est[name], truth)
    # A real counterfactual: the target is clearly better than the logger; FQE's direct method
    # (a model of the shown items' features) lands within 5% of the truth.
    logged = uniform_logs.reward.sum() / uniform_logs.first_rows().sum()
    assert truth["value"] - logged > 10 * half, (truth, logged)
    assert abs(est["dm"]["value"] - truth["value"]) < 0.05 * truth["value"], (est["dm"], truth)


def test_is_estimators_refuse_unknown_propensities(tmp_path):
    """Thompson sampling has no closed-form slate probability: its logs carry null propensities."""
    c = compose_config("algo=lin_ts", *SMALL_IEV, "offline.record_steps=300", "offline.record_num_envs=50")
    record(c, tmp_path / "ts")
    data = LoggedData.read(tmp_path / "ts")
    assert np.isnan(data.propensity).all()
    policy, space = policy_of(c), env_spec(c).observation_space
    with pytest.raises(OPEError, match=r"propensity missing \(NaN\) in \d+ rows: row 0 \(episode 0, step 0\)"):
        ope_inputs(data, policy, space, False, 1.0, ["ips", "dm"], None, seed=0)
    inputs, info = ope_inputs(data, policy, space, False, 1.0, ["dm"], None, seed=0, fqe_refits=0)
    assert np.isfinite(estimate(inputs, ["dm"], n_bootstrap=50)["dm"]["value"]) and info["fqe"]["iterations"] == 3


# ---------------------------------------------------------------------------------------
# offline training on real RLlib
# ---------------------------------------------------------------------------------------
def record_lts(overrides, out: Path, steps: int, epsilon: float, seed: int) -> None:
    c = compose_config(*overrides, *LTS, "exploration=epsilon_greedy", f"exploration.initial_epsilon={epsilon}",
                       f"exploration.final_epsilon={epsilon}", f"offline.record_steps={steps}",
                       "offline.record_num_envs=50", f"seed={seed}")
    record(c, out)


def train_offline(algo: str, data: Path, updates: int, tmp_path: Path, *extra: str) -> tuple[float, dict]:
    """Train ``algo`` on ``data`` for ``updates`` gradient steps; its greedy return in the simulator."""
    from recsys_exp.runner.build import build_algorithm_config
    from recsys_exp.runner.evaluate import evaluate_checkpoint

    c = compose_config(f"algo={algo}", *LTS, f"offline.path={data}", *extra)
    _, config = build_algorithm_config(c)
    algo_ = config.build_algo()
    try:
        for _ in range(updates // config.updates_per_iteration):
            result = algo_.train()
        checkpoint = Path(algo_.save_to_path(str(tmp_path / f"{algo}_ckpt")))
    finally:
        algo_.stop()
    ev = evaluate_checkpoint(c, checkpoint, 200, 100, 12345)
    return ev["episode_return_mean"], result


def test_bc_on_a_good_policys_data_beats_random(ray_session, tmp_path):
    record_lts(GOOD, tmp_path / "good", 3000, 0.1, seed=1)
    bc, _ = train_offline("bc", tmp_path / "good", 300, tmp_path)
    assert bc > 477 + 40, bc  # random ≈ 477, the logged policy ≈ 562


@pytest.mark.slow
def test_cql_beats_bc_on_mixed_data_and_stays_finite(ray_session, tmp_path):
    """60% of sessions from the worst ranking, 40% from the best: BC copies the majority, CQL the rewards."""
    record_lts(BAD, tmp_path / "mixed" / "bad", 3000, 0.1, seed=2)
    record_lts(GOOD, tmp_path / "mixed" / "good", 2000, 0.1, seed=3)
    bc, _ = train_offline("bc", tmp_path / "mixed", 300, tmp_path)
    cql, result = train_offline("cql", tmp_path / "mixed", 300, tmp_path, "algo.training.gamma=0.9")
    q = result["learners"]["default_policy"]["q_taken_mean"]
    assert np.isfinite(q) and abs(q) < 1000, q  # returns are ≈ 20 per step: no divergence
    assert cql > bc + 40, (cql, bc)


# The whole path through the Python API (record -> cql -> ope.json with verdicts -> the cql checkpoint
# continued online) runs in examples/tutorial.ipynb, executed by tests/test_notebooks.py.


def test_offline_algorithm_without_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"offline.path: algo=cql learns from logged data"):
        compose_config("algo=cql")
    with pytest.raises(ConfigError, match=r"offline.path=.*: algo=slateq trains in the simulator"):
        compose_config("algo=slateq", f"offline.path={tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no \.parquet files"):
        compose_config("algo=bc", f"offline.path={tmp_path / 'empty'}")


def test_logged_data_that_does_not_fit_the_env_is_a_config_error(logged_iev):
    with pytest.raises(ConfigError, match=r"does not fit the env: num_candidates 10 \(env=interest_evolution: 6\)"):
        compose_config("algo=bc", f"offline.path={logged_iev}", "env.num_candidates=6")
