"""Batched slate-recommendation dynamics and their gymnasium faces.

:class:`SlateCore` steps B users at once through a :class:`~recsys_exp.envs.components.Simulator`
in RecSim's order (recsim.md §1.3): choice and responses on the pre-transition state, then the
transition, then termination, then a fresh candidate set. :class:`SlateVectorEnv` exposes it as a
``gymnasium.vector.VectorEnv`` with NEXT_STEP autoreset (what RLlib's
``gym_env_vectorize_mode="vector_entry_point"`` expects); :class:`SlateEnv` as a ``gymnasium.Env``.

Observation (per user): ``user`` (U,) float32, ``doc`` (N, D) float32 in action-index order and
``response`` — a dict of per-slot arrays (K,) of the last step, zeros at reset.
Action (per user): a slate of K candidate positions in [0, N); duplicates are allowed.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from recsys_exp.envs.components import Arrays, Simulator, gather_slate


class SlateCore:
    """State of B simulated users with their candidate sets; no gymnasium API, no autoreset."""

    def __init__(self, sim: Simulator, batch: int, num_candidates: int, slate_size: int,
                 resample_documents: bool, rng: np.random.Generator):
        self.sim, self.batch = sim, batch
        self.num_candidates, self.slate_size = num_candidates, slate_size
        self.resample_documents = resample_documents
        self.rng = rng
        self.response_spaces = sim.user_model.response_spaces(slate_size)
        self.users: Arrays = {}
        # Without resampling, each sub-env keeps the candidates drawn at construction for its
        # whole lifetime, across episodes (recsim.md §7.2 item 2).
        self.docs: Arrays = sim.documents.sample(rng, batch, num_candidates)
        # True once observe() has handed out self.docs["features"] without a copy: the arrays
        # must then not be written in place any more (reset_rows copies them first).
        self._docs_shared = False
        self.responses: Arrays = self._zero_responses(batch)

    def _zero_responses(self, n: int) -> Arrays:
        return {key: np.zeros((n, self.slate_size), dtype=space.dtype)
                for key, space in self.response_spaces.items()}

    def reseed(self, seed: int) -> np.random.Generator:
        """Restart every stream from ``seed`` (and redraw the per-instance candidates); returns the rng."""
        self.rng = np.random.default_rng(seed)
        self.docs = self.sim.documents.sample(self.rng, self.batch, self.num_candidates)
        return self.rng

    def reset_rows(self, rows: np.ndarray | slice) -> None:
        """Start new sessions for the given rows: fresh users (and candidates if resampling)."""
        n = len(np.arange(self.batch)[rows])
        fresh = self.sim.users.sample(self.rng, n)
        if not self.users:  # first reset: allocate full-size state
            self.users = {key: np.empty((self.batch,) + v.shape[1:], v.dtype) for key, v in fresh.items()}
        for key, value in fresh.items():
            self.users[key][rows] = value
        if self.resample_documents:
            fresh_docs = self.sim.documents.sample(self.rng, n, self.num_candidates)
            if self._docs_shared:  # copy on write: a returned observation still views these arrays
                self.docs = {key: value.copy() for key, value in self.docs.items()}
                self._docs_shared = False
            for key, value in fresh_docs.items():
                self.docs[key][rows] = value
        for value in self.responses.values():
            value[rows] = 0

    def step(self, slate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Serve slates (B, K) to all users; return rewards (B,) float64 and terminated (B,) bool."""
        sim = self.sim
        slate_docs = gather_slate(self.docs, slate)
        scores = sim.user_model.score(self.users, slate_docs)
        clicked = sim.choice.choose(self.rng, scores)
        responses = sim.user_model.respond(self.rng, self.users, slate_docs, clicked)
        reward = sim.reward(responses)
        sim.user_model.transition(self.rng, self.users, slate_docs, clicked, responses)
        terminated = sim.user_model.terminated(self.users)
        if self.resample_documents:  # also after the terminal step, as RecSim does
            self.docs = sim.documents.sample(self.rng, self.batch, self.num_candidates)
            self._docs_shared = False
        self.responses = {key: responses[key] for key in self.response_spaces}
        return reward, terminated

    def observe(self) -> dict[str, Any]:
        """Batched observation: fresh float32 arrays, so callers may keep them across steps."""
        responses = {}
        for key, space in self.response_spaces.items():
            value = self.responses[key]
            if isinstance(space, gym.spaces.Box):  # e.g. LTS engagement is clipped at 100
                value = np.clip(value, space.low[0], space.high[0]).astype(np.float32)
            else:
                value = value.astype(space.dtype)
            responses[key] = value
        features = self.docs["features"]
        self._docs_shared |= self.resample_documents
        return {"user": self.sim.users.observe(self.users),
                "doc": features if self.resample_documents else features.copy(),
                "response": responses}


def single_spaces(sim: Simulator, num_candidates: int, slate_size: int) -> tuple[gym.spaces.Dict, gym.spaces.MultiDiscrete]:
    """Observation and action space of one user (the same for every backend)."""
    users, docs = sim.users, sim.documents
    obs = gym.spaces.Dict({
        "user": gym.spaces.Box(users.observation_low, users.observation_high, (users.observation_dim,), np.float32),
        "doc": gym.spaces.Box(docs.feature_low, docs.feature_high, (num_candidates, docs.feature_dim), np.float32),
        "response": gym.spaces.Dict(sim.user_model.response_spaces(slate_size)),
    })
    return obs, gym.spaces.MultiDiscrete(np.full(slate_size, num_candidates, dtype=np.int64))


def check_slate(name: str, action: Any, shape: tuple[int, ...], num_candidates: int) -> np.ndarray:
    """Validate a slate (or batch of slates) of candidate positions; return it as int64."""
    a = np.asarray(action)
    if a.shape != shape:
        raise ValueError(f"{name}: action must have shape {shape} (slate of {shape[-1]} candidate "
                         f"positions), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name}: action must hold integer candidate positions, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= num_candidates):
        raise ValueError(f"{name}: slate positions must be in [0, {num_candidates}), got {a.tolist()}")
    return a.astype(np.int64, copy=False)


class SlateVectorEnv(gym.vector.VectorEnv):
    """B independent users stepped as one batch; NEXT_STEP autoreset.

    A sub-env that ended at step t returns its first observation of a new session on the next
    ``step`` (reward 0, terminated = truncated = False) and ignores the action given for it.
    All sub-envs draw from one seeded ``numpy.random.Generator``: their streams are independent
    (i.i.d. users and documents across sub-envs) and the same seed reproduces every trajectory.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, sim: Simulator, num_envs: int, num_candidates: int, slate_size: int,
                 resample_documents: bool = True, max_episode_steps: int | None = None,
                 seed: int | None = None):
        self.name = sim.name
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.single_observation_space, self.single_action_space = single_spaces(sim, num_candidates, slate_size)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(seed)
        self.core = SlateCore(sim, num_envs, num_candidates, slate_size, resample_documents, self._rng)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new session for every sub-env; ``seed`` re-seeds all streams."""
        if seed is not None:
            self._rng = self.core.reseed(seed)
        self.core.reset_rows(slice(None))
        self._elapsed[:] = 0
        self._autoreset[:] = False
        self._needs_reset = False
        return self.core.observe(), {}

    def step(self, actions):
        """Serve one slate per sub-env; returns batched (obs, rewards, terminated, truncated, infos)."""
        if self._needs_reset:
            raise RuntimeError(f"{self.name}: call reset() before step()")
        slate = check_slate(self.name, actions, (self.num_envs, self.core.slate_size), self.core.num_candidates)
        reward, terminated = self.core.step(slate)
        self._elapsed += 1
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = (self._elapsed >= self.max_episode_steps) & ~terminated
        done_before = self._autoreset
        if done_before.any():  # NEXT_STEP autoreset: these rows start a new session now
            self.core.reset_rows(done_before)
            reward[done_before] = 0.0
            terminated[done_before] = False
            truncated[done_before] = False
            self._elapsed[done_before] = 0
        self._autoreset = terminated | truncated
        return self.core.observe(), reward, terminated, truncated, {}


class SlateEnv(gym.Env):
    """One user at a time: a ``gymnasium.Env`` over a batch-of-one :class:`SlateCore`."""

    metadata = {"render_modes": []}

    def __init__(self, sim: Simulator, num_candidates: int, slate_size: int,
                 resample_documents: bool = True, max_episode_steps: int | None = None,
                 seed: int | None = None):
        self.name = sim.name
        self.max_episode_steps = max_episode_steps
        self.observation_space, self.action_space = single_spaces(sim, num_candidates, slate_size)
        self._np_random = np.random.default_rng(seed)
        self.core = SlateCore(sim, 1, num_candidates, slate_size, resample_documents, self._np_random)
        self._elapsed = 0
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Draw a new user (and candidates if resampling); ``seed`` re-seeds all streams."""
        if seed is not None:
            self._np_random = self.core.reseed(seed)
        self.core.reset_rows(slice(None))
        self._elapsed, self._done = 0, False
        return _unbatch(self.core.observe()), {}

    def step(self, action):
        """Serve one slate (K,); returns (obs, reward, terminated, truncated, info)."""
        if self._done:
            raise RuntimeError(f"{self.name}: the episode has ended (or never started); call reset()")
        slate = check_slate(self.name, action, (self.core.slate_size,), self.core.num_candidates)
        reward, terminated = self.core.step(slate[None])
        self._elapsed += 1
        term = bool(terminated[0])
        trunc = self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps and not term
        self._done = term or trunc
        return _unbatch(self.core.observe()), float(reward[0]), term, trunc, {}


def _unbatch(obs: dict[str, Any]) -> dict[str, Any]:
    return {key: _unbatch(value) if isinstance(value, dict) else value[0] for key, value in obs.items()}
