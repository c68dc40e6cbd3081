"""The env spec (recsys_exp.envs.spec): one object per configured env, built once, the same env as
the public constructors, and what the RLlib env creator and the JSON-lines import are built from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import compose_config
from recsys_exp.envs import make_vector_env
from recsys_exp.envs.spec import EnvSpec, env_spec, from_rllib_env_config


@pytest.mark.parametrize("env", [
    {"name": "interest_evolution", "num_candidates": 6, "slate_size": 3, "resample_documents": False,
     "max_episode_steps": 7, "params": {"time_budget": 50}},
    {"name": "long_term_satisfaction", "num_candidates": 4, "slate_size": 2, "params": {"sensitivity": 0.1}},
    {"name": "gym", "entry_point": "CartPole-v1", "kwargs": {}, "max_episode_steps": 20},
])
@pytest.mark.parametrize("flatten", [False, True])
def test_rllib_env_config_round_trips_to_the_same_spec(env, flatten):
    spec = EnvSpec.from_config(env, seed=4)
    back, flat = from_rllib_env_config(spec.rllib_name, {**spec.rllib_env_config(flatten), "num_envs": 3})
    assert back == spec
    assert flat == (flatten and not spec.is_gym)


def test_vector_env_is_the_public_constructors_env():
    spec = EnvSpec.from_config({"name": "interest_evolution", "num_candidates": 5, "slate_size": 2,
                                "params": {"no_click_mass": 2.0}}, seed=9)
    ours, theirs = spec.vector_env(3, seed=11), make_vector_env("interest_evolution", 3, num_candidates=5,
                                                                 slate_size=2, no_click_mass=2.0, seed=11)
    (a, _), (b, _) = ours.reset(seed=11), theirs.reset(seed=11)
    for key in ("user", "doc"):
        np.testing.assert_array_equal(a[key], b[key])
    slate = np.tile(np.array([[0, 1]]), (3, 1))
    for _ in range(5):
        ra, rb = ours.step(slate)[1], theirs.step(slate)[1]
        np.testing.assert_array_equal(ra, rb)


def test_validation_builds_the_env_once(monkeypatch):
    import recsys_exp.envs.core as core

    built = []
    original = core.SlateVectorEnv.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(core.SlateVectorEnv, "__init__", counting)
    # A seed no other test uses: the spec is not memoised yet.
    c = compose_config("seed=424242", "env.num_candidates=7")
    assert len(built) == 1
    assert env_spec(c) is env_spec(json.loads(json.dumps(c)))  # equal settings, one spec
    assert len(built) == 1


def test_jsonl_import_checks_against_the_env_with_its_params(tmp_path):
    """A log with one user feature fits Long-Term Satisfaction only with observe_satisfaction=true."""
    from recsys_exp.offline.jsonl import main

    line = {"user": [0.5], "candidates": [[0.1], [0.9], [0.4]], "slate": [1, 0], "click": 0, "reward": 3.0}
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(line) + "\n")
    assert main([str(log), str(tmp_path / "plain"), "--env", "long_term_satisfaction"]) == 2
    assert main([str(log), str(tmp_path / "observed"), "--env", "long_term_satisfaction",
                 "--env-param", "observe_satisfaction=true"]) == 0
    assert (tmp_path / "observed" / "manifest.json").is_file()
    assert main([str(log), str(tmp_path / "bad"), "--env-param", "x=1"]) == 2
