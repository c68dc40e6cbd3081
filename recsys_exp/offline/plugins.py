"""The offline algorithms as plugins (:mod:`recsys_exp.algorithms.plugin`): they learn from
``offline.path`` (:mod:`recsys_exp.offline.training`) instead of sampling the simulator."""

from __future__ import annotations

from typing import Any, Mapping

from recsys_exp.algorithms.plugin import AlgorithmPlugin, EnvNeeds, SlateAlgorithmPlugin
from recsys_exp.algorithms.plugins import epsilon_or_greedy

_PKG = "recsys_exp.offline.training"


class BC(AlgorithmPlugin):
    """RLlib's behaviour cloning on logged slates."""

    config_class = f"{_PKG}:LoggedBCConfig"
    needs = EnvNeeds(logged_data=True)


class MARWIL(AlgorithmPlugin):
    """RLlib's MARWIL (advantage-weighted imitation, Wang et al. 2018) on logged slates."""

    config_class = f"{_PKG}:LoggedMARWILConfig"
    needs = EnvNeeds(logged_data=True)


class CQL(SlateAlgorithmPlugin):
    """Discrete CQL(H) (Kumar et al. 2020) on SlateQ's item values."""

    config_class = f"{_PKG}:LoggedCQLConfig"
    needs = EnvNeeds(slate=True, logged_data=True)
    explorations = ("none", "epsilon_greedy")

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        return epsilon_or_greedy(exploration)


class CQLDQN(AlgorithmPlugin):
    """Discrete CQL(H) on RLlib's DQN over flat slates."""

    config_class = f"{_PKG}:LoggedCQLDQNConfig"
    needs = EnvNeeds(discrete_actions=True, logged_data=True)
    policy_adapter = "recsys_exp.algorithms.policy_adapters:EpsilonGreedyQPolicy"
    explorations = ("none", "epsilon_greedy")

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        return epsilon_or_greedy(exploration)


OFFLINE = {"bc": BC, "marwil": MARWIL, "cql": CQL, "cql_dqn": CQLDQN}
