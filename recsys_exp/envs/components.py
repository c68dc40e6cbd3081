"""Batched building blocks of a RecSim-style slate simulator.

A simulator is assembled from small parts with one job each (RecSim, Ie et al. 2019, §3):

* a **document sampler** draws the N candidates of B users at once,
* a **user sampler** draws the initial (possibly latent) state of B users,
* a **user model** scores the slate for the choice model, produces the per-slot
  responses and applies the state transition,
* a **choice model** picks at most one clicked slot per user (index K = no click),
* a **reward** turns the responses into one scalar per user.

Every array is batched over users: ``(B, ...)`` for user state, ``(B, N, ...)`` for the
candidate set and ``(B, K, ...)`` for the slate. All randomness comes from one
``numpy.random.Generator`` passed in by the caller, so a seed fixes a whole trajectory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

Arrays = dict[str, np.ndarray]


class DocumentSampler(ABC):
    """Draws candidate documents; ``features`` (B, N, D) float32 is what the agent observes."""

    feature_dim: int
    feature_low: float
    feature_high: float

    @abstractmethod
    def sample(self, rng: np.random.Generator, batch: int, num_candidates: int) -> Arrays:
        """Return a dict of arrays of leading shape (batch, num_candidates), with ``features``."""


class UserSampler(ABC):
    """Draws the initial state of ``n`` users as a dict of arrays of leading shape (n,)."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> Arrays:
        """Return the state of ``n`` fresh users."""


class ChoiceModel(ABC):
    """Chooses the clicked slot of each user from per-slot scores."""

    @abstractmethod
    def choose(self, rng: np.random.Generator, scores: np.ndarray) -> np.ndarray:
        """Map scores (B, K) to clicked slot indices (B,) in 0..K, where K means "no click"."""


class UserModel(ABC):
    """Scores slates, produces responses and moves the user state (in place)."""

    observation_dim: int
    observation_low: float = -np.inf
    observation_high: float = np.inf

    @abstractmethod
    def observe(self, users: Arrays) -> np.ndarray:
        """The observable part of the user state, shape (B, observation_dim), float32."""

    @abstractmethod
    def score(self, users: Arrays, slate: Arrays) -> np.ndarray:
        """Choice-model scores of the slate documents, shape (B, K)."""

    @abstractmethod
    def respond(self, rng: np.random.Generator, users: Arrays, slate: Arrays,
                clicked: np.ndarray) -> Arrays:
        """Per-slot responses (B, K) for the clicked slot indices (B,) (K = no click)."""

    @abstractmethod
    def transition(self, rng: np.random.Generator, users: Arrays, slate: Arrays,
                   clicked: np.ndarray, responses: Arrays) -> None:
        """Apply the state transition in place, after the responses were drawn."""

    @abstractmethod
    def terminated(self, users: Arrays) -> np.ndarray:
        """Boolean (B,) mask of users whose session has ended."""

    @abstractmethod
    def response_spaces(self, slate_size: int) -> dict[str, gym.Space]:
        """Per-slot observation spaces of the response fields (``click`` included)."""


Reward = Callable[[Arrays], np.ndarray]


# ---------------------------------------------------------------------------------------
# Choice models
# ---------------------------------------------------------------------------------------
def _sample_categorical(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """Draw one index per row of non-negative ``weights`` (B, M) with P(i) ∝ weights[i].

    Inverse-CDF sampling with a single uniform per row, as RecSim's ``np.random.choice``.
    """
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(weights.shape[0]) * cdf[:, -1]
    idx = (cdf <= u[:, None]).sum(axis=1)
    # Guard against u == total through rounding: never return an out-of-range index.
    return np.minimum(idx, weights.shape[1] - 1)


@dataclass(frozen=True)
class MultinomialProportionalChoice(ChoiceModel):
    """P(slot i) = (s_i − m) / (Σ_j (s_j − m) + c − m), P(no click) = (c − m) / (…).

    RecSim's ``MultinomialProportionalChoiceModel`` with ``min_normalizer`` m and
    ``no_click_mass`` c; every shifted score must be non-negative.
    """

    no_click_mass: float = 1.0
    min_normalizer: float = -1.0

    def choose(self, rng, scores):
        weights = np.empty((scores.shape[0], scores.shape[1] + 1))
        weights[:, :-1] = scores - self.min_normalizer
        weights[:, -1] = self.no_click_mass - self.min_normalizer
        if (weights < 0).any():
            raise ValueError("MultinomialProportionalChoice: scores below min_normalizer "
                             f"{self.min_normalizer} give negative click mass")
        return _sample_categorical(rng, weights)


@dataclass(frozen=True)
class MultinomialLogitChoice(ChoiceModel):
    """P = softmax([s_1, …, s_K, c]): RecSim's ``MultinomialLogitChoiceModel`` with no-click logit c."""

    no_click_mass: float = 5.0

    def choose(self, rng, scores):
        logits = np.empty((scores.shape[0], scores.shape[1] + 1))
        logits[:, :-1] = scores
        logits[:, -1] = self.no_click_mass
        logits -= logits.max(axis=1, keepdims=True)
        return _sample_categorical(rng, np.exp(logits))


@dataclass(frozen=True)
class FirstSlotChoice(ChoiceModel):
    """The user always consumes slot 0 (RecSim's Long-Term Satisfaction user)."""

    def choose(self, rng, scores):
        return np.zeros(scores.shape[0], dtype=np.int64)


# ---------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------
def clicked_field_reward(field: str) -> Reward:
    """Reward = Σ over slots of ``responses[field]`` (non-zero only on the clicked slot)."""

    def reward(responses: Arrays) -> np.ndarray:
        return responses[field].sum(axis=1, dtype=np.float64)

    reward.__name__ = f"clicked_{field}_reward"
    return reward


def total_clicks_reward(responses: Arrays) -> np.ndarray:
    """Reward = number of clicked slots (0 or 1)."""
    return responses["click"].sum(axis=1).astype(np.float64)


# ---------------------------------------------------------------------------------------
# Helpers shared by the user models
# ---------------------------------------------------------------------------------------
def click_matrix(clicked: np.ndarray, slate_size: int) -> np.ndarray:
    """One-hot (B, K) int64 of the clicked slot; all zeros for "no click" (index K)."""
    return (clicked[:, None] == np.arange(slate_size)).astype(np.int64)


def gather_slate(docs: Arrays, slate: np.ndarray) -> Arrays:
    """Select the slate documents: every (B, N, ...) array becomes (B, K, ...).

    ``features`` is what the agent observes; the user models read the documents' own
    attributes, so it is not gathered (it is the largest array).
    """
    rows = np.arange(slate.shape[0])[:, None]
    return {key: value[rows, slate] for key, value in docs.items() if key != "features"}


def per_slot_box(low: float, high: float, slate_size: int) -> gym.spaces.Box:
    """A float32 Box of shape (K,) for one scalar response field per slot."""
    return gym.spaces.Box(low, high, (slate_size,), np.float32)


def per_slot_discrete(n: int, slate_size: int) -> gym.spaces.MultiDiscrete:
    """A MultiDiscrete of shape (K,) for one categorical response field per slot."""
    return gym.spaces.MultiDiscrete(np.full(slate_size, n, dtype=np.int64))


@dataclass(frozen=True)
class Simulator:
    """The parts of one environment, assembled (see module docstring)."""

    name: str
    documents: DocumentSampler
    users: UserSampler
    user_model: UserModel
    choice: ChoiceModel
    reward: Reward
