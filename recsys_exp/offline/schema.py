"""The logged-data format: one Parquet row per recommendation step.

Columns (N candidates with D features, slates of K, U user features):

==================  ===========================  ==================================================
column              Arrow type                   meaning
==================  ===========================  ==================================================
episode_id          int64                        session id (rows of a session share it)
step                int32                        0, 1, ... within the session
user                fixed_size_list<float>[U]    user features observed before the slate
docs                fixed_size_list<fixed_size_list<float>[D]>[N]  candidate features, action-index order
slate               fixed_size_list<int32>[K]    candidates shown, slot 0 first
click               int32                        clicked slot, -1 = no click
response_<field>    fixed_size_list<float>[K]    the env's other per-slot responses (e.g. watch_time)
reward              float64                      reward of the step
terminated          bool                         the session ended (no bootstrap)
truncated           bool                         the session was cut (time limit)
propensity          float64, nullable            behaviour P(slate | context); null = unknown
slot_propensity     fixed_size_list<float64>[K], nullable   P(slot k shows slate[k] | context)
next_user           fixed_size_list<float>[U], nullable     user features after the last step (last row only)
next_docs           like docs, nullable          candidates after the last step (last row only)
==================  ===========================  ==================================================

File metadata key ``recsys_exp`` (JSON): schema version, env name and sizes, the response
fields with their kind (``discrete`` with its number of values, or ``float``), and how the data
was made (behaviour policy, exploration, seed).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_exp.envs.logged import META_KEY, data_files, read_meta  # noqa: F401  (the format's file helpers)

SCHEMA_VERSION = 1
REQUIRED = ("episode_id", "step", "user", "docs", "slate", "click", "reward", "terminated", "truncated")
RESPONSE_PREFIX = "response_"


def logged_schema(num_candidates: int, slate_size: int, user_dim: int, doc_dim: int,
                  response_fields: dict[str, dict[str, Any]], meta: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of logged data for these sizes, with ``meta`` stored as file metadata.

    ``response_fields``: per-slot response name -> ``{"kind": "discrete", "n": values}`` or
    ``{"kind": "float"}`` (the ``click`` field is the ``click`` column, not listed here).
    """
    # Arrow has no fixed-size list of size 0: envs without user features get a plain (empty) list.
    user = pa.list_(pa.float32(), user_dim) if user_dim > 0 else pa.list_(pa.float32())
    docs = pa.list_(pa.list_(pa.float32(), doc_dim), num_candidates)
    fields = [
        pa.field("episode_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("user", user, nullable=False),
        pa.field("docs", docs, nullable=False),
        pa.field("slate", pa.list_(pa.int32(), slate_size), nullable=False),
        pa.field("click", pa.int32(), nullable=False),
        *[pa.field(RESPONSE_PREFIX + name, pa.list_(pa.float32(), slate_size), nullable=False)
          for name in response_fields],
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("propensity", pa.float64()),
        pa.field("slot_propensity", pa.list_(pa.float64(), slate_size)),
        pa.field("next_user", user),
        pa.field("next_docs", docs),
    ]
    full_meta = {"schema_version": SCHEMA_VERSION, "num_candidates": num_candidates, "slate_size": slate_size,
                 "user_dim": user_dim, "doc_dim": doc_dim, "response_fields": response_fields, **meta}
    return pa.schema(fields, metadata={META_KEY: json.dumps(full_meta)})


def fixed_list(values: np.ndarray, type_: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """(n, *shape) numpy -> Arrow (nested) fixed-size lists of ``type_`` without a Python loop;
    ``mask`` (n,) True marks null rows."""
    values = np.ascontiguousarray(values)
    inner = type_
    while pa.types.is_fixed_size_list(inner) or pa.types.is_list(inner):
        inner = inner.value_type
    arr: pa.Array = pa.array(values.reshape(-1), type=inner)
    if not pa.types.is_fixed_size_list(type_):  # a variable-size list (the empty user features)
        width = int(np.prod(values.shape[1:]))
        offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * width)
        return pa.ListArray.from_arrays(offsets, arr, mask=pa.array(mask) if mask is not None and mask.any() else None)
    for size in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    if mask is not None and mask.any():
        arr = pa.FixedSizeListArray.from_arrays(arr.values, arr.type.list_size, mask=pa.array(mask))
    return arr


def to_numpy(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Arrow (nested) fixed-size lists -> numpy (n, *shape); null rows become NaN (or 0 for ints)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    flat = arr
    while pa.types.is_fixed_size_list(flat.type) or pa.types.is_list(flat.type):
        # .values ignores the parent's nulls: null rows still occupy their slots (as zeros or garbage).
        flat = flat.values if pa.types.is_fixed_size_list(flat.type) else flat.flatten()
    out = flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape((n, *shape))
    if nulls is not None and np.issubdtype(out.dtype, np.floating):
        out = out.copy()
        out[nulls] = np.nan
    return out


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file through a hidden temp file and ``os.replace``: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
