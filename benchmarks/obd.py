"""OBP's evaluation-of-OPE protocol on the Open Bandit Dataset, and policies trained on its logs.

    python benchmarks/obd.py [--data DIR] [--prior FILE] [--out FILE.json] [--campaigns all men women]

**Data.** ``DIR`` holds ``random/`` and ``bts/``, each with the campaign folders ``all/``, ``men/`` and
``women/`` (``<campaign>.csv`` and ``item_context.csv``), as ``obp/dataset/obd/`` of obp's source
distribution does. Without ``--data`` the script fetches the 10,000-row samples itself: it runs
``pip download --no-deps --no-binary :all: --ignore-requires-python obp==0.5.7`` into the cache dir
``~/.cache/recsys_exp/obp`` (once; obp is *not* installed: it declares Python < 3.11) and unpacks only
``obp/dataset/obd/`` and ``obp/policy/conf/prior_bts.yaml`` from the sdist there (after checking its
sha256). Nothing in the ``recsys_exp`` package downloads anything; only this script does. ``--prior`` is
BTS's production posterior (``prior_bts.yaml``: per campaign, lists ``alpha`` and ``beta``, one value per
item); by default ``DIR/prior_bts.yaml`` or, in the sdist's layout, ``DIR/../../policy/conf/prior_bts.yaml``.

**Protocol** (Saito et al., "Open Bandit Dataset and Pipeline", NeurIPS 2021 D&B; OBP's
``examples/obd/evaluate_off_policy_estimators.py``). Each campaign folder is imported with
:func:`recsys_exp.offline.obd.import_obd` (one-step sessions, one-item slates, the position one-hot
in the user features, the logging policy's per-(item, position) propensity). Then:

* ``bts_from_random``: the value (CTR) of Bernoulli TS with ZOZOTOWN's posterior, estimated from
  the uniform-random logs. BTS draws theta_a ~ Beta(alpha_a, beta_a) per item and shows the top 3
  by theta; a row showing item a at position k gets the target probability P(a at position k),
  estimated as OBP's ``BernoulliTS(is_zozotown_prior=True).compute_batch_action_dist`` does: the
  frequency of a at rank k over ``MC_DRAWS`` = 100,000 independent draws of theta (one table for
  every row: BTS is not contextual). Each entry has Monte Carlo standard error
  sqrt(p(1-p)/S) <= 0.0016; the draws are split into 10 batches and every estimator is recomputed on
  each batch's table, which gives the Monte Carlo standard error of each estimate itself
  (``mc_std_err``: the spread of the 10 batch values / sqrt(10)).
* ``random_from_bts``: the uniform-random policy's value (target probability 1/N for every item at
  every position, exact) estimated from the BTS logs.
* ``on_policy``: the mean click of each log, the "ground truth" each estimate is compared with
  (``rel_error`` = |estimate - truth| / truth: BTS's from the BTS log, random's from the random log;
  ``rel_error_resampled``: its mean and standard deviation over 100 bootstrap resamples of the log,
  the reward model fixed, which is what OBP's example reports over 30 resamples with its model refitted).
  ``prior_bts.yaml`` is one snapshot of the posterior while BTS's logged propensities changed during the
  week, so the BTS target is not exactly the policy behind the BTS log (``bts_target`` measures the gap);
  OBP's protocol shares this caveat.

Every estimator of :mod:`recsys_exp.offline.ope` (``ESTIMATORS``: ips, snips, dm, dr, iips) is used
as it is, with its percentile-bootstrap 95% interval over rows and the Kish ESS of its weights. With
one-item slates iips equals ips. dm and dr use the project's reward model: :func:`recsys_exp.offline.fqe.fit_fqe`
with one iteration on one-step sessions is a regression of the click on the observation and the shown
item's features (an MLP, ``FQEConfig`` defaults), cross-fitted over 3 folds of the log it is applied to
as in OBP's protocol (OBP's example fits a logistic regression). Their bootstrap intervals hold the
model fixed, so dm's interval leaves out the model's own error and is too narrow.

**Trained policies.** ``lin_ucb``, ``lin_ts``, ``bernoulli_ts`` (one arm per item, Beta(1, 1) prior)
and ``cql`` train on the random log of each campaign with ``env=logged`` through the Python API
(:func:`recsys_exp.run`): 20% of the rows (``offline.eval_fraction``) are held out, and each run
ends with an off-policy evaluation of its greedy policy on them; ``summary.json``'s ``objective``
(``offline.select_by``: by default ope.json's recommended estimate, the first reliable one, or the
first of its order, flagged, when none is; with its estimator, CI, ESS and number of held-out rows)
is reported next to both logging policies' on-policy CTRs. A run that fails to configure (e.g. an algorithm
that cannot learn from logged rows in this version) is recorded with its one-line error.

**Output.** A markdown table on stdout (progress on stderr) and, with ``--out``, a JSON file written
atomically: ``{"settings": {...}, "campaigns": {"<campaign>": {"bts_from_random": {"<estimator>":
{"value", "ci95", "ess", "rel_error", "rel_error_resampled", "std_err", "mc_std_err"}, ...},
"random_from_bts": {...}, "on_policy": {"random": ctr, "bts": ctr}, "rows": {...}, "clicks": {...},
"bts_target": {...}, "trained": {"<algo>": {"estimator", "value", "ci95", "ess", "n_episodes", "reliable", "reason",
"timesteps", "estimates": {"<estimator>": {"value", "ci95", "ess", "reliable", "reason"}}, "seconds", "overrides"}
or {"error", "overrides"}}}}}`` (CTRs as fractions; the table shows percent, and ⚠ after an objective its
verdict flags unreliable).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

OBP_VERSION = "0.5.7"
SDIST_SHA256 = "3060d67fedfcfadf1e7a6f2608987f74412b5eb74d2c567edeb147595c68f2a0"  # obp-0.5.7.tar.gz on PyPI
CACHE = Path.home() / ".cache" / "recsys_exp" / "obp"
CAMPAIGNS = ("all", "men", "women")
POLICIES = ("random", "bts")
NUM_POSITIONS = 3
MC_DRAWS = 100_000  # as OBP's compute_batch_action_dist(n_sim=100000)
MC_BATCHES = 10
MC_SEED = 12345  # OBP's example's random_state
BOOTSTRAP = 1000
FOLDS = 3  # cross-fitting of the reward model, as OBP's protocol
# FQEConfig fields of the reward model besides iterations=1 (defaults otherwise): as OBP's regression model, it
# fits on every row of its folds (no held-out share) and is one model (the intervals here are over batches and
# resamples of the log, not over model refits).
REWARD_MODEL: dict[str, Any] = {"validation_fraction": 0.0, "refits": 0}
REL_ERROR_RESAMPLES = 100  # bootstrap resamples of the log for the mean relative error (OBP's example: 30)
ALGOS = ("lin_ucb", "lin_ts", "bernoulli_ts", "cql")
# Per-algorithm overrides and training budgets. The bandits read each training row once (closed-form
# updates) and stop after that pass; cql: 100 Adam updates of 256 rows (about 3 passes over the ~8,000
# training rows of a 10,000-row sample).
TRAIN = {
    "lin_ucb": [],
    "lin_ts": [],
    "bernoulli_ts": ["algo.training.arms=item"],
    "cql": ["stop.timesteps=25600"],
}


# --------------------------------------------------------------------------- data


def fetch_sample(cache: Path = CACHE) -> tuple[Path, Path]:
    """``(data dir, prior_bts.yaml)`` of obp's sdist in ``cache``, downloading and unpacking it first
    if needed: ``pip download`` of the sdist (not installed; its sha256 is checked), then only
    ``obp/dataset/obd/`` and ``obp/policy/conf/prior_bts.yaml`` are extracted, each file moved into place
    atomically."""
    top = f"obp-{OBP_VERSION}"
    data, prior = cache / top / "obp" / "dataset" / "obd", cache / top / "obp" / "policy" / "conf" / "prior_bts.yaml"
    if prior.is_file() and all(_campaign_complete(data / p / c) for p in POLICIES for c in CAMPAIGNS):
        return data, prior
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"{top}.tar.gz"
    if not sdist.is_file():
        print(f"downloading obp=={OBP_VERSION}'s source distribution into {cache} (pip download, no install)",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--ignore-requires-python", f"obp=={OBP_VERSION}", "-d", str(cache)],
                       check=True, stdout=sys.stderr)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"obd.py: {sdist} has sha256 {digest}, not obp {OBP_VERSION}'s {SDIST_SHA256}; delete it "
                         f"and run again")
    wanted = (f"{top}/obp/dataset/obd/", f"{top}/obp/policy/conf/prior_bts.yaml")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".unpack-") as tmp, tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(wanted)]
        tar.extractall(tmp, members=members, filter="data")
        for m in members:
            target = cache / m.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / m.name, target)
    return data, prior


def _campaign_complete(folder: Path) -> bool:
    return (folder / f"{folder.name}.csv").is_file() and (folder / "item_context.csv").is_file()


def find_prior(data: Path) -> Path:
    """``prior_bts.yaml`` next to the data: ``DATA/prior_bts.yaml`` or the sdist's
    ``DATA/../../policy/conf/prior_bts.yaml``; SystemExit naming both when neither exists."""
    candidates = [data / "prior_bts.yaml", data.parent.parent / "policy" / "conf" / "prior_bts.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(f"obd.py: no prior_bts.yaml at {candidates[0]} or {candidates[1]}; pass --prior FILE")


def load_prior(path: Path, campaign: str, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The (alpha, beta) arrays of ``campaign`` in ``prior_bts.yaml``, one value > 0 per item."""
    import yaml

    with open(path) as f:
        prior = yaml.safe_load(f)
    try:
        alpha, beta = (np.asarray(prior[campaign][key], dtype=np.float64) for key in ("alpha", "beta"))
    except (KeyError, TypeError):
        raise SystemExit(f"obd.py: {path} has no {campaign}.alpha / {campaign}.beta lists") from None
    if alpha.shape != (num_items,) or beta.shape != (num_items,) or (alpha <= 0).any() or (beta <= 0).any():
        raise SystemExit(f"obd.py: {path}: {campaign} needs {num_items} alpha and beta values > 0 (one per item), "
                         f"got {alpha.size} and {beta.size}")
    return alpha, beta


def read_log(folder: Path, out: Path):
    """The OBD campaign ``folder`` imported into Parquet under ``out`` and read back as LoggedData."""
    from recsys_exp.offline.dataset import LoggedData
    from recsys_exp.offline.obd import import_obd

    import_obd(folder, out)
    return LoggedData.read(out)


def positions(data) -> np.ndarray:
    """(n,) the 0-based position of each row, from the position one-hot in the user features."""
    start, width = data.meta["position_offset"], data.meta["num_positions"]
    return data.user[:, start:start + width].argmax(1)


# --------------------------------------------------------------------------- target policies


def bts_position_probabilities(alpha: np.ndarray, beta: np.ndarray, num_positions: int = NUM_POSITIONS,
                               draws: int = MC_DRAWS, batches: int = MC_BATCHES, seed: int = MC_SEED) -> np.ndarray:
    """(batches, N, num_positions): P(item a at position k) of Bernoulli TS, by Monte Carlo.

    Each of ``draws`` rounds draws theta_a ~ Beta(alpha_a, beta_a) for every item and ranks the items by
    theta, highest first (OBP's ``BernoulliTS.select_action``); batch b's table is the frequency of
    item a at rank k over its ``draws // batches`` rounds. Their mean over batches is the estimate of
    all ``draws`` rounds; ties have probability 0 (continuous draws).
    """
    if draws < batches:
        raise ValueError(f"draws={draws}: need at least one per batch ({batches} batches)")
    rng = np.random.default_rng(seed)
    n = len(alpha)
    per_batch = draws // batches
    chunk = max(1, 2_000_000 // n)
    tables = np.zeros((batches, n, num_positions))
    for b in range(batches):
        for start in range(0, per_batch, chunk):
            theta = rng.beta(alpha, beta, size=(min(chunk, per_batch - start), n))
            top = np.argsort(-theta, axis=1, kind="stable")[:, :num_positions]
            for k in range(num_positions):
                tables[b, :, k] += np.bincount(top[:, k], minlength=n)
        tables[b] /= per_batch
    return tables


def uniform_position_probabilities(num_items: int, num_positions: int = NUM_POSITIONS) -> np.ndarray:
    """(1, N, num_positions): the uniform-random ranking's P(item a at position k) = 1/N, exactly."""
    return np.full((1, num_items, num_positions), 1.0 / num_items)


# --------------------------------------------------------------------------- estimation


def reward_model(data, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """(n, N) q_hat(x_i, a): the click model of dm and dr for every row and item, cross-fitted.

    The project's FQE (:func:`recsys_exp.offline.fqe.fit_fqe`) with one iteration on one-step sessions
    (no bootstrapping: every row is terminal) is a regression of the click on the observation and
    the shown item's features. As in OBP's protocol (``RegressionModel.fit_predict(n_folds=3)``), the
    rows are split at random into ``folds`` parts and each part's q_hat comes from the model fitted on
    the other parts, so no row is predicted by a model that saw its click (``folds=1``: one model
    fitted on all rows and applied to them). Rows with the same observation share one evaluation.
    """
    from recsys_exp.envs.layout import slate_layout
    from recsys_exp.envs.logged import observation_space
    from recsys_exp.offline.fqe import FQEConfig, fit_fqe

    space = observation_space(data.meta)
    obs, _, _ = data.observations(space)
    n = data.num_rows
    fold = np.random.default_rng(seed).permutation(n) % folds
    table = np.empty((n, data.num_candidates))
    for f in range(folds):
        fit = fold != f if folds > 1 else np.ones(n, dtype=bool)
        m = int(fit.sum())
        q = fit_fqe(obs[fit], data.slate[fit], data.reward[fit], obs[fit], np.ones(m, dtype=bool),
                    np.zeros((m, 1, 1), np.int64), np.ones((m, 1)), data.num_candidates, gamma=1.0,
                    config=FQEConfig(**{**REWARD_MODEL, "iterations": 1, "seed": seed + f}), layout=slate_layout(space))
        rows = np.flatnonzero(fold == f)
        table[rows] = _all_items(q, obs[rows])
    return table


def _all_items(q, obs: np.ndarray) -> np.ndarray:
    """(n, N) q(x_i, a) for every row and item, one evaluation per distinct observation."""
    from recsys_exp.offline.fqe import q_values

    varying = (obs != obs[:1]).any(0)  # np.unique on the few columns that differ (most doc features do not)
    _, first, inverse = np.unique(obs[:, varying], axis=0, return_index=True, return_inverse=True)
    unique = obs[first]
    num_items = q.num_candidates
    items = np.arange(num_items)
    out = np.empty((len(unique), num_items))
    chunk = max(1, 8192 // num_items)
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        slates = np.tile(items, len(part))[:, None]
        out[start:start + chunk] = q_values(q, np.repeat(part, num_items, axis=0), slates).reshape(len(part), -1)
    return out[inverse.reshape(-1)]


def ope_inputs(data, target: np.ndarray, q_hat: np.ndarray | None):
    """OPEInputs of one-step OBD rows for a target with per-(item, position) probabilities
    ``target`` (N, positions); ``q_hat`` (n, N) from :func:`reward_model` (None: no dm / dr)."""
    from recsys_exp.offline.ope import OPEInputs

    pos, item = positions(data), data.slate[:, 0]
    target_prob = target[item, pos]
    inputs = OPEInputs(episode=data.episode_id, reward=data.reward, behaviour_prob=data.propensity,
                       target_prob=target_prob, behaviour_slot_prob=data.slot_propensity,
                       target_slot_prob=target_prob[:, None], slot_reward=data.reward[:, None], gamma=1.0)
    if q_hat is not None:
        inputs.q_logged = q_hat[np.arange(data.num_rows), item]
        inputs.v_target = (q_hat * target[:, pos].T).sum(1)  # sum_a pi(a | position of row i) q_hat(x_i, a)
    return inputs


def evaluate(data, tables: np.ndarray, truth: float, q_hat: np.ndarray | None, estimators=None,
             bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every estimator's estimate of the target whose per-batch Monte Carlo tables are ``tables``
    (batches, N, positions), with ``rel_error`` against ``truth`` and, for more than one batch,
    ``mc_std_err`` (batch-to-batch spread / sqrt(batches)). Estimates use the mean table."""
    from recsys_exp.offline.ope import ESTIMATORS, estimate

    estimators = list(estimators or ESTIMATORS)
    if q_hat is None:
        estimators = [e for e in estimators if e not in ("dm", "dr")]
    inputs = ope_inputs(data, tables.mean(0), q_hat)
    results = estimate(inputs, estimators, n_bootstrap=bootstrap, seed=seed)
    per_batch = ([estimate(ope_inputs(data, t, q_hat), estimators, n_bootstrap=0) for t in tables]
                 if len(tables) > 1 else [])
    rng = np.random.default_rng(seed + 1)
    resampled = [estimate(_resample(inputs, rng), estimators, n_bootstrap=0) for _ in range(REL_ERROR_RESAMPLES)]
    out = {}
    for name, r in results.items():
        entry = {"value": r["value"], "ci95": r["ci95"], "ess": r.get("ess"),
                 "rel_error": abs(r["value"] - truth) / truth if truth > 0 else None, "std_err": r["std_err"]}
        if resampled and truth > 0:
            errors = np.array([abs(b[name]["value"] - truth) / truth for b in resampled])
            entry["rel_error_resampled"] = {"mean": float(errors.mean()), "std": float(errors.std(ddof=1)),
                                            "resamples": len(errors)}
        if per_batch:
            values = np.array([b[name]["value"] for b in per_batch])
            entry["mc_std_err"] = float(values.std(ddof=1) / np.sqrt(len(values)))
        out[name] = entry
    return out


def _resample(inputs, rng: np.random.Generator):
    """A bootstrap resample of one-step rows (n drawn with replacement, each its own session)."""
    from dataclasses import replace

    n = len(inputs.reward)
    rows = rng.integers(0, n, n)
    fields = ("reward", "behaviour_prob", "target_prob", "behaviour_slot_prob", "target_slot_prob", "slot_reward",
              "q_logged", "v_target")
    picked = {f: getattr(inputs, f)[rows] for f in fields if getattr(inputs, f) is not None}
    return replace(inputs, episode=np.arange(n), row_labels=None, **picked)


# --------------------------------------------------------------------------- training


def train(algo: str, data_dir: Path, run_dir: Path, seed: int = 0, bootstrap: int = BOOTSTRAP,
          extra: list[str] | None = None) -> dict[str, Any]:
    """Train ``algo`` on the logged data at ``data_dir`` (``env=logged``) through :func:`recsys_exp.run`
    and return its held-out off-policy objective (``summary.json``), or ``{"error": ...}`` when the run
    cannot be configured or fails."""
    import recsys_exp

    overrides = ["env=logged", f"algo={algo}", f"offline.path={data_dir}", f"seed={seed}", "logger.mode=disabled",
                 "progress=false", f"offline.bootstrap={bootstrap}", *TRAIN.get(algo, []), *(extra or [])]
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Tune's banners; stdout is for the tables
            result = recsys_exp.run(overrides, run_dir=run_dir)
    except recsys_exp.ConfigError as e:
        return {"error": str(e), "overrides": overrides}
    except Exception as e:  # noqa: BLE001 - a failed run is reported, the benchmark goes on
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0], "overrides": overrides}
    obj = result.summary.get("objective") or {}
    ope_file = Path(result.run_dir) / "ope.json"
    held_out = json.loads(ope_file.read_text())["estimates"] if ope_file.is_file() else {}
    return {"estimator": obj.get("estimator"), "value": obj.get("value"), "ci95": obj.get("ci95"),
            "ess": obj.get("ess"), "n_episodes": obj.get("n_episodes"), "reliable": obj.get("reliable"),
            "reason": obj.get("reason"), "timesteps": result.summary.get("timesteps"),
            "estimates": {name: {"value": e["value"], "ci95": e["ci95"], "ess": e.get("ess"),
                                 "reliable": e.get("reliable"), "reason": e.get("reason")}
                          for name, e in held_out.items()},
            "seconds": time.perf_counter() - start, "overrides": overrides}


# --------------------------------------------------------------------------- one campaign


def run_campaign(campaign: str, data: Path, prior: Path, work: Path, algos=ALGOS, bootstrap: int = BOOTSTRAP,
                 draws: int = MC_DRAWS, seed: int = 0) -> dict[str, Any]:
    """The OPE protocol (both directions) and the trained policies for one campaign."""
    logs = {p: read_log(data / p / campaign, work / campaign / p) for p in POLICIES}
    ctr = {p: float(logs[p].reward.mean()) for p in POLICIES}
    num_items = logs["random"].num_candidates
    alpha, beta = load_prior(prior, campaign, num_items)
    _say(f"{campaign}: {num_items} items; Monte Carlo of BTS's ranking ({draws:,} draws)")
    bts = bts_position_probabilities(alpha, beta, draws=draws)
    uniform = uniform_position_probabilities(logs["bts"].num_candidates)
    out: dict[str, Any] = {}
    for key, log, tables, truth in (("bts_from_random", logs["random"], bts, ctr["bts"]),
                                    ("random_from_bts", logs["bts"], uniform, ctr["random"])):
        _say(f"{campaign}: {key.replace('_', ' ')} (reward model, estimators, {bootstrap} bootstrap resamples)")
        out[key] = evaluate(log, tables, truth, reward_model(log, seed=seed), bootstrap=bootstrap, seed=seed)
    out["on_policy"] = ctr
    out["rows"] = {p: logs[p].num_rows for p in POLICIES}
    out["clicks"] = {p: int(logs[p].reward.sum()) for p in POLICIES}
    out["bts_target"] = target_gap(bts.mean(0), logs["bts"], draws)
    out["trained"] = {}
    for algo in algos:
        _say(f"{campaign}: training {algo} on the random log (env=logged)")
        out["trained"][algo] = train(algo, work / campaign / "random", work / campaign / f"run-{algo}", seed,
                                   bootstrap)
        _say(f"  -> {_trained_cell(out['trained'][algo])}")
    return out


def target_gap(p_hat: np.ndarray, bts_log, draws: int) -> dict[str, Any]:
    """How far the BTS target (``p_hat``, N x positions) is from the policy behind the BTS log: the
    total variation per position between p_hat and the log's item frequencies, and the median relative
    gap between p_hat and the logged propensity of the logged (item, position) rows."""
    pos, item = positions(bts_log), bts_log.slate[:, 0]
    freq = np.zeros_like(p_hat)
    np.add.at(freq, (item, pos), 1.0)
    freq /= np.maximum(freq.sum(0, keepdims=True), 1.0)
    gap = np.abs(p_hat[item, pos] - bts_log.propensity) / bts_log.propensity
    return {"mc_draws": draws, "max_entry_std_err": float(np.sqrt(p_hat * (1 - p_hat) / draws).max()),
            "top_items_position_1": [[int(a), float(p_hat[a, 0])] for a in np.argsort(-p_hat[:, 0])[:3]],
            "tv_to_bts_log_frequencies": [float(0.5 * np.abs(p_hat[:, k] - freq[:, k]).sum())
                                          for k in range(p_hat.shape[1])],
            "median_rel_gap_to_logged_propensity": float(np.median(gap))}


# --------------------------------------------------------------------------- report


def _pct(x: float | None) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.3f}"


def _ci(ci) -> str:
    return "" if not ci or not np.all(np.isfinite(ci)) else f" [{_pct(ci[0])}, {_pct(ci[1])}]"


def _ess(e) -> str:
    return "—" if e is None else f"{e:,.0f}"


def _estimate_cells(e: dict[str, Any] | None) -> str:
    if not e:
        return "— | — | — | —"
    rel = "—" if e["rel_error"] is None else f"{e['rel_error']:.2f}"
    resampled = e.get("rel_error_resampled")
    mean = "—" if not resampled else f"{resampled['mean']:.2f} ± {resampled['std']:.2f}"
    return f"{_pct(e['value'])}{_ci(e['ci95'])} | {_ess(e['ess'])} | {rel} | {mean}"


def _trained_cell(t: dict[str, Any]) -> str:
    if "error" in t:
        return f"not trained: {t['error']}"
    flag = " ⚠" if t.get("reliable") is False else ""
    return f"{_pct(t['value'])}{_ci(t['ci95'])}{flag} ({t['estimator']}, ESS {_ess(t['ess'])} of {t['n_episodes']})"


def markdown(results: dict[str, Any]) -> str:
    """The two tables (OPE protocol; trained policies), CTRs in percent."""
    lines = [("CTR in %, 95% bootstrap intervals; rel. err = |estimate − on-policy CTR of the other log| / that CTR; "
              "resampled: its mean ± sd over bootstrap resamples of the log (OBP's measure)."),
             "",
             ("| campaign | estimator | BTS from random logs | ESS | rel. err | resampled | "
              "random from BTS logs | ESS | rel. err | resampled |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for campaign, r in results.items():
        on = r["on_policy"]
        lines.append(f"| {campaign} | on-policy CTR (truth) | **{_pct(on['bts'])}** | {r['rows']['bts']:,} rows | | | "
                     f"**{_pct(on['random'])}** | {r['rows']['random']:,} rows | | |")
        for name, a in r["bts_from_random"].items():
            cells = [_estimate_cells(a), _estimate_cells(r["random_from_bts"].get(name))]
            lines.append(f"| {campaign} | {name} | {cells[0]} | {cells[1]} |")
    trained = [(c, r) for c, r in results.items() if r.get("trained")]
    if trained:
        lines += ["", ("Policies trained on 80% of the random log (`env=logged`), greedy; estimates on the other 20% "
                       "(held-out rows) next to the logging policies' on-policy CTRs:"), "",
                  ("| campaign | policy | trained on | CTR: objective (estimator) [95% CI] | ESS / held-out rows | "
                   "dm | dr [95% CI] |"),
                  "|---|---|---:|---:|---:|---:|---:|"]
        for campaign, r in trained:
            on = r["on_policy"]
            for policy in POLICIES:
                lines.append(f"| {campaign} | {policy} (logging policy) | — | {_pct(on[policy])} (on-policy) | "
                             f"{r['rows'][policy]:,} rows | | |")
            for algo, t in r["trained"].items():
                if "error" in t:
                    lines.append(f"| {campaign} | {algo} | — | not trained: {t['error']} | | | |")
                    continue
                est = t.get("estimates", {})
                dm, dr = est.get("dm", {}), est.get("dr", {})
                flag = " ⚠" if t.get("reliable") is False else ""
                lines.append(f"| {campaign} | {algo} | {t['timesteps']:,} rows | {_pct(t['value'])} ({t['estimator']})"
                             f"{_ci(t['ci95'])}{flag} | {_ess(t['ess'])} / {t['n_episodes']:,} | "
                             f"{_pct(dm.get('value'))} | "
                             f"{_pct(dr.get('value'))}{_ci(dr.get('ci95'))} |")
    return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: fetch or find the data, run every campaign, print the tables, write ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a folder holding random/ and bts/ (default: fetch obp's sample "
                                                  f"into {CACHE})")
    parser.add_argument("--prior", type=Path, help="prior_bts.yaml (default: found next to --data, or fetched)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--campaigns", nargs="+", choices=CAMPAIGNS, default=list(CAMPAIGNS))
    parser.add_argument("--algos", nargs="*", default=list(ALGOS), help="policies to train (none: OPE only)")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap resamples per estimate")
    parser.add_argument("--mc-draws", type=int, default=MC_DRAWS, help="Monte Carlo draws of BTS's ranking")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the Parquet logs and run dirs here (default: a temp dir)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    if args.data is None:
        data, fetched_prior = fetch_sample()
        prior = args.prior or fetched_prior
    else:
        data = args.data
        prior = args.prior or find_prior(data)
    work = args.work or Path(tempfile.mkdtemp(prefix="obd-benchmark-"))
    start = time.perf_counter()
    ray_started = _start_ray() if args.algos else False
    try:
        results = {c: run_campaign(c, data, prior, work, args.algos, args.bootstrap, args.mc_draws, args.seed)
                   for c in args.campaigns}
    finally:
        if ray_started:
            import ray

            ray.shutdown()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    if args.out:
        from recsys_exp.run_dir import atomic_write_json

        settings = {"data": str(data), "prior": str(prior), "obp_version": OBP_VERSION, "mc_draws": args.mc_draws,
                    "mc_batches": MC_BATCHES, "mc_seed": MC_SEED, "bootstrap": args.bootstrap, "seed": args.seed,
                    "algos": args.algos, "seconds": time.perf_counter() - start,
                    "command": " ".join(["python", "benchmarks/obd.py", *(argv if argv is not None else sys.argv[1:])])}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, {"settings": settings, "campaigns": results})
    return 0


def _start_ray() -> bool:
    """One light local Ray for all training runs (each would otherwise start and stop its own)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=200 * 1024 ** 2)
    from recsys_exp.envs.rllib import register_envs

    register_envs()
    return True


if __name__ == "__main__":
    sys.exit(main())
