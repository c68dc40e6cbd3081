"""``algo=ucb1`` and ``algo=epsilon_greedy_bandit``: non-contextual ("stateless") bandits whose
arms are document clusters or candidate positions. ``algo=bernoulli_ts`` (Thompson sampling over
the same arms and counts) builds on this module in :mod:`recsys_exp.algorithms.bernoulli_ts`.

**Arms** (``algo.training.arms``, :mod:`recsys_exp.algorithms.bandit_arms`): ``cluster``, a
candidate's arm is its document's cluster (the argmax of the cluster one-hot that starts the doc
features: the topic in Interest Exploration, one of 20 clusters in Interest Evolution); or
``item``, the arm is the candidate position j (only with ``env.resample_documents=false``).

**Statistics.** Per arm a: pulls n_a and clicks c_a, float64 buffers of the RLModule, so weight
sync, checkpoints, ``restore=`` and serving carry them. Every slot of a served slate is one pull
of its candidate's arm, rewarded with that slot's click (0/1, whatever the env's reward): the
bandits maximise the click-through rate. Counts are updated in closed form after every
``train_batch_size_per_learner`` env steps (no optimizer), so the index is frozen within a batch
(a batched UCB1).

**Slates.** Every candidate gets its arm's index I_a; the slate is the K best candidates, so
several candidates of one arm may fill it. Candidates of equal index are ordered by
``doc[tie_feature]`` (highest first) when ``algo.training.tie_feature`` is set (RecSim's cluster
agent orders a topic's documents by quality: ``tie_feature=2`` in Interest Exploration), and
uniformly at random (torch's RNG, seeded by ``seed``) otherwise.

* UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit
  problem"):  I_a = c_a/n_a + α·sqrt(2·ln t / n_a), t = Σ_a n_a; never-pulled arms first
  (I_a = +∞). α = ``exploration.alpha`` with ``exploration=ucb`` (1 is Auer et al.'s UCB1 and
  RecSim's ``ci_scaling``); ``exploration=none`` is α = 0 (each arm once, then greedy).
* ε-greedy (Sutton & Barto 2018 §2.2; with a decaying ε, Auer et al.'s ε_n-greedy): with
  probability ε a uniformly random slate of K distinct candidates, else the greedy slate; ε
  follows ``exploration=epsilon_greedy`` (linear schedule over env steps).
* greedy (evaluation with ``explore=False``, and ε-greedy's exploit branch): I_a = c_a/n_a,
  never-pulled arms last.

**Propensities** (``action_logp``, ``slot_logp``; exact, for off-policy evaluation). Sort the
candidates by (index, tie feature); a group g of n_g equal candidates occupies the ranks
[s_g, s_g + n_g). Random tie-breaking shows a slate with probability
Π_k 1/(n_{g_k} − (k − s_{g_k})) if every slot k lies in its item's block (else 0), and slot k
shows item j with probability 1/n_{g_j} if k is in j's block. With ε-mixing:
P = ε·(N−K)!/N! + (1−ε)·P_greedy, P_slot = ε/N + (1−ε)·P_greedy,slot. Without ties the slate is
deterministic and both log-probabilities are 0.

**RecSim's UCB1** (Ie et al. 2019, arXiv:1909.04847 §5.1; ``recsim.agents.cluster_bandit_agent``
with ``ClusterClickStatsLayer``) also pulls topic arms with UCB1 and fills a slate topic by topic,
but keeps the counts *per user* (reset at every episode), learning each user's latent topic
affinity within a session; the bandits here share one set of counts across all users (which
cluster is best on average), and refresh it per batch rather than per step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from recsys_exp.algorithms.bandit_arms import ARMS, arm_spec
from recsys_exp.algorithms.common import SlatePolicyModule
from recsys_exp.algorithms.slates import (MAX_SUPPORT, all_ordered_slates, epsilon_mixture, random_slate)
from recsys_exp.algorithms.linear_bandit import LinearBandit, LinearBanditLearner


# --- ranking with ties and its exact probabilities ---------------------------------------------
def rank_candidates(score: torch.Tensor, tie: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """All candidates best first (B, N): by ``score``, then ``tie`` (both descending), then at random."""
    order = torch.rand(score.shape, generator=generator).argsort(dim=-1)  # a uniform random permutation
    for key in (tie, score):  # stable sorts: the last key sorted is the primary one
        order = order.gather(1, key.gather(1, order).sort(dim=-1, descending=True, stable=True).indices)
    return order


def _blocks(score: torch.Tensor, tie: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_g, s_g) of every candidate (B, N) float64: the size of its group of equal (score, tie)
    and the number of candidates ranked strictly ahead of it."""
    equal = (score[:, :, None] == score[:, None, :]) & (tie[:, :, None] == tie[:, None, :])
    ahead = (score[:, None, :] > score[:, :, None]) | ((score[:, None, :] == score[:, :, None])
                                                      & (tie[:, None, :] > tie[:, :, None]))
    return equal.sum(-1).double(), ahead.sum(-1).double()


def ranking_probabilities(score: torch.Tensor, tie: torch.Tensor,
                          slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(log P(slate) (B,), P(slot k shows slate[k]) (B, K))`` of "top-K of
    :func:`rank_candidates`" for any slates of distinct candidates (see the module docstring)."""
    return block_probabilities(*_blocks(score, tie), slate)


def ranking_slot_matrix(score: torch.Tensor, tie: torch.Tensor, slate_size: int) -> torch.Tensor:
    """(B, K, N) float64: P(slot k shows candidate j) under "top-K of :func:`rank_candidates`",
    1/n_g when k lies in j's block [s_g, s_g + n_g), else 0."""
    return block_slot_matrix(*_blocks(score, tie), slate_size)


def block_probabilities(sizes: torch.Tensor, starts: torch.Tensor,
                        slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P(slate) (...,), P(slot k shows slate[k]) (..., K))`` of a ranking whose candidates
    (..., N) sit in blocks of ``sizes`` equal candidates starting at rank ``starts`` (float64),
    shuffled uniformly within a block; ``slate`` (..., K) has the same leading dims."""
    size, start = sizes.gather(-1, slate), starts.gather(-1, slate)  # n_g and s_g of each slot's item
    k = torch.arange(slate.shape[-1], dtype=torch.float64)
    inside = (start <= k) & (k < start + size)
    slot_p = torch.where(inside, 1.0 / size, torch.zeros_like(size))
    step_p = torch.where(inside, 1.0 / (size - (k - start)).clamp_min(1.0), torch.zeros_like(size))
    return step_p.log().sum(-1), slot_p


def block_slot_matrix(sizes: torch.Tensor, starts: torch.Tensor, slate_size: int) -> torch.Tensor:
    """(..., K, N) float64: P(slot k shows candidate j) of the ranking of :func:`block_probabilities`."""
    k = torch.arange(slate_size, dtype=torch.float64)[:, None]
    size, start = sizes[..., None, :], starts[..., None, :]
    inside = (start <= k) & (k < start + size)
    return torch.where(inside, 1.0 / size, torch.zeros(()).double())


# --- the policy --------------------------------------------------------------------------------
class StatelessBanditModule(SlatePolicyModule):
    """Arm counts as buffers; UCB1 / ε-greedy / greedy slates over arm indices (module docstring)."""

    def setup(self):
        super().setup()
        mc = self.model_config
        self.arms, self.num_arms = mc["arms"], int(mc["num_arms"])
        self.cluster_features = mc.get("cluster_features")
        self.ucb_alpha = mc.get("ucb_alpha")  # None: the ε-greedy bandit (explores through ε only)
        self.tie_feature = mc.get("tie_feature")
        self.register_buffer("arm_pulls", torch.zeros(self.num_arms, dtype=torch.float64))
        self.register_buffer("arm_clicks", torch.zeros(self.num_arms, dtype=torch.float64))

    def candidate_arms(self, obs: torch.Tensor) -> torch.Tensor:
        """The arm of every candidate, (B, N) long."""
        if self.arms == "item":
            return torch.arange(self.num_candidates).expand(obs.shape[0], -1)
        start, width = self.cluster_features
        return self.docs(obs)[..., start:start + width].argmax(-1)

    def arm_index(self, explore: bool) -> torch.Tensor:
        """I_a (A,) float64: the UCB1 index while exploring (UCB1 only), else the empirical CTR."""
        n, c = self.arm_pulls, self.arm_clicks
        seen = n > 0
        mean = torch.where(seen, c / n.clamp_min(1.0), torch.zeros_like(n))
        if explore and self.ucb_alpha is not None:
            t = n.sum().clamp_min(1.0)
            bonus = self.ucb_alpha * torch.sqrt(2.0 * torch.log(t) / n.clamp_min(1.0))
            return torch.where(seen, mean + bonus, torch.full_like(n, math.inf))
        return torch.where(seen, mean, torch.full_like(n, -math.inf))

    def candidate_keys(self, obs: torch.Tensor, explore: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, tie) (B, N) float64: the arm index of each candidate and its tie-break feature."""
        score = self.arm_index(explore)[self.candidate_arms(obs)]
        if self.tie_feature is None:
            return score, torch.zeros_like(score)
        return score, self.docs(obs)[..., self.tie_feature].double()

    def _act(self, obs: torch.Tensor, explore: bool, epsilon: float = 0.0):
        """(slate (B, K), log P(slate) (B,), log P(slot k shows slate[k]) (B, K)), exact."""
        score, tie = self.candidate_keys(obs, explore)
        slate = rank_candidates(score, tie)[:, :self.slate_size]
        if epsilon > 0.0:
            uniform = random_slate(obs.shape[0], self.num_candidates, self.slate_size)
            slate = torch.where((torch.rand(obs.shape[0]) < epsilon)[:, None], uniform, slate)
        logp, slot_p = ranking_probabilities(score, tie, slate)
        if epsilon > 0.0:
            p = epsilon_mixture(logp.exp(), epsilon, math.exp(-self.log_num_slates))
            return slate, p.log(), epsilon_mixture(slot_p, epsilon, 1.0 / self.num_candidates).log()
        return slate, logp, slot_p.log()

    def greedy_slate(self, obs):
        return self._act(obs, explore=False)[0]

    def explore_slate(self, obs, t):
        """The exploring slate before ε-mixing; its log-probability, or None if deterministic (no ties)."""
        slate, logp, _ = self._act(obs, explore=True)
        return slate, (None if bool((logp == 0).all()) else logp)

    # --- the policy contract: exact, ties included --------------------------------------------
    def sample_slate(self, obs, t=0):
        return self._act(obs, explore=True, epsilon=self.current_epsilon(t))

    def base_distribution(self, obs, t=0, explore=True):
        """The ranking's own distribution (random tie-breaks): the top-K slate alone when nothing
        ties, else every ordered slate with its exact probability (:class:`NotEnumerable` past
        ``MAX_SUPPORT`` slates)."""
        score, tie = self.candidate_keys(obs, explore)
        slate = rank_candidates(score, tie)[:, :self.slate_size]
        logp, _ = ranking_probabilities(score, tie, slate)
        b = obs.shape[0]
        if bool((logp == 0).all()):
            return slate[:, None, :], torch.ones(b, 1, dtype=torch.float64)
        universe = all_ordered_slates(self.num_candidates, self.slate_size, limit=MAX_SUPPORT)
        u = universe.shape[0]
        slates = universe[None].expand(b, u, self.slate_size)
        logp, _ = ranking_probabilities(score.repeat_interleave(u, 0), tie.repeat_interleave(u, 0),
                                        slates.reshape(-1, self.slate_size))
        return slates, logp.exp().reshape(b, u)

    def slot_probabilities(self, obs, t=0, explore=True):
        score, tie = self.candidate_keys(obs, explore)
        base = ranking_slot_matrix(score, tie, self.slate_size)
        epsilon = self.current_epsilon(t) if explore else 0.0
        return epsilon_mixture(base, epsilon, 1.0 / self.num_candidates) if epsilon > 0.0 else base

    def _forward_inference(self, batch, **kwargs):
        with torch.no_grad():
            return self._output(*self._act(batch[Columns.OBS], explore=False))

    @torch.no_grad()
    def absorb(self, arms: torch.Tensor, clicks: torch.Tensor) -> None:
        """Add pulls of ``arms`` (M,) long with rewards ``clicks`` (M,) in {0, 1}."""
        self.arm_pulls += torch.bincount(arms, minlength=self.num_arms).double()
        self.arm_clicks += torch.bincount(arms, weights=clicks.double(), minlength=self.num_arms)


class StatelessBanditLearner(LinearBanditLearner):
    """Closed-form counts (no optimizer). Reuses the linear bandits' learner connector, which adds
    the next observation: the clicks of step t are in step t+1's ``response``."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        m = self.module[module_id].unwrapped()
        with torch.no_grad():
            slates = m.slates_from_actions(batch[Columns.ACTIONS])
            arms = m.candidate_arms(batch[Columns.OBS]).gather(1, slates)  # (B, K)
            clicks = m.clicks(batch[Columns.NEXT_OBS])  # (B, K)
            m.absorb(arms.reshape(-1), clicks.reshape(-1))
            ctr = m.arm_clicks / m.arm_pulls.clamp_min(1.0)
        self.metrics.log_value((module_id, "slot_ctr"), clicks.float().mean().item(), window=20)
        self.metrics.log_value((module_id, "best_arm_ctr"), float(ctr.max()), window=1)
        return torch.tensor(0.0)  # no grad_fn: compute_gradients() returns {} and nothing steps


# --- configs and algorithm ---------------------------------------------------------------------
def env_observation_space(env: Any, env_config: dict[str, Any]):
    """The observation space of the env an ``AlgorithmConfig`` names (its :class:`EnvSpec`, built once)."""
    from recsys_exp.envs.spec import from_rllib_env_config

    if not isinstance(env, str):
        raise ValueError(f"the stateless bandits read their arms from one of recsys_exp's registered envs, "
                         f"got env={env!r}")
    return from_rllib_env_config(env, env_config)[0].observation_space


class StatelessBanditConfig(AlgorithmConfig):
    """Settings: ``arms`` (cluster | item), ``tie_feature`` (doc feature ordering candidates of
    one arm, None = random), ``train_batch_size_per_learner`` (env steps between count updates)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or StatelessBandit)
        self.arms = "cluster"
        self.tie_feature = None
        self.train_batch_size_per_learner = 512
        self.rollout_fragment_length = "auto"  # one iteration = one count update

    def training(self, *, arms=NotProvided, tie_feature=NotProvided, **kwargs):
        """Bandit settings on top of ``AlgorithmConfig.training``."""
        super().training(**kwargs)
        if arms is not NotProvided:
            self.arms = arms
        if tie_feature is not NotProvided:
            self.tie_feature = tie_feature
        return self

    @property
    def _model_config_auto_includes(self):
        spec = arm_spec(env_observation_space(self.env, self.env_config), self.arms) if self.env else {}
        return super()._model_config_auto_includes | spec | {
            "arms": self.arms, "tie_feature": self.tie_feature, "ucb_alpha": getattr(self, "ucb_alpha", None)}

    def validate(self):
        super().validate()
        if self.arms not in ARMS:
            self._value_error(f"arms={self.arms!r}: allowed {', '.join(ARMS)}")
        if self.num_learners > 1:  # each learner would keep its own counts (no all-reduce)
            self._value_error("the stateless bandits support num_learners <= 1")

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=StatelessBanditModule)

    def get_default_learner_class(self):
        return StatelessBanditLearner


class UCB1Config(StatelessBanditConfig):
    """UCB1 (Auer et al. 2002) over arms; ``ucb_alpha`` scales the confidence bonus (from
    ``exploration.alpha``; 0 with ``exploration=none``)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class)
        self.ucb_alpha = 1.0

    def training(self, *, ucb_alpha=NotProvided, **kwargs):
        super().training(**kwargs)
        if ucb_alpha is not NotProvided:
            self.ucb_alpha = ucb_alpha
        return self

    def validate(self):
        super().validate()
        if not self.ucb_alpha >= 0:
            self._value_error(f"ucb_alpha={self.ucb_alpha}: must be >= 0")


class EpsilonGreedyBanditConfig(StatelessBanditConfig):
    """ε-greedy over arms; ε comes from the exploration group (``model_config["epsilon"]``)."""


class StatelessBandit(LinearBandit):
    """Sample ``train_batch_size_per_learner`` env steps, add them to the counts, sync the counts
    to the EnvRunners (the linear bandits' training step)."""

    @classmethod
    def get_default_config(cls):
        return UCB1Config()
