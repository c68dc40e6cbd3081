"""The policy contract for every kind of RLModule, numpy in and out, over flattened observations.

One adapter per kind of module; which one a module gets is declared by its algorithm plugin
(:attr:`recsys_exp.algorithms.plugin.AlgorithmPlugin.policy_adapter`), never guessed:

* :class:`SlateModulePolicy`: this package's slate modules
  (:class:`~recsys_exp.algorithms.common.SlatePolicyModule`), which implement the contract themselves;
* :class:`EpsilonGreedyQPolicy`: RLlib's DQN (and CQL-DQN): ε-greedy over the flat actions
  Discrete(N**K), P(A) = ε/N**K + (1-ε)·[A = greedy], per slot ε/N + (1-ε)·[A_k = greedy_k];
* :class:`CategoricalPolicy`: RLlib's PPO / BC / MARWIL and any module with an action-distribution
  head: a categorical over flat slates or one per slot (probabilities from the logits), or, in a
  non-slate gym env, whatever distribution the module declares.

The contract, for observations (B, obs_dim) float32:

* ``greedy(obs)`` -> (B, K) int64 slates (a non-slate env: (B, ...) env actions);
* ``sample(obs, t)`` -> ``{"action", "propensity" (B,), "slot_propensity" (B, K)}``: an exploring
  action at env step t with its exact probability (NaN where the policy has no closed form);
* ``slot_probabilities(obs, t, explore)`` -> (B, K, N): P(slot k shows candidate i);
* ``support(obs, explore, t)`` -> ``(slates (B, M, K), probs (B, M))``, the whole distribution,
  or :class:`~recsys_exp.algorithms.slates.NotEnumerable`;
* ``greedy_with_scores(obs)`` -> greedy slates and, per slot, the probability the policy's own
  (un-mixed) distribution gives the shown item there (1 for deterministic policies).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns

from recsys_exp.algorithms.slates import (
    NotEnumerable,
    decode_flat_slate,
    epsilon_mixed_support,
    epsilon_mixture,
    slot_matrix,
)


class PolicyAdapter:
    """Base of the adapters: a module, and ``slate=(N, K)`` for slate envs (None: the env's own
    actions, e.g. CartPole's Discrete(2); only ``greedy`` and ``sample`` apply then)."""

    def __init__(self, module, slate: tuple[int, int] | None):
        self.module = module
        self.n, self.k = slate if slate is not None else (None, None)
        self.is_slate = slate is not None
        self.flat_actions = self.is_slate and isinstance(module.action_space, gym.spaces.Discrete)

    # --- helpers --------------------------------------------------------------------------
    @staticmethod
    def _batch(obs: np.ndarray) -> dict:
        return {Columns.OBS: torch.as_tensor(obs)}

    def _slates(self, actions: torch.Tensor) -> torch.Tensor:
        """Module actions -> slates (B, K) long (flat indices decoded); env actions unchanged."""
        if not self.is_slate:
            return actions
        actions = actions.long()
        return decode_flat_slate(actions, self.n, self.k) if self.flat_actions else actions

    def _need_slate(self, what: str) -> None:
        if not self.is_slate:
            raise NotImplementedError(f"{what} is defined for slate policies only")

    def support(self, obs: np.ndarray, explore: bool, t: int = 0, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The policy as ``(slates (B, M, K), probs (B, M))`` (in chunks of ``chunk`` rows);
        raises :class:`NotEnumerable` where it cannot be listed."""
        self._need_slate("support")
        out_s, out_p = [], []
        with torch.no_grad():
            for lo in range(0, len(obs), chunk):
                s, p = self._support(torch.as_tensor(obs[lo:lo + chunk]), explore, t)
                out_s.append(s.numpy())
                out_p.append(p.double().numpy())
        return np.concatenate(out_s), np.concatenate(out_p)

    # --- the contract (subclasses) -----------------------------------------------------------
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Inference actions: slates (B, K) int64, or env actions for non-slate envs."""
        raise NotImplementedError

    def sample(self, obs: np.ndarray, t: int = 0) -> dict[str, np.ndarray]:
        """Exploring actions at env step ``t``: ``action``, ``propensity`` (B,), ``slot_propensity``
        (B, K) (None for non-slate envs); NaN where the policy cannot say."""
        raise NotImplementedError

    def slot_probabilities(self, obs: np.ndarray, t: int = 0, explore: bool = True) -> np.ndarray:
        """(B, K, N) float64: P(slot k shows candidate i | obs)."""
        raise NotImplementedError

    def greedy_with_scores(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy slates (B, K) and the un-mixed policy's probability of each shown item in its slot (B, K)."""
        raise NotImplementedError

    def _support(self, obs: torch.Tensor, explore: bool, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SlateModulePolicy(PolicyAdapter):
    """A :class:`~recsys_exp.algorithms.common.SlatePolicyModule`: it implements the contract itself."""

    @torch.no_grad()
    def greedy(self, obs):
        return self.module.greedy_slate(torch.as_tensor(obs)).numpy()

    @torch.no_grad()
    def sample(self, obs, t=0):
        slate, logp, slot_logp = self.module.sample_slate(torch.as_tensor(obs), t)
        return {"action": slate.numpy(), "propensity": logp.exp().double().numpy(),
                "slot_propensity": slot_logp.exp().double().numpy()}

    @torch.no_grad()
    def slot_probabilities(self, obs, t=0, explore=True):
        return self.module.slot_probabilities(torch.as_tensor(obs), t, explore).double().numpy()

    @torch.no_grad()
    def greedy_with_scores(self, obs):
        x = torch.as_tensor(obs)
        slate = self.module.greedy_slate(x)
        scores = self.module.slot_probabilities(x, 0, explore=False).gather(2, slate[..., None])[..., 0]
        return slate.numpy(), scores.double().numpy()

    def _support(self, obs, explore, t):
        return self.module.slate_distribution(obs, t, explore)


class EpsilonGreedyQPolicy(PolicyAdapter):
    """RLlib's DQN-style module: greedy in Q, ε-uniform over all of its Discrete actions (module docstring)."""

    def _epsilon(self, t: int) -> float:
        schedule = self.module.epsilon_schedule
        schedule.update(t)
        return float(schedule.get_current_value())

    @property
    def _num_actions(self) -> int:
        return int(self.module.action_space.n)

    def _greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self._slates(self.module.forward_inference({Columns.OBS: obs})[Columns.ACTIONS])

    @torch.no_grad()
    def greedy(self, obs):
        return self._greedy(torch.as_tensor(obs)).numpy()

    @torch.no_grad()
    def sample(self, obs, t=0):
        x = torch.as_tensor(obs)
        actions = self._slates(self.module.forward_exploration({Columns.OBS: x}, t=t)[Columns.ACTIONS])
        eps = self._epsilon(t)
        greedy = self._greedy(x)
        same = actions == greedy
        if not self.is_slate:
            p = epsilon_mixture(same.double(), eps, 1.0 / self._num_actions)
            return {"action": actions.numpy(), "propensity": p.numpy(), "slot_propensity": None}
        p = epsilon_mixture(same.all(-1).double(), eps, 1.0 / self._num_actions)
        slot = epsilon_mixture(same.double(), eps, 1.0 / self.n)
        return {"action": actions.numpy(), "propensity": p.numpy(), "slot_propensity": slot.numpy()}

    @torch.no_grad()
    def slot_probabilities(self, obs, t=0, explore=True):
        self._need_slate("slot_probabilities")
        greedy = self._greedy(torch.as_tensor(obs))
        onehot = torch.nn.functional.one_hot(greedy, self.n).double()
        return (epsilon_mixture(onehot, self._epsilon(t), 1.0 / self.n) if explore else onehot).numpy()

    @torch.no_grad()
    def greedy_with_scores(self, obs):
        slate = self.greedy(obs)
        return slate, np.ones(slate.shape)

    def _support(self, obs, explore, t):
        greedy = self._greedy(obs)[:, None, :]
        probs = torch.ones(greedy.shape[0], 1, dtype=torch.float64)
        eps = self._epsilon(t) if explore else 0.0
        if eps <= 0.0:
            return greedy, probs
        universe = decode_flat_slate(torch.arange(self._num_actions), self.n, self.k)
        return epsilon_mixed_support(greedy, probs, eps, universe)


class CategoricalPolicy(PolicyAdapter):
    """A module with an action-distribution head (``Columns.ACTION_DIST_INPUTS``): one categorical
    over flat slates, one per slot, or (non-slate envs) whatever distribution the module declares."""

    def _dist(self, obs: torch.Tensor, explore: bool, t: int = 0):
        if explore:
            logits = self.module.forward_exploration({Columns.OBS: obs}, t=t)[Columns.ACTION_DIST_INPUTS]
            return logits, self.module.get_exploration_action_dist_cls().from_logits(logits)
        logits = self.module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        return logits, self.module.get_inference_action_dist_cls().from_logits(logits)

    def _marginals(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, N): P(slot k shows i) under the head's distribution."""
        b = logits.shape[0]
        if self.flat_actions:  # one softmax over N**K little-endian indices: slot 0 is the last axis
            probs = logits.softmax(-1).reshape(b, *([self.n] * self.k))
            return torch.stack([_sum_except(probs, self.k - j) for j in range(self.k)], dim=1)
        return torch.stack([p.softmax(-1) for p in logits.split(self.n, dim=-1)], dim=1)

    @torch.no_grad()
    def greedy(self, obs):
        _, dist = self._dist(torch.as_tensor(obs), explore=False)
        return self._slates(dist.to_deterministic().sample()).numpy()

    @torch.no_grad()
    def sample(self, obs, t=0):
        logits, dist = self._dist(torch.as_tensor(obs), explore=True, t=t)
        actions = dist.sample()
        p = dist.logp(actions).exp().double().numpy()
        if not self.is_slate:
            return {"action": actions.numpy(), "propensity": p, "slot_propensity": None}
        slates = self._slates(actions)
        slot = self._marginals(logits).gather(2, slates[..., None])[..., 0]
        return {"action": slates.numpy(), "propensity": p, "slot_propensity": slot.double().numpy()}

    @torch.no_grad()
    def slot_probabilities(self, obs, t=0, explore=True):
        self._need_slate("slot_probabilities")
        x = torch.as_tensor(obs)
        if explore:
            return self._marginals(self._dist(x, True, t)[0]).double().numpy()
        greedy = torch.as_tensor(self.greedy(obs))
        return torch.nn.functional.one_hot(greedy, self.n).double().numpy()

    @torch.no_grad()
    def greedy_with_scores(self, obs):
        logits, dist = self._dist(torch.as_tensor(obs), explore=False)
        slates = self._slates(dist.to_deterministic().sample())
        return slates.numpy(), self._marginals(logits).gather(2, slates[..., None])[..., 0].double().numpy()

    def _support(self, obs, explore, t):
        b = obs.shape[0]
        if not explore:
            return torch.as_tensor(self.greedy(obs.numpy()))[:, None, :], torch.ones(b, 1, dtype=torch.float64)
        logits, _ = self._dist(obs, True, t)
        num = self.n ** self.k
        universe = decode_flat_slate(torch.arange(num), self.n, self.k)
        if self.flat_actions:
            probs = logits.softmax(-1).double()
        else:
            per_slot = [p.softmax(-1).double() for p in logits.split(self.n, dim=-1)]
            probs = torch.ones(b, num, dtype=torch.float64)
            for j in range(self.k):
                probs = probs * per_slot[j][:, universe[:, j]]
        return universe[None].expand(b, num, self.k), probs


def _sum_except(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Sum over every axis but 0 and ``keep`` (torch's sum(dim=()) would sum everything)."""
    dims = tuple(d for d in range(1, x.dim()) if d != keep)
    return x.sum(dim=dims) if dims else x


__all__ = ["PolicyAdapter", "SlateModulePolicy", "EpsilonGreedyQPolicy", "CategoricalPolicy", "NotEnumerable",
           "slot_matrix"]
