"""``mode=record``: run a behaviour policy in the simulator and log every step as Parquet.

RLlib 2.58's recorder duplicates or drops rows depending on ``output_max_rows_per_file``
(rllib-2.58.md §6.2), so the framework steps its native vector env itself with the run's
:class:`~recsys_exp.runner.policy.Policy` (the same observation flattening as training, exact
propensities from the policy contract) and writes complete sessions only: after ``steps`` logged rows,
sub-envs finish their current session and stop logging. Each part file is written atomically;
``manifest.json`` (written last) lists the files and row counts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from recsys_exp.algorithms.slates import NotEnumerable
from recsys_exp.envs.spec import env_spec
from recsys_exp.offline.schema import RESPONSE_PREFIX, fixed_list, logged_schema, write_table_atomic

ROWS_PER_FILE = 100_000


def response_fields(space) -> dict[str, dict[str, Any]]:
    """The env's per-slot response fields other than ``click``, with their kind."""
    import gymnasium as gym

    fields = {}
    for name, sub in space["response"].spaces.items():
        if name == "click":
            continue
        if isinstance(sub, gym.spaces.MultiDiscrete):
            fields[name] = {"kind": "discrete", "n": int(sub.nvec[0])}
        else:
            fields[name] = {"kind": "float"}
    return fields


def rollout(policy, env, steps: int | None = None, episodes: int | None = None,
            explore: bool = True, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Step ``env`` (a :class:`~recsys_exp.envs.core.SlateVectorEnv`) with ``policy`` (a
    :class:`~recsys_exp.runner.policy.Policy`; exploring at env step = rows logged so far); yield the
    logged rows of each vector step as a dict of column arrays.

    Stops starting sessions once ``steps`` rows are logged (or ``episodes`` sessions started);
    sessions in progress run to their end, so every logged session is complete. Every sub-env
    step of a logged session yields exactly one row; with NEXT_STEP autoreset the step after a
    session's end only resets that sub-env and is not logged.
    """
    import torch

    torch.manual_seed(seed)  # the policies' own draws (ε, random slates, Thompson) are torch's
    obs, _ = env.reset(seed=seed)
    b = env.num_envs
    first = b if episodes is None else min(b, episodes)
    episode = np.arange(b, dtype=np.int64)
    step = np.zeros(b, dtype=np.int64)
    active = np.arange(b) < first  # this sub-env's current session is logged
    resetting = np.zeros(b, dtype=bool)  # its next env.step is the autoreset
    started, rows = first, 0
    while active.any():
        flat = policy.flatten(obs)
        if explore:
            act = policy.sample(flat, rows)
        else:  # the greedy policy's probabilities (1 for deterministic policies; NaN if not enumerable)
            slate = policy.greedy(flat)
            try:
                p, slot = policy.slate_probabilities(flat, slate, explore=False)
            except NotEnumerable:
                p, slot = np.full(b, np.nan), np.full(slate.shape, np.nan)
            act = {"action": slate, "propensity": p, "slot_propensity": slot}
        # The native env takes slates whatever the module's action format (flat indices are decoded).
        next_obs, reward, terminated, truncated, _ = env.step(act["action"])
        logged = active & ~resetting
        idx = np.flatnonzero(logged)
        done = (terminated | truncated) & logged
        if len(idx):
            clicks = next_obs["response"]["click"][idx]
            yield {
                "episode_id": episode[idx], "step": step[idx], "user": obs["user"][idx], "docs": obs["doc"][idx],
                "slate": act["action"][idx], "click": np.where(clicks.any(-1), clicks.argmax(-1), -1),
                "responses": {k: v[idx] for k, v in next_obs["response"].items() if k != "click"},
                "reward": reward[idx], "terminated": terminated[idx], "truncated": truncated[idx],
                "propensity": act["propensity"][idx], "slot_propensity": act["slot_propensity"][idx],
                "next_user": next_obs["user"][idx], "next_docs": next_obs["doc"][idx], "last": done[idx],
            }
        rows += len(idx)
        step[idx] += 1
        resetting = done
        for e in np.flatnonzero(done):
            if (steps is None or rows < steps) and (episodes is None or started < episodes):
                episode[e], step[e] = started, 0
                started += 1
            else:
                active[e] = False
        obs = next_obs


def _table(chunks: list[dict[str, np.ndarray]], schema: pa.Schema) -> pa.Table:
    def cat(key):
        return np.concatenate([c[key] for c in chunks])

    last = cat("last")
    cols = {
        "episode_id": pa.array(cat("episode_id"), pa.int64()),
        "step": pa.array(cat("step"), pa.int32()),
        "user": fixed_list(cat("user"), schema.field("user").type),
        "docs": fixed_list(cat("docs"), schema.field("docs").type),
        "slate": fixed_list(cat("slate").astype(np.int32), schema.field("slate").type),
        "click": pa.array(cat("click"), pa.int32()),
    }
    for name in chunks[0]["responses"]:
        values = np.concatenate([c["responses"][name] for c in chunks]).astype(np.float32)
        cols[RESPONSE_PREFIX + name] = fixed_list(values, schema.field(RESPONSE_PREFIX + name).type)
    propensity = cat("propensity")
    slot = cat("slot_propensity")
    cols.update({
        "reward": pa.array(cat("reward"), pa.float64()),
        "terminated": pa.array(cat("terminated")), "truncated": pa.array(cat("truncated")),
        "propensity": pa.array(propensity, pa.float64(), mask=~np.isfinite(propensity)),
        "slot_propensity": fixed_list(slot, schema.field("slot_propensity").type, mask=~np.isfinite(slot).all(-1)),
        "next_user": fixed_list(cat("next_user"), schema.field("next_user").type, mask=~last),
        "next_docs": fixed_list(cat("next_docs"), schema.field("next_docs").type, mask=~last),
    })
    return pa.table(cols, schema=schema)


def behaviour_description(c: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """What made the data: algorithm, exploration, checkpoint and seed (stored in the file metadata)."""
    return {"env": c["env"]["name"], "env_config": c["env"], "algo": c["algo"]["name"],
            "exploration": c["exploration"], "checkpoint": checkpoint, "seed": c["seed"]}


def record(c: dict[str, Any], out_dir: Path, checkpoint: str | None = None) -> dict[str, Any]:
    """Log ``offline.record_steps`` steps (complete sessions) of the config's behaviour policy
    into ``out_dir/part-*.parquet``; returns the summary also saved as ``out_dir/manifest.json``."""
    from recsys_exp.run_dir import atomic_write_json
    from recsys_exp.runner.policy import Policy

    off = c["offline"]
    env = env_spec(c).vector_env(off["record_num_envs"], c["seed"])
    space = env.single_observation_space
    policy = Policy.from_checkpoint(c, checkpoint)
    schema = logged_schema(c["env"]["num_candidates"], c["env"]["slate_size"], space["user"].shape[0],
                           space["doc"].shape[1], response_fields(space), behaviour_description(c, checkpoint))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.rglob("*.parquet")):
        raise FileExistsError(f"offline.path={out_dir} already holds logged data; record into a new directory")
    files, chunks, pending, total, episodes = [], [], 0, 0, 0
    start = time.perf_counter()

    def flush():
        nonlocal chunks, pending
        path = out_dir / f"part-{len(files):05d}.parquet"
        write_table_atomic(_table(chunks, schema), path)
        files.append({"file": path.name, "rows": pending})
        chunks, pending = [], 0

    for rows in rollout(policy, env, steps=off["record_steps"], seed=c["seed"]):
        chunks.append(rows)
        pending += len(rows["reward"])
        total += len(rows["reward"])
        episodes += int(rows["last"].sum())
        if pending >= ROWS_PER_FILE:
            flush()
    if pending:
        flush()
    seconds = time.perf_counter() - start
    summary = {"rows": total, "episodes": episodes, "files": files, "seconds": seconds,
               "rows_per_s": total / seconds if seconds else None,
               "behaviour": behaviour_description(c, checkpoint), "path": str(out_dir)}
    atomic_write_json(out_dir / "manifest.json", summary)
    return summary
