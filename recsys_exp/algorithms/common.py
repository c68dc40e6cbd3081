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

The policy contract of every slate module (:class:`SlatePolicyModule`, torch in and out, over
flattened observations): :meth:`~SlatePolicyModule.greedy_slate`, :meth:`~SlatePolicyModule.sample_slate`
(with its exact log-propensity), :meth:`~SlatePolicyModule.slot_probabilities` (B, K, N) and
:meth:`~SlatePolicyModule.slate_distribution` (support + probabilities, or :class:`NotEnumerable`).
RLlib's own modules get the same contract from :mod:`recsys_exp.algorithms.policy_adapters`.
The slate helpers themselves live in :mod:`recsys_exp.algorithms.slates`.
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
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.rllib.utils.schedules.scheduler import Scheduler

from recsys_exp.algorithms.slates import (  # noqa: F401  (re-exported: the slate helpers of every module)
    MAX_SUPPORT,
    NotEnumerable,
    all_ordered_slates,
    decode_flat_slate,
    encode_flat_slate,
    epsilon_mixed_support,
    epsilon_mixture,
    num_ordered_slates,
    random_slate,
    slot_matrix,
    top_k_slate,
)


SLOT_LOGP = "slot_logp"  # extra model output: (B, K) log P(slot k shows slate[k] | s)


class SlatePolicyModule(TorchRLModule):
    """Base RLModule of the slate algorithms.

    Reads the flattened slate observation through ``model_config["slate_layout"]``
    (:func:`recsys_exp.envs.layout.slate_layout`). Subclasses implement
    :meth:`greedy_slate` (used at evaluation) and may override :meth:`explore_slate`,
    :meth:`slot_logp` and :meth:`base_distribution`; the base adds epsilon-greedy (uniform random
    slates with probability ε, schedule ``model_config["epsilon"]`` over env steps), the slate's
    behaviour log-probability and the rest of the policy contract (module docstring).
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

    # --- the policy contract (flattened observations (B, obs_dim) in, torch out) ----------------
    def greedy_slate(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy's best slate (B, K); used at evaluation and as the exploit branch."""
        raise NotImplementedError

    def explore_slate(self, obs: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hook: the exploring choice before ε-mixing, (slate (B, K), log-probability (B,) or None
        when it is deterministic; NaN where it has no closed form)."""
        return self.greedy_slate(obs), None

    def slot_logp(self, slate: torch.Tensor, logp: torch.Tensor | None) -> torch.Tensor:
        """Hook: (B, K) log P(slot k shows slate[k]) of the policy's own choice (before ε-mixing):
        0 for a deterministic choice (``logp`` None), NaN when unknown; subclasses refine it."""
        if logp is None:
            return torch.zeros(slate.shape, dtype=torch.float32)
        return torch.full(slate.shape, float("nan"))

    def current_epsilon(self, t: int) -> float:
        """ε of the exploration schedule at env step ``t`` (0 without a schedule)."""
        if self.epsilon_schedule is None:
            return 0.0
        self.epsilon_schedule.update(t)
        return float(self.epsilon_schedule.get_current_value())

    def sample_slate(self, obs: torch.Tensor, t: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """An exploring slate at env step ``t``, ε-mixing included: (slate (B, K), log P(slate) (B,),
        log P(slot k shows slate[k]) (B, K)), exact; NaN where the policy has no closed form."""
        slate, logp = self.explore_slate(obs, t)
        slot_logp = self.slot_logp(slate, logp)
        if logp is None:
            logp = torch.zeros(slate.shape[0])
        epsilon = self.current_epsilon(t)
        if epsilon > 0.0:
            slate, logp, slot_logp = self._epsilon_mix(slate, logp, slot_logp, epsilon)
        return slate, logp, slot_logp

    def base_distribution(self, obs: torch.Tensor, t: int = 0,
                          explore: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's own slate distribution before ε-mixing, ``(support (B, M, K), probs (B, M))``:
        the greedy slate (``explore=False``) or the exploring choice with probability 1 (M = 1).
        Raises :class:`NotEnumerable` for a stochastic choice; subclasses with one override this."""
        if not explore:
            slate = self.greedy_slate(obs)
        else:
            slate, logp = self.explore_slate(obs, t)
            if logp is not None:
                raise NotEnumerable(f"{type(self).__name__} explores stochastically without enumerable "
                                    f"probabilities")
        return slate[:, None, :], torch.ones(slate.shape[0], 1, dtype=torch.float64)

    def slate_distribution(self, obs: torch.Tensor, t: int = 0,
                           explore: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The full slate distribution at env step ``t``: ``(support (B, M, K), probs (B, M))`` float64.
        ``explore=False``: the inference policy; ``explore=True``: the exploring one with ε-mixing over
        all ordered slates (M ≤ 1 + MAX_SUPPORT). A slate may be listed twice (probabilities add).
        Raises :class:`NotEnumerable` where it has no closed form or too many slates."""
        support, probs = self.base_distribution(obs, t, explore)
        epsilon = self.current_epsilon(t) if explore else 0.0
        if epsilon <= 0.0:
            return support, probs.double()
        universe = all_ordered_slates(self.num_candidates, self.slate_size, limit=MAX_SUPPORT)
        return epsilon_mixed_support(support, probs, epsilon, universe)

    def slot_probabilities(self, obs: torch.Tensor, t: int = 0, explore: bool = True) -> torch.Tensor:
        """(B, K, N) float64: P(slot k shows candidate i) at env step ``t`` (ε-mixing included when
        ``explore``); NaN where the policy's own distribution is not enumerable."""
        try:
            support, probs = self.base_distribution(obs, t, explore)
            base = slot_matrix(support, probs.double(), self.num_candidates)
        except NotEnumerable:
            base = torch.full((obs.shape[0], self.slate_size, self.num_candidates), float("nan"),
                              dtype=torch.float64)
        epsilon = self.current_epsilon(t) if explore else 0.0
        return epsilon_mixture(base, epsilon, 1.0 / self.num_candidates) if epsilon > 0.0 else base

    # --- RLlib forward passes ---------------------------------------------------------------
    def _output(self, slate: torch.Tensor, logp: torch.Tensor, slot_logp: torch.Tensor) -> dict[str, Any]:
        actions = encode_flat_slate(slate, self.num_candidates) if self.flat_actions else slate
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp.float(), SLOT_LOGP: slot_logp.float()}

    def _forward_inference(self, batch, **kwargs):
        with torch.no_grad():
            slate = self.greedy_slate(batch[Columns.OBS])
        return self._output(slate, torch.zeros(slate.shape[0]), torch.zeros(slate.shape))

    def _forward_exploration(self, batch, t=0, **kwargs):
        with torch.no_grad():
            return self._output(*self.sample_slate(batch[Columns.OBS], t))

    def _epsilon_mix(self, slate, logp, slot_logp, epsilon):
        """Replace each slate by a uniform random one with probability ε.

        Returns (slate, log P(slate), log P(slot k shows slate[k])) of the mixture
        (:func:`~recsys_exp.algorithms.slates.epsilon_mixture`).
        """
        b = slate.shape[0]
        uniform = random_slate(b, self.num_candidates, self.slate_size)
        explore = torch.rand(b) < epsilon
        mixed = torch.where(explore[:, None], uniform, slate)
        # P_policy(mixed) is exp(logp) where the slate equals the policy's own choice (exact for
        # deterministic policies), 0 elsewhere; likewise per slot.
        same = (mixed == slate).all(-1)
        p = epsilon_mixture(same.float() * logp.exp(), epsilon, math.exp(-self.log_num_slates))
        p_slot = epsilon_mixture((mixed == slate).float() * slot_logp.exp(), epsilon, 1.0 / self.num_candidates)
        return mixed, p.log(), p_slot.log()

    def _forward_train(self, batch, **kwargs):
        return {}


class ReadsNextObservations:
    """Learner mixin (first base): the train batch also holds each step's next observation
    (``Columns.NEXT_OBS``), whose response says which slot of the step's slate was clicked."""

    def build(self):
        from ray.rllib.connectors.common.add_observations_from_episodes_to_batch import (
            AddObservationsFromEpisodesToBatch,
        )
        from ray.rllib.connectors.learner import AddNextObservationsFromEpisodesToTrainBatch

        super().build()
        self._learner_connector.insert_after(AddObservationsFromEpisodesToBatch,
                                             AddNextObservationsFromEpisodesToTrainBatch())


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

    def sample(self) -> list:
        """Sample ``train_batch_size_per_learner`` env steps; log the env runners' metrics."""
        episodes, env_runner_results = synchronous_parallel_sample(
            worker_set=self.env_runner_group, max_env_steps=self.config.total_train_batch_size,
            sample_timeout_s=self.config.sample_timeout_s, _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        return episodes

    def training_step(self) -> None:
        self.sample()


class SampleThenUpdate(SampleOnly):
    """Each iteration: sample ``train_batch_size_per_learner`` env steps, update the learner on them
    (with :meth:`update_kwargs`, e.g. epochs and minibatches), sync the new weights to the env
    runners. The bandits (closed-form updates) and simple on-policy learners use it."""

    def update_kwargs(self) -> dict[str, Any]:
        """Extra keywords of ``LearnerGroup.update`` (none: one update on the whole batch)."""
        return {}

    def training_step(self) -> None:
        episodes = self.sample()
        learner_results = self.learner_group.update(
            episodes=episodes,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME))},
            **self.update_kwargs())
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
