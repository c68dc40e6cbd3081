"""The plugin classes of this package (:mod:`recsys_exp.algorithms.plugin`).

Light on purpose: no RLlib or torch at import, so composing and validating a config stays fast;
``config_class`` names the RLlib ``AlgorithmConfig``, imported when the run is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from recsys_exp.algorithms.plugin import SlateAlgorithmPlugin
from recsys_exp.errors import ConfigError

if TYPE_CHECKING:
    from recsys_exp.envs.spec import EnvSpec

FEATURES = ("doc", "full")


@dataclass(frozen=True)
class ClickLogitParams:
    """This algorithm's own ``algo.training`` keys (RLlib's, e.g. ``lr``, are checked by RLlib).

    ``l2``: L2 penalty on the click weights (>= 0); ``features``: ``doc`` (slot one-hot + doc
    features) or ``full`` (also the user features and user ⊗ doc; needs an env that observes users).
    """

    l2: float = 0.0
    features: str = "doc"


class ClickLogit(SlateAlgorithmPlugin):
    """A per-candidate logistic click model trained by gradient descent; top-K slates by P(click)."""

    config_class = "my_recsys_algos.click_logit:ClickLogitConfig"
    explorations = ("epsilon_greedy", "none")  # ε-greedy is the slate module base's own (model_config)
    Params = ClickLogitParams

    def check(self, c: Mapping[str, Any], spec: "EnvSpec") -> None:
        p = self.params(c["algo"]["training"])  # wrong types -> ConfigError naming the key
        if p.l2 < 0:
            raise ConfigError(f"algo.training.l2={p.l2!r}: must be >= 0")
        if p.features not in FEATURES:
            raise ConfigError(f"algo.training.features={p.features!r}: allowed: {', '.join(FEATURES)}")
        if p.features == "full" and spec.slate_layout["user"][1] == 0:
            raise ConfigError(f"algo.training.features=full: env={spec.name} observes no user features; "
                              f"use algo.training.features=doc")
