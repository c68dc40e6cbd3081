"""``algo=greedy``: the myopic baseline that ranks candidates by an observed score.

``score=affinity`` ranks candidate j by the user–document dot product ⟨user, doc_j⟩ (in
Interest Evolution, with one-hot documents, that is u[c_j], the user's interest in the
document's cluster, which drives the click probability); it needs user and document features
of the same width. ``score=feature`` ranks by one document feature, ``doc_j[feature_index]``
(e.g. the clickbait score in Long-Term Satisfaction, the observed quality in Interest
Exploration), highest first unless ``descending=false``. ``score=cluster`` ranks by the index of
the document's cluster (the position of the one-hot the doc features start with, in the envs
that have clusters): in Interest Evolution a higher cluster index means a higher mean quality,
so "always show the candidates of the highest clusters" is a strong fixed heuristic, a reference
for what a long-term learner should find. Ties are not randomised: equal scores are ordered by
``torch.topk``, deterministically but in no documented order.
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from recsys_exp.algorithms.common import NoGradientLearner, SampleOnly, SlatePolicyModule, top_k_slate

SCORES = ("affinity", "feature", "cluster")


class GreedySlateModule(SlatePolicyModule):
    """Top-K candidates by a fixed observed score; no trainable weights."""

    def setup(self):
        super().setup()
        self.score = self.model_config["score"]
        self.feature_index = self.model_config["feature_index"]
        self.sign = 1.0 if self.model_config["descending"] else -1.0
        self.cluster_features = self.model_config.get("cluster_features")  # [start, C] for score=cluster

    def item_scores(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, N) scores of the candidates."""
        docs = self.docs(obs)
        if self.score == "affinity":
            s = (self.user(obs)[:, None, :] * docs).sum(-1)
        elif self.score == "cluster":
            start, num_clusters = self.cluster_features
            s = docs[..., start:start + num_clusters].argmax(-1).to(docs.dtype)
        else:
            s = docs[..., self.feature_index]
        # Ties (e.g. candidates of the same cluster) go to the lower index: candidates are drawn
        # i.i.d., so this favours no kind of document, and the policy stays deterministic.
        return self.sign * s

    def greedy_slate(self, obs):
        return top_k_slate(self.item_scores(obs), self.slate_size)


class GreedySlateConfig(AlgorithmConfig):
    """Config of :class:`GreedySlate`: ``score`` (affinity | feature | cluster), ``feature_index``, ``descending``."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or GreedySlate)
        self.train_batch_size_per_learner = 2000
        self.rollout_fragment_length = "auto"  # one iteration = train_batch_size_per_learner env steps
        self.score = "affinity"
        self.feature_index = 0
        self.descending = True

    def training(self, *, score=NotProvided, feature_index=NotProvided, descending=NotProvided, **kwargs):
        """Greedy-specific settings on top of ``AlgorithmConfig.training``."""
        super().training(**kwargs)
        if score is not NotProvided:
            self.score = score
        if feature_index is not NotProvided:
            self.feature_index = feature_index
        if descending is not NotProvided:
            self.descending = descending
        return self

    @property
    def _model_config_auto_includes(self):
        return super()._model_config_auto_includes | {
            "score": self.score, "feature_index": self.feature_index, "descending": self.descending}

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=GreedySlateModule)

    def get_default_learner_class(self):
        return NoGradientLearner


class GreedySlate(SampleOnly):
    """Samples with :class:`GreedySlateModule`; learns nothing."""

    @classmethod
    def get_default_config(cls):
        return GreedySlateConfig()
