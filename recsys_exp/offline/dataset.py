"""Reading logged data into numpy, and presenting it to RLlib learners as episodes.

:class:`LoggedData` holds the columns of :mod:`recsys_exp.offline.schema` as arrays, sorted by
(episode, step). :meth:`LoggedData.observations` rebuilds each step's observation exactly as the
policy saw it in the simulator — ``user``, ``doc`` and the *previous* step's ``response`` —
flattened like RLlib's ``FlattenObservations`` connector; :func:`to_episodes` turns rows into
RLlib ``SingleAgentEpisode`` objects so RLlib's own learners (BC, MARWIL, DQN/SlateQ losses) train
on them through their usual learner connectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_exp.envs.layout import flatten_observations
from recsys_exp.offline.schema import REQUIRED, RESPONSE_PREFIX, data_files, read_meta, to_numpy


class DataError(ValueError):
    """Logged data that cannot be used as asked (one line naming file, column or rows)."""


@dataclass
class LoggedData:
    """Logged steps as numpy arrays, rows sorted by (episode_id, step)."""

    meta: dict[str, Any]
    episode_id: np.ndarray  # (n,) int64
    step: np.ndarray  # (n,) int64
    user: np.ndarray  # (n, U) float32
    docs: np.ndarray  # (n, N, D) float32
    slate: np.ndarray  # (n, K) int64
    click: np.ndarray  # (n,) int64, -1 = none
    responses: dict[str, np.ndarray]  # field -> (n, K) float32
    reward: np.ndarray  # (n,) float64
    terminated: np.ndarray  # (n,) bool
    truncated: np.ndarray  # (n,) bool
    propensity: np.ndarray  # (n,) float64, NaN = unknown
    slot_propensity: np.ndarray  # (n, K) float64, NaN = unknown
    next_user: np.ndarray  # (n, U) float32, NaN except on last rows
    next_docs: np.ndarray  # (n, N, D) float32, NaN except on last rows
    files: list[str] = field(default_factory=list)

    # --- reading ----------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> "LoggedData":
        """Read a Parquet file or a directory of them (recursively); checks sizes agree across files."""
        files = data_files(path)
        tables, meta = [], None
        # Episode ids are unique within one recording (one directory of part files); recordings
        # read together get disjoint ids by offsetting each directory's ids past the previous ones.
        offsets: dict[Path, int] = {}
        next_id = 0
        for f in files:
            table = pq.read_table(f)
            m = read_meta(table.schema)
            missing = [c for c in REQUIRED if c not in table.column_names]
            if missing:
                raise DataError(f"{f}: missing column(s) {', '.join(missing)} "
                                f"(see the logged-data schema in docs/offline.md)")
            if not m:
                raise DataError(f"{f}: no recsys_exp metadata (write data with mode=record or recsys_exp.offline.jsonl)")
            sizes = {k: m.get(k) for k in ("num_candidates", "slate_size", "user_dim", "doc_dim")}
            if meta is None:
                meta = m
            elif sizes != {k: meta.get(k) for k in sizes}:
                raise DataError(f"{f}: sizes {sizes} differ from {files[0]}'s "
                                f"{ {k: meta.get(k) for k in sizes} }")
            tables.append(table)
        largest: dict[Path, int] = {}
        for f, table in zip(files, tables):
            largest[f.parent] = max(largest.get(f.parent, 0), pc.max(table.column("episode_id")).as_py() or 0)
        for parent, top in largest.items():
            offsets[parent] = next_id
            next_id += top + 1
        tables = [t.set_column(t.column_names.index("episode_id"), "episode_id",
                               pc.add(t.column("episode_id"), pa.scalar(offsets[f.parent], pa.int64())))
                  for f, t in zip(files, tables)]
        table = pa.concat_tables(tables, promote_options="default")
        return cls.from_table(table, meta or {}, [str(f) for f in files])

    @classmethod
    def from_table(cls, table: pa.Table, meta: dict[str, Any], files: list[str] | None = None) -> "LoggedData":
        """Arrays of one Arrow table in the logged-data schema."""
        n_cand, k, u, d = meta["num_candidates"], meta["slate_size"], meta["user_dim"], meta["doc_dim"]
        col = table.column
        names = table.column_names
        ep = col("episode_id").to_numpy().astype(np.int64)
        st = col("step").to_numpy().astype(np.int64)
        order = np.lexsort((st, ep))
        n = len(ep)

        def opt(name, shape, dtype):
            if name in names:
                return to_numpy(col(name), shape, dtype)[order]
            return np.full((n, *shape), np.nan, dtype=dtype)

        responses = {name[len(RESPONSE_PREFIX):]: to_numpy(col(name), (k,), np.float32)[order]
                     for name in names if name.startswith(RESPONSE_PREFIX)}
        propensity = (col("propensity").to_numpy(zero_copy_only=False).astype(np.float64)[order]
                      if "propensity" in names else np.full(n, np.nan))
        return cls(meta=meta, episode_id=ep[order], step=st[order],
                   user=to_numpy(col("user"), (u,), np.float32)[order],
                   docs=to_numpy(col("docs"), (n_cand, d), np.float32)[order],
                   slate=to_numpy(col("slate"), (k,), np.int64)[order],
                   click=col("click").to_numpy().astype(np.int64)[order], responses=responses,
                   reward=col("reward").to_numpy().astype(np.float64)[order],
                   terminated=col("terminated").to_numpy(zero_copy_only=False)[order],
                   truncated=col("truncated").to_numpy(zero_copy_only=False)[order],
                   propensity=propensity, slot_propensity=opt("slot_propensity", (k,), np.float64),
                   next_user=opt("next_user", (u,), np.float32), next_docs=opt("next_docs", (n_cand, d), np.float32),
                   files=files or [])

    def select(self, rows: np.ndarray) -> "LoggedData":
        """The data of the rows where the boolean mask ``rows`` (n,) is True (whole sessions stay
        whole when the mask is per session, as :func:`held_out_sessions` gives)."""
        pick = lambda a: a[rows]  # noqa: E731
        return LoggedData(meta=self.meta, episode_id=pick(self.episode_id), step=pick(self.step), user=pick(self.user),
                          docs=pick(self.docs), slate=pick(self.slate), click=pick(self.click),
                          responses={k: pick(v) for k, v in self.responses.items()}, reward=pick(self.reward),
                          terminated=pick(self.terminated), truncated=pick(self.truncated),
                          propensity=pick(self.propensity), slot_propensity=pick(self.slot_propensity),
                          next_user=pick(self.next_user), next_docs=pick(self.next_docs), files=self.files)

    # --- shape of the data ----------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return len(self.episode_id)

    @property
    def num_candidates(self) -> int:
        return int(self.meta["num_candidates"])

    @property
    def slate_size(self) -> int:
        return int(self.meta["slate_size"])

    def first_rows(self) -> np.ndarray:
        """(n,) True on the first row of each episode."""
        first = np.ones(self.num_rows, dtype=bool)
        first[1:] = self.episode_id[1:] != self.episode_id[:-1]
        return first

    def last_rows(self) -> np.ndarray:
        """(n,) True on the last row of each episode."""
        last = np.ones(self.num_rows, dtype=bool)
        last[:-1] = self.episode_id[1:] != self.episode_id[:-1]
        return last

    def row_label(self, i: int) -> str:
        """``row i (episode e, step t)`` for error messages."""
        return f"row {i} (episode {self.episode_id[i]}, step {self.step[i]})"

    # --- observations as the policy saw them ------------------------------------------
    def check_space(self, space: gym.spaces.Dict, where: str) -> None:
        """Raise DataError naming the mismatch when the data does not fit the env's observation space."""
        n, d = space["doc"].shape
        u, k = space["user"].shape[0], len(space["response"]["click"].nvec)
        want = {"num_candidates": n, "slate_size": k, "user_dim": u, "doc_dim": d}
        have = {key: self.meta.get(key) for key in want}
        if want != have:
            bad = ", ".join(f"{key} {have[key]} (env: {want[key]})" for key in want if want[key] != have[key])
            raise DataError(f"{where}: the logged data does not fit the env: {bad}")

    def _response_obs(self, space: gym.spaces.Dict, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per-slot responses of ``rows`` as the env's ``response`` dict (click one-hot source)."""
        k = self.slate_size
        click = np.zeros((len(rows), k), dtype=np.int64)
        hit = self.click[rows] >= 0
        click[np.flatnonzero(hit), self.click[rows][hit]] = 1
        out: dict[str, np.ndarray] = {}
        for name, sub in space["response"].spaces.items():
            if name == "click":
                out[name] = click
            elif name in self.responses:
                values = self.responses[name][rows]
                out[name] = values.astype(np.int64) if isinstance(sub, gym.spaces.MultiDiscrete) else values
            else:  # imported logs without this field: the env's "nothing happened" value
                out[name] = np.zeros((len(rows), k), dtype=np.int64 if isinstance(sub, gym.spaces.MultiDiscrete)
                                     else np.float32)
        return out

    def observations(self, space: gym.spaces.Dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flattened observations ``(obs, next_obs, has_next)``, each (n, obs_dim) / (n,).

        obs_t = (user_t, docs_t, response of step t-1 — zeros at t = 0); next_obs_t = obs_{t+1},
        or on an episode's last row (next_user, next_docs, response of step t). ``has_next`` is
        False on last rows without a logged next state (imported logs): treat them as terminal.
        """
        n = self.num_rows
        first, last = self.first_rows(), self.last_rows()
        prev = np.arange(n) - 1
        response_prev = self._response_obs(space, np.maximum(prev, 0))
        for value in response_prev.values():
            value[first] = 0
        obs = flatten_observations(space, {"user": self.user, "doc": self.docs, "response": response_prev})
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        has_next = ~last | ~np.isnan(self.next_user).any(-1) & ~np.isnan(self.next_docs).any((-1, -2))
        rows = np.flatnonzero(last)
        if len(rows):
            user = np.nan_to_num(self.next_user[rows])
            docs = np.nan_to_num(self.next_docs[rows])
            next_obs[rows] = flatten_observations(space, {"user": user, "doc": docs,
                                                          "response": self._response_obs(space, rows)})
        return obs, next_obs, has_next


def held_out_sessions(episode_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(n,) bool: the rows of the sessions held out for evaluation, about ``fraction`` of them.

    A session is held out when a hash of (its id, ``seed``) falls below ``fraction``: the split
    depends only on the session id and the seed, not on the order or the files the rows came in,
    and a session is never split between training and evaluation. The hash is SplitMix64
    (Steele, Lea, Flood 2014), mapped to [0, 1) by its top 53 bits.
    """
    if fraction <= 0:
        return np.zeros(len(episode_id), dtype=bool)
    with np.errstate(over="ignore"):
        x = episode_id.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def to_episodes(data: LoggedData, obs: np.ndarray, next_obs: np.ndarray, has_next: np.ndarray,
                actions: np.ndarray, starts: np.ndarray, length: int = 1,
                action_logp: np.ndarray | None = None) -> list:
    """RLlib ``SingleAgentEpisode`` chunks of up to ``length`` consecutive steps from each row of
    ``starts`` (cut at the session's end), as a replay buffer or an EnvRunner would hand them over.

    ``actions``: (n,) flat indices or (n, K) slates, in the learner's action space. A chunk that
    reaches its session's last row is terminated (also when no next state was logged) or
    truncated as logged; a chunk cut earlier is simply unfinished, so learners bootstrap there.
    """
    from ray.rllib.core.columns import Columns
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    last = np.flatnonzero(data.last_rows())
    session_end = last[np.searchsorted(last, starts)]  # index of each start's session's last row
    episodes = []
    for i, end in zip(starts, session_end):
        j = min(i + length, end + 1)  # exclusive
        at_end = j == end + 1
        terminated = at_end and bool(data.terminated[end] or not has_next[end])
        extra = {Columns.ACTION_LOGP: list(action_logp[i:j].astype(np.float32))} if action_logp is not None else {}
        episodes.append(SingleAgentEpisode(
            observations=[*obs[i:j], next_obs[j - 1]], actions=list(actions[i:j]),
            rewards=[float(r) for r in data.reward[i:j]], extra_model_outputs=extra, terminated=terminated,
            truncated=at_end and bool(data.truncated[end]) and not terminated, len_lookback_buffer=0))
    return episodes
