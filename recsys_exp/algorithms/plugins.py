"""The built-in online algorithms as plugins (:mod:`recsys_exp.algorithms.plugin`): each names its
RLlib config, the env it needs, the explorations it reads and its own typed hyperparameters.

Light on purpose: the RLlib classes live in the algorithm modules and are imported only when a
run is built. The offline algorithms are in :mod:`recsys_exp.offline.plugins`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from recsys_exp.algorithms.plugin import AlgorithmPlugin, EnvNeeds, SlateAlgorithmPlugin, epsilon_schedule
from recsys_exp.errors import ConfigError

if TYPE_CHECKING:
    from recsys_exp.envs.spec import EnvSpec

_PKG = "recsys_exp.algorithms"
_LOGGED = "recsys_exp.offline.training"  # the bandits' variants that learn from logged rows


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError("<key>=<value>: <allowed>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def epsilon_or_greedy(exploration: Mapping[str, Any]) -> dict[str, Any]:
    """``epsilon`` of DQN-like configs: the exploration schedule, or always 0 (act greedily)."""
    return {"epsilon": epsilon_schedule(exploration) or [(0, 0.0)]}


class Random(SlateAlgorithmPlugin):
    """Uniformly random slates of K distinct candidates (no learning)."""

    config_class = f"{_PKG}.random_slates:RandomSlateConfig"


@dataclass(frozen=True)
class GreedyParams:
    """``score``: affinity (<user, doc>) | feature (doc[feature_index]) | cluster (the doc's cluster
    index); ``descending``: highest first."""

    score: str = "affinity"
    feature_index: int = 0
    descending: bool = True


class Greedy(SlateAlgorithmPlugin):
    """Myopic baseline: the top-K candidates by an observed score."""

    config_class = f"{_PKG}.greedy:GreedySlateConfig"
    explorations = ("none", "epsilon_greedy")
    Params = GreedyParams

    def check(self, c: Mapping[str, Any], spec: "EnvSpec") -> None:
        p = self.params(c["algo"]["training"])
        layout, env = spec.slate_layout, spec.name
        user_dim, doc_dim = layout["user"][1], layout["doc"][2]
        if p.score == "affinity" and (user_dim == 0 or user_dim != doc_dim):
            raise ConfigError(f"algo.training.score=affinity: algo=greedy ranks by <user, doc>, but env={env} has "
                              f"user features of width {user_dim} and doc features of width {doc_dim}; "
                              f"use algo.training.score=feature (with algo.training.feature_index)")
        if p.score == "feature":
            require(0 <= p.feature_index < doc_dim, "algo.training.feature_index", p.feature_index,
                    f"env={env} has {doc_dim} doc feature(s): allowed 0..{doc_dim - 1}")
        if p.score == "cluster":
            from recsys_exp.algorithms.bandit_arms import cluster_features

            try:
                cluster_features(spec.observation_space)
            except ValueError as e:
                raise ConfigError(f"algo.training.score=cluster: env={env} cannot rank by cluster: {e}") from None
        require(p.score in ("affinity", "feature", "cluster"), "algo.training.score", p.score,
                "allowed: affinity, feature, cluster")

    def model_config(self, c: Mapping[str, Any], spec: "EnvSpec") -> dict[str, Any]:
        """The slate modules' model config plus, for ``score=cluster``, where the cluster one-hot is."""
        from recsys_exp.algorithms.bandit_arms import cluster_features

        config = super().model_config(c, spec)
        if self.params(c["algo"]["training"]).score == "cluster":
            config["cluster_features"] = list(cluster_features(spec.observation_space))
        return config


@dataclass(frozen=True)
class LinearBanditParams:
    """``ridge``: A starts at ridge·I."""

    ridge: float = 1.0


class _LinearBandit(SlateAlgorithmPlugin):
    Params = LinearBanditParams

    def check(self, c: Mapping[str, Any], spec: "EnvSpec") -> None:
        p = self.params(c["algo"]["training"])
        require(p.ridge > 0, "algo.training.ridge", p.ridge, "must be > 0")

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        mode = {"ucb": "ucb", "thompson": "thompson"}.get(exploration["type"], "none")
        return {"exploration_mode": mode, "alpha": exploration["alpha"], "posterior_scale": exploration["scale"]}


class LinUCB(_LinearBandit):
    """LinUCB (Li et al. 2010) over per-candidate features, top-K slates."""

    config_class = f"{_PKG}.linear_bandit:LinUCBConfig"
    logged_config_class = f"{_LOGGED}:LoggedLinUCBConfig"
    explorations = ("ucb", "none", "epsilon_greedy")


class LinTS(_LinearBandit):
    """Linear Thompson Sampling (Agrawal & Goyal 2013) over per-candidate features."""

    config_class = f"{_PKG}.linear_bandit:LinTSConfig"
    logged_config_class = f"{_LOGGED}:LoggedLinTSConfig"
    explorations = ("thompson", "none", "epsilon_greedy")


class SlateQ(SlateAlgorithmPlugin):
    """SlateQ (Ie et al. 2019) on RLlib's DQN machinery."""

    config_class = f"{_PKG}.slateq:SlateQConfig"
    explorations = ("epsilon_greedy", "none")

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        return epsilon_or_greedy(exploration)


@dataclass(frozen=True)
class StatelessBanditParams:
    """``arms``: cluster (the doc's one-hot cluster) | item (the candidate position);
    ``tie_feature``: doc feature ordering candidates of one arm (None = random)."""

    arms: str = "cluster"
    tie_feature: int | None = None


class _StatelessBandit(SlateAlgorithmPlugin):
    Params = StatelessBanditParams

    def check(self, c: Mapping[str, Any], spec: "EnvSpec") -> None:
        """The arms exist in this env (:mod:`recsys_exp.algorithms.bandit_arms`)."""
        from recsys_exp.algorithms.bandit_arms import ARMS, CLUSTER_ENVS, cluster_features

        p = self.params(c["algo"]["training"])
        name, env = c["algo"]["name"], spec.name
        require(p.arms in ARMS, "algo.training.arms", p.arms, f"allowed: {', '.join(ARMS)}")
        if p.arms == "cluster":
            try:
                start, width = cluster_features(spec.observation_space)
            except ValueError as e:
                raise ConfigError(f"algo.training.arms=cluster: algo={name} cannot find clusters in env={env}: {e}; "
                                  f"or use algo.training.arms=item with env.resample_documents=false") from None
            docs = spec.first_docs()[:, start:start + width]
            if not ((docs == 0) | (docs == 1)).all() or not (docs.sum(-1) == 1).all():
                raise ConfigError(f"algo.training.arms=cluster: the doc features of env={env} do not start with a "
                                  f"one-hot of its {width} clusters ({CLUSTER_ENVS} do)")
        elif not spec.is_logged:  # logged data: candidate j is whatever the log's index j is (OBD: one item)
            runners = c["algo"]["env_runners"]
            require(not spec.resample_documents, "algo.training.arms", p.arms,
                    "an arm is a candidate position, the same document only while the candidates stay fixed: "
                    "set env.resample_documents=false (or use algo.training.arms=cluster)")
            require(runners.get("num_envs_per_env_runner", 1) == 1 and runners.get("num_env_runners", 0) <= 1,
                    "algo.training.arms", p.arms, "every simulated user keeps its own fixed candidates: set "
                    "algo.env_runners.num_envs_per_env_runner=1 and num_env_runners<=1")
        doc_dim = spec.slate_layout["doc"][2]
        require(p.tie_feature is None or 0 <= p.tie_feature < doc_dim, "algo.training.tie_feature", p.tie_feature,
                f"env={env} has {doc_dim} doc feature(s): allowed null or 0..{doc_dim - 1}")


class UCB1(_StatelessBandit):
    """UCB1 (Auer et al. 2002) over document clusters or candidate positions."""

    config_class = f"{_PKG}.stateless_bandit:UCB1Config"
    logged_config_class = f"{_LOGGED}:LoggedUCB1Config"
    explorations = ("ucb", "none")

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        return {"ucb_alpha": exploration["alpha"] if exploration["type"] == "ucb" else 0.0}


class EpsilonGreedyBandit(_StatelessBandit):
    """ε-greedy over document clusters or candidate positions (ε from the exploration schedule)."""

    config_class = f"{_PKG}.stateless_bandit:EpsilonGreedyBanditConfig"
    logged_config_class = f"{_LOGGED}:LoggedEpsilonGreedyBanditConfig"
    explorations = ("epsilon_greedy", "none")


@dataclass(frozen=True)
class BernoulliTSParams(StatelessBanditParams):
    """``prior``: null (Beta(1, 1) per arm) or ``{alpha: [...], beta: [...]}`` per arm;
    ``propensity_samples``: posterior draws S of the Monte Carlo propensities."""

    prior: dict | None = None
    propensity_samples: int = 10_000


class BernoulliTS(_StatelessBandit):
    """Bernoulli Thompson sampling (Thompson 1933; OBD's BTS) over document clusters or candidate
    positions: Beta posteriors per arm, top-K by one draw per arm, Monte Carlo propensities."""

    config_class = f"{_PKG}.bernoulli_ts:BernoulliTSConfig"
    logged_config_class = f"{_LOGGED}:LoggedBernoulliTSConfig"
    explorations = ("thompson", "none")
    Params = BernoulliTSParams

    def check(self, c: Mapping[str, Any], spec: "EnvSpec") -> None:
        """The arms exist (as for ucb1); the prior has one alpha and beta > 0 per arm; S >= 1."""
        from recsys_exp.algorithms.bandit_arms import arm_spec, beta_prior

        super().check(c, spec)
        p = self.params(c["algo"]["training"])
        require(type(p.propensity_samples) is int and p.propensity_samples >= 1, "algo.training.propensity_samples",
                p.propensity_samples, "must be an integer >= 1 (posterior draws of the Monte Carlo propensities)")
        num_arms = arm_spec(spec.observation_space, p.arms)["num_arms"]
        try:
            beta_prior(p.prior, num_arms)
        except ValueError as e:
            raise ConfigError(f"{e} (algo.training.arms={p.arms}: env={spec.name} has {num_arms} arms)") from None

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        return {"exploration_mode": "thompson" if exploration["type"] == "thompson" else "none"}


class DQN(AlgorithmPlugin):
    """RLlib's DQN over flat slates ``Discrete(N**K)``."""

    config_class = "ray.rllib.algorithms.dqn:DQNConfig"
    needs = EnvNeeds(discrete_actions=True)
    policy_adapter = "recsys_exp.algorithms.policy_adapters:EpsilonGreedyQPolicy"
    explorations = ("epsilon_greedy", "none")

    def exploration_settings(self, exploration: Mapping[str, Any]) -> dict[str, Any]:
        return epsilon_or_greedy(exploration)


class PPO(AlgorithmPlugin):
    """RLlib's PPO on the flattened observation (K categorical heads, or one over flat slates)."""

    config_class = "ray.rllib.algorithms.ppo:PPOConfig"


# The built-in online plugins by their algo option name (for messages that list what exists).
BUILTIN = {"random": Random, "greedy": Greedy, "lin_ucb": LinUCB, "lin_ts": LinTS, "slateq": SlateQ, "ucb1": UCB1,
           "epsilon_greedy_bandit": EpsilonGreedyBandit, "bernoulli_ts": BernoulliTS, "dqn": DQN, "ppo": PPO}
