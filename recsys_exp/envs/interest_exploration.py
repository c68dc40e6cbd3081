"""Interest Exploration (RecSim ``interest_exploration``), batched.

Documents have a topic t ∈ {0, 1} (P = 0.2, 0.8) and a quality LogN(μ_t, 0.1), both observed
(features = one-hot topic, then quality). Users have a latent type (P = 0.3, 0.7) and a static
affinity per topic ~ LogN(M[type], S[type]). The multinomial logit choice model clicks slot i
with P ∝ exp(affinity[t_i] + quality_i) against a no-click logit 5. Reward = clicks. The user
never changes and the original never ends an episode: the horizon is ``max_episode_steps``.
Spec: ../shared/reference/recsim.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_exp.envs.components import (
    Affinity,
    DocumentSampler,
    MultinomialLogitChoice,
    ResponseModel,
    Simulator,
    UserModel,
    UserSampler,
    click_matrix,
    per_slot_box,
    per_slot_discrete,
    total_clicks_reward,
)
from recsys_exp.envs.parts import StaticUsers

NUM_TOPICS = 2


@dataclass(frozen=True)
class InterestExplorationParams:
    """Constants of the IExp document and user models (RecSim defaults)."""

    topic_probs: tuple[float, float] = (0.2, 0.8)
    topic_quality_mean: tuple[float, float] = (0.8, 0.2)
    topic_quality_stddev: tuple[float, float] = (0.1, 0.1)
    user_type_probs: tuple[float, float] = (0.3, 0.7)
    # affinity_mean[type][topic]: type 0 prefers topic 1, type 1 prefers topic 0.
    affinity_mean: tuple[tuple[float, float], tuple[float, float]] = ((0.1, 0.7), (0.7, 0.1))
    affinity_stddev: tuple[tuple[float, float], tuple[float, float]] = ((0.1, 0.1), (0.1, 0.1))
    no_click_mass: float = 5.0


def _draw_category(rng: np.random.Generator, probs: np.ndarray, shape) -> np.ndarray:
    """Categorical draws with one uniform each (as ``RandomState.choice(p=...)``)."""
    return np.searchsorted(np.cumsum(probs), rng.random(shape), side="right").clip(0, len(probs) - 1)


class TopicDocumentSampler(DocumentSampler):
    """topic ~ Cat(topic_probs), quality ~ LogN(mean[topic], std[topic]); features = [one-hot, quality]."""

    feature_dim, feature_low, feature_high = NUM_TOPICS + 1, 0.0, np.inf

    def __init__(self, p: InterestExplorationParams):
        self.probs = np.asarray(p.topic_probs)
        self.mean, self.std = np.asarray(p.topic_quality_mean), np.asarray(p.topic_quality_stddev)

    def sample(self, rng, batch, num_candidates):
        topic = _draw_category(rng, self.probs, (batch, num_candidates))
        quality = rng.lognormal(self.mean[topic], self.std[topic])
        features = np.empty((batch, num_candidates, NUM_TOPICS + 1), dtype=np.float32)
        features[..., :NUM_TOPICS] = topic[..., None] == np.arange(NUM_TOPICS)
        features[..., NUM_TOPICS] = quality
        return {"cluster_id": topic, "quality": quality, "features": features}


class ClusterUserSampler(UserSampler):
    """type ~ Cat(user_type_probs), affinity[topic] ~ LogN(M[type][topic], S[type][topic])."""

    observation_low = 0.0  # latent user: width 0

    def __init__(self, p: InterestExplorationParams):
        self.probs = np.asarray(p.user_type_probs)
        self.mean, self.std = np.asarray(p.affinity_mean), np.asarray(p.affinity_stddev)

    def sample(self, rng, n):
        user_type = _draw_category(rng, self.probs, n)
        return {"user_type": user_type, "affinity": rng.lognormal(self.mean[user_type], self.std[user_type])}


class TopicAffinity(Affinity):
    """logit_k = affinity[topic_k] + quality_k."""

    def score(self, users, slate):
        rows = np.arange(slate["cluster_id"].shape[0])[:, None]
        return users["affinity"][rows, slate["cluster_id"]] + slate["quality"]


class TopicResponse(ResponseModel):
    """Click on the chosen slot; every slot reports its quality and topic."""

    def respond(self, rng, users, slate, clicked):
        click = click_matrix(clicked, slate["cluster_id"].shape[1])
        return {"click": click, "quality": slate["quality"], "cluster_id": slate["cluster_id"]}

    def response_spaces(self, slate_size):
        return {"click": per_slot_discrete(2, slate_size),
                "quality": per_slot_box(0.0, np.inf, slate_size),
                "cluster_id": per_slot_discrete(NUM_TOPICS, slate_size)}


class InterestExplorationUserModel(UserModel):
    """Static, latent user: :class:`TopicAffinity`, :class:`TopicResponse` and
    :class:`~recsys_exp.envs.parts.StaticUsers` (no transition, no end), bundled."""

    def __init__(self):
        super().__init__(TopicAffinity(), TopicResponse(), StaticUsers())


def build(params: InterestExplorationParams) -> Simulator:
    """Assemble Interest Exploration from its parts."""
    return Simulator(
        name="interest_exploration",
        documents=TopicDocumentSampler(params),
        users=ClusterUserSampler(params),
        user_model=InterestExplorationUserModel(),
        choice=MultinomialLogitChoice(params.no_click_mass),
        reward=total_clicks_reward,
    )
