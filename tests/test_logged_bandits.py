"""The bandits learn from logged rows (``offline.path``; ``env=logged`` or a simulator env): each
training row once, held-out sessions never, and the statistics they end with are the closed
forms computed here with numpy from the logged columns (an oracle independent of the RLlib
episode, connector and learner path the run takes)."""

from __future__ import annotations

import numpy as np
import pytest

import recsys_exp
from recsys_exp.offline.dataset import LoggedData, held_out_sessions

QUIET = ("logger.mode=disabled", "progress=false")
# An off-policy estimate that needs no model fit keeps the final evaluation cheap.
OPE = ("offline.estimators=[ips]", "offline.select_by=ips", "offline.bootstrap=50")


def _training_rows(data: LoggedData, fraction: float, seed: int) -> np.ndarray:
    return ~held_out_sessions(data.episode_id, fraction, seed)


def _slot_clicks(data: LoggedData) -> np.ndarray:
    """(n, K) 1 where slot k of the logged slate was clicked."""
    k = data.slate.shape[1]
    return (data.click[:, None] == np.arange(k)[None, :]).astype(np.float64)


@pytest.mark.slow
def test_lin_ucb_from_logs_is_the_ridge_regression_of_the_training_rows(ray_session, logged_iev, tmp_path):
    run = recsys_exp.run(["env=logged", "algo=lin_ucb", f"offline.path={logged_iev}", "offline.eval_fraction=0.25",
                          *OPE, *QUIET], run_dir=tmp_path / "run")
    data = LoggedData.read(logged_iev)
    train = _training_rows(data, 0.25, run.config["seed"])
    # Every training row once, then done (one pass), whatever stop.timesteps allows beyond it.
    assert run.summary["timesteps"] == train.sum() < run.config["stop"]["timesteps"]

    # LinUCB's features of the shown items: [position one-hot | doc | user | user ⊗ doc].
    user, docs, slate = data.user[train], data.docs[train], data.slate[train]
    n, k = slate.shape
    shown = docs[np.arange(n)[:, None], slate]  # (n, K, D)
    users = np.broadcast_to(user[:, None, :], (n, k, user.shape[1]))
    x = np.concatenate([np.broadcast_to(np.eye(k), (n, k, k)), shown, users,
                        (users[..., :, None] * shown[..., None, :]).reshape(n, k, -1)], -1).reshape(n * k, -1)
    y = (data.reward[train, None] * _slot_clicks(data)[train]).reshape(-1)
    theta = np.linalg.solve(np.eye(x.shape[1]) + x.T @ x, x.T @ y)  # ridge λ = 1 (the default)

    module = recsys_exp.load_policy(run.run_dir).module
    np.testing.assert_allclose(module.theta.numpy(), theta, rtol=1e-3, atol=1e-4)
    assert run.summary["objective"]["estimator"] == "ips"


@pytest.mark.parametrize("algo", ["bernoulli_ts", "ucb1"])
def test_arm_counts_from_logs_are_the_training_rows_counts(algo, ray_session, logged_iev, tmp_path):
    """Cluster arms of Interest Evolution: pulls and clicks per cluster of the shown documents."""
    run = recsys_exp.run(["env=logged", f"algo={algo}", f"offline.path={logged_iev}", "offline.eval_fraction=0.25",
                          "algo.training.train_batch_size_per_learner=1000", *OPE, *QUIET], run_dir=tmp_path / algo)
    data = LoggedData.read(logged_iev)
    train = _training_rows(data, 0.25, run.config["seed"])
    num_clusters = data.meta["response_fields"]["cluster_id"]["n"]
    n, k = data.slate[train].shape
    clusters = data.docs[train][np.arange(n)[:, None], data.slate[train], :num_clusters].argmax(-1)  # (n, K)
    pulls = np.bincount(clusters.ravel(), minlength=num_clusters)
    clicks = np.bincount(clusters.ravel(), weights=_slot_clicks(data)[train].ravel(), minlength=num_clusters)

    module = recsys_exp.load_policy(run.run_dir).module
    np.testing.assert_array_equal(module.arm_pulls.numpy(), pulls)
    np.testing.assert_array_equal(module.arm_clicks.numpy(), clicks)
    assert pulls.sum() == n * k and clicks.sum() > 0


def test_a_simulator_env_with_offline_path_trains_the_bandit_from_the_logs(logged_iev):
    """With a simulator env the bandit reads the logs (no held-out split: the simulator evaluates)."""
    from recsys_exp.runner.build import build_algorithm_config

    c = recsys_exp.compose(["algo=lin_ts", f"offline.path={logged_iev}"])
    algo_class, config = build_algorithm_config(c)
    assert algo_class.__name__ == "LoggedLinTS" and config.logged_holdout == 0.0
    assert config.logged_data_path == str(logged_iev.resolve()) and config.exploration_mode == "thompson"
    online_class, _ = build_algorithm_config(recsys_exp.compose(["algo=lin_ts"]))
    assert online_class.__name__ == "LinearBandit"
