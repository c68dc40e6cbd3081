"""Batched building blocks of a RecSim-style slate simulator.

A simulator is assembled from small parts with one job each (RecSim, Ie et al. 2019, §3):

* a **document sampler** draws the N candidates of B users at once (and what the agent sees of them),
* a **user sampler** draws the initial (possibly latent) state of B users (and what the agent sees of it),
* an **affinity** scores each slate item for its user: the input of the choice model,
* a **choice model** turns the K scores into at most one clicked slot per user (index K = no click),
* a **response model** produces the per-slot responses (click, watch time, ...) given the click,
* a **user transition** moves the user state after the responses and says when a session ends,
* a **reward** turns the responses into one scalar per user.

Every array is batched over users: ``(B, ...)`` for user state, ``(B, N, ...)`` for the
candidate set and ``(B, K, ...)`` for the slate. All randomness comes from one
``numpy.random.Generator`` passed in by the caller, so a seed fixes a whole trajectory.
Each part may override :meth:`Part.check` to validate itself against the rest of the
simulator (:class:`CheckContext`) before the first step; :mod:`recsys_exp.envs.custom` uses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class CheckContext:
    """What a part may look at when checking that it fits the simulator it is part of.

    ``docs`` (B, N, ...) and ``users`` (B, ...) are a small sample drawn from the simulator's own
    samplers; ``documents`` / ``user_sampler`` are the sampler parts (for declared sizes such as
    ``num_categories``).
    """

    num_candidates: int
    slate_size: int
    documents: Any
    user_sampler: Any
    docs: Arrays
    users: Arrays


class Part:
    """Common base of the simulator parts: an optional self-check against the whole simulator."""

    def check(self, ctx: CheckContext) -> None:
        """Raise ``ValueError`` naming the mismatch if this part does not fit ``ctx``; default: fits."""


class DocumentSampler(Part, ABC):
    """Draws candidate documents; ``features`` (B, N, D) float32 is what the agent observes."""

    feature_dim: int
    feature_low: float
    feature_high: float

    @abstractmethod
    def sample(self, rng: np.random.Generator, batch: int, num_candidates: int) -> Arrays:
        """Return a dict of arrays of leading shape (batch, num_candidates), with ``features``."""


class UserSampler(Part, ABC):
    """Draws the initial state of ``n`` users as a dict of arrays of leading shape (n,).

    It also says what of the state the agent observes (RecSim's ``UserState.create_observation``):
    ``observe`` (B, observation_dim) float32; the default is a latent user (width 0).
    """

    observation_dim: int = 0
    observation_low: float = -np.inf
    observation_high: float = np.inf

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> Arrays:
        """Return the state of ``n`` fresh users."""

    def observe(self, users: Arrays) -> np.ndarray:
        """The observable part of the user state, shape (B, observation_dim), float32."""
        batch = len(next(iter(users.values())))
        return np.zeros((batch, 0), dtype=np.float32)


class Affinity(Part, ABC):
    """How much each user likes each slate document: the scores the choice model reads."""

    @abstractmethod
    def score(self, users: Arrays, slate: Arrays) -> np.ndarray:
        """Choice-model scores of the slate documents (B, K, ...) for users (B, ...): shape (B, K)."""


class ChoiceModel(Part, ABC):
    """Chooses the clicked slot of each user from per-slot scores."""

    @abstractmethod
    def choose(self, rng: np.random.Generator, scores: np.ndarray) -> np.ndarray:
        """Map scores (B, K) to clicked slot indices (B,) in 0..K, where K means "no click"."""

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """P(click slot k), k < K, and P(no click) at index K: shape (B, K + 1), rows sum to 1."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form choice probabilities")


class ResponseModel(Part, ABC):
    """The user's per-slot responses to a slate, given which slot was clicked."""

    @abstractmethod
    def respond(self, rng: np.random.Generator, users: Arrays, slate: Arrays,
                clicked: np.ndarray) -> Arrays:
        """Per-slot responses (B, K) for the clicked slot indices (B,) (K = no click); ``click`` included."""

    @abstractmethod
    def response_spaces(self, slate_size: int) -> dict[str, gym.Space]:
        """Per-slot observation spaces of the response fields (``click`` included)."""


class UserTransition(Part, ABC):
    """How the user state moves after a step, and when a session ends."""

    ends_sessions: bool = True  # False: sessions only end by truncation (env.max_episode_steps)

    @abstractmethod
    def transition(self, rng: np.random.Generator, users: Arrays, slate: Arrays,
                   clicked: np.ndarray, responses: Arrays) -> None:
        """Apply the state transition in place, after the responses were drawn."""

    @abstractmethod
    def terminated(self, users: Arrays) -> np.ndarray:
        """Boolean (B,) mask of users whose session has ended."""


class Reward(Part, ABC):
    """One scalar per user from the step's responses."""

    @abstractmethod
    def __call__(self, responses: Arrays) -> np.ndarray:
        """Responses (B, K) per field -> reward (B,) float64."""


class UserModel:
    """The user side of a step, bundled: affinity, response model and user transition.

    The simulator loop (:class:`recsys_exp.envs.core.SlateCore`) calls ``score`` → choice →
    ``respond`` → reward → ``transition`` → ``terminated``; each call goes to the part that owns it.
    """

    def __init__(self, affinity: Affinity, response: ResponseModel, transition: UserTransition):
        self.affinity, self.response, self.user_transition = affinity, response, transition

    def score(self, users: Arrays, slate: Arrays) -> np.ndarray:
        """Scores (B, K) of the slate documents (see :meth:`Affinity.score`)."""
        return self.affinity.score(users, slate)

    def respond(self, rng: np.random.Generator, users: Arrays, slate: Arrays, clicked: np.ndarray) -> Arrays:
        """Per-slot responses (see :meth:`ResponseModel.respond`)."""
        return self.response.respond(rng, users, slate, clicked)

    def transition(self, rng: np.random.Generator, users: Arrays, slate: Arrays, clicked: np.ndarray,
                   responses: Arrays) -> None:
        """Move the user state in place (see :meth:`UserTransition.transition`)."""
        self.user_transition.transition(rng, users, slate, clicked, responses)

    def terminated(self, users: Arrays) -> np.ndarray:
        """Boolean (B,) mask of ended sessions (see :meth:`UserTransition.terminated`)."""
        return self.user_transition.terminated(users)

    def response_spaces(self, slate_size: int) -> dict[str, gym.Space]:
        """Per-slot response spaces (see :meth:`ResponseModel.response_spaces`)."""
        return self.response.response_spaces(slate_size)


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

    def __post_init__(self):
        if self.no_click_mass < self.min_normalizer:
            raise ValueError(f"no_click_mass ({self.no_click_mass}) must be >= min_normalizer "
                             f"({self.min_normalizer}): the no-click option needs a non-negative mass")

    def _weights(self, scores: np.ndarray) -> np.ndarray:
        weights = np.empty((scores.shape[0], scores.shape[1] + 1))
        weights[:, :-1] = scores - self.min_normalizer
        weights[:, -1] = self.no_click_mass - self.min_normalizer
        if (weights < 0).any():
            raise ValueError("MultinomialProportionalChoice: scores below min_normalizer "
                             f"{self.min_normalizer} give negative click mass")
        return weights

    def choose(self, rng, scores):
        return _sample_categorical(rng, self._weights(scores))

    def probabilities(self, scores):
        weights = self._weights(scores)
        return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class MultinomialLogitChoice(ChoiceModel):
    """P = softmax([s_1, …, s_K, c]): RecSim's ``MultinomialLogitChoiceModel`` with no-click logit c."""

    no_click_mass: float = 5.0

    def _weights(self, scores: np.ndarray) -> np.ndarray:
        logits = np.empty((scores.shape[0], scores.shape[1] + 1))
        logits[:, :-1] = scores
        logits[:, -1] = self.no_click_mass
        logits -= logits.max(axis=1, keepdims=True)  # stable exp; softmax is shift-invariant
        return np.exp(logits)

    def choose(self, rng, scores):
        return _sample_categorical(rng, self._weights(scores))

    def probabilities(self, scores):
        weights = self._weights(scores)
        return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class FirstSlotChoice(ChoiceModel):
    """The user always consumes slot 0 (RecSim's Long-Term Satisfaction user)."""

    def choose(self, rng, scores):
        return np.zeros(scores.shape[0], dtype=np.int64)

    def probabilities(self, scores):
        probs = np.zeros((scores.shape[0], scores.shape[1] + 1))
        probs[:, 0] = 1.0
        return probs


ATTRACTIONS = ("logistic", "proportional")


class CascadeChoice(ChoiceModel):
    """Cascade model with position bias (Craswell et al. 2008; SlateQ, Ie et al. 2019, evaluates
    under a cascade choice model too): the user scans the slate top-down and clicks at most once.

    With β_k the ``position_bias`` of slot k (the probability of going on to examine slot k after
    examining slots 0..k−1 without clicking) and a_k the attraction of the item in slot k,

        a_k = σ(s_k − m)              (``attraction="logistic"``, m = ``no_click_mass``)
        a_k = s_k / (s_k + m)         (``attraction="proportional"``, needs s_k ≥ 0, m > 0)
        P(click k) = (Π_{j≤k} β_j) · a_k · Π_{j<k} (1 − a_j)
        P(no click) = 1 − Σ_k P(click k)

    i.e. the user examines slot k only if every earlier slot was examined and not clicked, clicks
    an examined item with its attraction, and leaves after a click. ``position_bias`` is either
    a list of K values in [0, 1] (one per slot, K = the env's slate size) or one number γ meaning
    β = (1, γ, γ, …): the top slot is always examined.
    """

    def __init__(self, position_bias: float | Sequence[float] = 0.8, attraction: str = "logistic",
                 no_click_mass: float = 0.0):
        if attraction not in ATTRACTIONS:
            raise ValueError(f"attraction={attraction!r}: allowed {', '.join(ATTRACTIONS)}")
        bias = np.atleast_1d(np.asarray(position_bias, dtype=np.float64))
        if bias.ndim != 1 or not np.all((bias >= 0.0) & (bias <= 1.0)):
            raise ValueError(f"position_bias must be probabilities in [0, 1], got {position_bias!r}")
        if attraction == "proportional" and not no_click_mass > 0.0:
            raise ValueError(f"no_click_mass must be > 0 with attraction=proportional, got {no_click_mass}")
        self.per_slot = not np.isscalar(position_bias)
        self.position_bias = bias
        self.attraction, self.no_click_mass = attraction, float(no_click_mass)

    def check(self, ctx):
        if self.per_slot and len(self.position_bias) != ctx.slate_size:
            raise ValueError(f"position_bias has {len(self.position_bias)} entries but env.slate_size="
                             f"{ctx.slate_size}")

    def continuation(self, slate_size: int) -> np.ndarray:
        """β (K,): the per-slot continuation probabilities."""
        if self.per_slot:
            if len(self.position_bias) != slate_size:
                raise ValueError(f"position_bias has {len(self.position_bias)} entries but the slate has "
                                 f"{slate_size} slots")
            return self.position_bias
        beta = np.full(slate_size, self.position_bias[0])
        beta[0] = 1.0
        return beta

    def attractions(self, scores: np.ndarray) -> np.ndarray:
        """a (B, K): the click probability of an examined item."""
        if self.attraction == "logistic":
            return 1.0 / (1.0 + np.exp(-(scores - self.no_click_mass)))
        if (scores < 0).any():
            raise ValueError("CascadeChoice(attraction=proportional): scores must be >= 0")
        return scores / (scores + self.no_click_mass)

    def probabilities(self, scores):
        a = self.attractions(scores)
        beta = self.continuation(scores.shape[1])
        # Probability of reaching and examining slot k: Π_{j≤k} β_j · Π_{j<k} (1 − a_j).
        not_clicked_before = np.cumprod(np.concatenate([np.ones((len(a), 1)), 1.0 - a[:, :-1]], axis=1), axis=1)
        examined = np.cumprod(beta)[None, :] * not_clicked_before
        probs = np.empty((len(a), a.shape[1] + 1))
        probs[:, :-1] = examined * a
        probs[:, -1] = np.clip(1.0 - probs[:, :-1].sum(axis=1), 0.0, 1.0)
        return probs

    def choose(self, rng, scores):
        return _sample_categorical(rng, self.probabilities(scores))


# ---------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------
class ClickedFieldReward(Reward):
    """Reward = Σ over slots of ``responses[field]`` (non-zero only on the clicked slot)."""

    def __init__(self, field: str):
        self.field = field

    def __call__(self, responses):
        if self.field not in responses:
            raise KeyError(f"reward reads responses[{self.field!r}], but the responses are "
                           f"{', '.join(sorted(responses))}")
        return responses[self.field].sum(axis=1, dtype=np.float64)


class ClickReward(Reward):
    """Reward = number of clicked slots (0 or 1)."""

    def __call__(self, responses):
        return responses["click"].sum(axis=1).astype(np.float64)


def clicked_field_reward(field: str) -> Reward:
    """Reward = Σ over slots of ``responses[field]`` (non-zero only on the clicked slot)."""
    return ClickedFieldReward(field)


total_clicks_reward = ClickReward()


# ---------------------------------------------------------------------------------------
# Helpers shared by the parts
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
    # Where each part came from, by role (a custom simulator's _target_ paths), for error messages.
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def parts(self) -> dict[str, Any]:
        """Every part by its role: documents, users, affinity, choice, response, transition, reward."""
        um = self.user_model
        return {"documents": self.documents, "users": self.users, "affinity": um.affinity,
                "choice": self.choice, "response": um.response, "transition": um.user_transition,
                "reward": self.reward}
