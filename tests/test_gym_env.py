"""``env=gym``: bring-your-own gymnasium envs, by registered id or ``package.module:Class``.

Checked before Ray starts (entry point, construction, spaces against the algorithm, modes), and
trained + evaluated in-process on RLlib: CartPole with PPO, and a slate env class with LinUCB.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from conftest import compose_config
from recsys_exp.config.validate import ConfigError
from recsys_exp.envs.gym_env import GymEnvError, make_gym_env, make_gym_vector_env

TOY = "recsys_exp.envs.examples.toy_slate:ToySlateEnv"
SPACES = "test_gym_env:SpacesEnv"  # this module: importable in the test process (validation needs no Ray)


class SpacesEnv(gym.Env):
    """An env with chosen spaces, for the unfit cases: ``obs`` / ``act`` name a space below."""

    OBS = {"box": gym.spaces.Box(-1.0, 1.0, (3,), np.float32), "text": gym.spaces.Text(8),
           "slate": gym.spaces.Dict({"user": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
                                     "doc": gym.spaces.Box(0.0, 1.0, (5, 2), np.float32),
                                     "response": gym.spaces.Dict({"click": gym.spaces.MultiDiscrete([2, 2])})})}
    ACT = {"discrete": gym.spaces.Discrete(25), "tuple": gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2),
           "slate": gym.spaces.MultiDiscrete([5, 5]), "slate3": gym.spaces.MultiDiscrete([5, 5, 5])}

    def __init__(self, obs: str = "box", act: str = "discrete"):
        self.observation_space, self.action_space = self.OBS[obs], self.ACT[act]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


def gym_overrides(entry_point: str, *extra: str) -> tuple[str, ...]:
    return ("env=gym", f"env.entry_point={entry_point}", *extra)


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("entry_point", "kwargs", "message"), [
    ("CartPol-v1", {}, "'CartPol-v1' is not a registered gymnasium id (did you mean CartPole-v1"),
    ("NoSuchEnv-v0", {}, "'NoSuchEnv-v0' is not a registered gymnasium id; a class is given as package.module:Class"),
    ("no_such_package.envs:MyEnv", {}, "cannot import module 'no_such_package.envs' (ModuleNotFoundError"),
    ("recsys_exp.envs.examples.toy_slate:NoSuchEnv", {}, "module 'recsys_exp.envs.examples.toy_slate' has no "
                                                         "attribute 'NoSuchEnv'"),
    ("math:pi", {}, "math:pi is a float, not a class or function"),
    ("builtins:dict", {}, "the entry point returned a dict, not a gymnasium.Env"),
    (TOY, {"horizn": 3}, "constructing the env failed: TypeError: ToySlateEnv.__init__() got an unexpected keyword "
                         "argument 'horizn'"),
    (None, {}, "env=gym needs env.entry_point: a registered gymnasium id (e.g. CartPole-v1) or package.module:Class"),
])
def test_entry_point_errors(entry_point, kwargs, message):
    with pytest.raises(GymEnvError) as err:
        make_gym_env(entry_point, kwargs)
    assert str(err.value).startswith(message), str(err.value)


def test_entry_points_construct_with_kwargs_and_time_limits():
    env = make_gym_env(TOY, {"num_candidates": 4, "horizon": 50}, max_episode_steps=3, seed=0)
    assert env.observation_space["doc"].shape == (4, 2)
    env.reset(seed=0)
    steps = [env.step(np.array([0, 1]))[3] for _ in range(3)]
    assert steps == [False, False, True]  # truncated by the TimeLimit, before the env's own horizon
    cartpole = make_gym_env("CartPole-v1", max_episode_steps=7)
    assert cartpole.spec.max_episode_steps == 7
    # module:Id imports the module first (to register its envs), then makes the id
    assert make_gym_env("gymnasium.envs.classic_control:CartPole-v1").action_space == gym.spaces.Discrete(2)


def test_vector_env_autoresets_next_step_and_is_seeded():
    venv = make_gym_vector_env("CartPole-v1", 3, max_episode_steps=5, seed=0)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    first, _ = venv.reset(seed=4)
    again, _ = make_gym_vector_env("CartPole-v1", 3, seed=0).reset(seed=4)
    np.testing.assert_array_equal(first, again)
    for t in range(5):
        _, _, term, trunc, _ = venv.step(np.zeros(3, dtype=np.int64))
    assert (term | trunc).all()


# ---------------------------------------------------------------------------------------
# validation: fitting and unfit envs, with the message that says which space is wrong
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    gym_overrides("CartPole-v1", "algo=ppo"),
    gym_overrides("CartPole-v1", "algo=dqn"),  # dqn.yaml's flatten_actions=true is ignored: the env is Discrete
    gym_overrides("Pendulum-v1", "algo=ppo"),  # PPO takes Box actions
    ("env=gym",),  # the default: a slate env class, with the default slateq
    *[gym_overrides(TOY, f"algo={algo}") for algo in ("random", "lin_ucb", "lin_ts", "slateq")],
    gym_overrides(TOY, "algo=greedy", "algo.training.score=feature"),
    gym_overrides(TOY, "algo=ppo", "+env.kwargs.num_candidates=4", "env.max_episode_steps=10"),
], ids=lambda o: " ".join(o))
def test_fitting_envs_validate(overrides):
    c = compose_config(*overrides)
    assert c["env"]["name"] == "gym"


UNFIT = [
    (gym_overrides("Pendulum-v1", "algo=dqn"),
     "env.entry_point=Pendulum-v1: algo=dqn needs a Discrete action space, the env has Box(-2.0, 2.0, (1,), float32)"),
    (gym_overrides("CartPole-v1", "algo=slateq"),
     "env.entry_point=CartPole-v1: algo=slateq is a slate algorithm: it needs a Dict observation with user (U,), "
     "doc (N, D) and a per-slot response.click, but a slate observation is a Dict(user, doc, response), got Box("),
    (gym_overrides(SPACES, "algo=lin_ucb", "+env.kwargs.obs=slate", "+env.kwargs.act=discrete"),
     f"env.entry_point={SPACES}: algo=lin_ucb is a slate algorithm: it needs a MultiDiscrete([5]*2) action space "
     "(5 = rows of the observation's doc, 2 = slots of its response.click), the env has Discrete(25)"),
    (gym_overrides(SPACES, "algo=random", "+env.kwargs.obs=slate", "+env.kwargs.act=slate3"),
     f"env.entry_point={SPACES}: algo=random is a slate algorithm: it needs a MultiDiscrete([5]*2) action space"),
    (gym_overrides(SPACES, "algo=ppo", "+env.kwargs.act=tuple"),
     f"env.entry_point={SPACES}: algo=ppo needs a Discrete, MultiDiscrete or Box action space, the env has "
     "Tuple(Discrete(2), Discrete(2))"),
    (gym_overrides(SPACES, "algo=ppo", "+env.kwargs.obs=text"),
     f"env.entry_point={SPACES}: algo=ppo reads the flattened observation (Box, Discrete, MultiDiscrete, "
     "MultiBinary or a Dict/Tuple of them), but the env's observation has Text("),
    (gym_overrides("CartPole-v1", "algo=ppo", "mode=record"),
     "mode='record': env=gym supports mode=train and mode=evaluate; record, serve and offline_study need a slate "
     "env (user, doc and response observations)"),
    (gym_overrides("CartPole-v1", "algo=bc", "offline.path=/tmp"),
     "algo.name='bc': offline algorithms learn from logged slate data; with env=gym train an online algorithm"),
    (gym_overrides(TOY, "algo=greedy"),
     "algo.training.score=affinity: algo=greedy ranks by <user, doc>, but env=gym has user features of width 1 and "
     "doc features of width 2; use algo.training.score=feature (with algo.training.feature_index)"),
    (gym_overrides("CartPole-v1", "algo=ppo", "+env.params.length=2"),
     "env.params={'length': 2}: env=gym passes constructor keywords as env.kwargs"),
    (gym_overrides("CartPol-v1", "algo=ppo"),
     "env.entry_point=CartPol-v1: 'CartPol-v1' is not a registered gymnasium id (did you mean CartPole-v1"),
    (("env=gym", "env.entry_point=null"),
     "env.entry_point=null: env=gym needs env.entry_point: a registered gymnasium id (e.g. CartPole-v1) or "
     "package.module:Class"),
    (("env=interest_evolution", "+env.kwargs.size=3"),
     "env.kwargs={'size': 3}: only env=gym takes constructor keywords; the constants of env=interest_evolution go "
     "in env.params"),
]


@pytest.mark.parametrize(("overrides", "message"), UNFIT, ids=[" ".join(o) for o, _ in UNFIT])
def test_unfit_envs_fail_with_the_space_and_the_reason(overrides, message):
    with pytest.raises(ConfigError) as err:
        compose_config(*overrides)
    assert str(err.value).startswith(message), str(err.value)


# ---------------------------------------------------------------------------------------
# training and evaluation on RLlib
# ---------------------------------------------------------------------------------------
def module_weights(checkpoint) -> dict:
    import pickle
    from pathlib import Path

    path = Path(checkpoint) / "learner_group" / "learner" / "rl_module" / "default_policy" / "module_state.pkl"
    with open(path, "rb") as f:
        return pickle.load(f)


def train_and_evaluate(c: dict, iterations: int, tmp_path, episodes: int = 4, num_envs: int = 2):
    """(greedy evaluation of the trained policy, its checkpoint, a checkpoint from before training)."""
    from recsys_exp.runner.build import build_algorithm_config
    from recsys_exp.runner.evaluate import evaluate_checkpoint

    _, config = build_algorithm_config(c)
    trainer = config.build_algo()
    try:
        initial = trainer.save_to_path(str(tmp_path / "initial"))
        for _ in range(iterations):
            result = trainer.train()
        checkpoint = trainer.save_to_path(str(tmp_path / "ckpt"))
    finally:
        trainer.stop()
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] > 0
    return evaluate_checkpoint(c, checkpoint, episodes=episodes, num_envs=num_envs, seed=1), checkpoint, initial


def test_cartpole_trains_with_ppo_and_evaluates(ray_session, tmp_path):
    """PPO does not master CartPole within a test budget; checked: the policy was trained (its
    weights left their initial values) and the greedy evaluation reads the env's own reward."""
    c = compose_config(*gym_overrides("CartPole-v1", "algo=ppo"), "algo.training.train_batch_size_per_learner=200",
                       "algo.training.minibatch_size=100", "algo.training.num_epochs=1", "model.hidden_sizes=[16]",
                       "algo.env_runners.num_envs_per_env_runner=2", "env.max_episode_steps=50")
    ev, checkpoint, initial = train_and_evaluate(c, 2, tmp_path)
    assert ev["episodes"] == 4 and 1 <= ev["episode_len_mean"] <= 50
    assert ev["episode_return_mean"] == pytest.approx(ev["episode_len_mean"])  # CartPole pays 1 per step
    trained, before = module_weights(checkpoint), module_weights(initial)
    assert trained.keys() == before.keys()
    assert any(not (trained[k] == before[k]).all() for k in before if hasattr(before[k], "shape")), \
        "no weight changed in training"


TOY_TRAIN = ("+env.kwargs.horizon=10", "algo.training.train_batch_size_per_learner=100",
             "algo.env_runners.num_envs_per_env_runner=4")


def test_a_slate_env_class_trains_with_lin_ucb_and_beats_random(ray_session, tmp_path):
    """On the toy slate env (clicks = reward, quality observed), 200 steps of LinUCB lift the greedy
    return well above the random policy's under the same evaluation episodes and seed."""
    c = compose_config(*gym_overrides(TOY, "algo=lin_ucb"), *TOY_TRAIN)
    ev = train_and_evaluate(c, 2, tmp_path / "lin_ucb", episodes=32, num_envs=16)[0]
    assert ev["episodes"] == 32 and ev["episode_len_mean"] == 10 and 0 <= ev["episode_return_mean"] <= 10
    c = compose_config(*gym_overrides(TOY, "algo=random"), *TOY_TRAIN)
    random = train_and_evaluate(c, 1, tmp_path / "random", episodes=32, num_envs=16)[0]
    # ~9.1 clicks per session against random's ~6.7 under this seed
    assert ev["episode_return_mean"] > random["episode_return_mean"] + 1.5, (ev, random)
    assert ev["ci95"][0] > random["ci95"][1], (ev, random)
