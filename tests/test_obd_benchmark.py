"""``benchmarks/obd.py`` (OBP's evaluation-of-OPE protocol) on small OBD-format logs written here.

The BTS prior is chosen so that its position probabilities are known exactly: item 2 is ranked first
(Beta(9000, 1000) against two Beta(50, 50) items, never overtaken), and items 0 and 1 are exchangeable,
so each is at position 2 or 3 with probability 1/2. The IPS estimate of that target from the random
log, and of the uniform target from the BTS log, are then computed by hand. The fetch step is checked
on a fake sdist already in the cache (no download).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
N_ROWS = 200
EXACT_BTS = np.array([[0.0, 0.5, 0.5],   # item 0 at positions 1, 2, 3
                      [0.0, 0.5, 0.5],   # item 1
                      [1.0, 0.0, 0.0]])  # item 2
BTS_LOGGING = np.array([[0.1, 0.45, 0.45],  # mu(item | position) of the BTS log; columns sum to 1
                        [0.2, 0.45, 0.35],
                        [0.7, 0.10, 0.20]])


@pytest.fixture(scope="module")
def bench():
    """benchmarks/obd.py as a module, with a small reward model (few gradient steps)."""
    spec = importlib.util.spec_from_file_location("obd_benchmark", ROOT / "benchmarks" / "obd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.REWARD_MODEL = {"min_updates_per_iteration": 10, "hidden_sizes": (8,)}
    return module


def write_log(folder: Path, rng: np.random.Generator, mu: np.ndarray) -> list[tuple[int, int, int, float]]:
    """An OBD campaign folder (3 items) whose log draws the position uniformly and the item from
    ``mu[:, position]``; returns the (item, position 1..3, click, propensity) rows."""
    folder.mkdir(parents=True)
    rows = []
    for _ in range(N_ROWS):
        pos = int(rng.integers(3))
        item = int(rng.choice(3, p=mu[:, pos]))
        rows.append((item, pos + 1, int(rng.random() < 0.1 + 0.1 * item), float(mu[item, pos])))
    header = ["", "timestamp", "item_id", "position", "click", "propensity_score",
              *[f"user_feature_{i}" for i in range(4)], *[f"user-item_affinity_{i}" for i in range(3)]]
    with open(folder / "all.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r, (item, pos, click, p) in enumerate(rows):
            w.writerow([r, "2019-11-24 00:00:00+00:00", item, pos, click, repr(p), f"u{r % 4}", "v", f"w{r % 2}", "z",
                        *(repr(float(rng.random() < 0.2)) for _ in range(3))])
    with open(folder / "item_context.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "item_id", "item_feature_0", "item_feature_1", "item_feature_2", "item_feature_3"])
        for i in range(3):
            w.writerow([i, i, -0.5 + 0.5 * i, "abc"[i], "xy"[i % 2], "q"])
    return rows


@pytest.fixture(scope="module")
def result(bench, tmp_path_factory):
    """The benchmark's OPE part (no training) on a random and a BTS log of campaign 'all'."""
    root = tmp_path_factory.mktemp("obd")
    rng = np.random.default_rng(7)
    logs = {"random": write_log(root / "random" / "all", rng, np.full((3, 3), 1 / 3)),
            "bts": write_log(root / "bts" / "all", rng, BTS_LOGGING)}
    (root / "prior_bts.yaml").write_text("all:\n  alpha: [50.0, 50.0, 9000.0]\n  beta: [50.0, 50.0, 1000.0]\n")
    out = root / "results" / "obd.json"
    assert bench.main(["--data", str(root), "--campaigns", "all", "--algos", "--bootstrap", "50",
                       "--out", str(out), "--work", str(root / "work")]) == 0
    return logs, json.loads(out.read_text())


def test_ips_against_hand_computations(result):
    logs, js = result
    r = js["campaigns"]["all"]
    ctr = {p: np.mean([click for _, _, click, _ in rows]) for p, rows in logs.items()}
    assert r["on_policy"] == pytest.approx(ctr, abs=1e-12)
    # BTS from the random log (mu = 1/3 everywhere): (1/n) sum_i r_i P(item_i at position_i) / (1/3)
    ips = np.mean([click * EXACT_BTS[item, pos - 1] * 3 for item, pos, click, _ in logs["random"]])
    bts = r["bts_from_random"]["ips"]
    assert bts["value"] == pytest.approx(ips, rel=0.02)  # Monte Carlo: 100,000 draws, entries +- 0.0016
    assert bts["mc_std_err"] < 0.005 * ips
    assert bts["rel_error"] == pytest.approx(abs(bts["value"] - ctr["bts"]) / ctr["bts"], rel=1e-12)
    # the uniform policy from the BTS log: (1/n) sum_i r_i (1/3) / mu_i, exact; SNIPS normalises by sum of weights
    w = np.array([(1 / 3) / p for _, _, _, p in logs["bts"]])
    clicks = np.array([click for _, _, click, _ in logs["bts"]])
    uniform = r["random_from_bts"]
    assert uniform["ips"]["value"] == pytest.approx(np.mean(w * clicks), abs=1e-12)
    assert uniform["snips"]["value"] == pytest.approx(np.sum(w * clicks) / np.sum(w), abs=1e-12)
    assert uniform["ips"]["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), rel=1e-9)
    assert uniform["iips"]["value"] == uniform["ips"]["value"]  # one-item slates


def test_json_shape(result):
    from recsys_exp.offline.ope import ESTIMATORS

    _, js = result
    assert set(js) == {"settings", "campaigns"} and list(js["campaigns"]) == ["all"]
    assert js["settings"]["mc_draws"] == 100_000 and js["settings"]["algos"] == []
    r = js["campaigns"]["all"]
    assert {"bts_from_random", "random_from_bts", "on_policy", "trained"} <= set(r)
    assert r["trained"] == {} and set(r["on_policy"]) == {"random", "bts"}
    for direction in ("bts_from_random", "random_from_bts"):
        assert list(r[direction]) == list(ESTIMATORS)
        for name, e in r[direction].items():
            assert {"value", "ci95", "ess", "rel_error", "rel_error_resampled"} <= set(e)
            assert len(e["ci95"]) == 2 and e["ci95"][0] <= e["ci95"][1]
            assert (e["ess"] is None) == (name == "dm")
    assert r["bts_target"]["top_items_position_1"][0][0] == 2


def test_missing_prior_is_named(bench, tmp_path):
    with pytest.raises(SystemExit, match="no prior_bts.yaml at .*pass --prior FILE"):
        bench.find_prior(tmp_path)


def test_fetch_unpacks_only_the_data_and_the_prior(bench, tmp_path, monkeypatch):
    """With the sdist already in the cache nothing is downloaded: its sha256 is checked, then only
    obp/dataset/obd/ and prior_bts.yaml are unpacked, in the sdist's layout."""
    import hashlib
    import io
    import tarfile

    top = f"obp-{bench.OBP_VERSION}/obp"
    files = {f"{top}/policy/conf/prior_bts.yaml": "all: {}\n", f"{top}/ope/estimators.py": "print('no')\n"}
    files.update({f"{top}/dataset/obd/{p}/{c}/{name}": "x\n" for p in bench.POLICIES for c in bench.CAMPAIGNS
                  for name in (f"{c}.csv", "item_context.csv")})
    sdist = tmp_path / f"obp-{bench.OBP_VERSION}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    monkeypatch.setattr(bench, "SDIST_SHA256", "0" * 64)
    with pytest.raises(SystemExit, match="sha256"):
        bench.fetch_sample(tmp_path)
    monkeypatch.setattr(bench, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    data, prior = bench.fetch_sample(tmp_path)
    assert data == tmp_path / top / "dataset" / "obd" and prior.read_text() == "all: {}\n"
    assert (data / "bts" / "women" / "women.csv").is_file()
    assert not (tmp_path / top / "ope").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"obp-{bench.OBP_VERSION}", sdist.name]  # no temp dir left
