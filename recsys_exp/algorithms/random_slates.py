"""``algo=random``: uniformly random slates of K distinct candidates (the baseline of every table).

Unlike ``MultiDiscrete.sample()`` (RLlib's old "random" baseline), a slate never repeats a
candidate. The behaviour probability of every slate is (N-K)!/N!, logged as ``action_logp``.
"""

from __future__ import annotations

import math

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from recsys_exp.algorithms.common import NoGradientLearner, SampleOnly, SlatePolicyModule
from recsys_exp.algorithms.slates import MAX_SUPPORT, all_ordered_slates, random_slate


class RandomSlateModule(SlatePolicyModule):
    """Uniform random slates, also at evaluation (there is nothing greedy about chance)."""

    def greedy_slate(self, obs):
        return random_slate(obs.shape[0], self.num_candidates, self.slate_size)

    def _forward_inference(self, batch, **kwargs):
        return self._forward_exploration(batch)

    def explore_slate(self, obs, t):
        slate = self.greedy_slate(obs)
        return slate, torch.full((slate.shape[0],), -self.log_num_slates)

    def slot_logp(self, slate, logp):
        return torch.full(slate.shape, -math.log(self.num_candidates))

    def base_distribution(self, obs, t=0, explore=True):
        """Uniform over all ordered slates, also at inference (:class:`NotEnumerable` past MAX_SUPPORT)."""
        universe = all_ordered_slates(self.num_candidates, self.slate_size, limit=MAX_SUPPORT)
        b, u = obs.shape[0], universe.shape[0]
        return universe[None].expand(b, u, self.slate_size), torch.full((b, u), 1.0 / u, dtype=torch.float64)

    def slot_probabilities(self, obs, t=0, explore=True):
        """1/N everywhere (a uniform ordered slate shows any candidate in any slot with probability 1/N)."""
        return torch.full((obs.shape[0], self.slate_size, self.num_candidates), 1.0 / self.num_candidates,
                          dtype=torch.float64)


class RandomSlateConfig(AlgorithmConfig):
    """Config of :class:`RandomSlate` (only sampling settings)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or RandomSlate)
        self.train_batch_size_per_learner = 2000
        self.rollout_fragment_length = "auto"  # one iteration = train_batch_size_per_learner env steps

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=RandomSlateModule)

    def get_default_learner_class(self):
        return NoGradientLearner


class RandomSlate(SampleOnly):
    """Samples with :class:`RandomSlateModule`; learns nothing."""

    @classmethod
    def get_default_config(cls):
        return RandomSlateConfig()
