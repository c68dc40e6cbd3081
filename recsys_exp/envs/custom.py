"""``env=custom``: a simulator assembled from parts named in the config, validated before use.

``env.params`` holds one entry per part, each a mapping with Hydra's ``_target_`` (an importable
class) and its keyword arguments, or an already built part object (Python API)::

    params:
      documents:  {_target_: recsys_exp.envs.parts.CategoryDocumentSampler, category_probs: [0.5, 0.5]}
      users:      {_target_: recsys_exp.envs.parts.PreferenceUserSampler, num_categories: 2}
      affinity:   {_target_: recsys_exp.envs.parts.CategoryAffinity, scale: 3.0}
      choice:     {_target_: recsys_exp.envs.parts.CascadeChoice, position_bias: [1.0, 0.6]}
      response:   {_target_: recsys_exp.envs.parts.ClickResponse}
      transition: {_target_: recsys_exp.envs.parts.StaticUsers}
      reward:     {_target_: recsys_exp.envs.parts.ClickReward}

The env config travels to Ray workers as a plain dict; every process instantiates the parts
itself (:func:`build`). :func:`check` validates the assembled simulator in three stages, each
failure a :class:`PartError` naming the part, its class and the mismatch:

1. every part has the right type (a ``documents`` part is a ``DocumentSampler``, ...);
2. each part's own :meth:`~recsys_exp.envs.components.Part.check` against the others
   (e.g. ``position_bias`` has one entry per slot, preferences one per document category);
3. a dry run of one step for two users checks every output's shape, range and keys
   (scores (B, K), choice probabilities that sum to 1, clicks in 0..K, responses (B, K) with
   ``click``, rewards (B,), termination (B,) bool).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np

from recsys_exp.envs.components import (
    Affinity,
    CheckContext,
    ChoiceModel,
    DocumentSampler,
    ResponseModel,
    Reward,
    Simulator,
    UserModel,
    UserSampler,
    UserTransition,
    click_matrix,
    gather_slate,
)

NAME = "custom"
PART_TYPES: dict[str, type] = {
    "documents": DocumentSampler,
    "users": UserSampler,
    "affinity": Affinity,
    "choice": ChoiceModel,
    "response": ResponseModel,
    "transition": UserTransition,
    "reward": Reward,
}
_DRY_RUN_USERS = 2


class PartError(ValueError):
    """A part that does not fit: ``env.params.<part> (<class>): <what is wrong>``."""

    def __init__(self, part: str, target: str | None, message: str):
        self.part, self.target = part, target
        where = f"env.params.{part}" + (f" ({target})" if target else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class CustomParams:
    """The parts of a custom simulator: ``_target_`` mappings (or built part objects)."""

    documents: Any = None
    users: Any = None
    affinity: Any = None
    choice: Any = None
    response: Any = None
    transition: Any = None
    reward: Any = None


def class_path(obj: Any) -> str:
    """``module.Class`` of a part object (what its ``_target_`` would be)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def instantiate_part(role: str, spec: Any) -> Any:
    """Build the ``role`` part from a ``{_target_: ..., **kwargs}`` mapping (objects pass through)."""
    required = ", ".join(PART_TYPES)
    if spec is None:
        raise PartError(role, None, f"missing; a custom simulator needs {required}")
    if isinstance(spec, (str, int, float, list, tuple)):
        raise PartError(role, None, f"expected a mapping with _target_ (a class path) and its parameters, "
                                    f"got {spec!r}")
    if isinstance(spec, dict):
        target = spec.get("_target_")
        if not target:
            raise PartError(role, None, f"no _target_: name the class, e.g. _target_: {_example(role)}")
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        try:
            part = instantiate(spec, _convert_="all")
        except InstantiationException as e:
            raise PartError(role, target, _instantiation_reason(e)) from None
    else:  # an already built part (Python API)
        part, target = spec, class_path(spec)
    expected = PART_TYPES[role]
    if not isinstance(part, expected):
        raise PartError(role, target, f"is a {type(part).__name__}, not {_article(expected.__name__)} (the {role} "
                                      f"part subclasses recsys_exp.envs.components.{expected.__name__})")
    return part


def _article(noun: str) -> str:
    return ("an " if noun[0] in "AEIOU" else "a ") + noun


def _example(role: str) -> str:
    return {"documents": "recsys_exp.envs.parts.CategoryDocumentSampler",
            "users": "recsys_exp.envs.parts.PreferenceUserSampler",
            "affinity": "recsys_exp.envs.parts.CategoryAffinity", "choice": "recsys_exp.envs.parts.CascadeChoice",
            "response": "recsys_exp.envs.parts.ClickResponse", "transition": "recsys_exp.envs.parts.StaticUsers",
            "reward": "recsys_exp.envs.parts.ClickReward"}[role]


def _instantiation_reason(e: Exception) -> str:
    """The useful line of a Hydra ``InstantiationException``: the constructor's own error if any."""
    cause = e.__cause__
    if isinstance(cause, ImportError):  # Hydra's text: "Error loading 'x.Y':\n<the error>\nAre you sure ..."
        lines = str(cause).splitlines()
        return f"cannot import the class: {lines[1] if len(lines) > 1 else lines[0]}"
    if cause is not None:
        return f"{cause}" if isinstance(cause, ValueError) else f"{type(cause).__name__}: {cause}"
    text = str(e).splitlines()[0]
    if "Error locating target" in text:
        return f"cannot import the class ({text})"
    return text


def build(params: CustomParams, name: str = NAME) -> Simulator:
    """Instantiate every part of ``params`` and assemble the simulator (types checked, not yet fitted)."""
    specs = {f.name: getattr(params, f.name) for f in fields(params)}
    parts = {role: instantiate_part(role, spec) for role, spec in specs.items()}
    sources = {role: spec["_target_"] if isinstance(spec, dict) else class_path(parts[role])
               for role, spec in specs.items()}
    return Simulator(name=name, documents=parts["documents"], users=parts["users"],
                     user_model=UserModel(parts["affinity"], parts["response"], parts["transition"]),
                     choice=parts["choice"], reward=parts["reward"], sources=sources)


# ---------------------------------------------------------------------------------------
# Validation of an assembled simulator
# ---------------------------------------------------------------------------------------
class _Checker:
    """Calls and checks the parts of one simulator; every failure is a PartError naming the part."""

    def __init__(self, sim: Simulator):
        self.sim, self.parts = sim, sim.parts()

    def where(self, role: str) -> str:
        return self.sim.sources.get(role) or class_path(self.parts[role])

    def run(self, role: str, fn: Callable, *args: Any) -> Any:
        """Call a method of the ``role`` part; any error becomes a PartError naming it."""
        try:
            return fn(*args)
        except PartError:
            raise
        except Exception as e:  # noqa: BLE001 - a user part may raise anything; name it
            message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            raise PartError(role, self.where(role), message) from None

    def require(self, ok: bool, role: str, message: str) -> None:
        if not ok:
            raise PartError(role, self.where(role), message)


def check(sim: Simulator, num_candidates: int, slate_size: int, max_episode_steps: int | None) -> None:
    """Validate an assembled simulator (types, each part's own check, one dry-run step); see module doc."""
    ck = _Checker(sim)
    for role, expected in PART_TYPES.items():
        ck.require(isinstance(ck.parts[role], expected), role,
                   f"is a {type(ck.parts[role]).__name__}, not {_article(expected.__name__)}")
    b, n, k = _DRY_RUN_USERS, num_candidates, slate_size
    rng = np.random.default_rng(0)
    docs_part, users_part = sim.documents, sim.users

    docs = ck.run("documents", docs_part.sample, rng, b, n)
    _check_batch(ck, "documents", docs, (b, n), "sample()")
    ck.require("features" in docs, "documents", "sample() must return 'features' (B, N, D): what the agent "
               f"observes (got {', '.join(sorted(docs))})")
    d = getattr(docs_part, "feature_dim", None)
    ck.require(np.shape(docs["features"]) == (b, n, d), "documents", f"features have shape "
               f"{np.shape(docs['features'])}, expected (B, N, feature_dim) = ({b}, {n}, {d})")
    users = ck.run("users", users_part.sample, rng, b)
    _check_batch(ck, "users", users, (b,), "sample()")
    observed = ck.run("users", users_part.observe, users)
    u = getattr(users_part, "observation_dim", None)
    ck.require(np.shape(observed) == (b, u), "users", f"observe() returned shape {np.shape(observed)}, expected "
               f"(B, observation_dim) = ({b}, {u})")

    ctx = CheckContext(n, k, docs_part, users_part, docs, users)
    for role, part in ck.parts.items():
        ck.run(role, part.check, ctx)
    ck.require(getattr(ck.parts["transition"], "ends_sessions", True) or max_episode_steps is not None,
               "transition", "never ends a session and env.max_episode_steps is null: set env.max_episode_steps")
    _dry_step(ck, rng, docs, users, b, k)


def _check_batch(ck: _Checker, role: str, arrays: Any, lead: tuple[int, ...], what: str) -> None:
    ck.require(isinstance(arrays, dict) and bool(arrays), role, f"{what} must be a non-empty dict of arrays, "
               f"got {type(arrays).__name__}")
    for key, value in arrays.items():
        shape = np.shape(value)
        ck.require(shape[:len(lead)] == lead, role, f"{what}[{key!r}] has shape {shape}, expected leading "
                   f"shape {lead}")


def _dry_step(ck: _Checker, rng: np.random.Generator, docs: dict, users: dict, b: int, k: int) -> None:
    """One step of the whole pipeline on slates [0..K−1]; checks every output."""
    affinity, choice, response = ck.parts["affinity"], ck.parts["choice"], ck.parts["response"]
    transition, reward = ck.parts["transition"], ck.parts["reward"]
    slate = gather_slate(docs, np.tile(np.arange(k), (b, 1)))

    scores = np.asarray(ck.run("affinity", affinity.score, users, slate))
    ck.require(scores.shape == (b, k), "affinity", f"score() returned shape {scores.shape}, expected (B, K) = "
               f"({b}, {k}): one score per slate slot")
    ck.require(not np.isnan(scores).any(), "affinity", "score() returned NaN")

    try:
        probs = choice.probabilities(scores)
    except NotImplementedError:
        probs = None  # a choice model without closed-form probabilities: its samples are still checked
    except Exception as e:  # noqa: BLE001
        raise PartError("choice", ck.where("choice"), f"{type(e).__name__}: {e}") from None
    if probs is not None:
        probs = np.asarray(probs)
        ck.require(probs.shape == (b, k + 1), "choice", f"probabilities() returned shape {probs.shape}, expected "
                   f"(B, K + 1) = ({b}, {k + 1}): K slots and no click")
        ck.require(bool(np.all((probs >= -1e-12) & (probs <= 1 + 1e-12))), "choice",
                   f"probabilities() outside [0, 1]: {probs.tolist()}")
        ck.require(bool(np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)), "choice",
                   f"probabilities() rows must sum to 1, got sums {probs.sum(axis=1).tolist()}")
    clicked = np.asarray(ck.run("choice", choice.choose, rng, scores))
    ck.require(clicked.shape == (b,) and np.issubdtype(clicked.dtype, np.integer), "choice",
               f"choose() must return (B,) = ({b},) integer slots, got shape {clicked.shape} dtype {clicked.dtype}")
    ck.require(bool(np.all((clicked >= 0) & (clicked <= k))), "choice",
               f"choose() must return slots in 0..{k} ({k} = no click), got {clicked.tolist()}")

    spaces = ck.run("response", response.response_spaces, k)
    ck.require(isinstance(spaces, dict) and "click" in spaces, "response",
               "response_spaces() must be a dict of per-slot spaces with 'click'")
    for key, space in spaces.items():
        ck.require(space.shape == (k,), "response", f"response_spaces()[{key!r}] has shape {space.shape}, "
                   f"expected (K,) = ({k},)")
    responses = ck.run("response", response.respond, rng, users, slate, clicked)
    missing = sorted(set(spaces) - set(responses)) if isinstance(responses, dict) else sorted(spaces)
    ck.require(not missing, "response", f"respond() is missing field(s) {', '.join(missing)} of response_spaces()")
    for key in spaces:
        ck.require(np.shape(responses[key]) == (b, k), "response", f"respond()[{key!r}] has shape "
                   f"{np.shape(responses[key])}, expected (B, K) = ({b}, {k})")
    ck.require(np.array_equal(np.asarray(responses["click"]), click_matrix(clicked, k)), "response",
               "respond()['click'] must be the one-hot of the chosen slot (all zeros for no click)")

    rewards = np.asarray(ck.run("reward", reward, responses))
    ck.require(rewards.shape == (b,), "reward", f"returned shape {rewards.shape}, expected (B,) = ({b},)")
    ck.require(bool(np.all(np.isfinite(rewards))), "reward", f"returned non-finite rewards {rewards.tolist()}")

    ck.run("transition", transition.transition, rng, users, slate, clicked, responses)
    done = np.asarray(ck.run("transition", transition.terminated, users))
    ck.require(done.shape == (b,) and done.dtype == np.bool_, "transition",
               f"terminated() must return a (B,) = ({b},) bool mask, got shape {done.shape} dtype {done.dtype}")
