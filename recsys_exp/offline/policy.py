"""Any trained (or fresh) RLModule of this framework seen as a distribution over slates.

Recording needs the behaviour policy's sample and its probabilities; off-policy evaluation needs
the target policy's probability of a logged slate and its possible slates at a state. Both work
for every module kind the framework trains, without an Algorithm or Ray:

* slate modules (``recsys_exp.algorithms``): emit the slate, ``action_logp`` and per-slot
  ``slot_logp`` themselves (ε-greedy mixing included);
* RLlib's DQN: ε-greedy over the flat actions, probabilities from the greedy action and ε;
* RLlib's PPO / BC / MARWIL: a (multi-)categorical action distribution over flat or per-slot
  actions, probabilities from its logits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from recsys_exp.algorithms.common import SLOT_LOGP, SlatePolicyModule, decode_flat_slate

MAX_SUPPORT = 5040  # ordered slates a stochastic target may spread over (OPE enumerates them)


def build_module(c: dict[str, Any], checkpoint: str | Path | None = None):
    """The RLModule of config ``c`` (its exploration settings), with ``checkpoint``'s weights if given."""
    from ray.rllib.core import (COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE,
                                DEFAULT_MODULE_ID)
    from ray.rllib.core.rl_module.rl_module import RLModule

    from recsys_exp.envs.layout import slate_layout
    from recsys_exp.envs.spec import env_spec
    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(c)
    space = env_spec(c).observation_space
    obs_space = gym.spaces.Box(-np.inf, np.inf, (slate_layout(space)["obs_dim"],), np.float32)
    n, k = c["env"]["num_candidates"], c["env"]["slate_size"]
    action_space = gym.spaces.Discrete(n ** k) if c["algo"]["flatten_actions"] else gym.spaces.MultiDiscrete([n] * k)
    spec = config.get_rl_module_spec(spaces={DEFAULT_MODULE_ID: (obs_space, action_space)}, inference_only=False)
    torch.manual_seed(c["seed"])  # a fresh (unrestored) module's weights follow the run's seed
    module = spec.build()
    if checkpoint is not None:
        module_dir = (Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
                      / DEFAULT_MODULE_ID)
        module.set_state(RLModule.from_checkpoint(module_dir).get_state())
    module.eval()
    return module


class ModulePolicy:
    """A module as a slate policy over flattened observations (torch in, numpy out)."""

    def __init__(self, module, num_candidates: int, slate_size: int):
        self.module, self.n, self.k = module, num_candidates, slate_size
        self.flat_actions = isinstance(module.action_space, gym.spaces.Discrete)
        self.num_flat = num_candidates ** slate_size

    def _slates(self, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.long()
        return decode_flat_slate(actions, self.n, self.k) if self.flat_actions else actions

    @torch.no_grad()
    def sample(self, obs: np.ndarray, t: int) -> dict[str, np.ndarray]:
        """Exploring behaviour: ``slate`` (B, K), ``propensity`` (B,) and ``slot_propensity`` (B, K)
        (NaN where the policy cannot say)."""
        from ray.rllib.core.columns import Columns

        batch = {Columns.OBS: torch.as_tensor(obs)}
        out = self.module.forward_exploration(batch, t=t)
        if Columns.ACTIONS not in out:  # a distribution head (PPO, BC, MARWIL)
            dist = self.module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            actions = dist.sample()
            slates = self._slates(actions)
            slot_p = self._slot_probs(out[Columns.ACTION_DIST_INPUTS], slates)
            return {"slate": slates.numpy(), "propensity": dist.logp(actions).exp().double().numpy(),
                    "slot_propensity": slot_p.double().numpy()}
        slates = self._slates(out[Columns.ACTIONS])
        if Columns.ACTION_LOGP in out:  # slate modules
            slot = out[SLOT_LOGP].exp() if SLOT_LOGP in out else torch.full(slates.shape, float("nan"))
            return {"slate": slates.numpy(), "propensity": out[Columns.ACTION_LOGP].exp().double().numpy(),
                    "slot_propensity": slot.double().numpy()}
        if hasattr(self.module, "epsilon_schedule"):  # RLlib DQN: ε-greedy over all flat actions
            eps = float(self.module.epsilon_schedule.get_current_value())
            greedy = self._slates(self.module.forward_inference(batch)[Columns.ACTIONS])
            same = (slates == greedy)
            p = eps / self.num_flat + (1 - eps) * same.all(-1).double()
            slot = eps / self.n + (1 - eps) * same.double()
            return {"slate": slates.numpy(), "propensity": p.numpy(), "slot_propensity": slot.numpy()}
        nan = np.full(len(obs), np.nan)
        return {"slate": slates.numpy(), "propensity": nan, "slot_propensity": np.full(slates.shape, np.nan)}

    def _slot_probs(self, logits: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """P(slot k shows slates[:, k]) under a categorical head: (B, K)."""
        b = logits.shape[0]
        if self.flat_actions:  # one softmax over N**K little-endian indices: slot 0 is the last axis
            probs = logits.softmax(-1).reshape(b, *([self.n] * self.k))
            marginals = [_sum_except(probs, self.k - j) for j in range(self.k)]
        else:  # one softmax per slot
            marginals = [p.softmax(-1) for p in logits.split(self.n, dim=-1)]
        return torch.stack([marginals[j].gather(1, slates[:, j:j + 1])[:, 0] for j in range(self.k)], dim=-1)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """The inference (no exploration) slate of each observation: (B, K)."""
        return self.greedy_with_scores(obs)[0]

    @torch.no_grad()
    def greedy_with_scores(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inference slates (B, K) and, per slot, the probability the policy gives that item there:
        1 for deterministic slate policies, the softmax marginal for categorical heads."""
        from ray.rllib.core.columns import Columns

        out = self.module.forward_inference({Columns.OBS: torch.as_tensor(obs)})
        if Columns.ACTIONS in out:
            slates = self._slates(out[Columns.ACTIONS])
            return slates.numpy(), np.ones(slates.shape)
        logits = out[Columns.ACTION_DIST_INPUTS]
        dist = self.module.get_inference_action_dist_cls().from_logits(logits)
        slates = self._slates(dist.to_deterministic().sample())
        return slates.numpy(), self._slot_probs(logits, slates).double().numpy()

    def support(self, obs: np.ndarray, explore: bool, t: int = 0, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The target policy as ``(slates (B, M, K), probs (B, M))``.

        ``explore=False``: the greedy slate with probability 1 (M = 1). ``explore=True``: the
        exploring distribution — a deterministic slate module or DQN mixed with ε-uniform slates,
        or a categorical head — over every slate it can show (M ≤ ``MAX_SUPPORT``).
        """
        out_s, out_p = [], []
        for lo in range(0, len(obs), chunk):
            s, p = self._support_chunk(obs[lo:lo + chunk], explore, t)
            out_s.append(s)
            out_p.append(p)
        return np.concatenate(out_s), np.concatenate(out_p)

    @torch.no_grad()
    def _support_chunk(self, obs: np.ndarray, explore: bool, t: int) -> tuple[np.ndarray, np.ndarray]:
        from ray.rllib.core.columns import Columns

        b = len(obs)
        if not explore:
            return self.greedy(obs)[:, None, :], np.ones((b, 1))
        m = self.module
        batch = {Columns.OBS: torch.as_tensor(obs)}
        if isinstance(m, SlatePolicyModule) or hasattr(m, "epsilon_schedule"):
            if isinstance(m, SlatePolicyModule):
                base, logp = m.explore_slate(batch[Columns.OBS], t)
                if logp is not None:
                    raise ValueError(f"{type(m).__name__} explores stochastically without enumerable "
                                     f"probabilities; evaluate its greedy policy (offline.target=greedy)")
                schedule, base = m.epsilon_schedule, base.numpy()
                universe = _all_ordered_slates(self.n, self.k)
            else:
                schedule, base = m.epsilon_schedule, self.greedy(obs)
                universe = decode_flat_slate(torch.arange(self.num_flat), self.n, self.k).numpy()
            eps = 0.0
            if schedule is not None:
                schedule.update(t)
                eps = float(schedule.get_current_value())
            slates = np.concatenate([base[:, None, :], np.broadcast_to(universe, (b, *universe.shape))], axis=1)
            probs = np.concatenate([np.full((b, 1), 1.0 - eps), np.full((b, len(universe)), eps / len(universe))], 1)
            return slates, probs
        out = m.forward_exploration(batch, t=t)
        logits = out[Columns.ACTION_DIST_INPUTS]
        universe = decode_flat_slate(torch.arange(self.num_flat), self.n, self.k)
        if self.flat_actions:
            probs = logits.softmax(-1)
        else:
            per_slot = [p.softmax(-1) for p in logits.split(self.n, dim=-1)]
            probs = torch.ones(b, self.num_flat)
            for j in range(self.k):
                probs = probs * per_slot[j][:, universe[:, j]]
        return np.broadcast_to(universe.numpy(), (b, *universe.shape)).copy(), probs.double().numpy()


def _sum_except(x: torch.Tensor, keep: int) -> torch.Tensor:
    """Sum over every axis but 0 and ``keep`` (torch's sum(dim=()) would sum everything)."""
    dims = tuple(d for d in range(1, x.dim()) if d != keep)
    return x.sum(dim=dims) if dims else x


def _all_ordered_slates(n: int, k: int) -> np.ndarray:
    count = math.perm(n, k)
    if count > MAX_SUPPORT:
        raise ValueError(f"an exploring target over N={n}, K={k} spreads over {count} slates "
                         f"(limit {MAX_SUPPORT}); evaluate the greedy policy (offline.target=greedy)")
    import itertools

    return np.array(list(itertools.permutations(range(n), k)), dtype=np.int64)


def slate_probability(support: np.ndarray, probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """π(A|s) of logged slates (B, K) under a support ``(B, M, K)``, ``(B, M)``: (B,)."""
    match = (support == slates[:, None, :]).all(-1)
    return (probs * match).sum(-1)


def slot_probability(support: np.ndarray, probs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """π(slot k shows A_k | s) of logged slates: (B, K)."""
    match = support == slates[:, None, :]  # (B, M, K)
    return (probs[:, :, None] * match).sum(1)
