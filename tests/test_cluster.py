"""Scale-out: the same sweep command on an existing multi-node Ray cluster (``ray.address``).

A real local cluster: ``ray start --head`` plus a second worker node process (1 CPU each), both
on this machine with their own temp dir and ports so they never touch the test session's Ray.
A two-trial sweep joins it by address, each trial needs 1 CPU, so the trials must run on
different nodes; checkpoints go to ``ray.storage_path`` (the shared storage of a real cluster).

Spec: issue 7 item 5; recsys_exp/runner/train.py (init_ray), recsys_exp/sweep/run.py (storage_root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "WANDB_", "RAY_ADDRESS"))}
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", WANDB_MODE="disabled", WANDB_SILENT="true")
    return env


def processes_mentioning(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (this cluster's temp dir), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def wait_for_nodes(address: str, count: int, timeout: float) -> None:
    script = ("import sys, time, ray\n"
              f"ray.init(address={address!r}, log_to_driver=False, configure_logging=False)\n"
              f"deadline = time.time() + {timeout}\n"
              f"while len([n for n in ray.nodes() if n['Alive']]) < {count}:\n"
              "    assert time.time() < deadline, 'nodes did not join'\n"
              "    time.sleep(0.5)\n")
    subprocess.run([sys.executable, "-c", script], env=cluster_env(), check=True, timeout=timeout + 60,
                   capture_output=True)


@pytest.fixture(scope="module")
def local_cluster():
    """``(address, temp dir)`` of a 2-node Ray cluster; stopped (only its own processes) at the end."""
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    common = ["--block", "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats",
              f"--dashboard-agent-listen-port={free_port()}"]
    head = [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}", *common]
    common[-1] = f"--dashboard-agent-listen-port={free_port()}"
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *common]
    procs = [subprocess.Popen(head, env=cluster_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1, timeout=120)
        procs.append(subprocess.Popen(worker, env=cluster_env(), start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_nodes(f"127.0.0.1:{port}", 2, timeout=120)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        # `ray stop` would also stop the test session's Ray: end this cluster's processes only.
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(2)
        for pid in processes_mentioning(temp_dir) + [p.pid for p in procs]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_sweep_runs_on_a_two_node_cluster(local_cluster, tmp_path: Path):
    address, temp_dir = local_cluster
    run_dir, shared = tmp_path / "sweep", tmp_path / "shared"
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_exp", "algo=lin_ucb", "env=long_term_satisfaction", "tune=sweep",
         "tune.num_samples=2", "+tune.search_space.exploration.alpha={type: uniform, low: 0.1, high: 2.0}",
         "stop.iterations=2", "eval.episodes=2", "eval.num_envs=2", "logger.mode=disabled", "progress=false",
         f"ray.address={address}", f"ray.storage_path={shared}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=cluster_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads((run_dir / "sweep.json").read_text())
    trials = sweep["trials"]
    assert len(trials) == 2 and all(tr["status"] == "TERMINATED" and tr["eval_per_seed"] for tr in trials)
    # One CPU per node and per trial: the two trials ran side by side on the two nodes.
    assert len({tr["node_id"] for tr in trials}) == 2
    # Tune's experiment and checkpoints live on the configured storage, not in the run dir.
    assert (shared / f"{tmp_path.name}_sweep" / "train").is_dir() and not (run_dir / "ray_results").exists()
    best = (run_dir / "best_checkpoint").resolve()
    assert shared in best.parents and (best / "seed_0" / "rllib_checkpoint.json").is_file()
    # The cluster is still there (the run joined it and did not shut it down).
    assert processes_mentioning(temp_dir)
