"""RLlib's ``FlattenObservations`` env-to-module connector, one batched flatten per env step.

RLlib 2.58's connector flattens each sub-environment's observation on its own
(``flatten_inputs_to_1d_tensor`` with ``batch_axis=False``, one one-hot call per Discrete leaf
per episode), most of the sampling cost with 32 vectorized slate envs: with this subclass, which
stacks the step's observations of all episodes and flattens them in one call with
``batch_axis=True``, ``algo=random`` samples Interest Evolution 1.65x as fast
(``benchmarks/training_throughput.py``). The vectors are the same (tests/test_policy.py compares
them with RLlib's own connector's).
Imports RLlib: only :mod:`recsys_exp.runner.build` imports it, lazily.
"""

from __future__ import annotations

import numpy as np
import tree
from ray.rllib.connectors.common.flatten_observations import FlattenObservations
from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor


class BatchedFlattenObservations(FlattenObservations):
    """``FlattenObservations`` (env-to-module, single agent) flattening all episodes' last
    observations of a step at once: (B, ...) leaves -> (B, flat_dim), one row per episode."""

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs):
        if self._as_learner_connector or self._multi_agent or self._keys_to_remove:
            return super().__call__(rl_module=rl_module, batch=batch, episodes=episodes, explore=explore,
                                    shared_data=shared_data, **kwargs)
        stepped = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=True))
        if not stepped:
            return batch
        stacked = tree.map_structure(lambda *leaves: np.stack(leaves), *[ep.get_observations(-1) for ep in stepped])
        flat = flatten_inputs_to_1d_tensor(stacked, spaces_struct=self._input_obs_base_struct, batch_axis=True)
        for episode, row in zip(stepped, flat):
            episode.set_observations(at_indices=-1, new_data=row.copy())  # own memory, as RLlib's per-episode one
            episode.observation_space = self.observation_space
        return batch
