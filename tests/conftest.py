"""Shared fixtures: one light local Ray for every in-process test of the session, config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# What the run lifecycle sets before it starts a Ray; the session's Ray is started here instead.
os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(*overrides: str) -> dict:
    """Compose ``conf/`` with ``overrides`` and validate it exactly as the CLI does: a plain dict."""
    import recsys_exp

    return recsys_exp.compose(list(overrides))


# The costliest files, most expensive first (seconds of one worker, measured with
# `pytest -p no:cacheprovider --durations=0` and summed per file): tune 195, runner 157, offline 91,
# algorithms 89, serve 83, fidelity 79, plugin_example 65, logged_env 54. A scheduling hint only.
COSTLIEST_FIRST = ("test_tune.py", "test_runner.py", "test_notebooks.py", "test_offline.py", "test_algorithms.py",
                   "test_serve.py", "test_fidelity.py", "test_plugin_example.py", "test_logged_env.py")


def pytest_collection_modifyitems(config, items):
    """The costliest files first (:data:`COSTLIEST_FIRST`), then the other files with long
    (``slow``-marked) tests, then the rest. The two xdist workers take whole files from this queue
    in this order (``--dist loadfile --no-loadscope-reorder``: xdist's own reordering would put files
    with many quick tests first and leave the long ones for the end), so the short files fill the
    gaps at the end instead of one worker idling while the other finishes a long file. Every worker
    sorts the same way (a stable sort)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def key(item):
        name = item.path.name
        rank = COSTLIEST_FIRST.index(name) if name in COSTLIEST_FIRST else len(COSTLIEST_FIRST)
        return rank, item.path not in slow_files

    items.sort(key=key)


@pytest.fixture(scope="session")
def ray_session():
    """One light local Ray (2 CPUs, no dashboard) shared by all in-process tests."""
    import ray
    import torch

    from recsys_exp.envs.rllib import register_envs

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=200 * 1024 ** 2)
    register_envs()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def logged_iev(tmp_path_factory) -> Path:
    """A small logged dataset of the default env (IEv 10-2): greedy-by-affinity with ε = 0.5,
    a few sessions recorded by ``mode=record``'s recorder (no Ray)."""
    from recsys_exp.offline.recorder import record

    c = compose_config("algo=greedy", "exploration=epsilon_greedy", "exploration.initial_epsilon=0.5",
                       "exploration.final_epsilon=0.5", "offline.record_steps=1500", "offline.record_num_envs=20")
    out = tmp_path_factory.mktemp("logged") / "iev"
    record(c, out)
    return out
