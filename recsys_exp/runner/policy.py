"""One loader: a run dir, sweep dir or RLlib checkpoint becomes a :class:`Policy`.

A :class:`Policy` is the RLModule of a run (built from its saved config, with the checkpoint's
learner RLModule weights) together with the run's env spec: it takes the env's raw observations,
flattens them exactly like RLlib's ``FlattenObservations`` connector
(:func:`recsys_exp.envs.layout.flatten_observations`) and answers through the policy contract of
its module kind (:mod:`recsys_exp.algorithms.policy_adapters`, declared by the algorithm plugin's
``policy_adapter``). Evaluation, recording, off-policy evaluation, serving and sweeps all get
their policies here::

    policy = load_policy("outputs/2026-01-01/12-00-00")      # run dir, sweep dir or checkpoint
    slate = policy.recommend(env.reset()[0])                 # one observation -> (K,) int64
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from recsys_exp.algorithms.plugin import load_plugin
from recsys_exp.envs.spec import EnvSpec, env_spec
from recsys_exp.run_dir import CONFIG_FILE, load_config, locate_checkpoint


def module_spaces(c: Mapping[str, Any], spec: EnvSpec) -> tuple[gym.Space, gym.Space]:
    """(observation, action) space of the run's RLModule, as RLlib derives them in training: the
    ``FlattenObservations`` output ``Box(-inf, inf, (d,), float32)`` when ``algo.flatten_observations``
    (else the env's own space), and ``Discrete(N**K)`` for flattened slates (else the env's action space)."""
    from recsys_exp.envs.layout import flatten_observations

    obs_space, action_space = spec.observation_space, spec.action_space
    if c["algo"]["flatten_observations"]:
        sample = flatten_observations(obs_space, _batch_of_one(obs_space.sample()))
        obs_space = gym.spaces.Box(-np.inf, np.inf, (sample.shape[1],), np.float32)
    if c["algo"]["flatten_actions"] and not spec.is_gym:
        action_space = gym.spaces.Discrete(int(np.prod(action_space.nvec)))
    return obs_space, action_space


def build_module(c: Mapping[str, Any], checkpoint: str | Path | None = None):
    """The RLModule of config ``c`` (its exploration settings), fresh (weights seeded by ``c["seed"]``)
    or with the learner RLModule weights of the Algorithm ``checkpoint``; in eval mode."""
    import torch
    from ray.rllib.core import (COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE,
                                DEFAULT_MODULE_ID)
    from ray.rllib.core.rl_module.rl_module import RLModule

    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(dict(c))
    spaces = module_spaces(c, env_spec(c))
    spec = config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: spaces}, inference_only=False)
    torch.manual_seed(c["seed"])  # a fresh (unrestored) module's weights follow the run's seed
    module = spec.build()
    if checkpoint is not None:
        module_dir = (Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
                      / DEFAULT_MODULE_ID)
        module.set_state(RLModule.from_checkpoint(module_dir).get_state())
    module.eval()
    return module


def _batch_of_one(obs: Any) -> Any:
    """One observation -> a batch of one (a leading axis on every leaf)."""
    if isinstance(obs, Mapping):
        return {k: _batch_of_one(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_batch_of_one(v) for v in obs)
    return np.asarray(obs)[None]


def slate_probability(support: np.ndarray, probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """π(A|s) of slates (B, K) under a distribution ``(support (B, M, K), probs (B, M))``: (B,)."""
    match = (support == slates[:, None, :]).all(-1)
    return (probs * match).sum(-1)


def slot_probability(support: np.ndarray, probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """π(slot k shows A_k | s) of slates (B, K) under ``(support, probs)``: (B, K)."""
    match = support == slates[:, None, :]  # (B, M, K)
    return (probs[:, :, None] * match).sum(1)


class Policy:
    """A run's RLModule as a recommender: raw env observations in, env actions (slates) out.

    ``recommend(obs)`` answers one observation; the batch methods take observations already
    flattened by :meth:`flatten` ((B, obs_dim) float32) and return numpy arrays (see
    :mod:`recsys_exp.algorithms.policy_adapters` for the contract). ``is_slate``: the env takes
    slates (B, K) of candidates; otherwise actions are the env's own (e.g. CartPole's Discrete(2)).
    """

    def __init__(self, module, c: Mapping[str, Any], checkpoint: str | Path | None = None):
        self.module, self.config, self.checkpoint = module, dict(c), checkpoint
        self.spec = env_spec(c)
        self.observation_space = self.spec.observation_space
        self.action_space = self.spec.action_space
        self.flatten_inputs = bool(c["algo"]["flatten_observations"])
        self.is_slate = _is_slate_space(self.action_space) and _has_slate_layout(self.spec)
        slate = (int(self.action_space.nvec[0]), len(self.action_space.nvec)) if self.is_slate else None
        self.num_candidates, self.slate_size = slate if slate else (None, None)
        module_path, cls = load_plugin(c["algo"]).policy_adapter.split(":")
        self.adapter = getattr(importlib.import_module(module_path), cls)(module, slate)

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, c: Mapping[str, Any], checkpoint: str | Path | None) -> "Policy":
        """The module of config ``c`` with the weights of the Algorithm ``checkpoint`` (None: fresh)."""
        return cls(build_module(c, checkpoint), c, checkpoint)

    @classmethod
    def from_module(cls, module, c: Mapping[str, Any]) -> "Policy":
        """A live module (e.g. ``algo.get_module()`` of an in-memory Algorithm) under config ``c``;
        the module is used as it is (not copied, not put in eval mode)."""
        return cls(module, c)

    # --- observations -----------------------------------------------------------------------
    def flatten(self, obs: Any) -> np.ndarray:
        """A batch of raw env observations (leading batch axis on every leaf) -> the module's input
        (B, obs_dim) float32, as RLlib's ``FlattenObservations`` makes it (or unchanged when the run
        does not flatten observations)."""
        from recsys_exp.envs.layout import flatten_observations

        if self.flatten_inputs:
            return flatten_observations(self.observation_space, obs)
        return np.asarray(obs)

    def recommend(self, obs: Any) -> np.ndarray:
        """The greedy answer to ONE raw env observation (as ``env.reset()`` returns it): the slate
        (K,) int64, or for a non-slate env its action."""
        return self.greedy(self.flatten(_batch_of_one(obs)))[0]

    def act(self, obs: Any, explore: bool = False, t: int = 0) -> np.ndarray:
        """Env actions for a batch of raw observations (what a vector env's ``step`` takes): greedy,
        or sampled from the exploring policy at env step ``t``."""
        flat = self.flatten(obs)
        actions = self.sample(flat, t)["action"] if explore else self.greedy(flat)
        return self._to_env(actions)

    def _to_env(self, actions: np.ndarray) -> np.ndarray:
        """Box actions clipped to the env's bounds; others unchanged."""
        if isinstance(self.action_space, gym.spaces.Box):
            return np.clip(actions, self.action_space.low, self.action_space.high)
        return actions

    # --- the contract on flattened batches ------------------------------------------------------
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Inference slates (B, K) int64 (or env actions) of flattened observations (B, obs_dim)."""
        return self.adapter.greedy(obs)

    def greedy_with_scores(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy slates (B, K) and each slot's probability of its item under the policy's own
        distribution (1 for deterministic policies, softmax marginals for categorical heads)."""
        return self.adapter.greedy_with_scores(obs)

    def sample(self, obs: np.ndarray, t: int = 0) -> dict[str, np.ndarray]:
        """Exploring actions at env step ``t``: ``{"action", "propensity" (B,), "slot_propensity" (B, K)}``,
        exact probabilities (NaN where the policy has no closed form, e.g. Thompson sampling)."""
        return self.adapter.sample(obs, t)

    def slot_probabilities(self, obs: np.ndarray, explore: bool, t: int = 0) -> np.ndarray:
        """(B, K, N): P(slot k shows candidate i) under the greedy or the exploring policy."""
        return self.adapter.slot_probabilities(obs, t, explore)

    def support(self, obs: np.ndarray, explore: bool, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The whole slate distribution ``(slates (B, M, K), probs (B, M))`` (a slate may repeat; its
        probability is the sum); raises :class:`~recsys_exp.algorithms.slates.NotEnumerable` where
        there is no closed form or too many slates."""
        return self.adapter.support(obs, explore, t)

    def slate_probabilities(self, obs: np.ndarray, slates: np.ndarray, explore: bool,
                            t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """π(A|s) (B,) and π(slot k shows A_k|s) (B, K) of given slates (B, K), from :meth:`support`."""
        support, probs = self.support(obs, explore, t)
        return slate_probability(support, probs, slates), slot_probability(support, probs, slates)


def _is_slate_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.MultiDiscrete) and len(set(space.nvec.tolist())) == 1


def _has_slate_layout(spec: EnvSpec) -> bool:
    try:
        _ = spec.slate_layout
    except (ValueError, TypeError):
        return False
    return True


def _set(c: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` of config ``c``; a dict value is merged into a dict."""
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
        node = node.setdefault(p, {})
    if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        for k, v in value.items():
            _set(node[leaf], k, v)
    else:
        node[leaf] = value


def load_policy(path: str | Path, **config_overrides: Any) -> Policy:
    """The policy of a run dir (``checkpoints/last``), a sweep dir (its best trial's first seed) or
    an RLlib checkpoint dir, built from the saved ``config.yaml``.

    ``config_overrides``: changes to that config before the module is built, by group or dotted
    key, e.g. ``exploration={"type": "epsilon_greedy", ...}`` or ``**{"exploration.final_epsilon": 0.1}``
    (exploration settings decide the exploring policy's probabilities).
    """
    checkpoint, config_dir = locate_checkpoint(path)
    c = copy.deepcopy(load_config(Path(config_dir) / CONFIG_FILE))
    for key, value in config_overrides.items():
        _set(c, key, value)
    return Policy.from_checkpoint(c, checkpoint)
