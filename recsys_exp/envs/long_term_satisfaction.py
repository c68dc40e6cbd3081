"""Long-Term Satisfaction, "choc vs kale" (RecSim ``long_term_satisfaction``), batched.

Documents have one observed feature, a clickbait score c ~ U(0, 1). The user always consumes
slot 0 and engages exp(N((c·μ_c + (1−c)·μ_k)·SAT, c·σ_c + (1−c)·σ_k)) (the reward, unclipped;
the observation clips at 100). The latent net positive exposure moves as
NPE ← γ·NPE − 2(c − 0.5) + N(0, σ_I) (the code's sign, not the docstring's) and
SAT = σ(β·NPE). Sessions last exactly ``time_budget`` steps.
Spec: ../shared/reference/recsim.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_exp.envs.components import (
    Affinity,
    DocumentSampler,
    FirstSlotChoice,
    ResponseModel,
    Simulator,
    UserModel,
    UserSampler,
    UserTransition,
    clicked_field_reward,
    per_slot_box,
    per_slot_discrete,
)

ENGAGEMENT_OBS_MAX = 100.0


@dataclass(frozen=True)
class LongTermSatisfactionParams:
    """Constants of the LTS user model (RecSim ``LTSStaticUserSampler`` defaults)."""

    memory_discount: float = 0.7
    sensitivity: float = 0.01
    innovation_stddev: float = 0.05
    choc_mean: float = 5.0
    choc_stddev: float = 1.0
    kale_mean: float = 4.0
    kale_stddev: float = 1.0
    time_budget: int = 60
    # The 2022 RLlib tutorial's wrapper replaced the (empty) user observation by the current
    # satisfaction; off by default, as in RecSim, where the user state is latent.
    observe_satisfaction: bool = False


class ClickbaitDocumentSampler(DocumentSampler):
    """clickbait score ~ U(0, 1), observed as a (N, 1) feature."""

    feature_dim, feature_low, feature_high = 1, 0.0, 1.0

    def sample(self, rng, batch, num_candidates):
        clickbait = rng.random((batch, num_candidates))
        return {"clickbait": clickbait, "features": clickbait[..., None].astype(np.float32)}


class StaticUserSampler(UserSampler):
    """NPE₀ = (U(0,1) − 0.5)/(1 − γ); all other constants are shared by every user.

    The user state is latent (observation width 0) unless ``observe_satisfaction`` is set;
    then the observation is SAT, shape (B, 1), in [0, 1].
    """

    observation_low, observation_high = 0.0, 1.0

    def __init__(self, p: LongTermSatisfactionParams):
        self.p = p
        self.observation_dim = 1 if p.observe_satisfaction else 0

    def sample(self, rng, n):
        npe = (rng.random(n) - 0.5) / (1.0 - self.p.memory_discount)
        return {"npe": npe, "satisfaction": _sigmoid(self.p.sensitivity * npe),
                "budget": np.full(n, self.p.time_budget, dtype=np.int64)}

    def observe(self, users):
        if self.p.observe_satisfaction:
            return users["satisfaction"][:, None].astype(np.float32)
        return np.zeros((len(users["npe"]), 0), dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class ClickbaitAffinity(Affinity):
    """score_k = clickbait_k (unused by the first-slot choice model)."""

    def score(self, users, slate):
        return slate["clickbait"]


class EngagementResponse(ResponseModel):
    """Slot 0 is consumed: engagement ~ exp(N((c·μ_c + (1−c)·μ_k)·SAT, c·σ_c + (1−c)·σ_k))."""

    def __init__(self, p: LongTermSatisfactionParams):
        self.p = p

    def log_engagement(self, users, slate):
        """(loc, scale) (B,) of the normal whose exp is the engagement with slot 0."""
        p = self.p
        c = slate["clickbait"][:, 0]
        loc = (c * p.choc_mean + (1.0 - c) * p.kale_mean) * users["satisfaction"]
        return loc, c * p.choc_stddev + (1.0 - c) * p.kale_stddev

    def respond(self, rng, users, slate, clicked):
        loc, scale = self.log_engagement(users, slate)
        return self._responses(slate, np.exp(rng.normal(loc, scale)))

    def expected_responses(self, users, slate, clicked):
        """The mean of :meth:`respond`'s responses: E[engagement] = exp(loc + scale²/2) (log-normal mean)."""
        loc, scale = self.log_engagement(users, slate)
        return self._responses(slate, np.exp(loc + 0.5 * scale ** 2))

    @staticmethod
    def _responses(slate, slot0_engagement):
        engagement = np.zeros_like(slate["clickbait"])
        engagement[:, 0] = slot0_engagement
        click = np.zeros(engagement.shape, dtype=np.int64)
        click[:, 0] = 1
        return {"click": click, "engagement": engagement}

    def response_spaces(self, slate_size):
        return {"click": per_slot_discrete(2, slate_size),
                "engagement": per_slot_box(0.0, ENGAGEMENT_OBS_MAX, slate_size)}


class SatisfactionTransition(UserTransition):
    """NPE ← γ·NPE − 2(c − 0.5) + N(0, σ_I), SAT = σ(β·NPE), one step of the budget used."""

    def __init__(self, p: LongTermSatisfactionParams):
        self.p = p

    def transition(self, rng, users, slate, clicked, responses):
        p = self.p
        c = slate["clickbait"][:, 0]
        innovation = rng.normal(0.0, p.innovation_stddev, len(c))
        users["npe"] = p.memory_discount * users["npe"] - 2.0 * (c - 0.5) + innovation
        users["satisfaction"] = _sigmoid(p.sensitivity * users["npe"])
        users["budget"] -= 1

    def terminated(self, users):
        return users["budget"] <= 0


class LongTermSatisfactionUserModel(UserModel):
    """RecSim's ``LTSUserModel``: :class:`ClickbaitAffinity`, :class:`EngagementResponse` and
    :class:`SatisfactionTransition`, bundled."""

    def __init__(self, p: LongTermSatisfactionParams):
        super().__init__(ClickbaitAffinity(), EngagementResponse(p), SatisfactionTransition(p))
        self.p = p


def build(params: LongTermSatisfactionParams) -> Simulator:
    """Assemble Long-Term Satisfaction from its parts."""
    return Simulator(
        name="long_term_satisfaction",
        documents=ClickbaitDocumentSampler(),
        users=StaticUserSampler(params),
        user_model=LongTermSatisfactionUserModel(params),
        choice=FirstSlotChoice(),
        # The reward is the *unclipped* engagement; only the observation is clipped at 100.
        reward=clicked_field_reward("engagement"),
    )
