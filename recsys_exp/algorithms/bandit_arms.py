"""What an arm is for the stateless bandits (``algo=ucb1``, ``algo=epsilon_greedy_bandit``,
``algo=bernoulli_ts``), and Bernoulli Thompson sampling's Beta prior per arm (:func:`beta_prior`).

Kept free of RLlib and torch: config validation (before Ray starts) and the algorithms' configs
both read it.

* ``arms=cluster``: a candidate's arm is its document's cluster (topic). The env must report a
  per-slot ``response.cluster_id`` (``MultiDiscrete([C]*K)``) and its doc features must start
  with the cluster one-hot (width C): true of Interest Exploration (2 topics, then quality) and
  Interest Evolution (20 clusters), not of Long-Term Satisfaction (one clickbait score).
* ``arms=item``: a candidate's arm is its position j in [0, N); the same arm is the same
  document only while the candidate set stays fixed (``env.resample_documents=false``, one user
  at a time).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym

ARMS = ("cluster", "item")
CLUSTER_ENVS = "interest_exploration, interest_evolution"


def cluster_features(space: gym.spaces.Dict) -> tuple[int, int]:
    """``(start, C)``: the doc-feature columns holding the cluster one-hot of an env's observation.

    Raises ``ValueError`` (naming what is missing) when the env's documents carry no cluster.
    """
    response = space["response"]
    cluster = response.spaces.get("cluster_id") if isinstance(response, gym.spaces.Dict) else None
    if not isinstance(cluster, gym.spaces.MultiDiscrete):
        raise ValueError("its documents have no cluster: arms=cluster needs a per-slot response 'cluster_id' "
                         f"and doc features that start with its one-hot ({CLUSTER_ENVS})")
    num_clusters, doc_dim = int(cluster.nvec[0]), int(space["doc"].shape[1])
    if num_clusters < 2 or doc_dim < num_clusters:
        raise ValueError(f"arms=cluster needs >= 2 clusters and doc features that start with their one-hot; "
                         f"the env has {num_clusters} cluster(s) and {doc_dim} doc feature(s)")
    return 0, num_clusters


def arm_spec(space: gym.spaces.Dict, arms: str) -> dict[str, Any]:
    """``{"num_arms", "cluster_features": [start, C] or None}`` of ``arms`` on an env observation space."""
    if arms not in ARMS:
        raise ValueError(f"arms={arms!r}: allowed {', '.join(ARMS)}")
    if arms == "item":
        return {"num_arms": int(space["doc"].shape[0]), "cluster_features": None}
    start, num_clusters = cluster_features(space)
    return {"num_arms": num_clusters, "cluster_features": [start, num_clusters]}


def beta_prior(prior: Any, num_arms: int, key: str = "algo.training.prior") -> tuple[list[float], list[float]]:
    """``(alpha, beta)`` per arm of Bernoulli Thompson sampling's prior ``prior``: None is
    Beta(1, 1) for every arm; else a mapping ``{alpha: [...], beta: [...]}`` with one finite value
    > 0 per arm (e.g. a campaign of obp's ``prior_bts.yaml``). Raises ``ValueError("<key>...: ...")``,
    one line naming the key."""
    if prior is None:
        return [1.0] * num_arms, [1.0] * num_arms
    allowed = "null (Beta(1, 1) for every arm) or {alpha: [...], beta: [...]} with one value per arm"
    if not hasattr(prior, "keys"):
        raise ValueError(f"{key}={prior!r}: must be {allowed}")
    for name in prior:
        if name not in ("alpha", "beta"):
            raise ValueError(f"{key}.{name}: unknown key; allowed: alpha, beta")
    out = []
    for name in ("alpha", "beta"):
        values = prior.get(name)
        if values is None:
            raise ValueError(f"{key}.{name}: missing; the prior must be {allowed}")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise ValueError(f"{key}.{name}={values!r}: must be a list of {num_arms} numbers (one per arm)")
        values = list(values)
        if len(values) != num_arms:
            raise ValueError(f"{key}.{name}: {len(values)} value{'' if len(values) == 1 else 's'}, expected {num_arms} "
                             f"(one per arm)")
        for i, v in enumerate(values):
            if type(v) not in (int, float) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{key}.{name}[{i}]={v!r}: must be a finite number > 0")
        out.append([float(v) for v in values])
    return out[0], out[1]
