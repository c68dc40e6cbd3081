"""Unit and behaviour tests of the native RecSim environments (recsys_exp.envs).

Spec: /work/shared/reference/recsim.md (§1–4, §7.2, §8). Fast (no Ray except one cheap
registration check) and deterministic: every random draw comes from a fixed seed.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

from recsys_exp.envs import (
    ENV_NAMES,
    BanditObservation,
    bandit_feature_dim,
    bandit_features,
    env_param_names,
    make_env,
    make_vector_env,
    register_envs,
    rllib_env_name,
)
from recsys_exp.envs import interest_evolution as iev
from recsys_exp.envs import interest_exploration as iexp
from recsys_exp.envs import long_term_satisfaction as lts
from recsys_exp.envs.components import (
    MultinomialLogitChoice,
    MultinomialProportionalChoice,
    gather_slate,
)

IEV, LTS, IEXP = "interest_evolution", "long_term_satisfaction", "interest_exploration"

DOC_DIM = {IEV: 20, LTS: 1, IEXP: 3}
USER_DIM = {IEV: 20, LTS: 0, IEXP: 0}
RESPONSE_KEYS = {
    IEV: {"click", "watch_time", "quality", "cluster_id"},
    LTS: {"click", "engagement"},
    IEXP: {"click", "quality", "cluster_id"},
}
# Keywords that make episodes short, so a few dozen steps cross several episode boundaries.
SHORT = {IEV: {"time_budget": 8.0}, LTS: {"time_budget": 5}, IEXP: {"max_episode_steps": 6}}
SIZES = [(1, 1), (5, 3), (10, 2), (4, 4)]


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def assert_in_space(space: gym.Space, obs, path: str = "obs") -> None:
    """Like ``assert space.contains(obs)`` but names the offending leaf."""
    if isinstance(space, gym.spaces.Dict):
        assert isinstance(obs, dict), f"{path}: expected a dict, got {type(obs)}"
        assert set(obs) == set(space.spaces), f"{path}: keys {sorted(obs)} != {sorted(space.spaces)}"
        for key, sub in space.spaces.items():
            assert_in_space(sub, obs[key], f"{path}[{key!r}]")
        return
    value = np.asarray(obs)
    assert space.contains(obs), (f"{path} not in {space}: shape {value.shape}, dtype {value.dtype}, "
                                 f"min {value.min() if value.size else None}, "
                                 f"max {value.max() if value.size else None}")


def random_slates(rng: np.random.Generator, n: int, k: int, batch: int | None = None) -> np.ndarray:
    shape = (k,) if batch is None else (batch, k)
    return rng.integers(0, n, shape)


def tree_equal(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(tree_equal(a[key], b[key]) for key in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


def tree_copy(a):
    return {k: tree_copy(v) for k, v in a.items()} if isinstance(a, dict) else np.array(a, copy=True)


def run_single(env, actions, seed=None):
    """Play a fixed action sequence, resetting at episode ends; returns a list of transitions."""
    obs, _ = env.reset(seed=seed)
    out = [(tree_copy(obs), None, None, None)]
    for action in actions:
        obs, reward, term, trunc, _ = env.step(action)
        out.append((tree_copy(obs), reward, term, trunc))
        if term or trunc:
            obs, _ = env.reset()
            out.append((tree_copy(obs), None, None, None))
    return out


def run_vector(venv, actions, seed=None):
    obs, _ = venv.reset(seed=seed)
    out = [(tree_copy(obs), None, None, None)]
    for action in actions:
        obs, reward, term, trunc, _ = venv.step(action)
        out.append((tree_copy(obs), reward.copy(), term.copy(), trunc.copy()))
    return out


def trajectories_equal(a, b) -> bool:
    if len(a) != len(b):
        return False
    for (oa, ra, ta, ua), (ob, rb, tb, ub) in zip(a, b):
        if not tree_equal(oa, ob):
            return False
        if ra is None or rb is None:
            if ra is not rb:
                return False
            continue
        if not (np.array_equal(ra, rb) and np.array_equal(ta, tb) and np.array_equal(ua, ub)):
            return False
    return True


def single_returns(env, n_episodes: int, rng: np.random.Generator):
    n, k = env.action_space.nvec[0], len(env.action_space.nvec)
    returns, lengths = [], []
    env.reset()
    for _ in range(n_episodes):
        total, steps, done = 0.0, 0, False
        while not done:
            _, r, term, trunc, _ = env.step(random_slates(rng, n, k))
            total += r
            steps += 1
            done = term or trunc
        returns.append(total)
        lengths.append(steps)
        env.reset()
    return np.array(returns), np.array(lengths)


def vector_first_returns(venv, rng: np.random.Generator, max_steps: int = 10_000):
    """Return and length of the first episode of every sub-env."""
    b = venv.num_envs
    n, k = venv.single_action_space.nvec[0], len(venv.single_action_space.nvec)
    venv.reset()
    returns, lengths = np.zeros(b), np.zeros(b, dtype=int)
    finished = np.zeros(b, dtype=bool)
    for _ in range(max_steps):
        _, r, term, trunc, _ = venv.step(random_slates(rng, n, k, b))
        returns[~finished] += r[~finished]
        lengths[~finished] += 1
        finished |= term | trunc
        if finished.all():
            return returns, lengths
    raise AssertionError("not every sub-env finished an episode")


def zscore(a: np.ndarray, b: np.ndarray) -> float:
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    if se == 0:
        return 0.0 if a.mean() == b.mean() else np.inf
    return abs(a.mean() - b.mean()) / se


# ---------------------------------------------------------------------------------------
# 1. spaces
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("n,k", SIZES)
def test_action_space_is_multidiscrete(name, n, k):
    env = make_env(name, num_candidates=n, slate_size=k)
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    np.testing.assert_array_equal(env.action_space.nvec, [n] * k)
    venv = make_vector_env(name, 3, num_candidates=n, slate_size=k)
    assert isinstance(venv.single_action_space, gym.spaces.MultiDiscrete)
    np.testing.assert_array_equal(venv.single_action_space.nvec, [n] * k)
    # gymnasium batches MultiDiscrete as an integer Box [0, N-1] of shape (B, K)
    assert venv.action_space == gym.vector.utils.batch_space(venv.single_action_space, 3)
    assert venv.action_space.shape == (3, k)
    assert venv.action_space.contains(np.full((3, k), n - 1, dtype=np.int64))
    assert not venv.action_space.contains(np.full((3, k), n, dtype=np.int64))


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("n,k", SIZES)
def test_observation_shapes_and_response_keys(name, n, k):
    env = make_env(name, num_candidates=n, slate_size=k)
    space = env.observation_space
    assert set(space.spaces) == {"user", "doc", "response"}
    assert space["doc"].shape == (n, DOC_DIM[name])
    assert space["user"].shape == (USER_DIM[name],)
    assert set(space["response"].spaces) == RESPONSE_KEYS[name]
    for sub in space["response"].spaces.values():
        assert sub.shape == (k,)
    obs, info = env.reset()
    assert isinstance(info, dict)
    assert obs["doc"].shape == (n, DOC_DIM[name]) and obs["doc"].dtype == np.float32
    assert obs["user"].shape == (USER_DIM[name],) and obs["user"].dtype == np.float32
    assert set(obs["response"]) == RESPONSE_KEYS[name]
    for key, value in obs["response"].items():
        assert value.shape == (k,), key
        assert not np.any(value), f"response[{key!r}] is not all zeros after reset: {value}"

    venv = make_vector_env(name, 3, num_candidates=n, slate_size=k)
    obs, _ = venv.reset()
    assert obs["doc"].shape == (3, n, DOC_DIM[name])
    assert obs["user"].shape == (3, USER_DIM[name])
    assert set(obs["response"]) == RESPONSE_KEYS[name]
    for key, value in obs["response"].items():
        assert value.shape == (3, k), key
        assert not np.any(value), f"vector response[{key!r}] is not all zeros after reset"


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("n,k", SIZES)
@pytest.mark.parametrize("resample", [True, False])
def test_single_env_observations_in_space(name, n, k, resample):
    env = make_env(name, num_candidates=n, slate_size=k, resample_documents=resample, seed=3, **SHORT[name])
    env.action_space.seed(4)
    obs, _ = env.reset()
    assert_in_space(env.observation_space, obs)
    episodes = 0
    for _ in range(40):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert_in_space(env.observation_space, obs)
        assert isinstance(reward, float) and np.isfinite(reward) and reward >= 0.0
        assert isinstance(term, bool) and isinstance(trunc, bool) and isinstance(info, dict)
        if term or trunc:
            episodes += 1
            obs, _ = env.reset()
            assert_in_space(env.observation_space, obs)
    assert episodes >= 2, "the short-episode settings should cross episode boundaries"


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("n,k", SIZES)
@pytest.mark.parametrize("resample", [True, False])
def test_vector_env_observations_in_space(name, n, k, resample):
    b = 4
    venv = make_vector_env(name, b, num_candidates=n, slate_size=k, resample_documents=resample,
                           seed=5, **SHORT[name])
    assert venv.num_envs == b
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    venv.action_space.seed(6)
    obs, _ = venv.reset()
    assert_in_space(venv.observation_space, obs)
    ends = 0
    for _ in range(40):
        obs, reward, term, trunc, info = venv.step(venv.action_space.sample())
        assert_in_space(venv.observation_space, obs)
        for i in range(b):  # every row also belongs to the single space
            assert_in_space(venv.single_observation_space, _row(obs, i), f"obs row {i}")
        assert reward.shape == (b,) and reward.dtype == np.float64 and np.all(reward >= 0)
        assert term.shape == trunc.shape == (b,) and term.dtype == trunc.dtype == bool
        assert isinstance(info, dict)
        ends += int((term | trunc).sum())
    assert ends >= 2 * b, "the short-episode settings should cross autoresets"


def _row(obs, i):
    return {key: _row(value, i) if isinstance(value, dict) else value[i] for key, value in obs.items()}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_gymnasium_env_checker(name):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # IEv/IExp quality boxes are unbounded
        check_env(make_env(name, num_candidates=6, slate_size=3), skip_render_check=True)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_returned_observations_are_not_mutated_later(name):
    """Observations handed out must not change when the env steps or resets afterwards."""
    env = make_env(name, num_candidates=5, slate_size=2, seed=0, **SHORT[name])
    rng = np.random.default_rng(0)
    kept = []
    obs, _ = env.reset()
    kept.append((obs, tree_copy(obs)))
    for _ in range(25):
        obs, _, term, trunc, _ = env.step(random_slates(rng, 5, 2))
        kept.append((obs, tree_copy(obs)))
        if term or trunc:
            obs, _ = env.reset()
            kept.append((obs, tree_copy(obs)))
    for i, (live, snapshot) in enumerate(kept):
        assert tree_equal(live, snapshot), f"observation #{i} was modified after it was returned"

    venv = make_vector_env(name, 3, num_candidates=5, slate_size=2, seed=0, **SHORT[name])
    kept = []
    obs, _ = venv.reset()
    kept.append((obs, tree_copy(obs)))
    for _ in range(25):
        obs, *_ = venv.step(random_slates(rng, 5, 2, 3))
        kept.append((obs, tree_copy(obs)))
    obs, _ = venv.reset()  # a full reset must not overwrite the last step's observation
    kept.append((obs, tree_copy(obs)))
    venv.step(random_slates(rng, 5, 2, 3))
    for i, (live, snapshot) in enumerate(kept):
        assert tree_equal(live, snapshot), f"vector observation #{i} was modified after it was returned"


# ---------------------------------------------------------------------------------------
# 2. seeding
# ---------------------------------------------------------------------------------------
def _actions(n, k, steps, seed=0, batch=None):
    rng = np.random.default_rng(seed)
    return [random_slates(rng, n, k, batch) for _ in range(steps)]


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("resample", [True, False])
def test_same_seed_same_trajectory_single(name, resample):
    actions = _actions(6, 2, 30)
    kw = dict(num_candidates=6, slate_size=2, resample_documents=resample, **SHORT[name])
    a = run_single(make_env(name, seed=11, **kw), actions)
    b = run_single(make_env(name, seed=11, **kw), actions)
    assert trajectories_equal(a, b)
    c = run_single(make_env(name, seed=12, **kw), actions)
    assert not trajectories_equal(a, c)
    # The first observations already differ (fresh users / candidates).
    assert not tree_equal(a[0][0], c[0][0])


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("resample", [True, False])
def test_same_seed_same_trajectory_vector(name, resample):
    actions = _actions(6, 2, 30, batch=5)
    kw = dict(num_candidates=6, slate_size=2, resample_documents=resample, **SHORT[name])
    a = run_vector(make_vector_env(name, 5, seed=11, **kw), actions)
    b = run_vector(make_vector_env(name, 5, seed=11, **kw), actions)
    assert trajectories_equal(a, b)
    c = run_vector(make_vector_env(name, 5, seed=12, **kw), actions)
    assert not trajectories_equal(a, c)
    assert not tree_equal(a[0][0], c[0][0])


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("resample", [True, False])
def test_reset_with_seed_reproduces(name, resample):
    kw = dict(num_candidates=6, slate_size=2, resample_documents=resample, **SHORT[name])
    actions = _actions(6, 2, 20, seed=1)
    fresh = run_single(make_env(name, seed=7, **kw), actions)
    env = make_env(name, seed=99, **kw)
    run_single(env, _actions(6, 2, 13, seed=2))  # move the streams somewhere else first
    assert trajectories_equal(run_single(env, actions, seed=7), fresh)
    assert trajectories_equal(run_single(env, actions, seed=7), fresh)  # and again

    vactions = _actions(6, 2, 20, seed=1, batch=4)
    vfresh = run_vector(make_vector_env(name, 4, seed=7, **kw), vactions)
    venv = make_vector_env(name, 4, seed=99, **kw)
    run_vector(venv, _actions(6, 2, 13, seed=2, batch=4))
    assert trajectories_equal(run_vector(venv, vactions, seed=7), vfresh)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_reset_without_seed_continues_the_stream(name):
    env = make_env(name, num_candidates=6, slate_size=2, seed=0)
    first, _ = env.reset()
    first = tree_copy(first)
    second, _ = env.reset()
    assert not tree_equal(first["doc"], second["doc"]), "reset() without seed must draw new candidates"


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize("resample", [True, False])
def test_sub_envs_are_not_copies(name, resample):
    b = 6
    venv = make_vector_env(name, b, num_candidates=8, slate_size=2, resample_documents=resample, seed=0)
    obs, _ = venv.reset()
    for i in range(b):
        for j in range(i):
            assert not np.array_equal(obs["doc"][i], obs["doc"][j]), f"sub-envs {i} and {j} share candidates"
            if USER_DIM[name]:
                assert not np.array_equal(obs["user"][i], obs["user"][j]), f"sub-envs {i} and {j} share users"
    # Same slate everywhere: the latent users still respond differently.
    rewards = np.stack([venv.step(np.zeros((b, 2), dtype=np.int64))[1] for _ in range(10)], axis=1)
    assert len({tuple(r) for r in rewards}) > 1
    # Latent user state differs too (IEv interests, LTS NPE, IExp affinity).
    users = venv.unwrapped.core.users
    key = {IEV: "interests", LTS: "npe", IEXP: "affinity"}[name]
    assert len({users[key][i].tobytes() for i in range(b)}) == b


def test_lts_honours_seed():
    """The original LTS ignores env_config['seed'] (always 0); ours does not."""
    actions = _actions(10, 2, 12)
    a = run_single(make_env(LTS, seed=1), actions)
    b = run_single(make_env(LTS, seed=2), actions)
    assert not np.array_equal(a[0][0]["doc"], b[0][0]["doc"])
    assert [t[1] for t in a[1:]] != [t[1] for t in b[1:]]
    assert trajectories_equal(a, run_single(make_env(LTS, seed=1), actions))
    va = run_vector(make_vector_env(LTS, 3, seed=1), _actions(10, 2, 5, batch=3))
    vb = run_vector(make_vector_env(LTS, 3, seed=2), _actions(10, 2, 5, batch=3))
    assert not trajectories_equal(va, vb)


def test_seed_none_is_nondeterministic():
    a = make_env(IEV, seed=None).reset()[0]
    b = make_env(IEV, seed=None).reset()[0]
    assert not np.array_equal(a["user"], b["user"])


# ---------------------------------------------------------------------------------------
# 3. vector autoreset and episode ends
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENV_NAMES)
def test_vector_autoreset_next_step(name):
    b, n, k = 6, 5, 2
    # IEv with a tiny budget ends at different steps in different sub-envs.
    venv = make_vector_env(name, b, num_candidates=n, slate_size=k, seed=1, **SHORT[name])
    rng = np.random.default_rng(0)
    obs, _ = venv.reset()
    prev_done = np.zeros(b, dtype=bool)
    prev_user = obs["user"].copy()
    resets = 0
    mixed = False  # saw a step where some but not all sub-envs autoreset
    for _ in range(60):
        obs, reward, term, trunc, _ = venv.step(random_slates(rng, n, k, b))
        assert not np.any(term & trunc), "terminated and truncated at once"
        for i in np.nonzero(prev_done)[0]:
            assert reward[i] == 0.0 and not term[i] and not trunc[i]
            for key, value in obs["response"].items():
                assert not np.any(value[i]), f"row {i}: response[{key!r}] not zero on the reset step"
            if USER_DIM[name]:  # a fresh user: every interest re-drawn
                assert np.all(obs["user"][i] != prev_user[i])
            resets += 1
        live = ~prev_done
        # Rows that did not reset show the real response of the slate just served.
        if name in (IEV, IEXP):
            assert np.all(obs["response"]["quality"][live] != 0)
        if name == LTS:
            assert np.all(obs["response"]["click"][live, 0] == 1)
        if name == IEV:  # a continuing user changes at most the clicked cluster's interest
            changed = (obs["user"][live] != prev_user[live]).sum(axis=1)
            assert np.all(changed <= 1)
        mixed |= bool(prev_done.any() and not prev_done.all())
        prev_done = term | trunc
        prev_user = obs["user"].copy()
    assert resets >= b
    if name == IEV:
        assert mixed, "expected sub-envs to end at different steps"


@pytest.mark.parametrize("name", ENV_NAMES)
def test_vector_autoreset_ignores_action_and_leaves_other_rows_alone(name):
    b, n, k = 4, 6, 2
    kw = dict(num_candidates=n, slate_size=k, seed=3, **SHORT[name])
    a, c = make_vector_env(name, b, **kw), make_vector_env(name, b, **kw)
    rng = np.random.default_rng(0)
    a.reset()
    c.reset()
    done = np.zeros(b, dtype=bool)
    checked = 0
    for _ in range(40):
        act = random_slates(rng, n, k, b)
        other = act.copy()
        other[done] = (other[done] + 1) % n  # a different action only where the row autoresets
        oa, ra, ta, ua, _ = a.step(act)
        oc, rc, tc, uc, _ = c.step(other)
        assert tree_equal(oa, oc) and np.array_equal(ra, rc)
        assert np.array_equal(ta, tc) and np.array_equal(ua, uc)
        checked += int(done.sum())
        done = ta | ua
    assert checked > 0

    # Changing the action of one running row changes that row only (not the others).
    a, c = make_vector_env(IEV, b, num_candidates=n, slate_size=k, seed=3), \
        make_vector_env(IEV, b, num_candidates=n, slate_size=k, seed=3)
    oa0, _ = a.reset()
    c.reset()
    act = np.zeros((b, k), dtype=np.int64)
    other = act.copy()
    # serve the candidate of a different cluster to row 0
    clusters = oa0["doc"][0].argmax(axis=1)
    other[0] = int(np.nonzero(clusters != clusters[0])[0][0])
    oa, *_ = a.step(act)
    oc, *_ = c.step(other)
    assert not np.array_equal(oa["response"]["cluster_id"][0], oc["response"]["cluster_id"][0])
    for key in oa["response"]:
        np.testing.assert_array_equal(oa["response"][key][1:], oc["response"][key][1:])


def test_iexp_truncates_at_max_episode_steps():
    env = make_env(IEXP, seed=0)
    env.reset()
    for t in range(1, 101):
        _, _, term, trunc, _ = env.step(np.array([0, 1]))
        assert not term
        assert trunc == (t == 100), t
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0, 1]))

    env = make_env(IEXP, max_episode_steps=7, seed=0)
    for _ in range(2):
        env.reset()
        flags = [env.step(np.array([0, 1]))[2:4] for _ in range(7)]
        assert flags == [(False, False)] * 6 + [(False, True)]

    venv = make_vector_env(IEXP, 3, max_episode_steps=7, seed=0)
    venv.reset()
    truncs = []
    for _ in range(7 * 2 + 1):
        _, _, term, trunc, _ = venv.step(np.zeros((3, 2), dtype=np.int64))
        assert not term.any()
        truncs.append(bool(trunc.all()) if trunc.any() else False)
        assert trunc.all() or not trunc.any()
    # steps 1..7 (episode 1), step 8 = autoreset, steps 9..15 (episode 2)
    assert [i + 1 for i, t in enumerate(truncs) if t] == [7, 15]

    venv = make_vector_env(IEXP, 2, seed=0)
    venv.reset()
    ends = [t for t in range(1, 102) if venv.step(np.zeros((2, 2), dtype=np.int64))[3].any()]
    assert ends == [100]


def test_iexp_without_horizon_never_ends():
    env = make_env(IEXP, max_episode_steps=None, seed=0)
    env.reset()
    for _ in range(300):
        _, _, term, trunc, _ = env.step(np.array([0, 1]))
        assert not term and not trunc


@pytest.mark.parametrize("name", [IEV, LTS])
def test_max_episode_steps_truncates_other_envs(name):
    env = make_env(name, max_episode_steps=3, seed=0)
    env.reset()
    flags = [env.step(np.array([0, 1]))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_lts_terminates_at_exactly_time_budget():
    env = make_env(LTS, seed=0)
    for _ in range(2):
        env.reset()
        flags = [env.step(np.array([0, 1]))[2:4] for _ in range(60)]
        assert flags == [(False, False)] * 59 + [(True, False)]

    venv = make_vector_env(LTS, 3, time_budget=5, seed=0)
    venv.reset()
    ends = []
    for t in range(1, 6 * 3 + 1):
        _, reward, term, trunc, _ = venv.step(np.zeros((3, 2), dtype=np.int64))
        assert not trunc.any()
        assert term.all() or not term.any()
        if term.any():
            ends.append(t)
        if t in (6, 12, 18):  # autoreset steps
            np.testing.assert_array_equal(reward, 0.0)
        else:
            assert np.all(reward > 0)
    assert ends == [5, 11, 17]


def test_iev_terminates_when_budget_runs_out():
    env = make_env(IEV, seed=2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        env.reset()
        budget = env.unwrapped.core.users["budget"]
        assert budget[0] == 200.0
        for t in range(2000):
            _, _, term, trunc, _ = env.step(random_slates(rng, 10, 2))
            assert not trunc
            assert term == bool(env.unwrapped.core.users["budget"][0] <= 0)
            if term:
                break
        assert term and t > 10

    venv = make_vector_env(IEV, 8, time_budget=10.0, seed=0)
    venv.reset()
    for _ in range(100):
        budget_before = venv.unwrapped.core.users["budget"].copy()
        _, _, term, trunc, _ = venv.step(random_slates(rng, 10, 2, 8))
        assert not trunc.any()
        budget = venv.unwrapped.core.users["budget"]
        np.testing.assert_array_equal(term, (budget <= 0) & (budget_before > 0))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_vector_returns_match_single_env(name):
    kw = dict(num_candidates=8, slate_size=2, **SHORT[name])
    if name == IEV:
        kw["time_budget"] = 20.0
    single_r, single_len = single_returns(make_env(name, seed=10, **kw), 300, np.random.default_rng(1))
    vec_r, vec_len = vector_first_returns(make_vector_env(name, 300, seed=20, **kw), np.random.default_rng(2))
    assert zscore(single_r, vec_r) < 4, (single_r.mean(), vec_r.mean())
    if name == IEV:
        assert zscore(single_len, vec_len) < 4, (single_len.mean(), vec_len.mean())
    else:
        assert set(single_len) == set(vec_len) == {5 if name == LTS else 6}


# ---------------------------------------------------------------------------------------
# 4. dynamics (component level, controlled rng / constructed state)
# ---------------------------------------------------------------------------------------
def _freq_close(counts: np.ndarray, probs: np.ndarray, total: int) -> None:
    freq = counts / total
    tol = 5 * np.sqrt(probs * (1 - probs) / total) + 1e-12
    assert np.all(np.abs(freq - probs) <= tol), (freq, probs)


def test_iev_click_probabilities_proportional():
    p = iev.InterestEvolutionParams()
    model = iev.InterestEvolutionUserModel(p, 20)
    u = np.random.default_rng(0).uniform(-1, 1, 20)
    u[5] = -1.0  # an interest of −1 is never clicked
    clusters = np.array([3, 7, 3, 5])  # duplicate cluster 3: scored once per slot
    reps = 200_000
    users = {"interests": np.tile(u, (reps, 1)), "budget": np.full(reps, 200.0)}
    slate = {"cluster_id": np.tile(clusters, (reps, 1)), "quality": np.zeros((reps, 4))}
    scores = model.score(users, slate)
    np.testing.assert_array_equal(scores[0], u[clusters])
    choice = MultinomialProportionalChoice(p.no_click_mass, p.min_normalizer)
    clicked = choice.choose(np.random.default_rng(1), scores)
    assert clicked.min() >= 0 and clicked.max() <= 4
    s = u[clusters] + 1
    probs = np.append(s, 2.0) / (s.sum() + 2.0)
    counts = np.bincount(clicked, minlength=5)
    assert counts[3] == 0  # zero mass, never chosen
    _freq_close(counts, probs, reps)


def test_proportional_choice_rejects_scores_below_min_normalizer():
    with pytest.raises(ValueError, match="negative click mass"):
        MultinomialProportionalChoice(1.0, -1.0).choose(np.random.default_rng(0), np.array([[-1.5, 0.0]]))


def _iev_click_step(p, u_c, quality, budget, cluster=4, reps=1, clicked_slot=0, seed=0):
    model = iev.InterestEvolutionUserModel(p, 20)
    base = np.linspace(-0.9, 0.9, 20)
    interests = np.tile(base, (reps, 1))
    interests[:, cluster] = u_c
    users = {"interests": interests, "budget": np.full(reps, float(budget))}
    k = 2
    slate = {"cluster_id": np.tile([cluster, (cluster + 1) % 20], (reps, 1)),
             "quality": np.tile([quality, 0.7], (reps, 1))}
    clicked = np.full(reps, clicked_slot)
    rng = np.random.default_rng(seed)
    responses = model.respond(rng, users, slate, clicked)
    before = {key: v.copy() for key, v in users.items()}
    model.transition(rng, users, slate, clicked, responses)
    assert responses["click"].shape == (reps, k)
    return before, users, responses


@pytest.mark.parametrize("u_c", [-0.6, 0.0, 0.5, 0.95, -1.0, 1.0])
def test_iev_interest_update(u_c):
    p = iev.InterestEvolutionParams()
    reps = 40_000
    before, after, _ = _iev_click_step(p, u_c, quality=0.0, budget=200.0, reps=reps)
    update = 0.3 * (1 - abs(u_c)) * (1 - u_c)
    new = after["interests"][:, 4]
    up, down = np.isclose(new, u_c + update), np.isclose(new, u_c - update)
    assert np.all(up | down), np.unique(new)
    assert np.all(np.abs(new) <= 1.0)
    # only the clicked cluster moves
    others = np.arange(20) != 4
    np.testing.assert_array_equal(after["interests"][:, others], before["interests"][:, others])
    if update > 0:
        p_pos = (u_c + 1) / 2
        frac = up.mean()
        assert abs(frac - p_pos) <= 5 * np.sqrt(max(p_pos * (1 - p_pos), 1e-12) / reps) + 1e-12, (frac, p_pos)
    else:  # |u_c| = 1 (or u_c = 1): no movement
        np.testing.assert_array_equal(new, u_c)


def test_iev_interest_update_is_clipped():
    p = iev.InterestEvolutionParams(alpha_y_intercept=1.0)  # step (1 − |u|)(1 − u): can leave [−1, 1]
    before, after, _ = _iev_click_step(p, -0.5, quality=0.0, budget=200.0, reps=5000)
    new = after["interests"][:, 4]
    # −0.5 ± 0.75 → 0.25 or −1.25, clipped to −1
    assert set(np.round(np.unique(new), 12)) == {-1.0, 0.25}
    assert new.min() == -1.0


def test_iev_no_click_leaves_interests_and_costs_step_penalty():
    p = iev.InterestEvolutionParams()
    before, after, responses = _iev_click_step(p, 0.3, quality=2.0, budget=50.0, reps=3, clicked_slot=2)
    np.testing.assert_array_equal(after["interests"], before["interests"])
    np.testing.assert_array_equal(after["budget"], 49.5)
    np.testing.assert_array_equal(responses["click"], 0)
    np.testing.assert_array_equal(responses["watch_time"], 0)
    np.testing.assert_array_equal(iev.build(p).reward(responses), 0.0)


@pytest.mark.parametrize("budget,quality", [(200.0, 1.5), (200.0, -3.0), (2.5, 2.0), (4.0, 0.0), (0.7, -1.0)])
def test_iev_budget_update_and_watch_time(budget, quality):
    p = iev.InterestEvolutionParams()
    _, after, responses = _iev_click_step(p, 0.2, quality=quality, budget=budget, reps=1)
    w = min(budget, 4.0)  # watch time uses the pre-transition budget
    np.testing.assert_array_equal(responses["click"][0], [1, 0])
    np.testing.assert_allclose(responses["watch_time"][0], [w, 0.0])
    np.testing.assert_allclose(responses["quality"][0], [quality, 0.7])
    np.testing.assert_array_equal(responses["cluster_id"][0], [4, 5])
    expected = budget - w + (0.9 / 3.4) * w * quality
    np.testing.assert_allclose(after["budget"][0], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(iev.build(p).reward(responses), [w])


def test_iev_user_quality_factor_uses_pre_update_interest():
    p = iev.InterestEvolutionParams(user_quality_factor=0.5, document_quality_factor=2.0)
    u_c, q = 0.4, 1.0
    _, after, _ = _iev_click_step(p, u_c, quality=q, budget=100.0)
    received = 0.5 * (u_c + 1.0) + 2.0 * q
    np.testing.assert_allclose(after["budget"][0], 100.0 - 4.0 + (0.9 / 3.4) * 4.0 * received, atol=1e-12)


def test_iev_terminal_condition():
    model = iev.InterestEvolutionUserModel(iev.InterestEvolutionParams(), 20)
    users = {"interests": np.zeros((3, 20)), "budget": np.array([0.0, -0.1, 1e-9])}
    np.testing.assert_array_equal(model.terminated(users), [True, True, False])


def test_lts_npe_update_and_satisfaction():
    p = lts.LongTermSatisfactionParams(innovation_stddev=0.0)
    model = lts.LongTermSatisfactionUserModel(p)
    npe = np.array([0.0, 0.0, 0.0, 1.5, -1.5])
    c = np.array([1.0, 0.0, 0.5, 0.9, 0.2])
    users = {"npe": npe.copy(), "satisfaction": 1 / (1 + np.exp(-0.01 * npe)), "budget": np.full(5, 60)}
    slate = {"clickbait": np.stack([c, 1 - c], axis=1)}  # slot 1 must be irrelevant
    rng = np.random.default_rng(0)
    clicked = np.zeros(5, dtype=np.int64)
    responses = model.respond(rng, users, slate, clicked)
    model.transition(rng, users, slate, clicked, responses)
    expected = 0.7 * npe - 2.0 * (c - 0.5)  # the code's sign: choc (c → 1) lowers NPE
    np.testing.assert_allclose(users["npe"], expected, atol=1e-12)
    assert users["npe"][0] == -1.0 and users["npe"][1] == 1.0  # choc lowers, kale raises
    np.testing.assert_allclose(users["satisfaction"], 1 / (1 + np.exp(-0.01 * expected)), atol=1e-15)
    np.testing.assert_array_equal(users["budget"], 59)
    np.testing.assert_array_equal(model.terminated({"budget": np.array([1, 0, -1])}), [False, True, True])


def test_lts_engagement_uses_pre_transition_satisfaction():
    p = lts.LongTermSatisfactionParams(choc_stddev=0.0, kale_stddev=0.0, innovation_stddev=0.0)
    model = lts.LongTermSatisfactionUserModel(p)
    npe = np.array([-2.0, 0.5, 3.0])
    sat = 1 / (1 + np.exp(-0.01 * npe))
    c = np.array([0.1, 0.6, 1.0])
    users = {"npe": npe.copy(), "satisfaction": sat.copy(), "budget": np.full(3, 60)}
    slate = {"clickbait": np.stack([c, np.full(3, 0.5), np.full(3, 0.9)], axis=1)}
    rng = np.random.default_rng(0)
    responses = model.respond(rng, users, slate, np.zeros(3, dtype=np.int64))
    model.transition(rng, users, slate, np.zeros(3, dtype=np.int64), responses)
    np.testing.assert_allclose(responses["engagement"][:, 0], np.exp((5 * c + 4 * (1 - c)) * sat), rtol=1e-12)
    np.testing.assert_array_equal(responses["engagement"][:, 1:], 0.0)
    np.testing.assert_array_equal(responses["click"], [[1, 0, 0]] * 3)
    # the sampler: NPE₀ ∈ (−1/(2(1−γ)), 1/(2(1−γ))), SAT = σ(β·NPE₀), budget = time_budget
    u0 = lts.StaticUserSampler(p).sample(np.random.default_rng(0), 10_000)
    assert np.all(np.abs(u0["npe"]) < 0.5 / 0.3) and u0["npe"].min() < -1.5 and u0["npe"].max() > 1.5
    np.testing.assert_allclose(u0["satisfaction"], 1 / (1 + np.exp(-0.01 * u0["npe"])))
    np.testing.assert_array_equal(u0["budget"], 60)


def test_lts_engagement_scale_is_interpolated():
    p = lts.LongTermSatisfactionParams(choc_stddev=2.0, kale_stddev=0.5)
    model = lts.LongTermSatisfactionUserModel(p)
    reps, c = 100_000, 0.4
    users = {"npe": np.zeros(reps), "satisfaction": np.full(reps, 0.5), "budget": np.full(reps, 60)}
    slate = {"clickbait": np.full((reps, 1), c)}
    eng = model.respond(np.random.default_rng(0), users, slate, np.zeros(reps, dtype=np.int64))["engagement"][:, 0]
    log_e = np.log(eng)
    loc, scale = (5 * c + 4 * (1 - c)) * 0.5, c * 2.0 + (1 - c) * 0.5
    assert abs(log_e.mean() - loc) < 5 * scale / np.sqrt(reps)
    assert abs(log_e.std() - scale) < 0.01


def test_lts_reward_is_unclipped_engagement_and_observation_clips_at_100():
    # SAT = σ(0) = 0.5 with sensitivity 0; no noise → engagement = exp(20 · 0.5) = e^10 ≈ 22026
    env = make_env(LTS, num_candidates=3, slate_size=2, sensitivity=0.0, choc_mean=20.0, kale_mean=20.0,
                   choc_stddev=0.0, kale_stddev=0.0, seed=0)
    env.reset()
    for _ in range(3):
        obs, reward, *_ = env.step(np.array([2, 0]))
        assert reward == pytest.approx(np.exp(10.0), rel=1e-12)
        np.testing.assert_array_equal(obs["response"]["engagement"], np.array([100.0, 0.0], np.float32))
        np.testing.assert_array_equal(obs["response"]["click"], [1, 0])
        assert env.observation_space.contains(obs)


def test_lts_always_consumes_slot_zero():
    env = make_env(LTS, num_candidates=5, slate_size=3, seed=0)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs, reward, *_ = env.step(random_slates(rng, 5, 3))
        np.testing.assert_array_equal(obs["response"]["click"], [1, 0, 0])
        assert obs["response"]["engagement"][0] > 0 and np.all(obs["response"]["engagement"][1:] == 0)
        assert reward > 0


def test_iexp_logit_choice_with_no_click_logit_5():
    p = iexp.InterestExplorationParams()
    model = iexp.InterestExplorationUserModel()
    reps = 200_000
    affinity = np.array([2.0, 1.1])
    topics = np.array([0, 1, 0])
    quality = np.array([2.2, 1.3, 3.5])
    users = {"user_type": np.ones(reps, dtype=np.int64), "affinity": np.tile(affinity, (reps, 1))}
    slate = {"cluster_id": np.tile(topics, (reps, 1)), "quality": np.tile(quality, (reps, 1))}
    scores = model.score(users, slate)
    np.testing.assert_allclose(scores[0], affinity[topics] + quality)
    clicked = MultinomialLogitChoice(p.no_click_mass).choose(np.random.default_rng(0), scores)
    logits = np.append(affinity[topics] + quality, 5.0)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    _freq_close(np.bincount(clicked, minlength=4), probs, reps)
    # large logits do not overflow
    big = MultinomialLogitChoice(5.0).choose(np.random.default_rng(0), np.array([[1000.0, 0.0]]))
    assert big.tolist() == [0]
    # static user, no termination, reward = number of clicks
    responses = model.respond(None, users, slate, clicked)
    snapshot = {k: v.copy() for k, v in users.items()}
    model.transition(None, users, slate, clicked, responses)
    assert tree_equal(users, snapshot)
    assert not model.terminated(users).any()
    np.testing.assert_array_equal(iexp.build(p).reward(responses), (clicked < 3).astype(float))


def test_iexp_samplers():
    p = iexp.InterestExplorationParams()
    docs = iexp.TopicDocumentSampler(p).sample(np.random.default_rng(0), 200, 100)
    topic = docs["cluster_id"]
    assert abs((topic == 0).mean() - 0.2) < 0.01
    np.testing.assert_array_equal(docs["features"][..., :2], np.eye(2, dtype=np.float32)[topic])
    np.testing.assert_allclose(docs["features"][..., 2], docs["quality"].astype(np.float32))
    for t, mean in enumerate((0.8, 0.2)):
        logq = np.log(docs["quality"][topic == t])
        assert abs(logq.mean() - mean) < 0.01 and abs(logq.std() - 0.1) < 0.01
    users = iexp.ClusterUserSampler(p).sample(np.random.default_rng(0), 50_000)
    assert abs((users["user_type"] == 0).mean() - 0.3) < 0.01
    loga = np.log(users["affinity"])
    np.testing.assert_allclose(loga[users["user_type"] == 0].mean(axis=0), [0.1, 0.7], atol=0.01)
    np.testing.assert_allclose(loga[users["user_type"] == 1].mean(axis=0), [0.7, 0.1], atol=0.01)


def test_iev_samplers():
    p = iev.InterestEvolutionParams()
    docs = iev.UtilityModelVideoSampler(p).sample(np.random.default_rng(0), 500, 100)
    c = docs["cluster_id"]
    assert c.min() == 0 and c.max() == 19
    np.testing.assert_array_equal(docs["features"], np.eye(20, dtype=np.float32)[c])
    resid = docs["quality"] - np.asarray(p.cluster_means)[c]
    assert abs(resid.mean()) < 0.002 and abs(resid.std() - 0.1) < 0.002
    users = iev.UtilityModelUserSampler(p, 20).sample(np.random.default_rng(0), 1000)
    assert users["interests"].shape == (1000, 20)
    assert users["interests"].min() >= -1 and users["interests"].max() < 1
    assert abs(users["interests"].mean()) < 0.01
    np.testing.assert_array_equal(users["budget"], 200.0)


def test_duplicates_in_a_slate_are_scored_per_slot():
    docs = {"cluster_id": np.array([[4, 9, 2]]), "quality": np.array([[0.1, 0.2, 0.3]])}
    g = gather_slate(docs, np.array([[1, 1, 0, 1]]))
    np.testing.assert_array_equal(g["cluster_id"], [[9, 9, 4, 9]])
    np.testing.assert_array_equal(g["quality"], [[0.2, 0.2, 0.1, 0.2]])

    # Env level: the same candidate in every slot; each slot can be clicked, equally often.
    b, k = 4000, 3
    venv = make_vector_env(IEV, b, num_candidates=5, slate_size=k, seed=0)
    venv.reset()
    obs, *_ = venv.step(np.full((b, k), 2, dtype=np.int64))
    resp = obs["response"]
    assert np.all(resp["cluster_id"] == resp["cluster_id"][:, :1])
    assert np.all(resp["quality"] == resp["quality"][:, :1])
    assert np.all(resp["click"].sum(axis=1) <= 1)
    per_slot = resp["click"].sum(axis=0)
    assert np.all(per_slot > 0), per_slot
    mean = per_slot.mean()
    assert np.all(np.abs(per_slot - mean) < 5 * np.sqrt(mean)), per_slot

    venv = make_vector_env(IEXP, b, num_candidates=5, slate_size=k, seed=0)
    venv.reset()
    obs, *_ = venv.step(np.full((b, k), 4, dtype=np.int64))
    per_slot = obs["response"]["click"].sum(axis=0)
    assert np.all(per_slot > 0) and np.all(np.abs(per_slot - per_slot.mean()) < 5 * np.sqrt(per_slot.mean()))


def test_observations_show_next_candidates_and_responses_of_served_slate():
    """Step order (§1.3): responses describe the slate served from the *previous* candidates."""
    env = make_env(IEV, num_candidates=6, slate_size=3, seed=4)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        slate = random_slates(rng, 6, 3)
        served_clusters = obs["doc"][slate].argmax(axis=1)
        obs, *_ = env.step(slate)
        np.testing.assert_array_equal(obs["response"]["cluster_id"], served_clusters)

    env = make_env(IEXP, num_candidates=6, slate_size=2, seed=4)
    obs, _ = env.reset()
    for _ in range(20):
        slate = random_slates(rng, 6, 2)
        served = obs["doc"][slate]
        obs, reward, *_ = env.step(slate)
        np.testing.assert_array_equal(obs["response"]["cluster_id"], served[:, :2].argmax(axis=1))
        np.testing.assert_allclose(obs["response"]["quality"], served[:, 2])
        assert reward == obs["response"]["click"].sum()


@pytest.mark.parametrize("name", ENV_NAMES)
def test_resample_documents_false_keeps_candidates_for_the_instance_lifetime(name):
    env = make_env(name, num_candidates=5, slate_size=2, resample_documents=False, seed=0, **SHORT[name])
    obs, _ = env.reset()
    docs = obs["doc"].copy()
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs, _, term, trunc, _ = env.step(random_slates(rng, 5, 2))
        np.testing.assert_array_equal(obs["doc"], docs)
        if term or trunc:
            obs, _ = env.reset()
            np.testing.assert_array_equal(obs["doc"], docs)
    env2 = make_env(name, num_candidates=5, slate_size=2, resample_documents=True, seed=0)
    obs, _ = env2.reset()
    first = obs["doc"].copy()
    obs, *_ = env2.step(np.array([0, 1]))
    assert not np.array_equal(obs["doc"], first)


# ---------------------------------------------------------------------------------------
# 5. constants as keywords
# ---------------------------------------------------------------------------------------
SPEC_DEFAULTS = {
    IEV: dict(time_budget=200.0, no_click_mass=1.0, min_normalizer=-1.0, step_penalty=0.5, video_length=4.0,
              quality_stddev=0.1, user_quality_factor=0.0, document_quality_factor=1.0,
              user_update_alpha=0.9 / 3.4, alpha_x_intercept=1.0, alpha_y_intercept=0.3),
    LTS: dict(memory_discount=0.7, sensitivity=0.01, innovation_stddev=0.05, choc_mean=5.0, choc_stddev=1.0,
              kale_mean=4.0, kale_stddev=1.0, time_budget=60),
    IEXP: dict(topic_probs=(0.2, 0.8), topic_quality_mean=(0.8, 0.2), topic_quality_stddev=(0.1, 0.1),
               user_type_probs=(0.3, 0.7), affinity_mean=((0.1, 0.7), (0.7, 0.1)),
               affinity_stddev=((0.1, 0.1), (0.1, 0.1)), no_click_mass=5.0),
}
PARAM_CLASSES = {IEV: iev.InterestEvolutionParams, LTS: lts.LongTermSatisfactionParams,
                 IEXP: iexp.InterestExplorationParams}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_param_names_and_original_defaults(name):
    names = env_param_names(name)
    assert isinstance(names, tuple)
    # Beyond the original's constants: IEv's cluster means, LTS's tutorial-style satisfaction observation.
    extra = {IEV: {"cluster_means"}, LTS: {"observe_satisfaction"}}.get(name, set())
    assert set(names) == set(SPEC_DEFAULTS[name]) | extra
    defaults = PARAM_CLASSES[name]()
    for key, value in SPEC_DEFAULTS[name].items():
        np.testing.assert_allclose(getattr(defaults, key), value, rtol=1e-12, err_msg=key)
    if name == IEV:
        np.testing.assert_allclose(defaults.cluster_means, np.concatenate([np.linspace(-3, 0, 14),
                                                                           np.linspace(0, 3, 6)]))
        np.testing.assert_allclose(defaults.cluster_means[12:16], [-0.230769, 0.0, 0.0, 0.6], atol=1e-6)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_every_constant_is_accepted_as_keyword(name):
    defaults = PARAM_CLASSES[name]()
    kwargs = {}
    for key in env_param_names(name):
        value = getattr(defaults, key)
        # YAML gives lists where the dataclasses hold tuples
        kwargs[key] = [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, tuple) else value
    actions = _actions(10, 2, 15)
    explicit = run_single(make_env(name, seed=3, **kwargs), actions)
    implicit = run_single(make_env(name, seed=3), actions)
    assert trajectories_equal(explicit, implicit)
    run_vector(make_vector_env(name, 2, seed=3, **kwargs), _actions(10, 2, 3, batch=2))


def test_lts_constants_change_dynamics():
    env = make_env(LTS, sensitivity=0.058, time_budget=120, choc_stddev=0.1, kale_stddev=0.1,
                   num_candidates=20, seed=0)
    obs, _ = env.reset()
    assert obs["doc"].shape == (20, 1)
    p = env.unwrapped.core.sim.user_model.p
    assert (p.sensitivity, p.time_budget, p.choc_stddev, p.kale_stddev) == (0.058, 120, 0.1, 0.1)
    rng = np.random.default_rng(0)
    rewards, done = [], False
    while not done:
        obs, r, term, trunc, _ = env.step(random_slates(rng, 20, 2))
        rewards.append(r)
        done = term or trunc
    assert len(rewards) == 120 and term
    # σ = 0.1: engagement concentrates near exp(loc) with loc ∈ [4, 5]·SAT, SAT ∈ σ(±0.058·~3.4)
    log_r = np.log(rewards)
    assert log_r.min() > 0.5 and log_r.max() < 3.5
    default_rewards = []
    env = make_env(LTS, num_candidates=20, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(120 // 60):
        for _ in range(60):
            default_rewards.append(env.step(random_slates(rng, 20, 2))[1])
        env.reset()
    assert np.std(np.log(default_rewards)) > 3 * np.std(log_r)


def test_iev_and_iexp_constants_change_dynamics():
    # A smaller budget ends IEv episodes sooner.
    short, _ = single_returns(make_env(IEV, time_budget=10.0, seed=0), 30, np.random.default_rng(0))
    long_, _ = single_returns(make_env(IEV, time_budget=40.0, seed=0), 30, np.random.default_rng(0))
    assert short.mean() < long_.mean()
    # A huge no-click logit suppresses all IExp clicks; a very low one makes every step a click.
    never, _ = single_returns(make_env(IEXP, no_click_mass=60.0, max_episode_steps=20, seed=0), 5,
                              np.random.default_rng(0))
    always, _ = single_returns(make_env(IEXP, no_click_mass=-60.0, max_episode_steps=20, seed=0), 5,
                               np.random.default_rng(0))
    assert never.tolist() == [0.0] * 5 and always.tolist() == [20.0] * 5


# ---------------------------------------------------------------------------------------
# 6. bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENV_NAMES)
def test_bad_actions_single_env(name):
    env = make_env(name, num_candidates=5, slate_size=2)
    env.reset()
    with pytest.raises(ValueError, match=r"slate positions must be in \[0, 5\)"):
        env.step(np.array([0, 5]))
    with pytest.raises(ValueError, match=r"slate positions must be in \[0, 5\)"):
        env.step(np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"action must have shape \(2,\).*got shape \(3,\)"):
        env.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"action must have shape \(2,\).*got shape \(1,\)"):
        env.step([0])
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        env.step(np.array([[0, 1]]))
    with pytest.raises(TypeError, match="integer candidate positions, got dtype float64"):
        env.step(np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer candidate positions"):
        env.step(np.array([True, False]))
    # a rejected action does not advance the env; valid input types still work
    env.step([0, 4])
    env.step((1, 1))
    env.step(np.array([3, 2], dtype=np.int32))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_bad_actions_vector_env(name):
    venv = make_vector_env(name, 3, num_candidates=5, slate_size=2)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        venv.step(np.zeros((3, 2), dtype=np.int64))
    venv.reset()
    bad = np.zeros((3, 2), dtype=np.int64)
    bad[1, 1] = 5
    with pytest.raises(ValueError, match=r"slate positions must be in \[0, 5\)"):
        venv.step(bad)
    with pytest.raises(ValueError, match=r"action must have shape \(3, 2\).*got shape \(2,\)"):
        venv.step(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"action must have shape \(3, 2\).*got shape \(2, 2\)"):
        venv.step(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integer candidate positions, got dtype float32"):
        venv.step(np.zeros((3, 2), dtype=np.float32))
    venv.step(np.zeros((3, 2), dtype=np.int64))


def test_step_before_reset_and_after_episode_end_single_env():
    env = make_env(LTS, time_budget=2)
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        env.step(np.array([0, 1]))
    env.reset()
    env.step(np.array([0, 1]))
    assert env.step(np.array([0, 1]))[2]
    with pytest.raises(RuntimeError, match=r"episode has ended.*call reset\(\)"):
        env.step(np.array([0, 1]))
    env.reset()
    env.step(np.array([0, 1]))  # fine again


@pytest.mark.parametrize("factory", ["single", "vector"])
def test_bad_constructor_arguments(factory):
    def make(name, **kw):
        return make_env(name, **kw) if factory == "single" else make_vector_env(name, 2, **kw)

    with pytest.raises(ValueError, match=r"slate_size \(6\) must be <= num_candidates \(5\)"):
        make(IEV, num_candidates=5, slate_size=6)
    for key, value in [("num_candidates", 0), ("num_candidates", -3), ("slate_size", 0), ("slate_size", -1),
                       ("num_candidates", 2.5), ("slate_size", True), ("max_episode_steps", 0)]:
        with pytest.raises(ValueError, match=f"{key} must be a positive integer, got {value!r}"):
            make(IEXP, **{key: value})
    with pytest.raises(ValueError, match="seed must be a non-negative integer or None"):
        make(LTS, seed=-1)
    with pytest.raises(ValueError, match="unknown env 'recsim_lts'") as err:
        make("recsim_lts")
    for name in ENV_NAMES:
        assert name in str(err.value)
    with pytest.raises(TypeError, match="unknown parameter") as err:
        make(LTS, sensitivty=0.05)
    msg = str(err.value)
    assert "sensitivty" in msg
    for allowed in env_param_names(LTS) + ("num_candidates", "slate_size", "resample_documents", "seed",
                                            "max_episode_steps"):
        assert allowed in msg, allowed
    with pytest.raises(TypeError, match="unknown parameter.*cluster_means") as err:
        make(IEXP, cluster_means=(0.0,))  # an IEv constant is not an IExp one
    with pytest.raises(ValueError, match="unknown backend 'gym'; allowed: native, recsim"):
        make(IEV, backend="gym")


def test_bad_num_envs():
    for value in (0, -2, 1.5):
        with pytest.raises(ValueError, match=f"num_envs must be a positive integer, got {value!r}"):
            make_vector_env(IEV, value)


# ---------------------------------------------------------------------------------------
# 7. bandit view
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENV_NAMES)
def test_bandit_features_layout(name):
    n, d, u = 7, DOC_DIM[name], USER_DIM[name]
    env = make_env(name, num_candidates=n, slate_size=2, seed=1)
    obs, _ = env.reset()
    obs, *_ = env.step(np.array([0, 1]))
    x = bandit_features(obs)
    f = bandit_feature_dim(u, d)
    assert f == (1 + d + u + u * d if u else 1 + d)
    assert x.shape == (n, f) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], 1.0)
    np.testing.assert_array_equal(x[:, 1:1 + d], obs["doc"])
    if u:
        np.testing.assert_array_equal(x[:, 1 + d:1 + d + u], np.broadcast_to(obs["user"], (n, u)))
        outer = x[:, 1 + d + u:].reshape(n, u, d)
        for j in range(n):
            np.testing.assert_allclose(outer[j], np.outer(obs["user"], obs["doc"][j]))
            c = int(obs["doc"][j].argmax())
            assert x[j, 1 + d + u + c * d + c] == obs["user"][c]  # u[c_j] for candidate j
            assert np.trace(outer[j]) == pytest.approx(obs["user"][c])  # = u · doc_j


@pytest.mark.parametrize("name", ENV_NAMES)
def test_bandit_features_batched(name):
    b, n = 5, 6
    venv = make_vector_env(name, b, num_candidates=n, slate_size=1, seed=0)
    obs, _ = venv.reset()
    obs, *_ = venv.step(np.zeros((b, 1), dtype=np.int64))
    x = bandit_features(obs)
    assert x.shape == (b, n, bandit_feature_dim(USER_DIM[name], DOC_DIM[name]))
    for i in range(b):
        np.testing.assert_array_equal(x[i], bandit_features(_row(obs, i)))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_bandit_observation_wrapper(name):
    n = 6
    env = BanditObservation(make_env(name, num_candidates=n, slate_size=1, seed=0, **SHORT[name]))
    assert env.observation_space.shape == (n, bandit_feature_dim(USER_DIM[name], DOC_DIM[name]))
    assert env.action_space == gym.spaces.MultiDiscrete([n])
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs, reward, term, trunc, _ = env.step(random_slates(rng, n, 1))
        assert env.observation_space.contains(obs)
        if term or trunc:
            obs, _ = env.reset()
            assert env.observation_space.contains(obs)


# ---------------------------------------------------------------------------------------
# Ray Tune registration (the only test importing Ray; no ray.init)
# ---------------------------------------------------------------------------------------
def test_register_envs_with_tune_registry():
    from ray.tune.registry import ENV_CREATOR, _global_registry

    names = register_envs()
    assert names == [rllib_env_name(n) for n in ENV_NAMES] == ["recsim_" + n for n in ENV_NAMES]
    for name, tune_name in zip(ENV_NAMES, names):
        assert _global_registry.contains(ENV_CREATOR, tune_name)
        creator = _global_registry.get(ENV_CREATOR, tune_name)
        env = creator({"num_candidates": 4, "slate_size": 2, "seed": 1})
        assert isinstance(env, gym.Env) and env.unwrapped.name == name
        assert env.observation_space["doc"].shape == (4, DOC_DIM[name])
        venv = creator({"num_candidates": 4, "slate_size": 2, "num_envs": 3})
        assert isinstance(venv, gym.vector.VectorEnv) and venv.num_envs == 3
        obs, _ = venv.reset(seed=0)
        assert venv.observation_space.contains(obs)


def test_lts_observe_satisfaction_exposes_the_current_satisfaction():
    """The 2022 tutorial's wrapper: obs["user"] = SAT = sigmoid(sensitivity * NPE) after the transition;
    off by default (RecSim's LTS user state is latent), and the reference backend refuses it."""
    assert make_vector_env(LTS, num_envs=2, seed=0).single_observation_space["user"].shape == (0,)
    env = make_vector_env(LTS, num_envs=4, seed=3, sensitivity=0.058, observe_satisfaction=True)
    assert env.single_observation_space["user"] == gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    obs, _ = env.reset(seed=3)
    seen = [obs["user"][:, 0].copy()]
    for _ in range(3):
        obs, *_ = env.step(np.zeros((4, 2), dtype=np.int64))  # always the first candidate
        seen.append(obs["user"][:, 0].copy())
    npe = env.core.users["npe"]
    np.testing.assert_allclose(seen[-1], 1.0 / (1.0 + np.exp(-0.058 * npe)), rtol=1e-6)
    assert all(((s > 0.0) & (s < 1.0)).all() for s in seen)
    assert not np.allclose(seen[0], seen[-1])  # satisfaction moves with what is recommended
    with pytest.raises(ValueError, match="observe_satisfaction=True is the 2022 tutorial's wrapper"):
        make_env(LTS, backend="recsim", observe_satisfaction=True)
