"""SlateQ's RLModule: item long-term values Q̄(s, i), a learned choice model, slate optimisation.

* Q-network: an MLP over [user (U), doc (D), is_no_click (1)] -> Q̄(s, i) for every candidate
  and Q̄(s, ⊥) for the no-click outcome (input [user, 0, 1]); ``model.hidden_sizes`` /
  ``model.activation``. Its target copy comes from RLlib's ``TargetNetworkAPI``. User and doc
  features are standardised with running statistics (buffers the learner updates from each
  replayed batch): RecSim features can vary over a tiny range (the tutorial's satisfaction
  stays within 0.43–0.57), which an MLP on raw inputs resolves only slowly.
* With ``targets=monte_carlo``, a session baseline h: a small MLP that the learner adds to every
  value it regresses on a return to go, Q̄(s, i) + h. A Monte Carlo return depends on how much of the
  session is left and on how engaged this user is, which the observation need not show (Long-Term
  Satisfaction's satisfaction is latent); h takes that part out of the regression residual, so the
  item values are fitted on what the item changes, not on the spread between users. Its inputs
  (``model_config["session_baseline"]``, :func:`resolve_session_baseline`): ``step``, h(t) of the step
  index t, or ``step_and_past_reward``, h(t, r̄_t) with r̄_t the session's mean reward before t (from
  the replay buffer; running-standardised), or ``auto``: h(t, r̄_t) when the observation has no user
  features, h(t) when it has (where the user's state is observed, r̄_t slowed learning: tutorial env at
  50k steps, myopic level instead of ~1188). Both are known when step t's slate is chosen and neither
  depends on it: h shifts every item and ⊥ of a step alike, so it never changes which slate is best,
  and acting does not use it. The networks' outputs are also put in the returns' units, Q̄ = σ·net + μ
  with μ, σ the running mean and standard deviation of the regressed returns (target normalisation as
  in PopArt, van Hasselt et al. 2016, without its output-preserving step: Monte Carlo targets do not
  chase the network). Adam moves a weight by about ``lr`` per update
  whatever the loss's scale, so an unscaled network needs thousands of updates to reach returns of
  ~1000 (Long-Term Satisfaction) and ranks items by noise until then; σ and μ change no slate's rank.
* Choice model (:class:`ChoiceModel`): multinomial logit with item logits
  ℓ(s, i) = userᵀ W doc_i + wᵀdoc_i + c (W low-rank, P_uᵀP_d, when ``model.embedding_size`` is
  set), a no-click logit ℓ_⊥(s) = w_⊥ᵀuser + c_⊥ and position biases β_k, fitted to the
  observed clicks by the learner.
* Acting: the slate that maximises Q(s, A) (:mod:`.slate_value`) with ``slate_optimizer``;
  epsilon-greedy on top while training (the base class).
"""

from __future__ import annotations

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import QNetAPI, TargetNetworkAPI
from torch import nn

from recsys_exp.algorithms.common import SlatePolicyModule
from recsys_exp.algorithms.slateq.slate_value import optimize_slate, resolve_optimizer
from recsys_exp.algorithms.slates import all_ordered_slates

SESSION_STEP_SCALE = 100.0  # h(t) reads t / 100: RecSim sessions last tens to a few hundred steps
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "swish": nn.SiLU, "silu": nn.SiLU, "elu": nn.ELU,
               "linear": nn.Identity}


@torch.no_grad()
def merge_moments(mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, rows: torch.Tensor) -> None:
    """Merge the moments of ``rows`` (B, ...) over their first axis into the running ``mean``, ``var``
    (population) and ``count`` buffers, in place (Chan, Golub & LeVeque's parallel formula)."""
    n, batch_mean, batch_var = rows.shape[0], rows.mean(0), rows.var(0, unbiased=False)
    total = count + n
    delta = batch_mean - mean
    var.copy_((var * count + batch_var * n + delta.pow(2) * count * n / total) / total)
    mean.add_(delta * n / total)
    count.copy_(total)


def resolve_session_baseline(setting, user_dim: int) -> str | None:
    """The inputs of the session baseline h: ``step`` (h(t)), ``step_and_past_reward`` (h(t, r̄_t)) or None
    (no baseline, one-step targets). ``auto`` is ``step_and_past_reward`` when the observation has no user
    features (``user_dim`` 0: the session's rewards so far are then the only sign of who the user is) and
    ``step`` otherwise; True (checkpoints from before the setting) is ``step``."""
    if setting is True:
        return "step"
    if setting == "auto":
        return "step_and_past_reward" if user_dim == 0 else "step"
    return setting or None


def mlp(in_dim: int, hidden_sizes: list[int], activation: str, out_dim: int) -> nn.Sequential:
    """A fully connected network in_dim -> hidden_sizes -> out_dim (no output activation)."""
    layers: list[nn.Module] = []
    for h in hidden_sizes:
        layers += [nn.Linear(in_dim, h), ACTIVATIONS[activation]()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class ChoiceModel(nn.Module):
    """Multinomial-logit user choice over a slate, with a no-click option and position biases."""

    def __init__(self, user_dim: int, doc_dim: int, slate_size: int, embedding_size: int | None):
        super().__init__()
        self.user_dim = user_dim
        if user_dim and embedding_size:
            self.user_embedding = nn.Linear(user_dim, embedding_size, bias=False)
            self.doc_embedding = nn.Linear(doc_dim, embedding_size, bias=False)
        elif user_dim:
            self.interaction = nn.Parameter(torch.zeros(user_dim, doc_dim))
        self.doc_term = nn.Linear(doc_dim, 1)
        self.null_weight = nn.Parameter(torch.zeros(user_dim))
        self.null_bias = nn.Parameter(torch.zeros(()))
        self.position_bias = nn.Parameter(torch.zeros(slate_size))

    def forward(self, user: torch.Tensor, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item logits (B, N) and no-click logit (B,) for user (B, U), docs (B, N, D)."""
        logits = self.doc_term(docs)[..., 0]
        if self.user_dim and hasattr(self, "user_embedding"):
            logits = logits + (self.doc_embedding(docs) * self.user_embedding(user)[:, None, :]).sum(-1)
        elif self.user_dim:
            logits = logits + torch.einsum("bu,ud,bnd->bn", user, self.interaction, docs)
        return logits, user @ self.null_weight + self.null_bias


class SlateQModule(SlatePolicyModule, TargetNetworkAPI, QNetAPI):
    """Item values + choice model -> the slate with the highest decomposed long-term value."""

    def setup(self):
        super().setup()
        mc = self.model_config
        u, d = self.user_dim, self.doc_dim
        self.q_net = mlp(u + d + 1, list(mc["hidden_sizes"]), mc["activation"], 1)
        self.register_buffer("feature_mean", torch.zeros(u + d))
        self.register_buffer("feature_var", torch.ones(u + d))
        self.register_buffer("feature_count", torch.zeros(()))
        self.baseline_inputs = resolve_session_baseline(mc.get("session_baseline"), u)
        if self.baseline_inputs:
            # h(t[, r̄_t]): the part of a Monte Carlo return explained by the step of the session (and the
            # session's mean reward so far) alone (.learner).
            self.session_baseline = mlp(1 if self.baseline_inputs == "step" else 2, [32], "relu", 1)
            if self.baseline_inputs == "step_and_past_reward":
                self.register_buffer("past_mean", torch.zeros(()))
                self.register_buffer("past_var", torch.ones(()))
                self.register_buffer("past_count", torch.zeros(()))
            # Running mean / variance of the regressed returns: the networks' outputs are in their units.
            self.register_buffer("return_mean", torch.zeros(()))
            self.register_buffer("return_var", torch.ones(()))
            self.register_buffer("return_count", torch.zeros(()))
        self.choice = ChoiceModel(u, d, self.slate_size, mc.get("embedding_size"))
        self.slate_optimizer = resolve_optimizer(mc["slate_optimizer"], self.num_candidates, self.slate_size)
        # The enumeration for the exact optimiser, built once (a buffer would be checkpointed).
        self._enumeration = all_ordered_slates(self.num_candidates, self.slate_size) \
            if self.slate_optimizer == "exact" else None

    # --- networks ---------------------------------------------------------------------------
    @torch.no_grad()
    def update_feature_statistics(self, obs: torch.Tensor) -> None:
        """Merge a batch's user and doc feature moments into the running mean / variance
        (:func:`merge_moments`; every candidate row counts once for the doc part)."""
        user, docs = self.user(obs), self.docs(obs)
        rows = torch.cat([user[:, None, :].expand(-1, docs.shape[1], -1), docs], -1).reshape(-1, user.shape[-1]
                                                                                              + docs.shape[-1])
        merge_moments(self.feature_mean, self.feature_var, self.feature_count, rows)

    @torch.no_grad()
    def update_return_statistics(self, returns: torch.Tensor) -> None:
        """Merge a batch of replayed returns to go (B,; a running session's: its rewards so far) into the
        running mean / variance of the value scale."""
        merge_moments(self.return_mean, self.return_var, self.return_count, returns.float())

    def _value_scale(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(σ, μ): Q̄ = σ·net + μ with ``targets=monte_carlo`` (the returns' running std and mean), else (1, 0)."""
        if not hasattr(self, "return_count") or self.return_count == 0:
            return 1.0, 0.0
        return self.return_var.sqrt() + 1e-6, self.return_mean

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / (self.feature_var.sqrt() + 1e-6) if self.feature_count > 0 else x

    def item_values(self, obs: torch.Tensor, net: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q̄(s, i) for the N candidates (B, N) and Q̄(s, ⊥) (B,), from ``net`` (default: online)."""
        net = self.q_net if net is None else net
        user, docs = self.user(obs), self.docs(obs)
        b, n, d = docs.shape
        features = self._standardize(torch.cat([user[:, None, :].expand(b, n, user.shape[-1]), docs], -1))
        null = torch.cat([features[:, :1, :user.shape[-1]], torch.zeros(b, 1, d)], -1)  # no-click "item" last
        flag = torch.zeros(b, n + 1, 1)
        flag[:, n] = 1.0
        x = torch.cat([torch.cat([features, null], 1), flag], dim=-1)
        scale, shift = self._value_scale()
        q = scale * net(x)[..., 0] + shift
        return q[:, :n], q[:, n]

    @torch.no_grad()
    def update_past_reward_statistics(self, past_reward: torch.Tensor) -> None:
        """Merge a batch of past mean rewards (B,) into their running mean / variance (h's input scaling)."""
        merge_moments(self.past_mean, self.past_var, self.past_count, past_reward.float())

    def baseline(self, session_step: torch.Tensor, past_reward: torch.Tensor | None = None) -> torch.Tensor:
        """h(t) (B,) for session steps t (B,), or h(t, r̄_t) with the sessions' mean rewards before t
        (B,; ``session_baseline=step_and_past_reward``): a shift common to every item and ⊥ at step t."""
        scale, _ = self._value_scale()
        x = session_step.float()[:, None] / SESSION_STEP_SCALE
        if self.baseline_inputs == "step_and_past_reward":
            past = (past_reward.float() - self.past_mean) / (self.past_var.sqrt() + 1e-6)
            x = torch.cat([x, past[:, None]], -1)
        return scale * self.session_baseline(x)[:, 0]

    def choice_logits(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item logits (B, N) and no-click logit (B,) of the learned choice model."""
        return self.choice(self.user(obs), self.docs(obs))

    def best_slate(self, obs: torch.Tensor, net: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The optimiser's slate (B, K) under Q̄ from ``net`` and its value (B,)."""
        q, q_null = self.item_values(obs, net)
        logits, null_logit = self.choice_logits(obs)
        return optimize_slate(self.slate_optimizer, q, q_null, logits, null_logit, self.choice.position_bias,
                              self.slate_size, self._enumeration)

    def greedy_slate(self, obs):
        return self.best_slate(obs)[0]

    # --- RLlib APIs ---------------------------------------------------------------------------
    def _forward_train(self, batch, **kwargs):
        q, q_null = self.item_values(batch[Columns.OBS])
        logits, null_logit = self.choice_logits(batch[Columns.OBS])
        return {"q_items": q, "q_null": q_null, "choice_logits": logits, "null_logit": null_logit}

    def make_target_networks(self) -> None:
        self._target_q_net = make_target_network(self.q_net)

    def get_target_network_pairs(self):
        return [(self.q_net, self._target_q_net)]

    def forward_target(self, batch, **kwargs):
        q, q_null = self.item_values(batch[Columns.OBS], self._target_q_net)
        return {"q_items": q, "q_null": q_null}

    def compute_q_values(self, batch):
        q, q_null = self.item_values(batch[Columns.OBS])
        return {"q_items": q, "q_null": q_null}
