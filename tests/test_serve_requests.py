"""Request-body validation of the slate-recommendation server (recsys_exp.serve.requests). Fast, no Ray."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from recsys_exp.envs import make_vector_env
from recsys_exp.serve.requests import ObservationSpec, RequestError, parse_feedback, parse_recommend

N, K, U, D = 10, 2, 20, 20
SPEC = ObservationSpec(N, K, U, D, {"click": 2, "cluster_id": 20, "quality": None, "watch_time": None},
                       max_body_bytes=200_000, max_batch=4)


def _req(seed: int = 0, response: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    r = {"user": rng.uniform(-1, 1, U).tolist(), "docs": rng.uniform(0, 1, (N, D)).tolist()}
    if response is not None:
        r["response"] = response
    return r


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def _raises(body: bytes, status: int, pattern: str, spec: ObservationSpec = SPEC) -> RequestError:
    with pytest.raises(RequestError, match=pattern) as info:
        parse_recommend(body, spec)
    assert info.value.status == status
    assert "\n" not in info.value.message and str(info.value) == info.value.message
    return info.value


def test_single_round_trip_and_zero_response():
    req = _req(1)
    obs, is_batch = parse_recommend(_body(req), SPEC)
    assert is_batch is False
    assert obs["user"].shape == (1, U) and obs["user"].dtype == np.float32
    assert obs["doc"].shape == (1, N, D) and obs["doc"].dtype == np.float32
    np.testing.assert_allclose(obs["user"][0], req["user"], rtol=1e-6)
    np.testing.assert_allclose(obs["doc"][0], req["docs"], rtol=1e-6)
    assert set(obs["response"]) == set(SPEC.response_fields)
    for name, n in SPEC.response_fields.items():
        arr = obs["response"][name]
        assert arr.shape == (1, K) and arr.dtype == (np.int64 if n else np.float32)
        assert not arr.any()


def test_batch_round_trip_response_fields_land_right():
    reqs = [_req(0), _req(1, {"click": [0, 1], "quality": [0.5, -2]}), _req(2, {"cluster_id": [19, 3]}),
            _req(3, None)]
    reqs[3]["response"] = None  # null == absent
    obs, is_batch = parse_recommend(_body(reqs), SPEC)
    assert is_batch is True
    assert obs["user"].shape == (4, U) and obs["doc"].shape == (4, N, D)
    for b, r in enumerate(reqs):
        np.testing.assert_allclose(obs["doc"][b], r["docs"], rtol=1e-6)
        np.testing.assert_allclose(obs["user"][b], r["user"], rtol=1e-6)
    resp = obs["response"]
    np.testing.assert_array_equal(resp["click"], [[0, 0], [0, 1], [0, 0], [0, 0]])
    np.testing.assert_array_equal(resp["cluster_id"], [[0, 0], [0, 0], [19, 3], [0, 0]])
    np.testing.assert_array_equal(resp["quality"], np.array([[0, 0], [0.5, -2], [0, 0], [0, 0]], np.float32))
    assert not resp["watch_time"].any()
    assert resp["click"].dtype == np.int64 and resp["quality"].dtype == np.float32


def test_batch_of_one_and_integers_accepted():
    req = {"user": [1] * U, "docs": [[0] * D] * N}
    obs, is_batch = parse_recommend(_body([req]), SPEC)
    assert is_batch and obs["user"].shape == (1, U) and obs["user"].dtype == np.float32
    assert (obs["user"] == 1).all()


def _single(**changes) -> bytes:
    r = _req(0)
    for k, v in changes.items():
        if v is _DROP:
            r.pop(k)
        else:
            r[k] = v
    return _body(r)


_DROP = object()
_GOOD_DOCS = _req(0)["docs"]
_BAD_DOC = [row[:] for row in _GOOD_DOCS]
_BAD_DOC[2] = _BAD_DOC[2][:-1]
_STR_DOC = [row[:] for row in _GOOD_DOCS]
_STR_DOC[4][7] = "0.5"
_BOOL_USER = [0.0] * U
_BOOL_USER[5] = True

SINGLE_ERRORS = [
    pytest.param(b"", 400, r"^body: invalid JSON", id="empty"),
    pytest.param(b"{\"user\": [1,", 400, r"^body: invalid JSON \(", id="truncated"),
    pytest.param(b"\xff\xfe{}", 400, r"^body: invalid JSON \(not UTF-8", id="not-utf8"),
    pytest.param(b'{"user": [], "user": []}', 400, r"duplicate key 'user'", id="duplicate-key"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, r"^body: invalid JSON", id="deep-nesting"),
    pytest.param(b'"hello"', 400, r"^body: expected an object or an array", id="top-string"),
    pytest.param(b"3", 400, r"^body: expected an object or an array", id="top-number"),
    pytest.param(b"[]", 400, r"^body: empty batch", id="empty-batch"),
    pytest.param(_single(user=_DROP), 422, r"^user: required$", id="no-user"),
    pytest.param(_single(docs=_DROP), 422, r"^docs: required$", id="no-docs"),
    pytest.param(_single(extra=1), 422, r"^'extra': unknown field \(allowed: user, docs, response\)$",
                 id="unknown-key"),
    pytest.param(_single(user="abc"), 422, r"^user: expected an array of 20 numbers, got string$",
                 id="user-string"),
    pytest.param(_single(user=[0.0] * (U - 1)), 422, r"^user: expected 20 numbers, got 19$", id="user-short"),
    pytest.param(_single(user=_BOOL_USER), 422, r"^user\[5\]: expected a number, got boolean$", id="user-bool"),
    pytest.param(_single(user=[None] * U), 422, r"^user\[0\]: expected a number, got null$", id="user-null"),
    pytest.param(_single(user=[[0.0]] * U), 422, r"^user\[0\]: expected a number, got array$", id="user-nested"),
    pytest.param(_single(user=[0.0] * 3 + [float("nan")] + [0.0] * (U - 4)), 422,
                 r"^user\[3\]: not a finite number$", id="user-nan"),
    pytest.param(_single(user=[0.0] * 3 + [float("inf")] + [0.0] * (U - 4)), 422,
                 r"^user\[3\]: not a finite number$", id="user-inf"),
    pytest.param(_single(user=[0.0] * 3 + [1e300] + [0.0] * (U - 4)), 422,
                 r"^user\[3\]: out of float32 range$", id="user-float32-overflow"),
    pytest.param(_single(user=[0] * 6 + [10**400] + [0] * (U - 7)), 422,
                 r"^user\[6\]: not a finite number$", id="user-huge-int"),
    pytest.param(_single(docs=_GOOD_DOCS[:-1]), 422, r"^docs: expected 10 candidates, got 9$", id="docs-9"),
    pytest.param(_single(docs={"a": 1}), 422, r"^docs: expected an array of 10 candidates, got object$",
                 id="docs-object"),
    pytest.param(_single(docs=_BAD_DOC), 422, r"^docs\[2\]: expected 20 features, got 19$", id="doc-short"),
    pytest.param(_single(docs=_STR_DOC), 422, r"^docs\[4\]\[7\]: expected a number, got string$",
                 id="doc-string"),
    pytest.param(_single(docs=[[0.5] * D] * 8 + [[0.5] * 9 + [float("-inf")] + [0.5] * 10] * 2), 422,
                 r"^docs\[8\]\[9\]: not a finite number$", id="doc-inf"),
    pytest.param(_single(response=[1, 0]), 422, r"^response: expected an object, got array$",
                 id="response-list"),
    pytest.param(_single(response={"clicks": [0, 0]}), 422,
                 r"^response\.'clicks': unknown field \(allowed: click, cluster_id, quality, watch_time\)$",
                 id="response-unknown"),
    pytest.param(_single(response={"click": [0, 2]}), 422, r"^response\.click\[1\]: must be an integer in 0\.\.1$",
                 id="click-range"),
    pytest.param(_single(response={"click": [-1, 0]}), 422, r"^response\.click\[0\]: must be an integer in 0\.\.1$",
                 id="click-negative"),
    pytest.param(_single(response={"click": [0, 1.0]}), 422, r"^response\.click\[1\]: must be an integer",
                 id="click-float"),
    pytest.param(_single(response={"click": [True, 0]}), 422, r"^response\.click\[0\]: must be an integer",
                 id="click-bool"),
    pytest.param(_single(response={"cluster_id": [0, 20]}), 422,
                 r"^response\.cluster_id\[1\]: must be an integer in 0\.\.19$", id="cluster-range"),
    pytest.param(_single(response={"click": [0]}), 422, r"^response\.click: expected 2 integers, got 1$",
                 id="click-short"),
    pytest.param(_single(response={"click": 1}), 422, r"^response\.click: expected an array of 2 integers",
                 id="click-scalar"),
    pytest.param(_single(response={"quality": [0.0, float("nan")]}), 422,
                 r"^response\.quality\[1\]: not a finite number$", id="quality-nan"),
    pytest.param(_single(response={"watch_time": ["1", 2]}), 422,
                 r"^response\.watch_time\[0\]: expected a number, got string$", id="watch-string"),
]


@pytest.mark.parametrize("body,status,pattern", SINGLE_ERRORS)
def test_single_errors(body, status, pattern):
    _raises(body, status, pattern)


def _batch(i: int, **changes) -> bytes:
    reqs = [_req(b) for b in range(4)]
    reqs[i].update(changes)
    return _body(reqs)


BATCH_ERRORS = [
    pytest.param(_body([_req(0)] * 5), 413, r"^body: batch of 5 requests exceeds the limit of 4$", id="too-long"),
    pytest.param(_body([_req(0), 7]), 422, r"^requests\[1\]: expected an object, got number$", id="not-object"),
    pytest.param(_body([_req(0), {"docs": _GOOD_DOCS}]), 422, r"^requests\[1\]\.user: required$", id="no-user"),
    pytest.param(_batch(3, docs=_GOOD_DOCS[:-1]), 422, r"^requests\[3\]\.docs: expected 10 candidates, got 9$",
                 id="docs-9"),
    pytest.param(_batch(3, docs=_BAD_DOC), 422, r"^requests\[3\]\.docs\[2\]: expected 20 features, got 19$",
                 id="doc-short"),
    pytest.param(_batch(2, foo=1), 422, r"^requests\[2\]\.'foo': unknown field \(allowed: user, docs, response\)$",
                 id="unknown-key"),
    pytest.param(_batch(1, user=[0.0] * 3 + [float("nan")] + [0.0] * (U - 4)), 422,
                 r"^requests\[1\]\.user\[3\]: not a finite number$", id="user-nan"),
    pytest.param(_batch(2, docs=[[0.5] * D] * 5 + [[float("inf")] * D] * 5), 422,
                 r"^requests\[2\]\.docs\[5\]\[0\]: not a finite number$", id="doc-inf"),
    pytest.param(_batch(2, response={"click": [1, 3]}), 422,
                 r"^requests\[2\]\.response\.click\[1\]: must be an integer in 0\.\.1$", id="click-range"),
    pytest.param(_batch(3, response={"quality": [0.0, float("inf")]}), 422,
                 r"^requests\[3\]\.response\.quality\[1\]: not a finite number$", id="quality-inf"),
]


@pytest.mark.parametrize("body,status,pattern", BATCH_ERRORS)
def test_batch_errors(body, status, pattern):
    _raises(body, status, pattern)


def test_float_response_error_index_with_sparse_rows():
    reqs = [_req(0, {"quality": [1.0, 2.0]}), _req(1), _req(2, {"quality": [float("nan"), 0.0]})]
    _raises(_body(reqs), 422, r"^requests\[2\]\.response\.quality\[0\]: not a finite number$")


def test_oversized_body_413_before_parsing():
    spec = ObservationSpec(N, K, U, D, {"click": 2}, max_body_bytes=1000)
    err = _raises(b"\xff" * 1001, 413, r"^body: 1001 bytes exceeds the limit of 1000 bytes$", spec)
    assert err.status == 413
    # exactly at the limit: parsed (and rejected as invalid JSON, not as too large)
    _raises(b"\xff" * 1000, 400, r"^body: invalid JSON", spec)


def test_request_error_is_value_error_and_pickles():
    err = RequestError(422, "user: required")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.message) == (422, "user: required")


@pytest.mark.parametrize("name,fields,u,d", [
    ("interest_evolution", {"click": 2, "cluster_id": 20, "quality": None, "watch_time": None}, 20, 20),
    ("long_term_satisfaction", {"click": 2, "engagement": None}, 0, 1),
    ("interest_exploration", {"click": 2, "cluster_id": 2, "quality": None}, 0, 3),
])
def test_from_space_matches_env(name, fields, u, d):
    env = make_vector_env(name, 1, seed=0)
    try:
        space = env.single_observation_space
        spec = ObservationSpec.from_space(space, max_body_bytes=12_345, max_batch=7)
        assert (spec.num_candidates, spec.slate_size, spec.user_dim, spec.doc_dim) == (10, 2, u, d)
        assert spec.response_fields == fields
        assert (spec.max_body_bytes, spec.max_batch) == (12_345, 7)
        # a parsed request is a valid (batched) observation of the env
        req = {"user": [0.0] * u, "docs": [[0.5] * d] * 10, "response": {"click": [1, 0]}}
        obs, _ = parse_recommend(_body(req), spec)
        single = {"user": obs["user"][0], "doc": obs["doc"][0],
                  "response": {k: v[0] for k, v in obs["response"].items()}}
        assert space.contains(single)
        env_obs, _ = env.reset(seed=0)
        assert obs["doc"].dtype == env_obs["doc"].dtype and obs["user"].shape[1:] == env_obs["user"].shape[1:]
        for k, v in env_obs["response"].items():
            assert obs["response"][k].shape[1:] == v.shape[1:]
            assert obs["response"][k].dtype.kind == v.dtype.kind
    finally:
        env.close()


def test_zero_user_dim_env():
    spec = ObservationSpec.from_space(make_vector_env("long_term_satisfaction", 1, seed=0).single_observation_space)
    obs, _ = parse_recommend(_body({"user": [], "docs": [[0.3]] * 10, "response": {"engagement": [1.5, 0]}}), spec)
    assert obs["user"].shape == (1, 0) and obs["doc"].shape == (1, 10, 1)
    np.testing.assert_allclose(obs["response"]["engagement"], [[1.5, 0.0]])
    obs, _ = parse_recommend(_body([{"user": [], "docs": [[0.3]] * 10}] * 3), spec)
    assert obs["user"].shape == (3, 0)
    with pytest.raises(RequestError, match=r"^user: expected 0 numbers, got 1$"):
        parse_recommend(_body({"user": [1.0], "docs": [[0.3]] * 10}), spec)


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError):
        ObservationSpec(10, 11, 0, 1, {"click": 2})
    with pytest.raises(ValueError):
        ObservationSpec(10, 2, -1, 1, {"click": 2})


# ---- feedback -------------------------------------------------------------------------------------

def test_feedback_ok():
    assert parse_feedback(_body({"request_id": "abc", "reward": 1}), 1000) == ("abc", 1.0)
    rid, reward = parse_feedback(_body({"reward": -0.25, "request_id": "x" * 128}), 1000)
    assert rid == "x" * 128 and reward == -0.25 and type(reward) is float


@pytest.mark.parametrize("body,status,pattern", [
    pytest.param(b"x" * 1001, 413, r"^body: 1001 bytes exceeds the limit of 1000 bytes$", id="too-big"),
    pytest.param(b"", 400, r"^body: invalid JSON", id="empty"),
    pytest.param(b"{", 400, r"^body: invalid JSON", id="bad-json"),
    pytest.param(b"[1]", 400, r"^body: expected an object, got array$", id="list"),
    pytest.param(_body({"reward": 1.0}), 422, r"^request_id: required$", id="no-id"),
    pytest.param(_body({"request_id": "a"}), 422, r"^reward: required$", id="no-reward"),
    pytest.param(_body({"request_id": "a", "reward": 1, "x": 2}), 422,
                 r"^'x': unknown field \(allowed: request_id, reward\)$", id="unknown"),
    pytest.param(_body({"request_id": 5, "reward": 1}), 422, r"^request_id: expected a string, got number$",
                 id="id-number"),
    pytest.param(_body({"request_id": "", "reward": 1}), 422, r"^request_id: must be 1\.\.128 characters, got 0$",
                 id="id-empty"),
    pytest.param(_body({"request_id": "x" * 129, "reward": 1}), 422, r"^request_id: must be 1\.\.128 characters",
                 id="id-long"),
    pytest.param(_body({"request_id": "a", "reward": True}), 422, r"^reward: expected a number, got boolean$",
                 id="reward-bool"),
    pytest.param(_body({"request_id": "a", "reward": "1"}), 422, r"^reward: expected a number, got string$",
                 id="reward-string"),
    pytest.param(_body({"request_id": "a", "reward": float("nan")}), 422, r"^reward: not a finite number$",
                 id="reward-nan"),
    pytest.param(_body({"request_id": "a", "reward": 10**400}), 422, r"^reward: not a finite number$",
                 id="reward-huge"),
])
def test_feedback_errors(body, status, pattern):
    with pytest.raises(RequestError, match=pattern) as info:
        parse_feedback(body, 1000)
    assert info.value.status == status
