"""``env=logged``: an env known only from logged data (no simulator).

Its sizes (N candidates, slates of K, U user and D doc features) and its response fields come from
the ``recsys_exp`` metadata of the Parquet files at ``offline.path`` (written by ``mode=record``,
``python -m recsys_exp.offline.jsonl`` or ``python -m recsys_exp.offline.obd``). The observation
space is the one a simulator of that shape would have, so policies trained on the logs read the
same flattened observation, and can be evaluated off-policy and served. Anything that needs to
step an env (sampling algorithms, ``mode=record``, evaluation in the simulator) gets
:class:`NoSimulator` naming what to do instead.

The file-level helpers of the logged-data format (which files, their metadata) live here, below
every room that reads logged data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

NAME = "logged"
META_KEY = b"recsys_exp"


class NoSimulator(RuntimeError):
    """Something tried to step ``env=logged``, which has no simulator."""


def data_files(path: str | Path) -> list[Path]:
    """The Parquet files of ``path`` (a file, or a directory searched recursively, hidden files
    skipped). Raises FileNotFoundError naming the path when there are none."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*.parquet") if not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise FileNotFoundError(f"offline.path={path}: no .parquet files there (record data with mode=record, "
                                f"or convert JSON lines with python -m recsys_exp.offline.jsonl)")
    return files


def read_meta(schema) -> dict[str, Any]:
    """The ``recsys_exp`` metadata of a logged-data Arrow schema ({} if absent)."""
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def logged_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of the logged data at ``path`` (its first file); ``FileNotFoundError`` /
    ``ValueError`` naming the path when there is no data or no metadata."""
    import pyarrow.parquet as pq

    first = data_files(path)[0]
    meta = read_meta(pq.read_schema(first))
    if not meta:
        raise ValueError(f"offline.path={path}: {first} has no recsys_exp metadata (write data with mode=record "
                         f"or python -m recsys_exp.offline.jsonl)")
    return meta


def observation_space(meta: dict[str, Any]) -> gym.spaces.Dict:
    """The observation space of a simulator of the data's shape: ``user`` (U,), ``doc`` (N, D) and
    ``response`` with ``click`` and the logged per-slot fields (discrete ones as ``MultiDiscrete``)."""
    n, k, u, d = meta["num_candidates"], meta["slate_size"], meta["user_dim"], meta["doc_dim"]
    response: dict[str, gym.Space] = {"click": gym.spaces.MultiDiscrete([2] * k)}
    for name, kind in (meta.get("response_fields") or {}).items():
        if kind.get("kind") == "discrete":
            response[name] = gym.spaces.MultiDiscrete([int(kind["n"])] * k)
        else:
            response[name] = gym.spaces.Box(-np.inf, np.inf, (k,), np.float32)
    return gym.spaces.Dict({"user": gym.spaces.Box(-np.inf, np.inf, (u,), np.float32),
                            "doc": gym.spaces.Box(-np.inf, np.inf, (n, d), np.float32),
                            "response": gym.spaces.Dict(response)})


class LoggedOnlyEnv(gym.Env):
    """The spaces of logged data, and no dynamics: RLlib builds its EnvRunner (and the RLModule's
    spaces) from it; ``reset``/``step`` raise :class:`NoSimulator`."""

    def __init__(self, meta: dict[str, Any]):
        self.observation_space = observation_space(meta)
        self.action_space = gym.spaces.MultiDiscrete([meta["num_candidates"]] * meta["slate_size"])

    def reset(self, *, seed=None, options=None):
        raise NoSimulator("env=logged has no simulator: train an algorithm that learns from logged data "
                          "(bc, marwil, cql, cql_dqn) and evaluate off-policy (mode=evaluate offline.path=...)")

    def step(self, action):
        self.reset()
