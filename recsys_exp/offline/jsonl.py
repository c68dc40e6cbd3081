"""Importing historical recommendation logs from JSON lines into the logged-data Parquet format.

``python -m recsys_exp.offline.jsonl LOG.jsonl OUT_DIR [--env interest_evolution]`` reads one
interaction per line and writes ``OUT_DIR/part-00000.parquet, ...`` plus ``manifest.json`` in the
format of :mod:`recsys_exp.offline.schema`, ready for training offline algorithms (``algo=bc offline.path=OUT_DIR``)
and off-policy evaluation (``mode=evaluate restore=<run> offline.path=OUT_DIR``).

Each non-blank line is a JSON object (N candidates with D features, slates of K, U user features)::

    {"user": [0.1, -0.3],                    # U numbers (the user's features before the slate)
     "candidates": [[0.5, 0.2], ...],        # N lists of D numbers, in action-index order
     "slate": [2, 0],                        # K distinct candidate indices, slot 0 first
     "click": 1,                             # clicked slot 0..K-1; null or -1 = no click
     "reward": 4.0,                          # number
     "propensity": 0.011,                    # optional: behaviour P(slate | context), in (0, 1]
     "slot_propensity": [0.2, 0.1],          # optional: P(slot k shows slate[k] | context), each in (0, 1]
     "session": "u42-2024-05-01",            # optional: string or integer episode key
     "step": 0,                              # optional: integer order within the session
     "terminated": true,                     # optional: did the session end here
     "response": {"watch_time": [0.0, 3.5]}} # optional: other per-slot responses, K numbers each

Rules:

* Required: ``user``, ``candidates``, ``slate``, ``click``, ``reward``. Any other key than those
  above is an error (a misspelt ``propensity`` must not vanish silently). ``null`` for an
  optional field means absent. Integers must be JSON integers (``1``, not ``1.0`` or ``true``);
  numbers must be finite (``NaN``/``Infinity`` are rejected) and fit float32 for features and
  responses.
* Sizes: N, D, K and U come from the first line (or ``--num-candidates``/``--slate-size``, or the
  env of ``--env``, whose observation space gives U and D); every line must match them.
* Episodes: lines with the same ``session`` form one episode, ordered by ``step`` when the
  session's lines give it (all of them or none; no duplicates), else by file order. A line without
  ``session`` is an episode of its own (the contextual-bandit case; its ``step`` is ignored).
  Episode ids are 0, 1, ... in order of first appearance; steps are renumbered 0, 1, ... within
  the episode. Parquet part files hold at most ``rows_per_file`` rows (a session may span two).
* ``terminated`` defaults to true on a session's last line and false before; ``true`` before the
  last line is an error. ``truncated`` is always false. No next state is logged, so learners treat
  every session's last line as terminal.
* ``propensity``/``slot_propensity`` missing -> null (unknown; off-policy estimators that need
  them stop with an error). ``response``: every line gives the same fields (maybe none); ``click``
  is its own field, not a response. With ``--env`` the fields must be ones of the env (discrete
  ones hold integers in their range); env fields the log lacks are read back as zeros.
* ``"user": []`` is fine (envs without user features, e.g. Long-Term Satisfaction); candidates
  need at least one feature.

The whole file is validated before anything is written; an error names the file, the 1-based
line and the field (``log.jsonl:12: field 'slate': ...``), and the output directory is left
without new files. The CLI prints it as ``recsys_exp: <message>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from recsys_exp.envs.spec import EnvSpec

REQUIRED_FIELDS = ("user", "candidates", "slate", "click", "reward")
OPTIONAL_FIELDS = ("propensity", "slot_propensity", "session", "step", "terminated", "response")
ROWS_PER_FILE = 100_000
_NUMBER = (int, float)


class LogImportError(ValueError):
    """A log that cannot be imported; one line ``<file>:<line>: field '<name>': <problem>``."""


def _fail(where: str, name: str | None, problem: str) -> LogImportError:
    prefix = f"{where}: field '{name}'" if name else where
    return LogImportError(f"{prefix}: {problem}")


@dataclass
class _Layout:
    """Sizes every line must have, where each came from (for messages), and the response fields."""

    sizes: dict[str, int | None]  # "N", "K", "U", "D"
    origin: dict[str, str]
    env: str | None = None
    responses: dict[str, dict[str, Any]] | None = None  # name -> kind, fixed by the first line
    env_responses: dict[str, dict[str, Any]] | None = None  # the env's, when --env is given

    def expect(self, key: str, have: int, where: str, name: str, what: str) -> None:
        want = self.sizes[key]
        if have != want:
            raise _fail(where, name, f"{have} {what}, expected {want} ({self.origin[key]})")


@dataclass
class _Columns:
    """Per-line values collected while parsing (numpy conversion happens once, at the end)."""

    line: list[int] = field(default_factory=list)
    session: list[Any] = field(default_factory=list)  # None = an episode of its own
    step: list[int | None] = field(default_factory=list)
    user: list[np.ndarray] = field(default_factory=list)
    docs: list[np.ndarray] = field(default_factory=list)
    slate: list[list[int]] = field(default_factory=list)
    click: list[int] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    propensity: list[float] = field(default_factory=list)
    slot_propensity: list[Any] = field(default_factory=list)  # list of K floats, or None
    terminated: list[bool | None] = field(default_factory=list)
    responses: dict[str, list[np.ndarray]] = field(default_factory=dict)


# --- reading lines ---------------------------------------------------------------------------
def _objects(src: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "file:line", object) for each non-blank line."""
    try:
        f = open(src, "rb")
    except OSError as e:
        raise LogImportError(f"{src}: cannot read the log: {e.strerror or e}") from None
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{src}:{number}"
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # tolerate a BOM at the start
            except UnicodeDecodeError as e:
                raise _fail(where, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
            try:
                obj = json.loads(text.rstrip())  # so a column counts within this line
            except json.JSONDecodeError as e:
                raise _fail(where, None, f"invalid JSON ({e.msg} at column {e.colno}); each line must be "
                                         f"one JSON object") from None
            if type(obj) is not dict:
                raise _fail(where, None, f"not a JSON object but {_json_type(obj)}; each line must be one "
                                         "object like {\"user\": [...], \"candidates\": [...], ...}")
            yield number, where, obj


# --- checking one value --------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass: true/false are not indices


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER


def _list(value: Any, where: str, name: str, what: str) -> list:
    if type(value) is not list:
        raise _fail(where, name, f"must be a list of {what}, got {_json_type(value)}")
    return value


_JSON_TYPES = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "an object"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _floats(value: Any, shape: tuple[int, ...], where: str, name: str) -> np.ndarray:
    """A (nested) list of numbers of exactly ``shape`` (checked by the caller) -> finite float32 array."""
    flat = value if len(shape) == 1 else chain.from_iterable(value)
    bad = set(map(type, flat)) - {int, float}  # also catches true/false, which numpy would take as 1/0
    if bad:
        kinds = ", ".join(sorted(_JSON_TYPES.get(b, b.__name__) for b in bad))
        raise _fail(where, name, f"must hold numbers only, found {kinds}")
    try:
        with np.errstate(over="ignore"):  # too large for float32 -> inf, reported below
            arr = np.asarray(value, dtype=np.float32)
    except OverflowError:  # integers beyond float64
        raise _fail(where, name, "holds an integer too large for a float") from None
    finite = np.isfinite(arr)
    if not finite.all():
        idx = tuple(int(i) for i in np.argwhere(~finite)[0])
        at = idx[0] if len(idx) == 1 else list(idx)
        raise _fail(where, name, f"index {at} is {_item(value, idx)!r}; numbers must be finite and fit "
                                 f"float32 (|x| < 3.4e38)")
    return arr


def _item(value: Any, idx: tuple[int, ...]) -> Any:
    for i in idx:
        value = value[i]
    return value


def _finite_number(value: Any, where: str, name: str) -> float:
    if not _is_number(value):
        raise _fail(where, name, f"must be a number, got {_json_type(value)}")
    try:
        x = float(value)
    except OverflowError:
        x = float("inf")
    if not np.isfinite(x):
        raise _fail(where, name, f"is {value!r}; must be a finite number")
    return x


def _probability(value: Any, where: str, name: str) -> float:
    p = _finite_number(value, where, name)
    if not 0.0 < p <= 1.0:
        raise _fail(where, name, f"is {value!r}; a probability must be in (0, 1] (or null when unknown)")
    return p


# --- layout: sizes and response fields -------------------------------------------------------
def _initial_layout(num_candidates: int | None, slate_size: int | None) -> _Layout:
    sizes = {"N": num_candidates, "K": slate_size, "U": None, "D": None}
    origin = {"N": f"num_candidates={num_candidates}", "K": f"slate_size={slate_size}"}
    return _Layout(sizes, origin)


def _complete_layout(layout: _Layout, obj: dict[str, Any], number: int, where: str,
                     env: "str | EnvSpec | None") -> None:
    """Fill the sizes not given from the first line ``obj`` (after the env's, when ``env`` is set)."""
    line1 = f"as on line {number}"
    cands = _list(obj["candidates"], where, "candidates", "N candidate feature lists")
    if not cands:
        raise _fail(where, "candidates", "is empty; give at least one candidate")
    first = _list(cands[0], where, "candidates", "feature lists (lists of numbers)")
    slate = _list(obj["slate"], where, "slate", "candidate indices")
    user = _list(obj["user"], where, "user", "numbers")
    if not slate:
        raise _fail(where, "slate", "is empty; a slate shows at least one candidate")
    for key, value in (("N", len(cands)), ("K", len(slate))):
        if layout.sizes[key] is None:
            layout.sizes[key], layout.origin[key] = value, line1
    if env is not None:
        _env_layout(layout, env)
    for key, value in (("U", len(user)), ("D", len(first))):
        if layout.sizes[key] is None:
            layout.sizes[key], layout.origin[key] = value, line1
    _check_storable(layout, where)


def _env_layout(layout: _Layout, env: "str | EnvSpec") -> None:
    """U, D and the response fields of the env's observation space (its :class:`EnvSpec`, parameters
    included) at N candidates and slates of K."""
    from recsys_exp.offline.recorder import response_fields

    n, k = layout.sizes["N"], layout.sizes["K"]
    spec = dataclasses.replace(env if isinstance(env, EnvSpec) else EnvSpec(name=env), num_candidates=n, slate_size=k)
    try:
        space = spec.observation_space
    except (ValueError, TypeError) as e:
        raise LogImportError(f"--env {spec.name} with num_candidates={n}, slate_size={k}: {e}") from None
    where = f"the env {spec.name}"
    layout.env = spec.name
    layout.sizes["U"], layout.origin["U"] = space["user"].shape[0], where
    layout.sizes["D"], layout.origin["D"] = space["doc"].shape[1], where
    layout.env_responses = response_fields(space)


def _check_storable(layout: _Layout, where: str) -> None:
    # Zero-width user features are stored as empty variable-size lists (schema.logged_schema);
    # candidates without features would carry no information at all.
    for key, name in (("D", "candidates"),):
        if layout.sizes[key] == 0:
            raise _fail(where, name, f"{key}=0 features ({layout.origin[key]}): the logged-data Parquet "
                                     f"format cannot store zero-width feature lists yet")


def _response_kinds(layout: _Layout, names: list[str], where: str) -> dict[str, dict[str, Any]]:
    """The kinds of the first line's response fields (float, or the env's kind)."""
    if layout.env_responses is None:
        return {name: {"kind": "float"} for name in names}
    unknown = [n for n in names if n not in layout.env_responses]
    if unknown:
        allowed = ", ".join(layout.env_responses) or "none"
        raise _fail(where, f"response.{unknown[0]}", f"not a response field of the env {layout.env} "
                                                     f"(allowed: {allowed})")
    return {name: layout.env_responses[name] for name in names}


# --- one line ------------------------------------------------------------------------------------
def _check_keys(obj: dict[str, Any], where: str) -> None:
    allowed = REQUIRED_FIELDS + OPTIONAL_FIELDS
    for name in obj:
        if name not in allowed:
            raise _fail(where, name, f"unknown field; allowed: {', '.join(allowed)}")
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise _fail(where, name, f"missing; required fields: {', '.join(REQUIRED_FIELDS)}")


def _parse_line(obj: dict[str, Any], number: int, where: str, layout: _Layout, cols: _Columns) -> None:
    """Validate one line (its keys already checked) against ``layout``; append its values to ``cols``."""
    k, u = layout.sizes["K"], layout.sizes["U"]
    user = _list(obj["user"], where, "user", f"{u} numbers")
    layout.expect("U", len(user), where, "user", "user features")
    cols.user.append(_floats(user, (u,), where, "user"))
    cols.docs.append(_candidates(obj["candidates"], where, layout))
    slate = _slate(obj["slate"], where, layout)
    cols.slate.append(slate)
    cols.click.append(_click(obj["click"], where, k))
    cols.reward.append(_finite_number(obj["reward"], where, "reward"))
    p = obj.get("propensity")
    cols.propensity.append(np.nan if p is None else _probability(p, where, "propensity"))
    cols.slot_propensity.append(_slot_propensity(obj.get("slot_propensity"), where, layout))
    cols.session.append(_session(obj.get("session"), where))
    cols.step.append(_optional(obj.get("step"), where, "step", _is_int, "an integer"))
    cols.terminated.append(_optional(obj.get("terminated"), where, "terminated",
                                     lambda v: type(v) is bool, "true or false"))
    _responses(obj.get("response"), where, layout, cols)
    cols.line.append(number)


def _candidates(value: Any, where: str, layout: _Layout) -> np.ndarray:
    n, d = layout.sizes["N"], layout.sizes["D"]
    cands = _list(value, where, "candidates", f"{n} lists of {d} numbers")
    layout.expect("N", len(cands), where, "candidates", "candidates")
    if set(map(type, cands)) != {list} or set(map(len, cands)) != {d}:  # fast path: C-level checks
        for i, row in enumerate(cands):
            if type(row) is not list:
                raise _fail(where, "candidates", f"candidate {i} is {_json_type(row)}; each candidate must "
                                                 f"be a list of {d} numbers")
            if len(row) != d:
                raise _fail(where, "candidates", f"candidate {i} has {len(row)} features, expected {d} "
                                                 f"({layout.origin['D']})")
    return _floats(cands, (n, d), where, "candidates")


def _slate(value: Any, where: str, layout: _Layout) -> list[int]:
    n = layout.sizes["N"]
    slate = _list(value, where, "slate", "candidate indices")
    layout.expect("K", len(slate), where, "slate", "slate slots")
    for i in slate:
        if not (_is_int(i) and 0 <= i < n):
            raise _fail(where, "slate", f"index {i!r} is not a candidate index; allowed: integers 0..{n - 1}")
    if len(set(slate)) != len(slate):
        repeated = next(i for i in slate if slate.count(i) > 1)
        raise _fail(where, "slate", f"shows candidate {repeated} twice; slate indices must be distinct")
    return slate


def _click(value: Any, where: str, k: int) -> int:
    if value is None:
        return -1
    if not (_is_int(value) and -1 <= value < k):
        raise _fail(where, "click", f"is {json.dumps(value)}; allowed: the clicked slot 0..{k - 1}, "
                                    f"or null / -1 for no click")
    return value


def _slot_propensity(value: Any, where: str, layout: _Layout) -> list[float] | None:
    if value is None:
        return None
    k = layout.sizes["K"]
    probs = _list(value, where, "slot_propensity", f"{k} probabilities")
    layout.expect("K", len(probs), where, "slot_propensity", "probabilities (one per slot)")
    return [_probability(p, where, "slot_propensity") for p in probs]


def _session(value: Any, where: str) -> Any:
    if value is None:
        return None
    if type(value) not in (str, int):
        raise _fail(where, "session", f"must be a string or an integer, got {_json_type(value)}")
    return (type(value).__name__, value)  # "1" and 1 are different JSON values: different sessions


def _optional(value: Any, where: str, name: str, ok, allowed: str) -> Any:
    if value is not None and not ok(value):
        raise _fail(where, name, f"must be {allowed} (or absent), got {_json_type(value)}")
    return value


def _responses(value: Any, where: str, layout: _Layout, cols: _Columns) -> None:
    if value is None:
        value = {}
    if type(value) is not dict:
        raise _fail(where, "response", f"must be an object of per-slot lists, got {_json_type(value)}")
    if layout.responses is None:  # the first line fixes the field set
        if "click" in value:
            raise _fail(where, "response.click", "the click is the top-level 'click' field (the clicked slot)")
        layout.responses = _response_kinds(layout, list(value), where)
        cols.responses = {name: [] for name in layout.responses}
    if set(value) != set(layout.responses):
        have, want = sorted(value), sorted(layout.responses)
        raise _fail(where, "response", f"fields {have} differ from {want} (as on the first line); "
                                       f"every line must give the same response fields")
    k = layout.sizes["K"]
    for name, kind in layout.responses.items():
        label = f"response.{name}"
        values = _list(value[name], where, label, f"{k} numbers (one per slot)")
        layout.expect("K", len(values), where, label, "values (one per slot)")
        arr = _floats(values, (k,), where, label)
        if kind["kind"] == "discrete":
            _check_discrete(arr, kind["n"], values, where, label, layout.env)
        cols.responses[name].append(arr)


def _check_discrete(arr: np.ndarray, n: int, values: list, where: str, label: str, env: str | None) -> None:
    # The env's MultiDiscrete responses (e.g. cluster_id) become one-hot-like observation inputs:
    # a value outside 0..n-1 would not fit the env's observation space.
    if not (np.all(arr == np.round(arr)) and np.all((arr >= 0) & (arr < n))):
        raise _fail(where, label, f"is {values}; allowed: integers 0..{n - 1} (the env {env})")


# --- episodes ------------------------------------------------------------------------------------
def _episodes(cols: _Columns, src: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(order, episode_id, step, terminated): row order sorted by (episode, step) and the columns
    in that order. Checks steps (all or none per session, no duplicates) and ``terminated``."""
    n = len(cols.line)
    ids: dict[Any, int] = {}
    episode = np.empty(n, dtype=np.int64)
    for i, key in enumerate(cols.session):
        episode[i] = ids.setdefault(key if key is not None else ("line", i), len(ids))
    given = np.array([s is not None for s in cols.step])
    step_key = np.array([s if s is not None else 0 for s in cols.step], dtype=object)
    _check_steps_given(episode, given, cols, src)
    # Sessions with steps sort by them; others keep file order (the row index breaks ties).
    rank = np.where(given, _dense_rank(step_key), 0)
    order = np.lexsort((np.arange(n), rank, episode))
    ep, line = episode[order], np.asarray(cols.line)[order]
    dup = np.flatnonzero((ep[1:] == ep[:-1]) & given[order][1:] & (rank[order][1:] == rank[order][:-1]))
    if len(dup):
        a, b = sorted((line[dup[0]], line[dup[0] + 1]))
        raise _fail(f"{src}:{b}", "step", f"step {cols.step[order[dup[0]]]} repeats line {a}'s in the same "
                                          f"session; steps within a session must be distinct")
    first = np.ones(n, dtype=bool)
    first[1:] = ep[1:] != ep[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    last = np.ones(n, dtype=bool)
    last[:-1] = ep[1:] != ep[:-1]
    return order, ep, np.arange(n) - start, _terminated(cols, order, last, line, src)


def _dense_rank(values: np.ndarray) -> np.ndarray:
    # Steps are any JSON integers (timestamps, maybe beyond int64): rank them as Python ints.
    uniq = {v: r for r, v in enumerate(sorted(set(values.tolist())))}
    return np.array([uniq[v] for v in values.tolist()], dtype=np.int64)


def _check_steps_given(episode: np.ndarray, given: np.ndarray, cols: _Columns, src: Path) -> None:
    count = np.bincount(episode)
    with_step = np.bincount(episode, weights=given)
    mixed = np.flatnonzero((with_step > 0) & (with_step < count))
    if len(mixed):
        rows = np.flatnonzero(episode == mixed[0])
        other = rows[given[rows]][0]
        missing = rows[~given[rows]][0]
        raise _fail(f"{src}:{cols.line[missing]}", "step",
                    f"missing, but line {cols.line[other]} of the same session gives one; give 'step' on "
                    f"every line of a session or on none")


def _terminated(cols: _Columns, order: np.ndarray, last: np.ndarray, line: np.ndarray, src: Path) -> np.ndarray:
    given = [cols.terminated[i] for i in order]
    early = [j for j, t in enumerate(given) if t is True and not last[j]]
    if early:
        j = early[0]
        raise _fail(f"{src}:{line[j]}", "terminated",
                    f"true, but the session continues on line {line[j + 1]}; only a session's last line "
                    f"may be terminated")
    # An explicit false on a last line is kept (the log was cut); no next state is logged, so
    # learners still cannot bootstrap from it.
    return np.array([last[j] if t is None else t for j, t in enumerate(given)], dtype=bool)


# --- writing -------------------------------------------------------------------------------------
def _arrays(cols: _Columns, layout: _Layout, src: Path) -> dict[str, Any]:
    """All rows, sorted by (episode, step), in the chunk layout of the recorder's ``_table``."""
    order, episode, step, terminated = _episodes(cols, src)
    k, u = layout.sizes["K"], layout.sizes["U"]
    rows = len(order)
    slot = np.array([s if s is not None else [np.nan] * k for s in cols.slot_propensity], dtype=np.float64)
    return {
        "episode_id": episode, "step": step,
        "user": np.stack(cols.user).reshape(rows, u)[order], "docs": np.stack(cols.docs)[order],
        "slate": np.asarray(cols.slate, dtype=np.int64).reshape(rows, k)[order],
        "click": np.asarray(cols.click, dtype=np.int64)[order],
        "responses": {name: np.stack(v)[order] for name, v in cols.responses.items()},
        "reward": np.asarray(cols.reward, dtype=np.float64)[order],
        "terminated": terminated, "truncated": np.zeros(rows, dtype=bool),
        "propensity": np.asarray(cols.propensity, dtype=np.float64)[order], "slot_propensity": slot[order],
    }


def _part(arrays: dict[str, Any], lo: int, hi: int, layout: _Layout) -> dict[str, Any]:
    """Rows lo:hi as a recorder chunk: no next state is logged (``last`` False -> null columns)."""
    n, u, d = layout.sizes["N"], layout.sizes["U"], layout.sizes["D"]
    part = {key: value[lo:hi] for key, value in arrays.items() if key != "responses"}
    part["responses"] = {name: v[lo:hi] for name, v in arrays["responses"].items()}
    part["next_user"] = np.zeros((hi - lo, u), dtype=np.float32)
    part["next_docs"] = np.zeros((hi - lo, n, d), dtype=np.float32)
    part["last"] = np.zeros(hi - lo, dtype=bool)
    return part


def _write_parts(arrays: dict[str, Any], layout: _Layout, out_dir: Path, meta: dict[str, Any],
                 rows_per_file: int, created: list[Path]) -> list[dict[str, Any]]:
    """Write the rows as atomic part files of at most ``rows_per_file`` rows; their paths go to ``created``."""
    # The recorder's table builder (imported lazily: recorder pulls in torch, not needed to validate).
    from recsys_exp.offline.recorder import _table
    from recsys_exp.offline.schema import logged_schema, write_table_atomic

    n, k, u, d = (layout.sizes[key] for key in "NKUD")
    schema = logged_schema(n, k, u, d, layout.responses or {}, meta)
    rows = len(arrays["reward"])
    files: list[dict[str, Any]] = []
    for lo in range(0, rows, rows_per_file):
        hi = min(lo + rows_per_file, rows)
        path = out_dir / f"part-{len(files):05d}.parquet"
        created.append(path)
        write_table_atomic(_table([_part(arrays, lo, hi, layout)], schema), path)
        files.append({"file": path.name, "rows": hi - lo})
    return files


@contextmanager
def _undo_on_error(out_dir: Path) -> Iterator[list[Path]]:
    """If the block fails, remove the files it appended to the yielded list and the directories
    it created: an interrupted import (disk full, Ctrl-C) leaves nothing behind."""
    new_dirs = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    created: list[Path] = []
    try:
        yield created
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        for directory in new_dirs:
            if directory.exists() and not any(directory.iterdir()):
                directory.rmdir()
        raise


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise LogImportError(f"{out_dir}: the output path exists and is not a directory")
    if out_dir.exists() and any(out_dir.rglob("*.parquet")):
        raise LogImportError(f"{out_dir}: already holds .parquet files; import into a new or empty directory")


# --- public API ----------------------------------------------------------------------------------
def _parse(src: Path, env: "str | EnvSpec | None", num_candidates: int | None,
           slate_size: int | None) -> tuple[dict[str, Any], _Layout]:
    """Validate the whole log (LogImportError at the first problem); the rows sorted by
    (episode, step) and their layout."""
    layout = _initial_layout(num_candidates, slate_size)
    cols = _Columns()
    for number, where, obj in _objects(src):
        _check_keys(obj, where)
        if layout.sizes["U"] is None:
            _complete_layout(layout, obj, number, where, env)
        _parse_line(obj, number, where, layout, cols)
    if not cols.line:
        raise LogImportError(f"{src}: no interactions (the file is empty or all lines are blank)")
    return _arrays(cols, layout, src), layout


def import_jsonl(src: str | Path, out_dir: str | Path, env: str | EnvSpec | None = None,
                 num_candidates: int | None = None, slate_size: int | None = None,
                 rows_per_file: int = ROWS_PER_FILE) -> dict[str, Any]:
    """Convert the JSON-lines log ``src`` into ``out_dir/part-*.parquet`` and ``manifest.json``.

    ``env``: an env name or :class:`~recsys_exp.envs.spec.EnvSpec` (with its ``params``, e.g.
    ``env_spec(recsys_exp.compose([...]))``) to check sizes against its observation space (and take
    its response kinds); N and K are always the log's;
    ``num_candidates``/``slate_size``: sizes every line must have (default: the first line's).
    Returns the summary saved as ``manifest.json``: rows, episodes, files, path and the source.
    Raises :class:`LogImportError` (nothing written) when the log or ``out_dir`` is unusable.
    """
    from recsys_exp.run_dir import atomic_write_json

    if not (_is_int(rows_per_file) and rows_per_file > 0):
        raise ValueError(f"rows_per_file must be a positive integer, got {rows_per_file!r}")
    start = time.perf_counter()
    src, out_dir = Path(src), Path(out_dir)
    _check_out_dir(out_dir)
    arrays, layout = _parse(src, env, num_candidates, slate_size)
    env = env.name if isinstance(env, EnvSpec) else env
    meta = {"source": "jsonl", "file": str(src), **({"env": env} if env else {})}
    with _undo_on_error(out_dir) as created:
        files = _write_parts(arrays, layout, out_dir, meta, rows_per_file, created)
        summary = {"rows": len(arrays["reward"]), "episodes": int(arrays["episode_id"][-1]) + 1,
                   "files": files, "path": str(out_dir), "source": "jsonl", "file": str(src), "env": env,
                   "seconds": time.perf_counter() - start}
        manifest = out_dir / "manifest.json"
        if not manifest.exists():
            created.append(manifest)
        atomic_write_json(manifest, summary)  # last: its presence means the import is complete
    return summary


def _env_arg(name: str | None, params: list[str]) -> str | EnvSpec | None:
    """``--env`` and its ``--env-param KEY=VALUE`` values (parsed as YAML scalars) as an EnvSpec."""
    import yaml

    if not params:
        return name
    if name is None:
        raise LogImportError("--env-param: give --env too (the parameters are the env's)")
    parsed = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LogImportError(f"--env-param {item}: expected KEY=VALUE")
        parsed[key] = yaml.safe_load(value)
    return EnvSpec(name=name, params=parsed)


def main(argv: list[str] | None = None) -> int:
    """CLI: import one log, print a one-line summary; bad input -> ``recsys_exp: <message>``, exit 2."""
    parser = argparse.ArgumentParser(prog="python -m recsys_exp.offline.jsonl",
                                     description="Import a JSON-lines recommendation log as logged-data Parquet.")
    parser.add_argument("src", help="the JSON-lines log")
    parser.add_argument("out_dir", help="a new (or empty) directory for part-*.parquet and manifest.json")
    parser.add_argument("--env", help="check sizes against this env (e.g. interest_evolution)")
    parser.add_argument("--env-param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of --env (as env.params.KEY in a config; repeatable), e.g. "
                             "--env-param num_topics=5")
    parser.add_argument("--num-candidates", type=int, help="candidates per line (default: the first line's)")
    parser.add_argument("--slate-size", type=int, help="slate length (default: the first line's)")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE, help="rows per Parquet part file")
    args = parser.parse_args(argv)
    try:
        env = _env_arg(args.env, args.env_param)
        s = import_jsonl(args.src, args.out_dir, env=env, num_candidates=args.num_candidates,
                         slate_size=args.slate_size, rows_per_file=args.rows_per_file)
    except LogImportError as e:
        print(f"recsys_exp: {e}", file=sys.stderr)
        return 2
    print(f"imported {s['rows']} rows ({s['episodes']} episodes) from {s['file']} into {s['path']} "
          f"({len(s['files'])} part file{'s' if len(s['files']) != 1 else ''}, {s['seconds']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
