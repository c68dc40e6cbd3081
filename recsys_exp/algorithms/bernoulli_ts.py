"""``algo=bernoulli_ts``: non-contextual Bernoulli Thompson sampling over arms (document clusters
or candidate positions), with Monte Carlo propensities.

**Arms and counts** are those of ``algo=ucb1`` (:mod:`recsys_exp.algorithms.stateless_bandit`,
``algo.training.arms``: ``cluster`` or ``item``): every slot of a served slate is one pull of its
candidate's arm, rewarded with that slot's click (0/1); pulls n_a and clicks c_a are float64
buffers, updated in closed form after every ``train_batch_size_per_learner`` env steps.

**Posterior.** Arm a's click probability has the prior Beta(alpha0_a, beta0_a)
(``algo.training.prior``: null = Beta(1, 1) for every arm, or ``{alpha: [...], beta: [...]}``
with one value > 0 per arm, e.g. one campaign of obp's ``prior_bts.yaml``, the posterior ZOZOTOWN's
BTS ran with) and the posterior Beta(alpha_a, beta_a) with

    alpha_a = alpha0_a + c_a,    beta_a = beta0_a + n_a - c_a.

The prior is a float64 buffer too, so weight sync, checkpoints, ``restore=`` and serving carry the
whole posterior.

**Slates.** ``exploration=thompson`` (the default): per user and step one draw theta_a ~
Beta(alpha_a, beta_a) per arm; every candidate gets its arm's theta and the slate is the K best
candidates (several candidates of one arm may fill it), candidates of one arm ordered as
``algo=ucb1`` orders them (``doc[tie_feature]`` highest first when ``algo.training.tie_feature``
is set, else uniformly at random). ``exploration=none`` and evaluation (``explore=False``,
``forward_inference``, serving): the same ranking by the posterior mean alpha_a / (alpha_a + beta_a),
with exact probabilities (random tie-breaks only, as ucb1's greedy). ``exploration.scale`` is not
used.

**Propensities** (the policy contract of :class:`~recsys_exp.algorithms.common.SlatePolicyModule`).
The top-K order statistics of Beta draws have no closed form, so they are estimated by Monte Carlo
with S = ``algo.training.propensity_samples`` (default 10,000) independent posterior draws
theta^(1..S), shared by the rows of a call. Given a draw, the ranking is known up to the uniform
shuffle within a block of equal candidates, whose probabilities are exact
(:func:`~recsys_exp.algorithms.stateless_bandit.block_probabilities`), so the estimates are
Rao-Blackwellised averages:

    P(slot k shows j) ~ (1/S) sum_s P(slot k shows j | theta^(s))
    P(slate A)        ~ (1/S) sum_s P(A | theta^(s))

Each is unbiased with standard error at most sqrt(p(1-p)/S) (the plain hit-frequency's; 0.005 at
p = 0.5 and S = 10,000, about 1e-4 at p = 1e-4, i.e. a relative error of ~1/sqrt(pS) for small p).
``sample_slate`` (what ``mode=record`` logs) counts the draw that chose the slate as one of S + 1
draws, so a shown slate never gets probability 0 (a bias of at most 1/(S+1), for
probabilities below ~1/S only). ``slot_probabilities`` and ``slate_distribution`` (over all
ordered slates, :class:`~recsys_exp.algorithms.slates.NotEnumerable` beyond ``MAX_SUPPORT``) use
the S draws alone. Rows whose candidates have the same arms and tie structure share one estimate
(with ``arms=item`` every row does). RLlib's own sampling during training does not need the
probabilities: ``forward_exploration`` emits the Thompson slate with NaN log-probabilities
(as ``algo=lin_ts`` does), and costs one draw per row.

References: Thompson (1933); Chapelle & Li (2011), "An empirical evaluation of Thompson
sampling"; Saito et al. (2021), Open Bandit Dataset (ZOZOTOWN's BTS ranks items by one draw and
estimates its position-wise propensities by Monte Carlo).
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from recsys_exp.algorithms.bandit_arms import arm_spec, beta_prior
from recsys_exp.algorithms.slates import MAX_SUPPORT, all_ordered_slates
from recsys_exp.algorithms.stateless_bandit import (
    StatelessBandit,
    StatelessBanditConfig,
    StatelessBanditModule,
    block_probabilities,
    block_slot_matrix,
    env_observation_space,
    rank_candidates,
)

MODES = ("thompson", "none")
PROPENSITY_SAMPLES = 10_000
_CHUNK_CELLS = 4_000_000  # float64 cells of one Monte Carlo chunk (32 MB)


class BernoulliTSModule(StatelessBanditModule):
    """Beta posteriors per arm (prior and counts as float64 buffers); Thompson or posterior-mean
    slates; Monte Carlo propensities (module docstring)."""

    def setup(self):
        super().setup()
        mc = self.model_config
        self.mode = mc.get("exploration_mode", "thompson")
        self.propensity_samples = int(mc.get("propensity_samples", PROPENSITY_SAMPLES))
        alpha, beta = beta_prior(mc.get("prior"), self.num_arms)
        self.register_buffer("prior_alpha", torch.tensor(alpha, dtype=torch.float64))
        self.register_buffer("prior_beta", torch.tensor(beta, dtype=torch.float64))

    # --- the posterior ------------------------------------------------------------------------
    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, beta) (A,) float64: prior plus clicks, prior plus pulls without a click."""
        return self.prior_alpha + self.arm_clicks, self.prior_beta + self.arm_pulls - self.arm_clicks

    def posterior_mean(self) -> torch.Tensor:
        alpha, beta = self.posterior()
        return alpha / (alpha + beta)

    def draw(self, n: int) -> torch.Tensor:
        """(n, A) float64 posterior draws theta ~ Beta(alpha, beta)."""
        alpha, beta = self.posterior()
        return torch.distributions.Beta(alpha, beta).sample((n,))

    def arm_index(self, explore: bool) -> torch.Tensor:
        """The posterior mean: the greedy ranking (``exploration=none``, evaluation)."""
        return self.posterior_mean()

    # --- acting -------------------------------------------------------------------------------
    def thompson_slate(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slate (B, K), theta (B, A)): top-K candidates by one posterior draw per arm and row."""
        theta = self.draw(obs.shape[0])
        _, tie = self.candidate_keys(obs, explore=False)
        score = theta.gather(1, self.candidate_arms(obs))
        return rank_candidates(score, tie)[:, :self.slate_size], theta

    def sample_slate(self, obs, t=0):
        """The exploring slate with Monte Carlo log-propensities (exact for ``exploration=none``)."""
        if self.mode != "thompson":
            return self._act(obs, explore=True)
        slate, theta = self.thompson_slate(obs)
        s = self.propensity_samples
        p, slot_p = self._mc_mean(obs, lambda size, start: _probabilities(
            size, start, slate[:, None, :].expand(-1, size.shape[1], -1)), per_row=True)
        own_logp, own_slot = block_probabilities(*self._blocks_given(obs, theta[:, None, :]),
                                                 slate[:, None, :])
        p = (s * p + own_logp[:, 0].exp()) / (s + 1)  # the acting draw is one of S + 1
        slot_p = (s * slot_p + own_slot[:, 0]) / (s + 1)
        return slate, p.log(), slot_p.log()

    def explore_slate(self, obs, t):
        if self.mode != "thompson":
            return super().explore_slate(obs, t)
        slate, logp, _ = self.sample_slate(obs, t)
        return slate, logp

    def base_distribution(self, obs, t=0, explore=True):
        """Thompson: every ordered slate with its Monte Carlo probability (:class:`NotEnumerable`
        past ``MAX_SUPPORT`` slates); otherwise the posterior-mean ranking's exact distribution."""
        if not (explore and self.mode == "thompson"):
            return super().base_distribution(obs, t, explore)
        universe = all_ordered_slates(self.num_candidates, self.slate_size, limit=MAX_SUPPORT)
        u = universe.shape[0]
        probs = self._mc_mean(obs, lambda size, start: block_probabilities(
            size[:, :, None, :].expand(-1, -1, u, -1), start[:, :, None, :].expand(-1, -1, u, -1),
            universe.expand(*size.shape[:2], u, -1))[0].exp(), width=u * self.slate_size)
        return universe[None].expand(obs.shape[0], u, self.slate_size), probs

    def slot_probabilities(self, obs, t=0, explore=True):
        """(B, K, N): Monte Carlo for Thompson, exact for the posterior-mean ranking."""
        if not (explore and self.mode == "thompson"):
            return super().slot_probabilities(obs, t, explore)
        return self._mc_mean(obs, lambda size, start: block_slot_matrix(size, start, self.slate_size),
                             width=self.slate_size * self.num_candidates)

    def _forward_exploration(self, batch, t=0, **kwargs):
        with torch.no_grad():
            slate, _ = (self.thompson_slate(batch[Columns.OBS]) if self.mode == "thompson"
                        else self._act(batch[Columns.OBS], explore=True)[:2])
            nan = torch.full(slate.shape, float("nan"))
            return self._output(slate, nan[:, 0], nan)

    # --- Monte Carlo ----------------------------------------------------------------------------
    def _within_arm(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(arm (B, N) long, size (B, N), rank within the arm (B, N)) float64: a candidate's block of
        equal (arm, tie) candidates and how many of its arm's candidates rank ahead of it."""
        arm = self.candidate_arms(obs)
        _, tie = self.candidate_keys(obs, explore=False)
        same = arm[:, :, None] == arm[:, None, :]
        size = (same & (tie[:, :, None] == tie[:, None, :])).sum(-1).double()
        within = (same & (tie[:, None, :] > tie[:, :, None])).sum(-1).double()
        return arm, size, within

    def _blocks_given(self, obs: torch.Tensor, theta: torch.Tensor,
                      parts: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(size, start) (B, S, N) float64 of the ranking given draws ``theta`` (B or 1, S, A): the
        candidates of arms with a larger theta rank ahead (draws of two arms tie with probability 0)."""
        arm, size, within = parts if parts is not None else self._within_arm(obs)
        counts = torch.nn.functional.one_hot(arm, self.num_arms).sum(1).double()  # (B, A)
        order = theta.argsort(dim=-1, descending=True).expand(arm.shape[0], -1, -1)  # (B, S, A)
        sorted_counts = counts[:, None, :].expand_as(order).gather(-1, order)
        ahead = torch.empty_like(sorted_counts).scatter_(-1, order, sorted_counts.cumsum(-1) - sorted_counts)
        s = ahead.shape[1]
        start = ahead.gather(-1, arm[:, None, :].expand(-1, s, -1)) + within[:, None, :]
        return size[:, None, :].expand(-1, s, -1), start

    def _mc_mean(self, obs: torch.Tensor, fn, width: int = 1, per_row: bool = False):
        """The mean over S posterior draws of ``fn(size, start)`` ((B', s, N) each -> (B', s, ...)
        or a tuple of such). Rows with the same arms and tie structure share one estimate unless
        ``per_row`` (``fn`` reads row-specific inputs); draws go in chunks of ~``_CHUNK_CELLS``."""
        arm, size, within = self._within_arm(obs)
        if per_row:
            inverse = torch.arange(obs.shape[0])
        else:
            key = torch.cat([arm.double(), size, within], dim=1)
            key, inverse = torch.unique(key, dim=0, return_inverse=True)
            pick = torch.zeros(key.shape[0], dtype=torch.long).scatter_(0, inverse, torch.arange(obs.shape[0]))
            arm, size, within = arm[pick], size[pick], within[pick]
        rows = arm.shape[0]
        total = self.propensity_samples
        chunk = max(1, _CHUNK_CELLS // (rows * max(width, self.num_candidates, self.num_arms)))
        acc = None
        for lo in range(0, total, chunk):
            s = min(chunk, total - lo)
            out = fn(*self._blocks_given(obs, self.draw(s)[None], (arm, size, within)))
            out = tuple(o.sum(1) for o in out) if isinstance(out, tuple) else out.sum(1)
            acc = out if acc is None else (tuple(a + o for a, o in zip(acc, out)) if isinstance(out, tuple)
                                           else acc + out)
        mean = tuple(a / total for a in acc) if isinstance(acc, tuple) else acc / total
        return tuple(m[inverse] for m in mean) if isinstance(mean, tuple) else mean[inverse]


def _probabilities(size: torch.Tensor, start: torch.Tensor, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(slate), P(slot k shows slate[k])) given the blocks: what the Monte Carlo averages."""
    logp, slot_p = block_probabilities(size, start, slate)
    return logp.exp(), slot_p


# --- config and algorithm --------------------------------------------------------------------------
class BernoulliTSConfig(StatelessBanditConfig):
    """Settings of :class:`StatelessBanditConfig` plus ``prior`` (None or ``{alpha, beta}`` per
    arm), ``propensity_samples`` (S of the Monte Carlo propensities) and ``exploration_mode``
    (thompson | none: the posterior mean)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or BernoulliTS)
        self.prior = None
        self.propensity_samples = PROPENSITY_SAMPLES
        self.exploration_mode = "thompson"

    def training(self, *, prior=NotProvided, propensity_samples=NotProvided, exploration_mode=NotProvided,
                 **kwargs):
        super().training(**kwargs)
        for key, value in (("prior", prior), ("propensity_samples", propensity_samples),
                           ("exploration_mode", exploration_mode)):
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    @property
    def _model_config_auto_includes(self):
        prior = None if self.prior is None else {k: list(self.prior[k]) for k in self.prior}
        return super()._model_config_auto_includes | {
            "prior": prior, "propensity_samples": self.propensity_samples, "exploration_mode": self.exploration_mode}

    def validate(self):
        super().validate()
        if self.exploration_mode not in MODES:
            self._value_error(f"exploration_mode={self.exploration_mode!r}: allowed {', '.join(MODES)}")
        if not (type(self.propensity_samples) is int and self.propensity_samples >= 1):
            self._value_error(f"propensity_samples={self.propensity_samples!r}: must be an integer >= 1")
        if self.env:
            num_arms = arm_spec(env_observation_space(self.env, self.env_config), self.arms)["num_arms"]
            try:
                beta_prior(self.prior, num_arms, key="prior")
            except ValueError as e:
                self._value_error(str(e))

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=BernoulliTSModule)


class BernoulliTS(StatelessBandit):
    """Sample, add the clicks to the counts, sync the posterior (the stateless bandits' step)."""

    @classmethod
    def get_default_config(cls):
        return BernoulliTSConfig()
