"""Reference policies that plan with the simulator's true model: oracles, not learners.

They read the hidden state of a native env (``env.core.users``, ``env.core.docs``: e.g. the Interest
Evolution time budget and document qualities, the Long-Term Satisfaction NPE, the Interest
Exploration topic affinities) and use the env's own parts (affinity, choice model, response model,
reward, and :class:`~recsys_exp.envs.core.SlateCore` for the transitions), so they measure how far a
policy that only sees observations is from what the model allows. Both serve slates of K distinct
candidates, as every algorithm here (the action space also allows duplicates).

* :class:`MyopicOracle`: the slate with the highest expected immediate reward under the true user
  state and the true choice model, E[r | A] = Σ_k P(k | A) · E[r | click k] (k = K: no click).
* :class:`RolloutOracle`: one step of policy improvement over a base policy (by default the myopic
  oracle): for the base policy's slate and the best few slates by expected immediate reward, that
  reward plus the return of the rest of the session under the base policy, simulated from copies
  of the true state with the env's own step (rollouts with common random numbers: every candidate
  sees the same draws); a candidate replaces the base slate only if its paired advantage is
  clearly positive. ``depth`` can truncate the simulated rest of the session (what comes later is
  ignored: a bias towards short-term gains).

Slates are searched over *decision slates* (:func:`decision_slates`): for a choice model that
ignores slot positions (multinomial logit / proportional) a slate is a set of K candidates, with
:class:`~recsys_exp.envs.components.FirstSlotChoice` only slot 0 matters, otherwise every ordered
slate is one. This assumes, as in RecSim's envs, that responses and transitions depend on the
clicked document and not on its slot. Planning draws from the oracle's own generator, never from
the env's, and copies the state, so the real episode is the one the env would have played anyway.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np

from recsys_exp.envs.components import (
    Arrays,
    FirstSlotChoice,
    MultinomialLogitChoice,
    MultinomialProportionalChoice,
    Simulator,
)
from recsys_exp.envs.core import SlateCore

# Choice models for which a slate is a set: the probabilities of its items do not depend on their slots.
POSITION_FREE_CHOICES = (MultinomialLogitChoice, MultinomialProportionalChoice)


def decision_slates(choice, num_candidates: int, slate_size: int) -> np.ndarray:
    """(S, K) int64: one slate per distinct decision under ``choice`` (see the module docstring)."""
    n, k = num_candidates, slate_size
    if isinstance(choice, FirstSlotChoice):  # slot 0 is consumed; the other slots are filled in index order
        return np.array([[j] + [i for i in range(n) if i != j][:k - 1] for j in range(n)], dtype=np.int64)
    combos = itertools.combinations if isinstance(choice, POSITION_FREE_CHOICES) else itertools.permutations
    return np.array(list(combos(range(n), k)), dtype=np.int64).reshape(-1, k)


class _NoDraws:
    """An rng that refuses to draw: responses must be a function of the click for an exact expectation."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        raise ValueError(f"{type(self.model).__name__} draws random responses (rng.{name}) and has no "
                         "expected_responses(users, slate, clicked): the oracles need one of the two")


def expected_responses(sim: Simulator, users: Arrays, slate: Arrays, clicked: np.ndarray) -> Arrays:
    """The mean responses (B, K) given the clicked slots (B,): the response model's own
    ``expected_responses`` if it has one (random responses, e.g. LTS engagement), else its
    ``respond``, which must then be deterministic given the click."""
    model = sim.user_model.response
    if hasattr(model, "expected_responses"):
        return model.expected_responses(users, slate, clicked)
    return model.respond(_NoDraws(model), users, slate, clicked)


def item_values(sim: Simulator, users: Arrays, docs: Arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate: choice-model score (B, N) and expected reward if it is clicked (B, N); and the
    expected reward of a step without a click (B,). Each is computed on one-document slates with the
    env's affinity, response model and reward."""
    b, n = docs["features"].shape[:2]
    single = {key: v.reshape((b * n, 1) + v.shape[2:]) for key, v in docs.items() if key != "features"}
    rep = {key: np.repeat(v, n, axis=0) for key, v in users.items()}
    scores = sim.user_model.score(rep, single).reshape(b, n)
    clicked = sim.reward(expected_responses(sim, rep, single, np.zeros(b * n, dtype=np.int64))).reshape(b, n)
    first = {key: v[:, :1] for key, v in docs.items() if key != "features"}
    none = sim.reward(expected_responses(sim, users, first, np.ones(b, dtype=np.int64)))
    return scores, clicked, none


def expected_rewards(sim: Simulator, users: Arrays, docs: Arrays, slates: np.ndarray) -> np.ndarray:
    """E[r | user, A] (B, S) of slates (S, K) shared by all users, or (B, S, K) per user.

    E[r | A] = Σ_k P(k | A) · E[r | click on a_k] + P(no click | A) · E[r | no click], with P from the
    env's choice model on the slate's scores and the rest from :func:`item_values`. Exact when, as in
    RecSim's envs, a document's score and its reward if clicked do not depend on the other documents
    or on its slot, and the reward is linear in the responses (clicks, watch time, engagement).
    """
    scores, clicked, none = item_values(sim, users, docs)
    b = len(scores)
    slates = np.broadcast_to(slates, (b,) + slates.shape[-2:])
    s, k = slates.shape[1:]
    rows = np.arange(b)[:, None, None]
    probs = sim.choice.probabilities(scores[rows, slates].reshape(b * s, k)).reshape(b, s, k + 1)
    return (probs[..., :k] * clicked[rows, slates]).sum(-1) + probs[..., k] * none[:, None]


class MyopicOracle:
    """The slate maximising the expected immediate reward under the true state and choice model.

    Ties go to the first decision slate (lowest candidate indices). ``__call__(users, docs,
    steps_left=None)`` takes the env's true state of B users and returns slates (B, K).
    """

    def __init__(self, sim: Simulator, num_candidates: int, slate_size: int):
        self.sim = sim
        self.slates = decision_slates(sim.choice, num_candidates, slate_size)

    def values(self, users: Arrays, docs: Arrays) -> np.ndarray:
        """Expected immediate reward (B, S) of every decision slate."""
        return expected_rewards(self.sim, users, docs, self.slates)

    def __call__(self, users: Arrays, docs: Arrays, steps_left: np.ndarray | None = None) -> np.ndarray:
        return self.slates[self.values(users, docs).argmax(1)]

    def act(self, obs, users: Arrays, docs: Arrays, steps_left: np.ndarray | None) -> np.ndarray:
        """:func:`play_episodes`' policy interface (the observation is not needed)."""
        return self(users, docs, steps_left)


class RolloutOracle:
    """One step of policy improvement over a base policy by simulation (see the module docstring).

    At each step the candidates are the base policy's own slate (``base(users, docs) -> (B, K)`` on
    the true state; default the myopic oracle) and the ``candidates`` best decision slates by
    expected immediate reward (None: all). For each, ``rollouts`` simulated continuations from
    copies of the state: step 0 serves the candidate, steps 1..``depth`` (None: until the session
    ends or is truncated) serve the base policy's slates; a sample of Q(A) is E[r | A] plus the
    rewards of steps 1..depth. Every candidate's rollout r uses the same draws (one seed per call
    from ``seed``'s generator: common random numbers), so the differences to the base slate are
    paired. A candidate replaces the base slate only if its mean advantage minus ``z`` standard
    errors of the paired differences is positive (the largest such wins): with noisy estimates
    the rollout policy then stays close to its base instead of chasing noise (``z = 0``: plain
    argmax of the means). ``depth = 0`` is the myopic oracle.
    """

    def __init__(self, sim: Simulator, num_candidates: int, slate_size: int, resample_documents: bool = True,
                 candidates: int | None = 8, rollouts: int = 8, depth: int | None = None, z: float = 2.0,
                 seed: int = 0, base: Callable[[Arrays, Arrays], np.ndarray] | None = None):
        for key, value, low in (("candidates", candidates, 1), ("rollouts", rollouts, 1), ("depth", depth, 0)):
            if (value is not None or key == "rollouts") and (isinstance(value, bool) or not isinstance(value, int)
                                                             or value < low):
                raise ValueError(f"RolloutOracle: {key} must be an integer >= {low}"
                                 f"{' or None' if key != 'rollouts' else ''}, got {value!r}")
        self.sim, self.num_candidates, self.slate_size = sim, num_candidates, slate_size
        self.resample_documents = resample_documents
        self.myopic = MyopicOracle(sim, num_candidates, slate_size)
        self.base = base or self.myopic
        if not z >= 0:
            raise ValueError(f"RolloutOracle: z must be >= 0, got {z!r}")
        self.candidates, self.rollouts, self.depth, self.z = candidates, rollouts, depth, float(z)
        self.rng = np.random.default_rng(seed)

    def __call__(self, users: Arrays, docs: Arrays, steps_left: np.ndarray | None = None) -> np.ndarray:
        values = self.myopic.values(users, docs)
        if self.depth == 0:
            return self.myopic.slates[values.argmax(1)]
        b = len(values)
        order = np.argsort(-values, axis=1, kind="stable")[:, :self.candidates]
        slates = self.myopic.slates[order]  # (B, C, K), best immediate reward first
        q = np.take_along_axis(values, order, 1)
        if self.base is not self.myopic:  # the base policy's own slate comes first (the myopic one is first anyway)
            own = np.asarray(self.base(users, docs), dtype=np.int64)[:, None, :]
            slates = np.concatenate([own, slates], axis=1)
            q = np.concatenate([expected_rewards(self.sim, users, docs, own), q], axis=1)
        seed = int(self.rng.integers(2 ** 63))
        left = np.full(b, math.inf) if steps_left is None else np.asarray(steps_left, dtype=np.float64)
        # Q samples (B, C, R): expected first reward + one rollout's rest; rollout r of every candidate
        # used the same draws, so the differences to the base slate (candidate 0) are paired.
        samples = q[:, :, None] + np.stack([self.continuation(users, docs, slates[:, c], left, seed)
                                            for c in range(slates.shape[1])], axis=1)
        advantage = samples - samples[:, :1]
        mean = advantage.mean(2)
        se = advantage.std(2, ddof=1) / math.sqrt(self.rollouts) if self.rollouts > 1 else np.zeros_like(mean)
        return slates[np.arange(b), (mean - self.z * se).argmax(1)]

    def act(self, obs, users: Arrays, docs: Arrays, steps_left: np.ndarray | None) -> np.ndarray:
        """:func:`play_episodes`' policy interface (the observation is not needed)."""
        return self(users, docs, steps_left)

    def continuation(self, users: Arrays, docs: Arrays, first: np.ndarray, steps_left: np.ndarray,
                     seed: int) -> np.ndarray:
        """Return (B, R) of each rollout's steps 1..depth after serving ``first`` (B, K) at step 0, from copies of
        the state; ``steps_left`` (B,) counts step 0 (the session is truncated after it)."""
        r = self.rollouts
        b = len(first)
        core = SlateCore(self.sim, b * r, self.num_candidates, self.slate_size, self.resample_documents,
                         np.random.default_rng(seed))
        core.users = {key: np.repeat(v, r, axis=0) for key, v in users.items()}
        core.docs = {key: np.repeat(v, r, axis=0) for key, v in docs.items()}
        left = np.repeat(steps_left, r)
        _, ended = core.step(np.repeat(first, r, axis=0))  # step 0: its reward counts as its expectation
        alive = ~ended & (left > 1)
        total = np.zeros(b * r)
        t = 1
        while alive.any() and (self.depth is None or t <= self.depth):
            reward, ended = core.step(self.base(core.users, core.docs))
            total += np.where(alive, reward, 0.0)
            t += 1
            alive &= ~ended & (left > t)
        return total.reshape(b, r)


def play_episodes(env, policy, episodes: int, seed: int, max_steps: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Play ``episodes`` episodes of an oracle on a native ``SlateVectorEnv`` (``recsys_exp.envs.make_vector_env``):
    each sub-env plays one episode (as ``mode=evaluate``'s :func:`recsys_exp.runner.simulate.simulate` with
    one round, ``num_envs = episodes``). ``policy(obs, users, docs, steps_left)`` gets the observation and the
    true state of the running users only (``steps_left``: steps before truncation, None without a time
    limit; an oracle's ``act``); finished users are served slate (0..K−1) until the round ends.
    Returns (returns (E,) float64, lengths (E,) int64)."""
    if env.num_envs != episodes:
        raise ValueError(f"play_episodes: the env has {env.num_envs} sub-envs, episodes={episodes}: they must match")
    core = env.core
    obs, _ = env.reset(seed=seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    running = np.ones(episodes, dtype=bool)
    default = np.arange(core.slate_size)
    while running.any():
        if lengths.max() >= max_steps:
            raise RuntimeError(f"play_episodes: an episode exceeded max_steps={max_steps}")
        rows = np.nonzero(running)[0]
        steps_left = None if env.max_episode_steps is None else env.max_episode_steps - lengths[rows]
        actions = np.tile(default, (episodes, 1))
        actions[rows] = policy(_rows(obs, rows), {k: v[rows] for k, v in core.users.items()},
                               {k: v[rows] for k, v in core.docs.items()}, steps_left)
        obs, reward, terminated, truncated, _ = env.step(actions)
        returns[running] += reward[running]
        lengths[running] += 1
        running &= ~(terminated | truncated)
    return returns, lengths


def _rows(obs, rows):
    return {k: _rows(v, rows) for k, v in obs.items()} if isinstance(obs, dict) else obs[rows]
