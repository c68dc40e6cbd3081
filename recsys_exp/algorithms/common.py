"""Pieces every slate algorithm shares: the slate-policy RLModule base, slate helpers, a learner
without gradients and an algorithm that only samples.

A slate is an ordered tuple of K distinct candidate indices, shape (B, K). Modules emit it as
``Columns.ACTIONS`` directly (no action distribution), either as the env's
``MultiDiscrete([N]*K)`` action or, when the env flattens slates, as the little-endian index
``Σ_k slate[k]·N^k`` of ``Discrete(N**K)`` (``recsys_exp.envs.wrappers.decode_flat_slate``).
They also emit ``Columns.ACTION_LOGP``, the log-probability of the emitted slate under the
behaviour policy where it has one (NaN where it has none, e.g. Thompson sampling), and
``SLOT_LOGP`` (B, K), the log marginal probability that slot k shows the item it shows, so
logged data can be used for off-policy evaluation (whole-slate and per-slot estimators).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS
from ray.rllib.utils.schedules.scheduler import Scheduler


SLOT_LOGP = "slot_logp"  # extra model output: (B, K) log P(slot k shows slate[k] | s)


def num_ordered_slates(num_candidates: int, slate_size: int) -> int:
    """N! / (N-K)!: the number of ordered slates of K distinct candidates."""
    return math.perm(num_candidates, slate_size)


def top_k_slate(scores: torch.Tensor, slate_size: int) -> torch.Tensor:
    """The K highest-scoring candidates, best first: (B, N) -> (B, K) long."""
    return scores.topk(slate_size, dim=-1).indices


def random_slate(batch_size: int, num_candidates: int, slate_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random ordered slates of K distinct candidates: (B, K) long."""
    return top_k_slate(torch.rand(batch_size, num_candidates, generator=generator), slate_size)


def encode_flat_slate(slate: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """(B, K) slates -> (B,) indices of Discrete(N**K), little-endian (slot 0 is the lowest digit)."""
    weights = num_candidates ** torch.arange(slate.shape[-1], device=slate.device)
    return (slate * weights).sum(-1)


def decode_flat_slate(action: torch.Tensor, num_candidates: int, slate_size: int) -> torch.Tensor:
    """Inverse of :func:`encode_flat_slate`: (B,) -> (B, K)."""
    weights = num_candidates ** torch.arange(slate_size, device=action.device)
    return (action[:, None] // weights) % num_candidates


class SlatePolicyModule(TorchRLModule):
    """Base RLModule of the slate algorithms.

    Reads the flattened slate observation through ``model_config["slate_layout"]``
    (:func:`recsys_exp.envs.layout.slate_layout`). Subclasses implement
    :meth:`greedy_slate` (used at evaluation) and may override :meth:`explore_slate`; the base
    adds epsilon-greedy (uniform random slates with probability ε, schedule
    ``model_config["epsilon"]`` over env steps) and the slate's behaviour log-probability.
    """

    def setup(self):
        layout = self.model_config["slate_layout"]
        self.user_start, self.user_dim = layout["user"]
        self.doc_start, self.num_candidates, self.doc_dim = layout["doc"]
        self.click_start, self.slate_size = layout["click"]
        self.flat_actions = isinstance(self.action_space, gym.spaces.Discrete)
        epsilon = self.model_config.get("epsilon")
        self.epsilon_schedule = Scheduler(epsilon, framework="torch") if epsilon else None
        self.log_num_slates = math.log(num_ordered_slates(self.num_candidates, self.slate_size))

    # --- reading the observation -------------------------------------------------------
    def user(self, obs: torch.Tensor) -> torch.Tensor:
        """User features (B, U); U may be 0."""
        return obs[:, self.user_start:self.user_start + self.user_dim]

    def docs(self, obs: torch.Tensor) -> torch.Tensor:
        """Candidate features (B, N, D), in action-index order."""
        n, d = self.num_candidates, self.doc_dim
        return obs[:, self.doc_start:self.doc_start + n * d].reshape(-1, n, d)

    def clicks(self, obs: torch.Tensor) -> torch.Tensor:
        """Which slot of the previous slate was clicked, (B, K) in {0, 1} (all 0: no click)."""
        pairs = obs[:, self.click_start:self.click_start + 2 * self.slate_size]
        return pairs.reshape(-1, self.slate_size, 2)[..., 1]

    def slates_from_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Env actions (B, K) or flat (B,) -> slates (B, K) long."""
        actions = actions.long()
        if self.flat_actions:
            return decode_flat_slate(actions, self.num_candidates, self.slate_size)
        return actions

    # --- choosing slates -------------------------------------------------------------------
    def greedy_slate(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy's best slate (B, K); used at evaluation and as the exploit branch."""
        raise NotImplementedError

    def explore_slate(self, obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(slate, log-probability or None if it is the greedy slate) while training."""
        return self.greedy_slate(obs), None

    def slot_logp(self, slate: torch.Tensor, logp: torch.Tensor | None) -> torch.Tensor:
        """(B, K) log P(slot k shows slate[k]) of the policy's own choice (before ε-mixing):
        0 for a deterministic choice (``logp`` None), NaN when unknown; subclasses refine it."""
        if logp is None:
            return torch.zeros(slate.shape, dtype=torch.float32)
        return torch.full(slate.shape, float("nan"))

    def _output(self, slate: torch.Tensor, logp: torch.Tensor, slot_logp: torch.Tensor) -> dict[str, Any]:
        actions = encode_flat_slate(slate, self.num_candidates) if self.flat_actions else slate
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp.float(), SLOT_LOGP: slot_logp.float()}

    def _forward_inference(self, batch, **kwargs):
        with torch.no_grad():
            slate = self.greedy_slate(batch[Columns.OBS])
        return self._output(slate, torch.zeros(slate.shape[0]), torch.zeros(slate.shape))

    def _forward_exploration(self, batch, t=0, **kwargs):
        with torch.no_grad():
            obs = batch[Columns.OBS]
            slate, logp = self.explore_slate(obs, t)
            slot_logp = self.slot_logp(slate, logp)
            if logp is None:
                logp = torch.zeros(slate.shape[0])
            if self.epsilon_schedule is not None:
                self.epsilon_schedule.update(t)
                epsilon = float(self.epsilon_schedule.get_current_value())
                if epsilon > 0.0:
                    slate, logp, slot_logp = self._epsilon_mix(slate, logp, slot_logp, epsilon)
        return self._output(slate, logp, slot_logp)

    def _epsilon_mix(self, slate, logp, slot_logp, epsilon):
        """Replace each slate by a uniform random one with probability ε.

        Returns (slate, log P(slate), log P(slot k shows slate[k])) of the mixture.
        """
        b = slate.shape[0]
        uniform = random_slate(b, self.num_candidates, self.slate_size)
        explore = torch.rand(b) < epsilon
        mixed = torch.where(explore[:, None], uniform, slate)
        p_uniform = math.exp(-self.log_num_slates)
        # P(mixed) = (1-ε)·P_policy(mixed) + ε/#slates; P_policy is exp(logp) where the slate equals
        # the policy's own choice (exact for deterministic policies), 0 elsewhere.
        same = (mixed == slate).all(-1)
        p = epsilon * p_uniform + (1.0 - epsilon) * same.float() * logp.exp()
        # Per slot: a uniform ordered slate shows any given item in slot k with probability 1/N.
        same_slot = (mixed == slate).float()
        p_slot = epsilon / self.num_candidates + (1.0 - epsilon) * same_slot * slot_logp.exp()
        return mixed, p.log(), p_slot.log()

    def _forward_train(self, batch, **kwargs):
        return {}


class NoGradientLearner(TorchLearner):
    """A Learner that registers no optimizer: for modules without trainable weights, or whose
    statistics are updated in closed form inside ``compute_loss_for_module`` (torch buffers)."""

    def configure_optimizers_for_module(self, module_id, config=None):
        pass  # torch.optim.Adam([]) would raise; nothing here is trained by gradients

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        """No loss: a tensor without grad_fn, so ``compute_gradients`` returns {} and nothing steps."""
        return torch.tensor(0.0)


class SampleOnly(Algorithm):
    """An algorithm that does not learn: each iteration only samples ``train_batch_size_per_learner``
    env steps (for the training metrics). Used by the random and greedy baselines."""

    def training_step(self) -> None:
        _, env_runner_results = synchronous_parallel_sample(
            worker_set=self.env_runner_group, max_env_steps=self.config.total_train_batch_size,
            sample_timeout_s=self.config.sample_timeout_s, _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
