"""``env=gym``: bring your own gymnasium environment.

``env.entry_point`` is either a registered gymnasium id (``CartPole-v1``; ``module:Id`` imports
``module`` first so it can register its envs) or ``package.module:Class`` (any callable that
returns a ``gymnasium.Env``), constructed with ``env.kwargs``. ``env.max_episode_steps`` adds a
``TimeLimit``. RLlib gets a ``SyncVectorEnv`` of them (NEXT_STEP autoreset) per EnvRunner.

Whether the env's spaces fit the chosen algorithm is checked before Ray starts
(:func:`recsys_exp.config.validate.check_gym_env`).
"""

from __future__ import annotations

import difflib
import functools
import importlib
from typing import Any, Callable

import gymnasium as gym

NAME = "gym"


class GymEnvError(ValueError):
    """The entry point cannot be resolved or constructed; the message says why."""


def resolve_entry_point(entry_point: str | None) -> Callable[..., gym.Env]:
    """A constructor ``f(**kwargs) -> gym.Env`` for ``entry_point`` (gymnasium id or ``module:Class``)."""
    if not entry_point or not isinstance(entry_point, str):
        raise GymEnvError("env=gym needs env.entry_point: a registered gymnasium id (e.g. CartPole-v1) or "
                          "package.module:Class")
    if ":" in entry_point:
        module_name, attr = entry_point.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise GymEnvError(f"cannot import module {module_name!r} ({type(e).__name__}: {e})") from None
        if hasattr(module, attr):
            ctor = getattr(module, attr)
            if not callable(ctor):
                raise GymEnvError(f"{entry_point} is a {type(ctor).__name__}, not a class or function")
            return ctor
        if attr in gym.registry:  # "module:EnvId": importing the module registered the id
            return functools.partial(gym.make, attr)
        raise GymEnvError(f"module {module_name!r} has no attribute {attr!r}, and {attr!r} is not a registered "
                          f"gymnasium id")
    if entry_point in gym.registry:
        return functools.partial(gym.make, entry_point)
    close = difflib.get_close_matches(entry_point, list(gym.registry), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise GymEnvError(f"{entry_point!r} is not a registered gymnasium id{hint}; a class is given as "
                      f"package.module:Class")


def make_gym_env(entry_point: str, kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None,
                 seed: int | None = None) -> gym.Env:
    """Construct one env; ``max_episode_steps`` truncates episodes, ``seed`` seeds its first reset."""
    ctor = resolve_entry_point(entry_point)
    kwargs = dict(kwargs or {})
    is_registered = isinstance(ctor, functools.partial) and ctor.func is gym.make
    if is_registered and max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    try:
        env = ctor(**kwargs)
    except Exception as e:  # noqa: BLE001 - a user env may raise anything; say which one failed
        raise GymEnvError(f"constructing the env failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          ) from None
    if not isinstance(env, gym.Env):
        raise GymEnvError(f"the entry point returned a {type(env).__name__}, not a gymnasium.Env")
    if max_episode_steps is not None and not is_registered:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_gym_vector_env(entry_point: str, num_envs: int, kwargs: dict[str, Any] | None = None,
                        max_episode_steps: int | None = None, seed: int | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` copies in a ``SyncVectorEnv`` with NEXT_STEP autoreset (what RLlib expects)."""
    make = functools.partial(make_gym_env, entry_point, kwargs, max_episode_steps)
    venv = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    if seed is not None:
        venv.reset(seed=seed)
    return venv


def env_spaces(entry_point: str, kwargs: dict[str, Any] | None = None) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of one freshly constructed env (closed again)."""
    env = make_gym_env(entry_point, kwargs)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
