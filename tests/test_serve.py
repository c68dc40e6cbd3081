"""``mode=serve`` on real Ray Serve over loopback HTTP: a tiny trained checkpoint answers with the
same greedy slates as its module in-process, malformed bodies get their 4xx (and the replica keeps
answering), ``/info`` describes the model, and shutdown leaves no Serve actors behind."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import compose_config

ENV = ("env.num_candidates=6", "env.slate_size=2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    """A LinUCB checkpoint trained for one iteration, served on a free loopback port."""
    from ray import serve

    from recsys_exp.runner.build import build_algorithm_config
    from recsys_exp.serve.deployment import start_app

    c = compose_config("algo=lin_ucb", *ENV, "serve=http", f"serve.port={free_port()}",
                       "algo.training.train_batch_size_per_learner=200")
    _, config = build_algorithm_config(c)
    algo = config.build_algo()
    try:
        algo.train()
        checkpoint = algo.save_to_path(str(tmp_path_factory.mktemp("serve") / "ckpt"))
    finally:
        algo.stop()
    url = start_app(c, checkpoint, name="lin_ucb")
    yield c, checkpoint, url
    serve.shutdown()


def observations(c: dict, batch: int, seed: int = 0) -> list[dict]:
    """Random requests in the env's layout (after a few steps, so responses are non-zero)."""
    from recsys_exp.envs import make_vector_env

    env = make_vector_env(c["env"]["name"], batch, num_candidates=6, slate_size=2, seed=seed)
    obs, _ = env.reset(seed=seed)
    obs, *_ = env.step(np.tile([0, 1], (batch, 1)))
    return [{"user": obs["user"][i].tolist(), "docs": obs["doc"][i].tolist(),
             "response": {k: v[i].tolist() for k, v in obs["response"].items()}} for i in range(batch)], obs


def module_greedy_slates(checkpoint: str, obs: dict) -> np.ndarray:
    """The trained module's own answer: RLlib restores its learner RLModule, each observation is
    flattened by RLlib's ``flatten_inputs_to_1d_tensor`` (what ``FlattenObservations`` runs per
    observation) and ``forward_inference`` emits the slates (independent of the served Policy code)."""
    import torch
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    from recsys_exp.envs import make_vector_env

    module = RLModule.from_checkpoint(Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER
                                      / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID)
    struct = get_base_struct_from_space(make_vector_env("interest_evolution", 1, num_candidates=6,
                                                        slate_size=2).single_observation_space)
    rows = [flatten_inputs_to_1d_tensor({"user": obs["user"][i], "doc": obs["doc"][i],
                                         "response": {k: v[i] for k, v in obs["response"].items()}},
                                        spaces_struct=struct, batch_axis=False) for i in range(len(obs["user"]))]
    out = module.forward_inference({"obs": torch.as_tensor(np.stack(rows), dtype=torch.float32)})
    return out["actions"].numpy()


def test_served_slates_equal_the_module_in_process(served):
    c, checkpoint, url = served
    bodies, obs = observations(c, 8)
    expected = module_greedy_slates(checkpoint, obs)
    assert expected.shape == (8, 2)
    for i, body in enumerate(bodies):
        r = requests.post(url, json=body, timeout=30)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["slate"] == expected[i].tolist() and answer["model"] == "lin_ucb"
        assert answer["scores"] == [1.0, 1.0]  # a deterministic greedy slate: each item is shown with probability 1
        assert len(answer["scores"]) == 2 and len(answer["request_id"]) == 32
    r = requests.post(url, json=bodies, timeout=30)  # the batch form
    assert r.status_code == 200 and [a["slate"] for a in r.json()] == expected.tolist()


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "body"),
    (json.dumps({"docs": [[0.0] * 20] * 6}).encode(), 422, "user"),
    (json.dumps({"user": [0.0] * 20, "docs": [[0.0] * 20] * 5}).encode(), 422, "docs"),
    (b'{"user": [NaN' + b', 0.0' * 19 + b'], "docs": ' + json.dumps([[0.0] * 20] * 6).encode() + b'}', 422, "user"),
    (b"[" + b" " * 2_000_000 + b"]", 413, "body"),
])
def test_malformed_requests_get_a_4xx_naming_the_field(served, body, status, field):
    _, _, url = served
    r = requests.post(url, data=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert field in r.json()["error"]
    bodies, _ = observations(served[0], 1)
    assert requests.post(url, json=bodies[0], timeout=30).status_code == 200  # the replica still answers


def test_info_describes_the_model(served):
    c, checkpoint, url = served
    info = requests.get(f"{url}/info", timeout=30).json()
    assert info["algorithm"] == "lin_ucb" and info["env"] == "interest_evolution"
    assert (info["num_candidates"], info["slate_size"], info["user_dim"], info["doc_dim"]) == (6, 2, 20, 20)
    assert Path(info["checkpoint"]) == Path(checkpoint)


def test_serve_binds_to_loopback_by_default():
    c = compose_config("serve=http")
    assert c["serve"]["host"] == "127.0.0.1" and compose_config()["serve"]["host"] == "127.0.0.1"


def _group_processes(pgid: int) -> list[int]:
    """PIDs still alive in process group ``pgid`` (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
def test_cli_serves_until_ctrl_c_and_leaves_no_processes(ray_session, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["logger.mode=disabled", "progress=false", *ENV]
    import recsys_exp

    # The run to serve is made in process (the serving CLI is what is under test).
    run = recsys_exp.run(["algo=greedy", "stop.timesteps=100", "eval.episodes=5", "eval.num_envs=5", *common],
                         run_dir=tmp_path / "run")
    assert run.status == "completed"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recsys_exp", "mode=serve", f"restore={tmp_path / 'run'}",
                             "serve=http", f"serve.port={port}", f"hydra.run.dir={tmp_path / 'serve'}", *common],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (tmp_path / "serve" / "serve.json").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.poll() else "timeout"
            time.sleep(0.5)
        url = json.loads((tmp_path / "serve" / "serve.json").read_text())["url"]
        assert url == f"http://127.0.0.1:{port}/interest_evolution"
        assert requests.get(f"{url}/info", timeout=30).json()["algorithm"] == "greedy"
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the server did not stop within 120 s of SIGINT; stdout: {out[-1500:]} stderr: {err[-3000:]}")
        assert code == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert json.loads((tmp_path / "serve" / "run.json").read_text())["status"] == "completed"
    deadline = time.time() + 30
    while _group_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not _group_processes(proc.pid), "Ray/Serve processes outlived the server"


# ---------------------------------------------------------------------------------------
# model selection
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ucb", "thompson", "epsilon_greedy"])
def test_selector_converges_to_the_better_model_and_round_trips_its_state(kind, tmp_path):
    from recsys_exp.run_dir import atomic_write_json
    from recsys_exp.serve.selector import ModelSelector

    rng = np.random.default_rng(0)
    selector = ModelSelector(["a", "b", "c"], kind, seed=1)
    means = {0: 1.0, 1: 1.5, 2: 0.5}
    picks = []
    for _ in range(1000):
        arm = selector.choose()
        selector.update(arm, means[arm] + rng.normal(0, 1.0))
        picks.append(arm)
    assert np.mean(np.array(picks[-300:]) == 1) > 0.8, kind
    atomic_write_json(tmp_path / "state.json", selector.state())
    again = ModelSelector(["a", "b", "c"], kind)
    assert again.load(tmp_path / "state.json") and again.state() == {**selector.state()}
    with pytest.raises(ValueError, match="saved selector state is for models"):
        ModelSelector(["a", "x"], kind).load(tmp_path / "state.json")


def _greedy_checkpoint(overrides: tuple[str, ...], out: Path) -> Path:
    """A greedy policy's checkpoint dir with its config.yaml beside it (what a run dir's checkpoint holds)."""
    from recsys_exp.runner.build import build_algorithm_config
    from recsys_exp.run_dir import write_config

    c = compose_config(*overrides)
    _, config = build_algorithm_config(c)
    algo = config.build_algo()
    try:
        path = Path(algo.save_to_path(str(out)))
    finally:
        algo.stop()
    write_config(path / "config.yaml", c)
    return path


@pytest.mark.slow
def test_model_selection_over_http_finds_the_better_model_and_survives_a_restart(served, tmp_path):
    """Driven by the RecSim env: each answer's slate is shown to a simulated user, its reward fed back."""
    from ray import serve

    from recsys_exp.envs import make_vector_env
    from recsys_exp.serve.deployment import start_app

    lts = ("env=long_term_satisfaction", "env.max_episode_steps=30", "algo=greedy", "algo.training.score=feature")
    good = _greedy_checkpoint(lts, tmp_path / "good")  # most clickbait first: ≈ 19 per step
    bad = _greedy_checkpoint((*lts, "algo.training.descending=false"), tmp_path / "bad")  # ≈ 13 per step
    # A second app on the running Serve (the `served` fixture's proxy and port), on its own route.
    port = served[0]["serve"]["port"]
    c = compose_config(*lts, "serve=http", f"serve.port={port}", f"serve.candidates=[{good},{bad}]",
                       "serve.route_prefix=/selection")
    state = tmp_path / "selector.json"
    url = start_app(c, state_path=state)
    try:
        env = make_vector_env("long_term_satisfaction", 1, max_episode_steps=30, seed=5)
        obs, _ = env.reset(seed=5)
        chosen = []
        for _ in range(400):
            body = {"user": obs["user"][0].tolist(), "docs": obs["doc"][0].tolist(),
                    "response": {k: v[0].tolist() for k, v in obs["response"].items()}}
            answer = requests.post(url, json=body, timeout=30).json()
            obs, reward, *_ = env.step(np.array([answer["slate"]]))
            fb = requests.post(f"{url}/feedback", json={"request_id": answer["request_id"], "reward": float(reward[0])},
                               timeout=30)
            assert fb.status_code == 200, fb.text
            chosen.append(answer["model"])
        assert chosen[-100:].count("good") > 80, chosen[-100:].count("good")
        again = requests.post(f"{url}/feedback", json={"request_id": answer["request_id"], "reward": 1.0}, timeout=30)
        assert again.status_code == 404 and "already rated" in again.json()["error"]
        before = requests.get(f"{url}/info", timeout=30).json()["selection"]
        assert before["selector"] == "ucb" and before["models"]["good"]["feedback"] + before["models"]["bad"]["feedback"] == 400
        assert json.loads(state.read_text()) == before
        serve.delete("selection")
        url = start_app(c, state_path=state)  # a restart loads the saved state
        assert requests.get(f"{url}/info", timeout=30).json()["selection"] == before
    finally:
        serve.delete("selection")
