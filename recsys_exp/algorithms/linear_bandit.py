"""``algo=lin_ucb`` and ``algo=lin_ts``: linear contextual bandits over the candidates of a slate.

One ridge regression r ≈ θᵀx is shared by all candidates (Li et al. 2010, LinUCB; Agrawal &
Goyal 2013, Linear Thompson Sampling). A candidate's features x (width F) are

    [position one-hot (K) | doc (D) | user (U) | vec(user ⊗ doc) (U·D)]

(the user terms only when the env observes the user; the outer product lets a linear score
express user–document affinity, e.g. u[c_j] in Interest Evolution). Every slot of a served
slate is one observation: its target is the step's reward if that slot was clicked, else 0, so
the model learns click-propensity × reward, and the position indicators absorb position effects
(in Long-Term Satisfaction only slot 0 is ever consumed).

Closed-form update (no optimizer): A ← A + Σ xxᵀ, b ← b + Σ y·x, θ = A⁻¹b, starting from
A = λI. Acting scores every candidate at position 0 (the position term is the same for all, so
it does not change the ranking) and fills the slate with the top K:

* UCB:       s_j = θᵀx_j + α·sqrt(x_jᵀ A⁻¹ x_j)                 (exploration=ucb, alpha)
* Thompson:  s_j = θ̃ᵀx_j,  θ̃ ~ N(θ, v²·A⁻¹), one draw per user  (exploration=thompson, scale)
* greedy:    s_j = θᵀx_j                                          (evaluation, exploration=none)

A, b are float64 buffers; θ, A⁻¹ and chol(A⁻¹) are float32 buffers refreshed after each
update, so weight sync and checkpoints carry the whole posterior.
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from recsys_exp.algorithms.common import (NoGradientLearner, ReadsNextObservations, SampleThenUpdate, SlatePolicyModule,
                                          top_k_slate)

MODES = ("ucb", "thompson", "none")


def candidate_features(user: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor,
                       slate_size: int) -> torch.Tensor:
    """Bandit features of candidates shown at ``positions``.

    user (B, U), docs (B, M, D), positions (B, M) long in [0, K) -> (B, M, K + D + U + U·D)
    (just K + D when U = 0).
    """
    b, m, _ = docs.shape
    parts = [torch.nn.functional.one_hot(positions, slate_size).to(docs.dtype), docs]
    if user.shape[-1]:
        users = user[:, None, :].expand(b, m, user.shape[-1])
        parts += [users, (users[..., :, None] * docs[..., None, :]).reshape(b, m, -1)]
    return torch.cat(parts, dim=-1)


class LinearBanditModule(SlatePolicyModule):
    """Ridge-regression posterior over θ as buffers; UCB / Thompson / greedy top-K slates."""

    def setup(self):
        super().setup()
        u, d, k = self.user_dim, self.doc_dim, self.slate_size
        f = k + d + (u + u * d if u else 0)
        self.mode = self.model_config["exploration_mode"]
        self.alpha = float(self.model_config["alpha"])
        self.posterior_scale = float(self.model_config["posterior_scale"])
        ridge = float(self.model_config["ridge"])
        self.register_buffer("A", ridge * torch.eye(f, dtype=torch.float64))
        self.register_buffer("b", torch.zeros(f, dtype=torch.float64))
        self.register_buffer("theta", torch.zeros(f))
        self.register_buffer("A_inv", torch.eye(f) / ridge)
        self.register_buffer("cov_chol", torch.eye(f) / ridge ** 0.5)

    def features(self, obs: torch.Tensor, slates: torch.Tensor | None = None) -> torch.Tensor:
        """Features of all candidates at position 0 (B, N, F), or of a slate's items at their
        positions (B, K, F) when ``slates`` (B, K) is given."""
        docs = self.docs(obs)
        if slates is None:
            positions = torch.zeros(docs.shape[:2], dtype=torch.long)
        else:
            docs = docs.gather(1, slates[..., None].expand(-1, -1, docs.shape[-1]))
            positions = torch.arange(self.slate_size).expand_as(slates)
        return candidate_features(self.user(obs), docs, positions, self.slate_size)

    def greedy_slate(self, obs):
        return top_k_slate(self.features(obs) @ self.theta, self.slate_size)

    def explore_slate(self, obs, t):
        x = self.features(obs)
        if self.mode == "ucb":
            width = ((x @ self.A_inv) * x).sum(-1).clamp_min(0.0).sqrt()
            return top_k_slate(x @ self.theta + self.alpha * width, self.slate_size), None
        if self.mode == "thompson":
            z = torch.randn(x.shape[0], x.shape[-1])
            theta = self.theta + self.posterior_scale * z @ self.cov_chol.T  # (B, F) ~ N(θ, v²A⁻¹)
            scores = (x * theta[:, None, :]).sum(-1)
            # The probability of a sampled top-K slate has no closed form: log it as unknown.
            return top_k_slate(scores, self.slate_size), torch.full((x.shape[0],), float("nan"))
        return self.greedy_slate(obs), None

    @torch.no_grad()
    def absorb(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add observations x (M, F), targets y (M,) to the posterior and refresh θ, A⁻¹, chol(A⁻¹)."""
        x64, y64 = x.double(), y.double()
        self.A += x64.T @ x64
        self.b += x64.T @ y64
        chol = torch.linalg.cholesky(self.A)
        a_inv = torch.cholesky_inverse(chol)
        self.theta.copy_(torch.cholesky_solve(self.b[:, None], chol)[:, 0].float())
        self.A_inv.copy_(a_inv.float())
        self.cov_chol.copy_(torch.linalg.cholesky(a_inv).float())


class LinearBanditLearner(ReadsNextObservations, NoGradientLearner):
    """Closed-form Learner: each served slot of a step is one regression row (see module docs)."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        m = self.module[module_id].unwrapped()
        with torch.no_grad():
            slates = m.slates_from_actions(batch[Columns.ACTIONS])
            x = m.features(batch[Columns.OBS], slates)  # (B, K, F)
            y = batch[Columns.REWARDS][:, None].float() * m.clicks(batch[Columns.NEXT_OBS])  # (B, K)
            m.absorb(x.reshape(-1, x.shape[-1]), y.reshape(-1))
        self.metrics.log_value((module_id, "mean_slot_reward"), y.mean().item(), window=20)
        return torch.tensor(0.0)  # no grad_fn: compute_gradients() returns {} and nothing steps


class LinearBanditConfig(AlgorithmConfig):
    """Settings: ``exploration_mode`` (ucb | thompson | none), ``alpha`` (UCB width),
    ``posterior_scale`` (Thompson v), ``ridge`` (λ of A = λI), ``train_batch_size_per_learner``
    (env steps between posterior updates)."""

    default_mode = "ucb"

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or LinearBandit)
        self.exploration_mode = self.default_mode
        self.alpha = 1.0
        self.posterior_scale = 1.0
        self.ridge = 1.0
        self.train_batch_size_per_learner = 256
        self.rollout_fragment_length = "auto"  # one iteration = one posterior update

    def training(self, *, exploration_mode=NotProvided, alpha=NotProvided, posterior_scale=NotProvided,
                 ridge=NotProvided, **kwargs):
        """Bandit settings on top of ``AlgorithmConfig.training``."""
        super().training(**kwargs)
        for key, value in (("exploration_mode", exploration_mode), ("alpha", alpha),
                           ("posterior_scale", posterior_scale), ("ridge", ridge)):
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    @property
    def _model_config_auto_includes(self):
        return super()._model_config_auto_includes | {
            "exploration_mode": self.exploration_mode, "alpha": self.alpha,
            "posterior_scale": self.posterior_scale, "ridge": self.ridge}

    def validate(self):
        super().validate()
        if self.exploration_mode not in MODES:
            self._value_error(f"exploration_mode={self.exploration_mode!r}: allowed {', '.join(MODES)}")
        if self.ridge <= 0:
            self._value_error(f"ridge={self.ridge}: must be > 0")
        if self.num_learners > 1:  # each learner would keep its own statistics (no all-reduce)
            self._value_error("linear bandits support num_learners <= 1")

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=LinearBanditModule)

    def get_default_learner_class(self):
        return LinearBanditLearner


class LinUCBConfig(LinearBanditConfig):
    """LinUCB (Li et al. 2010) with top-K slates."""

    default_mode = "ucb"


class LinTSConfig(LinearBanditConfig):
    """Linear Thompson Sampling (Agrawal & Goyal 2013) with top-K slates."""

    default_mode = "thompson"


class LinearBandit(SampleThenUpdate):
    """Sample ``train_batch_size_per_learner`` env steps, absorb them in closed form, sync the posterior."""

    @classmethod
    def get_default_config(cls):
        return LinearBanditConfig()
