"""The algorithms the runner knows, described without importing RLlib (composing must stay fast)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class AlgoInfo:
    """What the runner needs to know about an algorithm before building it."""

    name: str
    config_class: str  # "module:Class" of its AlgorithmConfig, imported lazily
    discrete_actions_only: bool  # needs Discrete actions (slates must be flattened)
    explorations: tuple[str, ...]  # allowed exploration.type values

    def load_config_class(self) -> type:
        """Import and return the ``AlgorithmConfig`` subclass (imports RLlib)."""
        module, cls = self.config_class.split(":")
        return getattr(importlib.import_module(module), cls)


ALGORITHMS: dict[str, AlgoInfo] = {
    "ppo": AlgoInfo("ppo", "ray.rllib.algorithms.ppo:PPOConfig", False, ("none",)),
    "dqn": AlgoInfo("dqn", "ray.rllib.algorithms.dqn:DQNConfig", True, ("epsilon_greedy", "none")),
}
