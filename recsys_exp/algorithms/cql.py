"""Discrete conservative Q-learning, CQL(H) (Kumar et al., NeurIPS 2020, Eq. 4), for SlateQ and DQN.

CQL(H) adds to the usual TD loss a regulariser that pushes Q down on all actions (a soft
maximum) and up on the actions of the data:

    L = L_TD + α · E_{(s, a) ~ D} [ log Σ_a' exp Q(s, a') − Q(s, a) ]

so that Q of actions the data does not support cannot be overestimated (α = ``cql_alpha``).
The minimiser over Q is a lower bound (in expectation over the data's actions) of the
policy's value, which makes greedy action selection from logged data safe.

Why here and not RLlib's ``CQL``: RLlib 2.58's CQL is the continuous-action variant built on SAC
(sampled actions from a squashed Gaussian); with a ``Discrete`` action space its default module
fails with ``AttributeError: 'Discrete' object has no attribute 'low'``. The discrete form needs
only the Q-values of all actions, which DQN (and SlateQ, through its decomposition) already has.

* :class:`CQLDQN` (:class:`CQLDQNConfig`, :class:`CQLDQNLearner`): RLlib's DQN with flat
  ``Discrete`` actions; the log-sum-exp runs over the action dimension of DQN's ``qf_preds``
  (the Q-values of every action; also with ``dueling`` and with distributional heads, where it is
  the expectation over the atoms).
* :class:`CQLSlateQ` (:class:`CQLSlateQConfig`, :class:`CQLSlateQLearner`): the action is an
  ordered slate A of K distinct items out of N and its value is SlateQ's decomposition
  Q(s, A) = Σ_{i ∈ A ∪ {⊥}} P(i | s, A)·Q̄(s, i) (:mod:`.slateq.slate_value`). The log-sum-exp runs
  over all N!/(N−K)! ordered slates when there are at most ``cql_max_exact_slates`` of them (the
  enumeration is cached), otherwise over M = ``cql_num_sampled_slates`` uniformly random ordered
  slates A_1..A_M per state with the importance correction

      log Σ_A exp Q(s, A) ≈ log(#slates) + log((1/M) Σ_j exp Q(s, A_j))

  (the inner mean is an unbiased estimate of Σ_A exp Q / #slates; its log is slightly biased
  downwards, by Jensen). The choice model's logits and position biases are detached inside the
  regulariser: it shapes only the Q-network, the choice model is fitted to clicks alone.

Both learners log ``cql_loss`` (the bracket above, averaged over the batch, before α),
``q_data_mean`` and ``q_logsumexp_mean``.

Reference: A. Kumar, A. Zhou, G. Tucker, S. Levine. Conservative Q-Learning for Offline
Reinforcement Learning. NeurIPS 2020 (arXiv:2006.04779), Eq. 4 and Appendix F (discrete CQL(H)).
"""

from __future__ import annotations

import math

import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.dqn_learner import QF_PREDS
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core.columns import Columns

from recsys_exp.algorithms.slateq.learner import SlateQLearner
from recsys_exp.algorithms.slateq.slate_value import MAX_EXACT_SLATES, slate_values
from recsys_exp.algorithms.slates import all_ordered_slates, num_ordered_slates, random_slate
from recsys_exp.algorithms.slateq.slateq import SlateQ, SlateQConfig

__all__ = ["CQLDQN", "CQLDQNConfig", "CQLDQNLearner", "CQLSlateQ", "CQLSlateQConfig", "CQLSlateQLearner",
           "discrete_cql_terms", "slate_cql_terms"]


# ---------------------------------------------------------------------------------------------
# the regulariser
# ---------------------------------------------------------------------------------------------
def discrete_cql_terms(q_values: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logsumexp_a Q(s, a), Q(s, a_data)), each (B,), for Q-values (B, A) and actions (B,)."""
    q_data = q_values.gather(-1, actions.long()[..., None])[..., 0]
    return torch.logsumexp(q_values, dim=-1), q_data


def slate_cql_terms(q: torch.Tensor, q_null: torch.Tensor, logits: torch.Tensor, null_logit: torch.Tensor,
                    position_bias: torch.Tensor, data_slates: torch.Tensor, *, num_sampled_slates: int = 256,
                    max_exact_slates: int = MAX_EXACT_SLATES,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logsumexp_A Q(s, A), Q(s, A_data)), each (B,), under SlateQ's decomposition.

    ``q`` (B, N) and ``q_null`` (B,) are the item values Q̄ (gradients flow into them); the choice
    model's ``logits`` (B, N), ``null_logit`` (B,) and ``position_bias`` (K,) are detached.
    ``data_slates`` (B, K) are the logged slates. The log-sum-exp is exact over all ordered slates
    when there are at most ``max_exact_slates``, else the importance-corrected estimate from
    ``num_sampled_slates`` uniformly random ordered slates per row (module docstring).
    """
    b, n = q.shape
    k = data_slates.shape[-1]
    logits, null_logit, position_bias = logits.detach(), null_logit.detach(), position_bias.detach()
    q_data = slate_values(q, q_null, logits, null_logit, position_bias, data_slates.long()[:, None, :])[:, 0]
    total = num_ordered_slates(n, k)
    if total <= max_exact_slates:
        slates = all_ordered_slates(n, k).to(q.device).expand(b, -1, -1)
        return torch.logsumexp(slate_values(q, q_null, logits, null_logit, position_bias, slates), -1), q_data
    m = num_sampled_slates
    slates = random_slate(b * m, n, k, generator=generator).to(q.device).reshape(b, m, k)
    values = slate_values(q, q_null, logits, null_logit, position_bias, slates)
    return torch.logsumexp(values, -1) + (math.log(total) - math.log(m)), q_data


def _check_cql_settings(config) -> None:
    try:
        ok = float(config.cql_alpha) >= 0  # False for NaN
    except (TypeError, ValueError):
        ok = False
    if not ok:
        config._value_error(f"cql_alpha={config.cql_alpha!r}: must be a number >= 0")


def _masked_mean(x: torch.Tensor, batch) -> torch.Tensor:
    if Columns.LOSS_MASK in batch:
        mask = batch[Columns.LOSS_MASK]
        return x[mask].sum() / mask.sum()
    return x.mean()


# ---------------------------------------------------------------------------------------------
# SlateQ
# ---------------------------------------------------------------------------------------------
class CQLSlateQConfig(SlateQConfig):
    """:class:`SlateQConfig` plus ``cql_alpha`` (1.0), ``cql_num_sampled_slates`` (256) and
    ``cql_max_exact_slates`` (``MAX_EXACT_SLATES``): CQL(H) with SlateQ's slate decomposition."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or CQLSlateQ)
        self.cql_alpha = 1.0
        self.cql_num_sampled_slates = 256
        self.cql_max_exact_slates = MAX_EXACT_SLATES

    def training(self, *, cql_alpha=NotProvided, cql_num_sampled_slates=NotProvided,
                 cql_max_exact_slates=NotProvided, **kwargs):
        """CQL settings on top of :meth:`SlateQConfig.training`.

        ``cql_alpha``: weight of the regulariser (0 = plain SlateQ). ``cql_num_sampled_slates``:
        random slates per state when the log-sum-exp cannot be exact. ``cql_max_exact_slates``:
        enumerate all N!/(N−K)! ordered slates up to this many (memory grows with B × #slates).
        """
        super().training(**kwargs)
        if cql_alpha is not NotProvided:
            self.cql_alpha = cql_alpha
        if cql_num_sampled_slates is not NotProvided:
            self.cql_num_sampled_slates = cql_num_sampled_slates
        if cql_max_exact_slates is not NotProvided:
            self.cql_max_exact_slates = cql_max_exact_slates
        return self

    def validate(self):
        super().validate()
        _check_cql_settings(self)
        for key in ("cql_num_sampled_slates", "cql_max_exact_slates"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                self._value_error(f"{key}={value!r}: must be an integer >= 1")

    def get_default_learner_class(self):
        return CQLSlateQLearner


class CQLSlateQ(SlateQ):
    """SlateQ with the CQL(H) regulariser (:class:`CQLSlateQConfig`)."""

    @classmethod
    def get_default_config(cls):
        return CQLSlateQConfig()


class CQLSlateQLearner(SlateQLearner):
    """SlateQ's loss + cql_alpha · mean_b [logsumexp_A Q(s_b, A) − Q(s_b, A_b)] (module docstring)."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        m = self.module[module_id].unwrapped()
        logsumexp, q_data = slate_cql_terms(
            fwd_out["q_items"], fwd_out["q_null"], fwd_out["choice_logits"], fwd_out["null_logit"],
            m.choice.position_bias, m.slates_from_actions(batch[Columns.ACTIONS]),
            num_sampled_slates=config.cql_num_sampled_slates, max_exact_slates=config.cql_max_exact_slates)
        cql_loss = (logsumexp - q_data).mean()
        self.metrics.log_value((module_id, "cql_loss"), cql_loss.item(), window=50)
        self.metrics.log_value((module_id, "q_data_mean"), q_data.mean().item(), window=50)
        self.metrics.log_value((module_id, "q_logsumexp_mean"), logsumexp.mean().item(), window=50)
        return loss + config.cql_alpha * cql_loss if config.cql_alpha > 0 else loss


# ---------------------------------------------------------------------------------------------
# DQN
# ---------------------------------------------------------------------------------------------
class CQLDQNConfig(DQNConfig):
    """:class:`DQNConfig` plus ``cql_alpha`` (1.0); lr 1e-3, batch 256, double Q, MSE TD loss."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or CQLDQN)
        self.cql_alpha = 1.0
        self.lr = 1e-3
        self.train_batch_size_per_learner = 256
        self.double_q = True
        self.td_error_loss_fn = "mse"

    def training(self, *, cql_alpha=NotProvided, **kwargs):
        """``cql_alpha`` (weight of the regulariser, 0 = plain DQN) on top of ``DQNConfig.training``."""
        super().training(**kwargs)
        if cql_alpha is not NotProvided:
            self.cql_alpha = cql_alpha
        return self

    def validate(self):
        super().validate()
        _check_cql_settings(self)

    def get_default_learner_class(self):
        return CQLDQNLearner


class CQLDQN(DQN):
    """RLlib's DQN with the CQL(H) regulariser (:class:`CQLDQNConfig`)."""

    @classmethod
    def get_default_config(cls):
        return CQLDQNConfig()


class CQLDQNLearner(DQNTorchLearner):
    """DQN's loss + cql_alpha · mean_b [logsumexp_a Q(s_b, a) − Q(s_b, a_b)] over ``qf_preds``."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        logsumexp, q_data = discrete_cql_terms(fwd_out[QF_PREDS], batch[Columns.ACTIONS])
        cql_loss = _masked_mean(logsumexp - q_data, batch)
        self.metrics.log_value((module_id, "cql_loss"), cql_loss.item(), window=50)
        self.metrics.log_value((module_id, "q_data_mean"), _masked_mean(q_data, batch).item(), window=50)
        self.metrics.log_value((module_id, "q_logsumexp_mean"), _masked_mean(logsumexp, batch).item(), window=50)
        return loss + config.cql_alpha * cql_loss if config.cql_alpha > 0 else loss
