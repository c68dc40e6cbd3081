"""Generic simulator parts for ``env=custom``: pick them in YAML with ``_target_``.

Each class has one job (see :mod:`recsys_exp.envs.components`) and validates its own
parameters when constructed (probabilities in [0, 1] that sum to 1, positive scales) and its
fit with the other parts in :meth:`~recsys_exp.envs.components.Part.check` (e.g. the width of
the user preferences against the number of document categories).

The choice models and rewards of :mod:`recsys_exp.envs.components` are re-exported here, so a
config names every generic part as ``recsys_exp.envs.parts.<Class>``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recsys_exp.envs.components import (
    Affinity,
    CascadeChoice,
    ClickedFieldReward,
    ClickReward,
    DocumentSampler,
    FirstSlotChoice,
    MultinomialLogitChoice,
    MultinomialProportionalChoice,
    ResponseModel,
    UserSampler,
    UserTransition,
    click_matrix,
    per_slot_box,
    per_slot_discrete,
)

__all__ = [
    "CascadeChoice", "CategoryAffinity", "CategoryDocumentSampler", "ClickResponse", "ClickReward",
    "ClickedFieldReward", "FirstSlotChoice", "MultinomialLogitChoice", "MultinomialProportionalChoice",
    "PreferenceUserSampler", "StaticUsers", "check_distribution", "per_category",
]


# ---------------------------------------------------------------------------------------
# Parameter checks shared by the parts
# ---------------------------------------------------------------------------------------
def check_distribution(name: str, probs: Sequence[float]) -> np.ndarray:
    """``probs`` as a float array, or ``ValueError`` unless it is a probability vector (≥ 0, sums to 1)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError(f"{name} must be a non-empty list of probabilities, got {probs!r}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"{name} must be probabilities in [0, 1], got {list(map(float, p))}")
    if not np.isclose(p.sum(), 1.0, atol=1e-6):
        raise ValueError(f"{name} must sum to 1, got {list(map(float, p))} (sum {p.sum():.6g})")
    return p


def per_category(name: str, value: float | Sequence[float], num_categories: int) -> np.ndarray:
    """A scalar broadcast to (C,), or a list that must have one entry per category."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return np.full(num_categories, float(v))
    if v.shape != (num_categories,):
        raise ValueError(f"{name} has {v.size} entries but there are {num_categories} categories")
    return v


def one_hot(index: np.ndarray, n: int) -> np.ndarray:
    """float32 one-hot of integer ``index`` (...,) -> (..., n)."""
    flat = np.zeros(index.size * n, dtype=np.float32)
    flat[np.arange(0, index.size * n, n) + index.ravel()] = 1.0
    return flat.reshape(index.shape + (n,))


# ---------------------------------------------------------------------------------------
# Documents and users
# ---------------------------------------------------------------------------------------
class CategoryDocumentSampler(DocumentSampler):
    """Documents with a category and a quality.

    category ~ Cat(category_probs), quality ~ N(quality_mean[c], quality_stddev[c]);
    arrays ``category`` (B, N) int64, ``quality`` (B, N); features = [one-hot category (C), quality],
    D = C + 1.
    """

    feature_low, feature_high = -np.inf, np.inf

    def __init__(self, category_probs: Sequence[float], quality_mean: float | Sequence[float] = 0.0,
                 quality_stddev: float | Sequence[float] = 1.0):
        self.probs = check_distribution("category_probs", category_probs)
        self.num_categories = len(self.probs)
        self.quality_mean = per_category("quality_mean", quality_mean, self.num_categories)
        self.quality_stddev = per_category("quality_stddev", quality_stddev, self.num_categories)
        if (self.quality_stddev < 0).any():
            raise ValueError(f"quality_stddev must be >= 0, got {quality_stddev!r}")
        self.feature_dim = self.num_categories + 1
        self._cdf = np.cumsum(self.probs)

    def sample(self, rng, batch, num_candidates):
        shape = (batch, num_candidates)
        category = np.searchsorted(self._cdf, rng.random(shape) * self._cdf[-1], side="right")
        category = np.minimum(category, self.num_categories - 1)
        quality = self.quality_mean[category] + self.quality_stddev[category] * rng.standard_normal(shape)
        features = np.empty(shape + (self.feature_dim,), dtype=np.float32)
        features[..., :-1] = one_hot(category, self.num_categories)
        features[..., -1] = quality
        return {"category": category, "quality": quality, "features": features}


class PreferenceUserSampler(UserSampler):
    """Users with a preference distribution over C categories.

    preferences ~ Dirichlet(concentration · 1_C) (or a per-category concentration), shape (B, C),
    observed (U = C, in [0, 1]) unless ``observed=false``. Small concentrations give peaked tastes.
    """

    observation_low, observation_high = 0.0, 1.0

    def __init__(self, num_categories: int, concentration: float | Sequence[float] = 1.0, observed: bool = True):
        if not isinstance(num_categories, int) or num_categories <= 0:
            raise ValueError(f"num_categories must be a positive integer, got {num_categories!r}")
        self.num_categories = num_categories
        self.concentration = per_category("concentration", concentration, num_categories)
        if (self.concentration <= 0).any():
            raise ValueError(f"concentration must be > 0, got {concentration!r}")
        self.observed = bool(observed)
        self.observation_dim = num_categories if self.observed else 0

    def sample(self, rng, n):
        return {"preferences": rng.dirichlet(self.concentration, n)}

    def observe(self, users):
        if self.observed:
            return users["preferences"].astype(np.float32)
        return np.zeros((len(users["preferences"]), 0), dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Affinity, responses, transition
# ---------------------------------------------------------------------------------------
def check_preferences_fit(ctx, users_key: str = "preferences", docs_key: str = "category") -> None:
    """``users[users_key]`` (B, C) must have one entry per category of ``docs[docs_key]``."""
    if users_key not in ctx.users:
        raise ValueError(f"needs users.{users_key} (B, C), but the user sampler draws "
                         f"{', '.join(sorted(ctx.users)) or 'nothing'}")
    if docs_key not in ctx.docs:
        raise ValueError(f"needs documents.{docs_key} (B, N) category ids, but the document sampler draws "
                         f"{', '.join(sorted(ctx.docs))}")
    width = ctx.users[users_key].shape[1] if ctx.users[users_key].ndim == 2 else None
    categories = getattr(ctx.documents, "num_categories", None)
    if width is None:
        raise ValueError(f"users.{users_key} must have shape (B, C), got {ctx.users[users_key].shape}")
    if categories is not None and width != categories:
        raise ValueError(f"users.{users_key} has {width} entries per user but the documents have "
                         f"{categories} categories")


class CategoryAffinity(Affinity):
    """s_k = offset + scale · preferences[c_k] + quality_weight · quality_k (B, K)."""

    def __init__(self, scale: float = 1.0, quality_weight: float = 0.0, offset: float = 0.0):
        self.scale, self.quality_weight, self.offset = float(scale), float(quality_weight), float(offset)

    def check(self, ctx):
        check_preferences_fit(ctx)
        if self.quality_weight and "quality" not in ctx.docs:
            raise ValueError(f"quality_weight={self.quality_weight} needs documents.quality, but the document "
                             f"sampler draws {', '.join(sorted(ctx.docs))}")

    def score(self, users, slate):
        rows = np.arange(slate["category"].shape[0])[:, None]
        scores = self.offset + self.scale * users["preferences"][rows, slate["category"]]
        if self.quality_weight:
            scores = scores + self.quality_weight * slate["quality"]
        return scores


class ClickResponse(ResponseModel):
    """``click`` (B, K) one-hot of the chosen slot, plus document attributes copied per slot.

    ``echo``: attributes reported for every shown slot (as RecSim's quality / cluster_id);
    ``on_click``: attributes reported only for the clicked slot, zero elsewhere (as watch time).
    Both are float32 Boxes (−inf, inf) per slot in the observation.
    """

    def __init__(self, echo: Sequence[str] = (), on_click: Sequence[str] = ()):
        self.echo, self.on_click = tuple(echo), tuple(on_click)
        clash = sorted(set(self.echo) & set(self.on_click) | {"click"} & set(self.echo + self.on_click))
        if clash:
            raise ValueError(f"response field(s) {', '.join(clash)} named twice (or 'click', which is built in)")

    def check(self, ctx):
        missing = [key for key in self.echo + self.on_click if key not in ctx.docs or key == "features"]
        if missing:
            raise ValueError(f"documents have no attribute {', '.join(missing)} (they have "
                             f"{', '.join(k for k in sorted(ctx.docs) if k != 'features')})")

    def respond(self, rng, users, slate, clicked):
        k = next(iter(slate.values())).shape[1]  # every slate array is (B, K, ...)
        click = click_matrix(clicked, k)
        out = {"click": click}
        out.update({key: slate[key].astype(np.float64) for key in self.echo})
        out.update({key: slate[key] * click for key in self.on_click})
        return out

    def response_spaces(self, slate_size):
        spaces = {"click": per_slot_discrete(2, slate_size)}
        spaces.update({key: per_slot_box(-np.inf, np.inf, slate_size) for key in self.echo + self.on_click})
        return spaces


class StaticUsers(UserTransition):
    """The user never changes and the session never ends (set ``env.max_episode_steps``)."""

    ends_sessions = False

    def transition(self, rng, users, slate, clicked, responses):
        pass

    def terminated(self, users):
        return np.zeros(len(next(iter(users.values()))), dtype=bool)
