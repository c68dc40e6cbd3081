"""Importing JSON-lines logs (recsys_exp.offline.jsonl): round trips through LoggedData.read,
episodes from sessions and steps, env checks, one-line errors that leave no files behind, the CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_exp.offline.dataset import LoggedData
from recsys_exp.offline.jsonl import LogImportError, import_jsonl

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "logs" / "sample.jsonl"


def make_line(rng: np.random.Generator, n: int = 3, k: int = 2, u: int = 2, d: int = 2, **fields) -> dict:
    """A valid interaction with random features; ``fields`` override or add keys."""
    line = {"user": rng.normal(size=u).tolist(), "candidates": rng.uniform(size=(n, d)).tolist(),
            "slate": rng.permutation(n)[:k].tolist(), "click": int(rng.integers(-1, k)),
            "reward": float(rng.normal())}
    line.update(fields)
    return line


def write_lines(path: Path, lines: list) -> Path:
    """Lines as JSON (NaN literals allowed, like Python's json writes them); str lines written raw."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def at(path: Path, line: int) -> str:
    """Regex for the start of an error message about ``line`` of ``path``."""
    return rf"^{re.escape(str(path))}:{line}: "


def parquet_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.parquet")) if path.exists() else []


# --- round trips ---------------------------------------------------------------------------------
def test_round_trip_sessions_sorted_by_step(tmp_path):
    rng = np.random.default_rng(0)
    # Three sessions interleaved in the file, steps out of order; some lines lack propensity.
    plan = [("a", 2), ("b", 0), ("a", 0), ("c", 5), ("b", 1), ("a", 1), ("c", 3), ("a", 7)]
    lines = []
    for i, (session, step) in enumerate(plan):
        extra = {} if i % 3 == 1 else {"propensity": float(rng.uniform(0.01, 1))}
        if i == 4:
            extra["click"] = None
        lines.append(make_line(rng, session=session, step=step, response={"watch_time": rng.uniform(size=2).tolist()},
                               **extra))
    src = write_lines(tmp_path / "log.jsonl", lines)
    summary = import_jsonl(src, tmp_path / "out")
    assert summary["rows"] == 8 and summary["episodes"] == 3 and summary["files"] == [{"file": "part-00000.parquet",
                                                                                       "rows": 8}]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"] == 8

    data = LoggedData.read(tmp_path / "out")
    assert data.meta["source"] == "jsonl" and data.meta["file"] == str(src) and "env" not in data.meta
    assert (data.meta["num_candidates"], data.meta["slate_size"], data.meta["user_dim"], data.meta["doc_dim"]) == \
        (3, 2, 2, 2)
    # Episode ids by first appearance (a, b, c); within each, ordered by the logged step, renumbered 0..
    expected = sorted(range(len(plan)), key=lambda i: ("abc".index(plan[i][0]), plan[i][1]))
    np.testing.assert_array_equal(data.episode_id, [0, 0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(data.step, [0, 1, 2, 3, 0, 1, 0, 1])
    np.testing.assert_array_equal(data.terminated, [False, False, False, True, False, True, False, True])
    assert not data.truncated.any()
    exp = [lines[i] for i in expected]
    np.testing.assert_allclose(data.user, np.array([x["user"] for x in exp], dtype=np.float32))
    np.testing.assert_allclose(data.docs, np.array([x["candidates"] for x in exp], dtype=np.float32))
    np.testing.assert_array_equal(data.slate, [x["slate"] for x in exp])
    np.testing.assert_array_equal(data.click, [-1 if x["click"] is None else x["click"] for x in exp])
    np.testing.assert_allclose(data.reward, [x["reward"] for x in exp])
    np.testing.assert_allclose(data.propensity, [x.get("propensity", math.nan) for x in exp])
    np.testing.assert_allclose(data.responses["watch_time"],
                               np.array([x["response"]["watch_time"] for x in exp], dtype=np.float32))
    assert np.isnan(data.slot_propensity).all() and np.isnan(data.next_user).all() and np.isnan(data.next_docs).all()


def test_sessions_without_steps_keep_file_order_and_explicit_terminated(tmp_path):
    rng = np.random.default_rng(1)
    lines = [make_line(rng, session=7, reward=float(i)) for i in range(3)]
    lines[-1]["terminated"] = False  # the log was cut: kept as logged
    lines.append(make_line(rng, session="7", reward=3.0, slot_propensity=[0.5, 0.25]))  # "7" is not 7
    import_jsonl(write_lines(tmp_path / "log.jsonl", lines), tmp_path / "out")
    data = LoggedData.read(tmp_path / "out")
    np.testing.assert_array_equal(data.episode_id, [0, 0, 0, 1])
    np.testing.assert_array_equal(data.reward, [0, 1, 2, 3])
    np.testing.assert_array_equal(data.terminated, [False, False, False, True])
    np.testing.assert_allclose(data.slot_propensity[3], [0.5, 0.25])
    assert np.isnan(data.slot_propensity[:3]).all()


def test_bandit_lines_are_one_step_episodes(tmp_path):
    rng = np.random.default_rng(2)
    lines = [make_line(rng, n=5, k=3, u=4, d=3, propensity=0.1) for _ in range(6)]
    src = write_lines(tmp_path / "log.jsonl", ["", *lines[:3], "   ", *lines[3:]])  # blank lines are skipped
    summary = import_jsonl(src, tmp_path / "out", rows_per_file=4)
    assert summary["episodes"] == 6 and [f["rows"] for f in summary["files"]] == [4, 2]
    data = LoggedData.read(tmp_path / "out")
    np.testing.assert_array_equal(data.episode_id, np.arange(6))
    np.testing.assert_array_equal(data.step, np.zeros(6))
    assert data.terminated.all() and not data.truncated.any()
    np.testing.assert_array_equal(data.slate, [x["slate"] for x in lines])


def env_space(n: int = 4, k: int = 2):
    from recsys_exp.envs import make_vector_env

    return make_vector_env("interest_evolution", 1, num_candidates=n, slate_size=k, seed=0).single_observation_space


def test_env_sizes_and_space_check(tmp_path):
    space = env_space()
    (n, d), u = space["doc"].shape, space["user"].shape[0]
    rng = np.random.default_rng(3)
    lines = [make_line(rng, n=n, k=2, u=u, d=d, session=i // 3,
                       response={"watch_time": [0.0, 2.5], "cluster_id": [3, 19]}) for i in range(6)]
    summary = import_jsonl(write_lines(tmp_path / "log.jsonl", lines), tmp_path / "out", env="interest_evolution",
                           num_candidates=4, slate_size=2)
    assert summary["rows"] == 6 and summary["episodes"] == 2
    data = LoggedData.read(tmp_path / "out")
    data.check_space(space, "test")
    assert data.meta["env"] == "interest_evolution"
    assert data.meta["response_fields"] == {"watch_time": {"kind": "float"},
                                           "cluster_id": {"kind": "discrete", "n": 20}}
    assert set(data.responses) == {"watch_time", "cluster_id"}  # quality: absent, read back as zeros

    lines[4]["candidates"] = [row[:-1] for row in lines[4]["candidates"]]
    src = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(LogImportError, match=at(src, 5) + rf"field 'candidates': candidate 0 has {d - 1} features, "
                                             rf"expected {d} \(the env interest_evolution\)"):
        import_jsonl(src, tmp_path / "out2", env="interest_evolution", num_candidates=4, slate_size=2)
    assert not (tmp_path / "out2").exists()


def test_logs_without_user_features_round_trip(tmp_path):
    """Long-Term Satisfaction has no user features: "user": [] imports and fits the env."""
    rng = np.random.default_rng(4)
    lines = [make_line(rng, n=4, k=2, u=0, d=1, session=i // 2) for i in range(4)]
    import_jsonl(write_lines(tmp_path / "lts.jsonl", lines), tmp_path / "out", env="long_term_satisfaction",
                 num_candidates=4, slate_size=2)
    data = LoggedData.read(tmp_path / "out")
    from recsys_exp.envs import make_vector_env

    data.check_space(make_vector_env("long_term_satisfaction", 1, num_candidates=4, slate_size=2, seed=0)
                     .single_observation_space, "test")
    assert data.user.shape == (4, 0) and data.docs.shape == (4, 4, 1)
    np.testing.assert_allclose(data.docs[:, :, 0], [np.array(x["candidates"])[:, 0] for x in lines], rtol=1e-6)


def test_env_sizes_from_first_line_and_env_errors(tmp_path):
    space = env_space(n=4, k=2)
    (n, d), u = space["doc"].shape, space["user"].shape[0]
    rng = np.random.default_rng(4)
    src = write_lines(tmp_path / "log.jsonl", [make_line(rng, n=n, k=2, u=u, d=d) for _ in range(2)])
    assert import_jsonl(src, tmp_path / "out", env="interest_evolution")["rows"] == 2
    LoggedData.read(tmp_path / "out").check_space(space, "test")
    # num_candidates given: the first line must have that many.
    with pytest.raises(LogImportError, match=at(src, 1) + rf"field 'candidates': 4 candidates, expected 5 "
                                             r"\(num_candidates=5\)"):
        import_jsonl(src, tmp_path / "o2", env="interest_evolution", num_candidates=5)
    with pytest.raises(LogImportError, match="unknown env 'nope'"):
        import_jsonl(src, tmp_path / "o3", env="nope")
    bad = write_lines(tmp_path / "bad.jsonl", [make_line(rng, n=n, k=2, u=u, d=d, response={"cluster_id": [3, 20]})])
    with pytest.raises(LogImportError, match=at(bad, 1) + r"field 'response.cluster_id': .*integers 0..19"):
        import_jsonl(bad, tmp_path / "o4", env="interest_evolution")
    bad = write_lines(tmp_path / "bad2.jsonl", [make_line(rng, n=n, k=2, u=u, d=d, response={"likes": [0, 1]})])
    with pytest.raises(LogImportError, match=at(bad, 1) + "field 'response.likes': not a response field of the env"):
        import_jsonl(bad, tmp_path / "o5", env="interest_evolution")
    assert not any(parquet_files(tmp_path / o) for o in ("o2", "o3", "o4", "o5"))


# --- errors --------------------------------------------------------------------------------------
def _set(**fields):
    return lambda line: {**line, **fields}


def _drop(name):
    return lambda line: {k: v for k, v in line.items() if k != name}


def _raw(text):
    return lambda line: text


def _cands(fn):
    return lambda line: {**line, "candidates": fn(line["candidates"])}


# (id, change to line 2 of 3 (N=3, K=2, U=2, D=2), field named in the message, or None)
ERRORS = [
    ("invalid-json", _raw('{"user": [1, 2], '), None),
    ("not-object", _raw("[1, 2, 3]"), None),
    *[(f"missing-{name}", _drop(name), name) for name in ("user", "candidates", "slate", "click", "reward")],
    ("unknown-field", _set(propensty=0.5), "propensty"),
    ("user-type", _set(user="0.1, 0.2"), "user"),
    ("user-string-item", _set(user=[0.1, "0.2"]), "user"),
    ("user-bool-item", _set(user=[0.1, True]), "user"),
    ("user-length", _set(user=[0.1, 0.2, 0.3]), "user"),
    ("user-nan", _set(user=[0.1, math.nan]), "user"),
    ("user-too-large-for-float32", _set(user=[0.1, 1e300]), "user"),
    ("candidates-type", _set(candidates={"a": 1}), "candidates"),
    ("candidates-row-type", _cands(lambda c: [c[0], 5, c[2]]), "candidates"),
    ("candidates-count", _cands(lambda c: c[:2]), "candidates"),
    ("candidates-feature-length", _cands(lambda c: [c[0], c[1] + [0.5], c[2]]), "candidates"),
    ("candidates-inf", _cands(lambda c: [c[0], [math.inf, 0.0], c[2]]), "candidates"),
    ("candidates-null", _cands(lambda c: [c[0], [None, 0.0], c[2]]), "candidates"),
    ("slate-type", _set(slate="0,1"), "slate"),
    ("slate-length", _set(slate=[0]), "slate"),
    ("slate-out-of-range", _set(slate=[0, 3]), "slate"),
    ("slate-negative", _set(slate=[-1, 0]), "slate"),
    ("slate-float-index", _set(slate=[0.0, 1]), "slate"),
    ("slate-repeated", _set(slate=[1, 1]), "slate"),
    ("click-too-large", _set(click=2), "click"),
    ("click-too-small", _set(click=-2), "click"),
    ("click-bool", _set(click=True), "click"),
    ("click-string", _set(click="1"), "click"),
    ("reward-string", _set(reward="1.0"), "reward"),
    ("reward-nan", _set(reward=math.nan), "reward"),
    ("reward-inf", _set(reward=-math.inf), "reward"),
    ("propensity-zero", _set(propensity=0.0), "propensity"),
    ("propensity-above-one", _set(propensity=1.5), "propensity"),
    ("propensity-nan", _set(propensity=math.nan), "propensity"),
    ("propensity-string", _set(propensity="0.5"), "propensity"),
    ("slot-propensity-length", _set(slot_propensity=[0.5, 0.5, 0.5]), "slot_propensity"),
    ("slot-propensity-range", _set(slot_propensity=[0.5, 0.0]), "slot_propensity"),
    ("session-type", _set(session=[1]), "session"),
    ("step-type", _set(step=1.5), "step"),
    ("terminated-type", _set(terminated="yes"), "terminated"),
    ("response-type", _set(response=[1, 2]), "response"),
    ("response-fields-differ", _set(response={"watch_time": [0, 1], "likes": [0, 0]}), "response"),
    ("response-missing", _drop("response"), "response"),
    ("response-length", _set(response={"watch_time": [0.0, 1.0, 2.0]}), "response.watch_time"),
    ("response-nan", _set(response={"watch_time": [0.0, math.nan]}), "response.watch_time"),
]


@pytest.mark.parametrize("change,field", [pytest.param(c, f, id=i) for i, c, f in ERRORS])
def test_bad_line_names_file_line_field_and_writes_nothing(tmp_path, change, field):
    rng = np.random.default_rng(5)
    lines = [make_line(rng, response={"watch_time": [0.0, 1.0]}) for _ in range(3)]
    lines[1] = change(lines[1])
    src = write_lines(tmp_path / "my log.jsonl", lines)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(LogImportError) as err:
        import_jsonl(src, out)
    message = str(err.value)
    prefix = f"{src}:2: field '{field}': " if field else f"{src}:2: "
    assert message.startswith(prefix), message
    assert "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# (id, lines (dicts of overrides per line), bad line number, field)
SESSION_ERRORS = [
    ("duplicate-step", [dict(session="s", step=0), dict(session="t", step=0), dict(session="s", step=0)], 3, "step"),
    ("some-steps-missing", [dict(session="s", step=0), dict(session="s")], 2, "step"),
    ("terminated-before-last", [dict(session="s", terminated=True), dict(session="s")], 1, "terminated"),
    ("terminated-before-last-by-step", [dict(session="s", step=1), dict(session="s", step=0, terminated=True)], 2,
     "terminated"),
]


@pytest.mark.parametrize("overrides,bad_line,field", [pytest.param(o, b, f, id=i) for i, o, b, f in SESSION_ERRORS])
def test_bad_session_names_line_and_field(tmp_path, overrides, bad_line, field):
    rng = np.random.default_rng(6)
    src = write_lines(tmp_path / "log.jsonl", [make_line(rng, **o) for o in overrides])
    with pytest.raises(LogImportError, match=at(src, bad_line) + rf"field '{field}': "):
        import_jsonl(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_first_line_fixes_sizes_and_line_numbers_count_blank_lines(tmp_path):
    rng = np.random.default_rng(7)
    src = write_lines(tmp_path / "log.jsonl", [make_line(rng, n=4), "", make_line(rng, n=3)])
    with pytest.raises(LogImportError, match=at(src, 3) + rf"field 'candidates': 3 candidates, expected 4 "
                                             r"\(as on line 1\)"):
        import_jsonl(src, tmp_path / "out")


def test_file_and_output_dir_errors(tmp_path):
    rng = np.random.default_rng(8)
    with pytest.raises(LogImportError, match="missing.jsonl: cannot read"):
        import_jsonl(tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(LogImportError, match="no interactions"):
        import_jsonl(write_lines(tmp_path / "empty.jsonl", ["", " "]), tmp_path / "out")
    with pytest.raises(LogImportError, match=r"field 'candidates': D=0 features"):
        import_jsonl(write_lines(tmp_path / "d0.jsonl", [make_line(rng, d=0)]), tmp_path / "out")
    src = write_lines(tmp_path / "log.jsonl", [make_line(rng)])
    import_jsonl(src, tmp_path / "out")
    with pytest.raises(LogImportError, match=rf"^{re.escape(str(tmp_path / 'out'))}: already holds .parquet files"):
        import_jsonl(src, tmp_path / "out")
    assert len(parquet_files(tmp_path / "out")) == 1


def test_not_utf8(tmp_path):
    src = tmp_path / "log.jsonl"
    line = json.dumps(make_line(np.random.default_rng(9))).encode()
    src.write_bytes(b"\xef\xbb\xbf" + line + b"\n" + line.replace(b"user", b"us\xc3\x28r") + b"\n")  # BOM ok
    with pytest.raises(LogImportError, match=at(src, 2) + "not UTF-8 text"):
        import_jsonl(src, tmp_path / "out")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import recsys_exp.offline.schema as schema

    real, calls = schema.write_table_atomic, []

    def fail_on_second(table, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(table, path)

    monkeypatch.setattr(schema, "write_table_atomic", fail_on_second)
    rng = np.random.default_rng(10)
    src = write_lines(tmp_path / "log.jsonl", [make_line(rng) for _ in range(5)])
    with pytest.raises(OSError, match="No space left"):
        import_jsonl(src, tmp_path / "new" / "out", rows_per_file=2)
    assert len(calls) == 2 and not (tmp_path / "new").exists()


# --- the example and the CLI -----------------------------------------------------------------------
def test_example_imports(tmp_path):
    lines = [line for line in SAMPLE.read_text().splitlines() if line.strip()]
    summary = import_jsonl(SAMPLE, tmp_path / "out")
    assert summary["rows"] == len(lines) and summary["episodes"] == 3
    data = LoggedData.read(tmp_path / "out")
    assert (data.click == -1).any() and np.isnan(data.propensity).any() and "watch_time" in data.responses


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys_exp.offline.jsonl", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli(tmp_path):
    ok = run_cli(str(SAMPLE), str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("imported 20 rows (3 episodes)") and ok.stdout.count("\n") == 1
    assert parquet_files(tmp_path / "out") and (tmp_path / "out" / "manifest.json").exists()

    bad = write_lines(tmp_path / "bad.jsonl", [SAMPLE.read_text().splitlines()[0], '{"user": [0.1, 0.2]}'])
    fail = run_cli(str(bad), str(tmp_path / "out2"))
    assert fail.returncode == 2 and fail.stdout == ""
    assert fail.stderr == f"recsys_exp: {bad}:2: field 'candidates': missing; required fields: " \
                          f"user, candidates, slate, click, reward\n"
    assert not (tmp_path / "out2").exists()
