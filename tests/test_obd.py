"""The Open Bandit Dataset importer (``python -m recsys_exp.offline.obd``) on small OBD-format CSVs
written here (the real 10k-row sample is not in the repo):

* the mapping read back through ``LoggedData.read``: user one-hot + position one-hot, docs with
  each row's affinity, one-item slates, clicks, propensities, metadata;
* each invalid input stops with one line naming file, row and column, exit status 2, nothing written;
* IPS and SNIPS on a tiny per-position log against a hand computation (target pi(item | position)).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from recsys_exp.offline.dataset import LoggedData
from recsys_exp.offline.jsonl import LogImportError
from recsys_exp.offline.obd import import_obd, main
from recsys_exp.offline.ope import OPEInputs, estimate

ITEMS = [  # item_id, item_feature_0, item_feature_1..3 (listed out of item_id order on purpose)
    [2, 1.5, "c", "y", "q"],
    [0, -0.5, "b", "x", "q"],
    [1, 0.25, "a", "x", "q"],
]
# (item_id, position, click, propensity, user_feature_0..3, affinities of items 0..2)
ROWS = [
    (0, 1, 1, 0.5, "u1", "v", "w", "z", [0.0, 0.1, 0.2]),
    (1, 2, 0, 0.25, "u0", "v", "w", "z", [1.0, 0.0, 0.0]),
    (2, 3, 1, 0.2, "u1", "v", "w", "z", [0.0, 0.0, 3.0]),
    (0, 2, 1, 0.4, "u2", "v", "w", "z", [0.5, 0.5, 0.5]),
]
LOG_HEADER = ["", "timestamp", "item_id", "position", "click", "propensity_score",
              *[f"user_feature_{i}" for i in range(4)], *[f"user-item_affinity_{i}" for i in range(3)]]


def write_campaign(root: Path, policy: str = "random", campaign: str = "all", rows=ROWS, items=ITEMS,
                   edit=None) -> Path:
    """An OBD campaign folder ``root/policy/campaign`` with ``<campaign>.csv`` and ``item_context.csv``;
    ``edit(log_rows, item_rows)`` may change the string cells (header included, as row 0) before writing."""
    folder = root / policy / campaign
    folder.mkdir(parents=True)
    log = [list(LOG_HEADER)] + [[str(r), f"2019-11-24 00:00:0{r}+00:00", str(i), str(pos), str(c), repr(p), *u,
                            *map(repr, aff)] for r, (i, pos, c, p, *u, aff) in enumerate(rows)]
    item = [["", "item_id", "item_feature_0", "item_feature_1", "item_feature_2", "item_feature_3"]] + \
        [[str(r), *map(str, it)] for r, it in enumerate(items)]
    if edit:
        edit(log, item)
    for name, table in ((f"{campaign}.csv", log), ("item_context.csv", item)):
        with open(folder / name, "w", newline="") as f:
            csv.writer(f).writerows(table)
    return folder


# ---------------------------------------------------------------------------------------
# the mapping
# ---------------------------------------------------------------------------------------
def test_mapping_read_back(tmp_path):
    folder = write_campaign(tmp_path)
    summary = import_obd(folder, tmp_path / "out")
    data = LoggedData.read(tmp_path / "out")
    m = data.meta
    assert (summary["rows"], summary["episodes"], summary["clicks"]) == (4, 4, 3)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"] == 4
    assert m["source"] == "obd" and m["campaign"] == "all" and m["behaviour_policy"] == "random"
    assert m["file"].endswith("all.csv") and m["item_context"].endswith("item_context.csv")
    # sizes: U = 3 + 1 + 1 + 1 user categories + 3 positions; D = 1 + (3 + 2 + 1) + 1; K = 1; N = 3
    assert (m["num_candidates"], m["slate_size"], m["user_dim"], m["doc_dim"]) == (3, 1, 9, 8)
    assert [b["values"] for b in m["user_features"]] == [["u0", "u1", "u2"], ["v"], ["w"], ["z"]]
    assert [b["start"] for b in m["user_features"]] == [0, 3, 4, 5]
    assert (m["position_offset"], m["num_positions"], m["position_values"]) == (6, 3, [1, 2, 3])
    # one-step sessions in file order
    np.testing.assert_array_equal(data.episode_id, [0, 1, 2, 3])
    np.testing.assert_array_equal(data.step, 0)
    assert data.terminated.all() and not data.truncated.any()
    # user = [one-hot u0/u1/u2 | v | w | z | position one-hot]
    np.testing.assert_array_equal(data.user, [
        [0, 1, 0, 1, 1, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 1, 0, 1, 0],
        [0, 1, 0, 1, 1, 1, 0, 0, 1],
        [0, 0, 1, 1, 1, 1, 0, 1, 0]])
    # docs in item_id order: [item_feature_0 | f1 one-hot (a, b, c) | f2 (x, y) | f3 (q) | affinity of the row]
    static = np.array([[-0.5, 0, 1, 0, 1, 0, 1],    # item 0: b, x, q
                       [0.25, 1, 0, 0, 1, 0, 1],    # item 1: a, x, q
                       [1.5, 0, 0, 1, 0, 1, 1]])    # item 2: c, y, q
    for r, row in enumerate(ROWS):
        np.testing.assert_allclose(data.docs[r, :, :-1], static)
        np.testing.assert_allclose(data.docs[r, :, -1], row[-1], rtol=1e-6)
    assert [b["name"] for b in m["doc_features"]] == ["item_feature_0", "item_feature_1", "item_feature_2",
                                                       "item_feature_3", "user-item_affinity_<item_id>"]
    assert m["doc_features"][1]["values"] == ["a", "b", "c"] and m["doc_features"][-1]["start"] == 7
    # the logged item is the one-item slate; click 0 = clicked, -1 = not; reward = click
    np.testing.assert_array_equal(data.slate[:, 0], [0, 1, 2, 0])
    np.testing.assert_array_equal(data.click, [0, -1, 0, 0])
    np.testing.assert_array_equal(data.reward, [1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(data.propensity, [0.5, 0.25, 0.2, 0.4])
    np.testing.assert_array_equal(data.slot_propensity[:, 0], [0.5, 0.25, 0.2, 0.4])


def test_bts_folder_other_campaign_names_and_cli(tmp_path, capsys):
    folder = write_campaign(tmp_path, policy="bts", campaign="men")
    assert main([str(folder), str(tmp_path / "out")]) == 0
    assert "imported 4 rows (3 clicks, 3 items, policy bts)" in capsys.readouterr().out
    meta = LoggedData.read(tmp_path / "out").meta
    assert (meta["campaign"], meta["behaviour_policy"], meta["algo"]) == ("men", "bts", "obd/bts")
    # a folder of another name: its only CSV besides item_context.csv is the log; no policy known
    other = write_campaign(tmp_path / "x", policy="mine", campaign="week1")
    (other / "week1.csv").rename(other / "log.csv")
    import_obd(other, tmp_path / "out2", rows_per_file=3)
    data = LoggedData.read(tmp_path / "out2")
    assert data.meta["behaviour_policy"] is None and data.num_rows == 4 and len(data.files) == 2


def test_position_recovered_from_the_user_features(tmp_path):
    import_obd(write_campaign(tmp_path), tmp_path / "out")
    data = LoggedData.read(tmp_path / "out")
    m = data.meta
    lo = m["position_offset"]
    positions = np.asarray(m["position_values"])[data.user[:, lo:lo + m["num_positions"]].argmax(1)]
    np.testing.assert_array_equal(positions, [row[1] for row in ROWS])


# ---------------------------------------------------------------------------------------
# errors: one line naming file, row and column; nothing written
# ---------------------------------------------------------------------------------------
def _set(row: int, column: str, value: str, file: str = "log"):
    def edit(log, item):
        table = log if file == "log" else item
        table[row][table[0].index(column)] = value
    return edit


def _drop(column: str):
    def edit(log, item):
        j = log[0].index(column)
        for r in log:
            del r[j]
    return edit


ERRORS = [
    (_set(2, "position", "4"), "all.csv: row 2, column position: '4' is out of range (allowed: 1, 2, 3)"),
    (_set(3, "click", "2"), "all.csv: row 3, column click: '2' is out of range (allowed: 0, 1)"),
    (_set(1, "propensity_score", "0"), ("all.csv: row 1, column propensity_score: '0' is not in (0, 1] "
                                       "(allowed: a probability in (0, 1])")),
    (_set(4, "propensity_score", "1.5"), "all.csv: row 4, column propensity_score: '1.5' is not in (0, 1]"),
    (_set(2, "item_id", "3"), ("all.csv: row 2, column item_id: '3' is out of range (allowed: integers 0..2, "
                              "the items of item_context.csv)")),
    (_set(1, "item_id", "1.5"), "all.csv: row 1, column item_id: '1.5' is not an integer"),
    (_set(3, "user-item_affinity_1", "abc"), ("all.csv: row 3, column user-item_affinity_1: 'abc' is not a "
                                             "finite number (allowed: a finite number)")),
    (_set(2, "user-item_affinity_0", ""), "all.csv: row 2, column user-item_affinity_0: empty"),
    (_set(4, "user_feature_2", ""), "all.csv: row 4, column user_feature_2: '' is empty"),
    (_drop("click"), "all.csv: column click: missing (required columns: item_id, position, click"),
    (_drop("user-item_affinity_2"), "all.csv: column user-item_affinity_2: missing"),
    (_set(0, "timestamp", "timestmp"), "all.csv: column timestmp: unknown column"),
    (_set(2, "item_feature_0", "x", file="item"), ("item_context.csv: row 2, column item_feature_0: 'x' is not a "
                                                  "finite number (allowed: a number)")),
    (_set(3, "item_id", "0", file="item"), "item_context.csv: row 3, column item_id: 0 repeats row 2"),
]


@pytest.mark.parametrize(("edit", "message"), ERRORS)
def test_errors_name_file_row_and_column_and_write_nothing(edit, message, tmp_path, capsys):
    folder = write_campaign(tmp_path, edit=edit)
    out = tmp_path / "new" / "out"
    assert main([str(folder), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recsys_exp: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "new").exists()


def test_first_bad_row_is_reported_whatever_the_column(tmp_path):
    def edit(log, item):
        _set(3, "position", "0")(log, item)
        _set(2, "user-item_affinity_2", "nan")(log, item)
    with pytest.raises(LogImportError, match=r"row 2, column user-item_affinity_2: 'nan'"):
        import_obd(write_campaign(tmp_path, edit=edit), tmp_path / "out")


def test_missing_files_and_busy_output(tmp_path):
    folder = write_campaign(tmp_path)
    (folder / "item_context.csv").unlink()
    with pytest.raises(LogImportError, match=r"item_context.csv: missing"):
        import_obd(folder, tmp_path / "out")
    with pytest.raises(LogImportError, match=r"not a directory"):
        import_obd(tmp_path / "nope", tmp_path / "out")
    folder = write_campaign(tmp_path / "b")
    (folder / "all.csv").unlink()
    with pytest.raises(LogImportError, match=r"all.csv: missing \(an OBD campaign folder"):
        import_obd(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    good = write_campaign(tmp_path / "c")
    import_obd(good, tmp_path / "out")
    with pytest.raises(LogImportError, match="already holds .parquet files"):
        import_obd(good, tmp_path / "out")


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import recsys_exp.run_dir

    def broken(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(recsys_exp.run_dir, "atomic_write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        import_obd(write_campaign(tmp_path), tmp_path / "out", rows_per_file=2)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# off-policy estimates on a per-position log, by hand
# ---------------------------------------------------------------------------------------
def test_ips_and_snips_by_hand_on_a_per_position_log(tmp_path):
    """Target pi(item | position) from a table; each row is weighted by pi(item | its position) / mu."""
    import_obd(write_campaign(tmp_path), tmp_path / "out")
    data = LoggedData.read(tmp_path / "out")
    m = data.meta
    lo = m["position_offset"]
    position = data.user[:, lo:lo + m["num_positions"]].argmax(1)  # 0-based
    pi = np.array([[0.6, 0.3, 0.1],    # position 1: items 0, 1, 2
                   [0.2, 0.5, 0.3],    # position 2
                   [0.1, 0.1, 0.8]])   # position 3
    target = pi[position, data.slate[:, 0]]
    inputs = OPEInputs(episode=data.episode_id, reward=data.reward, behaviour_prob=data.propensity,
                       target_prob=target, behaviour_slot_prob=data.slot_propensity,
                       target_slot_prob=target[:, None], slot_reward=data.reward[:, None])
    est = estimate(inputs, ["ips", "snips", "iips"], n_bootstrap=0)
    # rows: (item 0, pos 1, click, mu .5) w = .6/.5 = 1.2; (1, 2, no click, .25) w = .5/.25 = 2;
    #       (2, 3, click, .2) w = .8/.2 = 4; (0, 2, click, .4) w = .2/.4 = .5
    ips = (1.2 * 1 + 2.0 * 0 + 4.0 * 1 + 0.5 * 1) / 4  # 1.425
    snips = (1.2 + 4.0 + 0.5) / (1.2 + 2.0 + 4.0 + 0.5)  # 5.7 / 7.7
    assert est["ips"]["value"] == pytest.approx(ips, abs=1e-12)
    assert est["snips"]["value"] == pytest.approx(snips, abs=1e-12)
    assert est["iips"]["value"] == pytest.approx(ips, abs=1e-12)  # K = 1: item-position IPS is IPS
    assert est["ips"]["n_episodes"] == 4
