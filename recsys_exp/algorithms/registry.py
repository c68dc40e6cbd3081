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
    slate_policy: bool = False  # a recsys_exp slate module: reads the slate layout of the observation
    offline: bool = False  # learns from logged data (offline.path), not from the simulator

    def load_config_class(self) -> type:
        """Import and return the ``AlgorithmConfig`` subclass (imports RLlib)."""
        module, cls = self.config_class.split(":")
        return getattr(importlib.import_module(module), cls)


_PKG = "recsys_exp.algorithms"
ALGORITHMS: dict[str, AlgoInfo] = {
    "random": AlgoInfo("random", f"{_PKG}.random_slates:RandomSlateConfig", False, ("none",), True),
    "greedy": AlgoInfo("greedy", f"{_PKG}.greedy:GreedySlateConfig", False, ("none", "epsilon_greedy"), True),
    "lin_ucb": AlgoInfo("lin_ucb", f"{_PKG}.linear_bandit:LinUCBConfig", False,
                        ("ucb", "none", "epsilon_greedy"), True),
    "lin_ts": AlgoInfo("lin_ts", f"{_PKG}.linear_bandit:LinTSConfig", False,
                       ("thompson", "none", "epsilon_greedy"), True),
    "slateq": AlgoInfo("slateq", f"{_PKG}.slateq:SlateQConfig", False, ("epsilon_greedy", "none"), True),
    # Non-contextual bandits over document clusters or candidate positions (stateless_bandit.py).
    "ucb1": AlgoInfo("ucb1", f"{_PKG}.stateless_bandit:UCB1Config", False, ("ucb", "none"), True),
    "epsilon_greedy_bandit": AlgoInfo("epsilon_greedy_bandit", f"{_PKG}.stateless_bandit:EpsilonGreedyBanditConfig",
                                      False, ("epsilon_greedy", "none"), True),
    "dqn": AlgoInfo("dqn", "ray.rllib.algorithms.dqn:DQNConfig", True, ("epsilon_greedy", "none")),
    "ppo": AlgoInfo("ppo", "ray.rllib.algorithms.ppo:PPOConfig", False, ("none",)),
    # Offline: RLlib's BC / MARWIL and discrete CQL, trained on logged data (recsys_exp.offline.training).
    "bc": AlgoInfo("bc", "recsys_exp.offline.training:LoggedBCConfig", False, ("none",), offline=True),
    "marwil": AlgoInfo("marwil", "recsys_exp.offline.training:LoggedMARWILConfig", False, ("none",), offline=True),
    "cql": AlgoInfo("cql", "recsys_exp.offline.training:LoggedCQLConfig", False, ("none", "epsilon_greedy"),
                    True, offline=True),
    "cql_dqn": AlgoInfo("cql_dqn", "recsys_exp.offline.training:LoggedCQLDQNConfig", True,
                        ("none", "epsilon_greedy"), offline=True),
}
