"""Validation of HTTP request bodies for the slate-recommendation server (pure Python + numpy).

Recommend (``POST <route_prefix>``), a JSON object for one user::

    {"user": [U numbers],                      # user features (``[]`` when U == 0)
     "docs": [[D numbers], ... N candidates],  # candidate document features
     "response": {"click": [K ints], ...}}     # optional: the user's response to the previous slate

or a JSON list of 1..``max_batch`` such objects (a batch). ``response`` and each of its fields are
optional: missing ones (or ``"response": null``) are zeros, i.e. the start of a session. Discrete
response fields take integers in ``0..n-1``, float fields finite numbers. Booleans, strings, NaN and
Infinity are rejected wherever a number is expected; unknown keys are rejected.

Feedback: ``{"request_id": "<1..128 chars>", "reward": <finite number>}``.

Every bad input raises :class:`RequestError` (``status`` 400, 413 or 422) with a one-line ``message``
that names the offending field, prefixed with ``requests[i].`` inside a batch, e.g.
``requests[3].docs[2]: expected 20 features, got 19``. Structural errors of every request of a batch
are found before numeric (non-finite) ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

__all__ = ["ObservationSpec", "RequestError", "parse_feedback", "parse_recommend"]

_TOP_KEYS = ("user", "docs", "response")
_FEEDBACK_KEYS = ("request_id", "reward")
_MAX_REQUEST_ID = 128
_NUM_TYPES = (int, float)  # exact types from json.loads; bool is excluded on purpose


class RequestError(ValueError):
    """A client error: HTTP ``status`` (400, 413 or 422) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        message = " ".join(str(message).split("\n"))
        super().__init__(message)
        self.status = int(status)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.status, self.message))


@dataclass(frozen=True)
class ObservationSpec:
    """Shapes of one observation; ``response_fields`` maps field -> number of values (None: float)."""

    num_candidates: int
    slate_size: int
    user_dim: int
    doc_dim: int
    response_fields: dict[str, int | None] = field(default_factory=lambda: {"click": 2})
    max_body_bytes: int = 1_000_000
    max_batch: int = 256

    def __post_init__(self) -> None:
        for name in ("num_candidates", "slate_size", "doc_dim", "max_body_bytes", "max_batch"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"ObservationSpec.{name} must be a positive int, got {v!r}")
        if type(self.user_dim) is not int or self.user_dim < 0:
            raise ValueError(f"ObservationSpec.user_dim must be a non-negative int, got {self.user_dim!r}")
        if self.slate_size > self.num_candidates:
            raise ValueError("ObservationSpec.slate_size must be <= num_candidates")
        for k, n in self.response_fields.items():
            if not isinstance(k, str) or not (n is None or (type(n) is int and n >= 1)):
                raise ValueError(f"ObservationSpec.response_fields[{k!r}] must be a positive int or None")

    @classmethod
    def from_space(cls, space: Any, max_body_bytes: int = 1_000_000, max_batch: int = 256) -> ObservationSpec:
        """Spec of a gymnasium ``Dict(user=Box(U,), doc=Box(N, D), response=Dict(...))`` space."""
        (u_dim,) = space["user"].shape
        n, d = space["doc"].shape
        fields: dict[str, int | None] = {}
        k = None
        for name, sub in space["response"].spaces.items():
            if hasattr(sub, "nvec"):  # MultiDiscrete
                nvec = np.asarray(sub.nvec).reshape(-1)
                if nvec.size == 0 or np.any(nvec != nvec[0]):
                    raise ValueError(f"response.{name}: needs the same number of values in every slot")
                fields[name] = int(nvec[0])
                shape = tuple(np.shape(sub.nvec))
            elif hasattr(sub, "low") and np.issubdtype(sub.dtype, np.floating):  # float Box
                fields[name] = None
                shape = tuple(sub.shape)
            else:
                raise ValueError(f"response.{name}: unsupported space {sub!r}")
            if len(shape) != 1 or (k is not None and shape[0] != k):
                raise ValueError(f"response.{name}: expected shape (K,), got {shape}")
            k = shape[0]
        if k is None:
            raise ValueError("response: no fields")
        return cls(int(n), int(k), int(u_dim), int(d), fields, max_body_bytes, max_batch)


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _key(k: str) -> str:
    """A user-supplied key, quoted and shortened for a one-line message."""
    r = repr(k)
    return r if len(r) <= 40 else r[:37] + "..."


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise RequestError(400, f"body: invalid JSON (duplicate key {_key(k)})")
            seen.add(k)
    return d


def _load(body: bytes, max_body_bytes: int) -> Any:
    """Size check first (413), then UTF-8 + JSON decoding (400)."""
    if not isinstance(body, (bytes, bytearray)):
        raise RequestError(400, f"body: expected bytes, got {type(body).__name__}")
    if len(body) > max_body_bytes:
        raise RequestError(413, f"body: {len(body)} bytes exceeds the limit of {max_body_bytes} bytes")
    if len(body) == 0:
        raise RequestError(400, "body: invalid JSON (empty body)")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, f"body: invalid JSON (not UTF-8: {e.reason} at byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as e:
        raise RequestError(400, f"body: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise RequestError(400, "body: invalid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer literal with too many digits
        raise RequestError(400, f"body: invalid JSON ({str(e).splitlines()[0][:100]})") from None


def _check_numbers(v: Any, n: int, path: str, what: str) -> None:
    """``v`` must be a list of exactly ``n`` JSON numbers (not booleans)."""
    if type(v) is not list:
        raise RequestError(422, f"{path}: expected an array of {n} {what}, got {_type_name(v)}")
    if len(v) != n:
        raise RequestError(422, f"{path}: expected {n} {what}, got {len(v)}")
    for j, x in enumerate(v):
        if type(x) not in _NUM_TYPES:
            raise RequestError(422, f"{path}[{j}]: expected a number, got {_type_name(x)}")


def _to_float(values: list, prefixes: list[str], name: str) -> np.ndarray:
    """float32 array of structurally valid nested lists (one per request); a bad entry -> 422.

    Checked in float64 (NaN/inf, integers beyond float64) and then for float32 overflow.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except OverflowError:  # integer literal beyond float64: locate it in Python
        _fail(_find_overflow(values), prefixes, name, "not a finite number")
    bad = ~np.isfinite(arr)
    if bad.any():
        _fail(np.argwhere(bad)[0], prefixes, name, "not a finite number")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        _fail(np.argwhere(bad)[0], prefixes, name, "out of float32 range")
    return out


def _fail(idx: Any, prefixes: list[str], name: str, what: str) -> NoReturn:
    b, *rest = (int(i) for i in idx)
    raise RequestError(422, f"{prefixes[b]}{name}{''.join(f'[{i}]' for i in rest)}: {what}")


def _find_overflow(values: Any, idx: tuple = ()) -> tuple:
    if isinstance(values, list):
        for i, v in enumerate(values):
            r = _find_overflow(v, idx + (i,))
            if r:
                return r
        return ()
    try:
        float(values)
    except OverflowError:
        return idx
    return ()


def _check_request(req: Any, spec: ObservationSpec, prefix: str) -> dict[str, list]:
    """Structural checks of one request object; returns its per-field response lists (may be empty)."""
    if type(req) is not dict:
        where = prefix[:-1] if prefix else "body"
        raise RequestError(422 if prefix else 400, f"{where}: expected an object, got {_type_name(req)}")
    for k in req:
        if k not in _TOP_KEYS:
            raise RequestError(422, f"{prefix}{_key(k)}: unknown field (allowed: {', '.join(_TOP_KEYS)})")
    for k in ("user", "docs"):
        if k not in req:
            raise RequestError(422, f"{prefix}{k}: required")
    _check_numbers(req["user"], spec.user_dim, f"{prefix}user", "numbers")
    docs = req["docs"]
    if type(docs) is not list:
        raise RequestError(422, f"{prefix}docs: expected an array of {spec.num_candidates} candidates, "
                                f"got {_type_name(docs)}")
    if len(docs) != spec.num_candidates:
        raise RequestError(422, f"{prefix}docs: expected {spec.num_candidates} candidates, got {len(docs)}")
    for i, doc in enumerate(docs):
        _check_numbers(doc, spec.doc_dim, f"{prefix}docs[{i}]", "features")
    resp = req.get("response")
    if resp is None:
        return {}
    if type(resp) is not dict:
        raise RequestError(422, f"{prefix}response: expected an object, got {_type_name(resp)}")
    for name, vals in resp.items():
        if name not in spec.response_fields:
            raise RequestError(422, f"{prefix}response.{_key(name)}: unknown field "
                                    f"(allowed: {', '.join(spec.response_fields)})")
        path = f"{prefix}response.{name}"
        n = spec.response_fields[name]
        if n is None:
            _check_numbers(vals, spec.slate_size, path, "numbers")
            continue
        if type(vals) is not list:
            raise RequestError(422, f"{path}: expected an array of {spec.slate_size} integers, "
                                    f"got {_type_name(vals)}")
        if len(vals) != spec.slate_size:
            raise RequestError(422, f"{path}: expected {spec.slate_size} integers, got {len(vals)}")
        for j, x in enumerate(vals):
            if type(x) is not int or not 0 <= x < n:
                raise RequestError(422, f"{path}[{j}]: must be an integer in 0..{n - 1}")
    return resp


def parse_recommend(body: bytes, spec: ObservationSpec) -> tuple[dict, bool]:
    """Validate a recommend body; returns ``(obs, is_batch)`` with the env's observation layout, batched.

    ``obs = {"user": (B, U) float32, "doc": (B, N, D) float32, "response": {field: (B, K)}}``, discrete
    response fields int64, float ones float32; B is 1 for a single (non-list) request.
    """
    data = _load(body, spec.max_body_bytes)
    if type(data) is dict:
        reqs, is_batch, prefixes = [data], False, [""]
    elif type(data) is list:
        if not data:
            raise RequestError(400, "body: empty batch (expected 1 or more requests)")
        if len(data) > spec.max_batch:
            raise RequestError(413, f"body: batch of {len(data)} requests exceeds the limit of "
                                    f"{spec.max_batch}")
        reqs, is_batch = data, True
        prefixes = [f"requests[{b}]." for b in range(len(data))]
    else:
        raise RequestError(400, f"body: expected an object or an array of objects, got {_type_name(data)}")

    resps = [_check_request(r, spec, p) for r, p in zip(reqs, prefixes)]
    b_size, k = len(reqs), spec.slate_size
    user = _to_float([r["user"] for r in reqs], prefixes, "user").reshape(b_size, spec.user_dim)
    doc = _to_float([r["docs"] for r in reqs], prefixes, "docs")
    response: dict[str, np.ndarray] = {}
    for name, n in spec.response_fields.items():
        rows = [b for b, resp in enumerate(resps) if name in resp]
        if n is not None:  # already checked: ints in 0..n-1
            arr = np.zeros((b_size, k), dtype=np.int64)
            if rows:
                arr[rows] = [resps[b][name] for b in rows]
        else:
            arr = np.zeros((b_size, k), dtype=np.float32)
            if rows:
                arr[rows] = _to_float([resps[b][name] for b in rows], [prefixes[b] for b in rows],
                                      f"response.{name}")
        response[name] = arr
    return {"user": user, "doc": doc, "response": response}, is_batch


def parse_feedback(body: bytes, max_body_bytes: int = 1_000_000) -> tuple[str, float]:
    """Validate ``{"request_id": str (1..128 chars), "reward": finite number}``; returns both."""
    data = _load(body, max_body_bytes)
    if type(data) is not dict:
        raise RequestError(400, f"body: expected an object, got {_type_name(data)}")
    for k in data:
        if k not in _FEEDBACK_KEYS:
            raise RequestError(422, f"{_key(k)}: unknown field (allowed: {', '.join(_FEEDBACK_KEYS)})")
    for k in _FEEDBACK_KEYS:
        if k not in data:
            raise RequestError(422, f"{k}: required")
    rid, reward = data["request_id"], data["reward"]
    if type(rid) is not str:
        raise RequestError(422, f"request_id: expected a string, got {_type_name(rid)}")
    if not 1 <= len(rid) <= _MAX_REQUEST_ID:
        raise RequestError(422, f"request_id: must be 1..{_MAX_REQUEST_ID} characters, got {len(rid)}")
    if type(reward) not in _NUM_TYPES:
        raise RequestError(422, f"reward: expected a number, got {_type_name(reward)}")
    try:
        value = float(reward)
    except OverflowError:
        value = float("inf")
    if not np.isfinite(value):
        raise RequestError(422, "reward: not a finite number")
    return rid, value
