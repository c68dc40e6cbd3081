"""The notebooks of ``examples/``: committed without outputs, and executed top to bottom in a real
Jupyter kernel (nbclient) as a reader runs them, with their small ("smoke") budgets and their run dirs
in a temporary dir. A failing cell fails the test. What they computed is then checked against facts
that do not come from the notebook: the env's known values, the logged Parquet files read directly,
the served slates against the checkpoints' own RLlib inference."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_valid_and_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {i} has outputs"


def test_the_tutorials_are_there():
    assert {p.name for p in NOTEBOOKS} >= {"tutorial.ipynb", "logged_obd.ipynb"}


def execute(name: str, cwd: Path, monkeypatch, **env: str) -> nbformat.NotebookNode:
    """Run ``examples/<name>`` in a fresh python3 kernel started in ``cwd`` with ``env`` set; returns
    the executed notebook (a failing cell raises ``CellExecutionError`` naming the cell)."""
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def pngs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


def plot_cells(nb) -> list:
    """The code cells that draw a figure (they call the notebook's show(fig))."""
    return [c for c in nb.cells if c.cell_type == "code" and "show(fig)" in c.source and "def show" not in c.source]


# ---------------------------------------------------------------------------------------------
# an independent oracle: the checkpoint's RLModule through RLlib's own flattening and inference
# ---------------------------------------------------------------------------------------------
def module_slates(checkpoint: Path, observation_space, observations: list[dict]) -> np.ndarray:
    """Greedy slates of the checkpoint's learner RLModule (restored by RLlib) for raw observations, each
    flattened by RLlib's ``flatten_inputs_to_1d_tensor`` (what its ``FlattenObservations`` connector runs);
    none of recsys_exp's policy or serving code is involved."""
    import torch
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    module = RLModule.from_checkpoint(Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER
                                      / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID)
    struct = get_base_struct_from_space(observation_space)
    rows = [flatten_inputs_to_1d_tensor(_as_space(observation_space, obs), spaces_struct=struct, batch_axis=False)
            for obs in observations]
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(np.stack(rows), dtype=torch.float32)})
    return out["actions"].numpy()


def _as_space(space, obs: dict) -> dict:
    """A JSON observation ({"user", "doc" or "docs", "response"}) as arrays of the space's dtypes."""
    docs = obs["doc"] if "doc" in obs else obs["docs"]
    response = space["response"]
    return {"user": np.asarray(obs["user"], space["user"].dtype), "doc": np.asarray(docs, space["doc"].dtype),
            "response": {k: np.asarray(obs["response"][k], response[k].dtype) for k in response.spaces}}


# ---------------------------------------------------------------------------------------------
# examples/tutorial.ipynb
# ---------------------------------------------------------------------------------------------
SMOKE_STEPS = 2000       # the smoke budget's env steps per algorithm (the notebook's BUDGETS["smoke"])
SMOKE_RECORD = 2400      # logged env steps
TIME_BUDGET = 120        # steps per session of env=long_term_satisfaction_tutorial (conf/env/...)
# The tutorial env's values under fixed policies, measured by benchmarks/lts_tutorial_optimum.py over
# 20,000 simulated users (docs/results.md, "The ceiling on the tutorial env"); the notebook simulates 500 users
# (standard error ≈ 0.8).
RANDOM_RETURN, MYOPIC_RETURN = 1157.8, 1163.7


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """examples/tutorial.ipynb executed with the smoke budget: (notebook, its results, its output dir)."""
    work = tmp_path_factory.mktemp("tutorial")
    out = work / "out"
    with pytest.MonkeyPatch.context() as mp:
        nb = execute("tutorial.ipynb", work, mp, RECSYS_EXP_TUTORIAL_BUDGET="smoke", RECSYS_EXP_TUTORIAL_OUT=str(out))
    return nb, json.loads((out / "tutorial_results.json").read_text()), out


@pytest.mark.slow
def test_tutorial_renders_its_plots_and_simulates_the_tutorial_env(tutorial):
    nb, res, out = tutorial
    cells = plot_cells(nb)
    assert len(cells) == 3  # the env's trade-off, random vs LinUCB vs SlateQ, the off-policy estimates
    for cell in cells:
        assert pngs(cell) == 1, cell.source[:200]
    assert res["budget"] == "smoke" and Path(res["out"]) == out
    hand = {name: mean for name, (mean, _) in res["hand_policies"].items()}  # 500 users each
    # the env really is the tutorial's: its known values under fixed policies
    assert abs(hand["random"] - RANDOM_RETURN) < 4 and abs(hand["chocolate first"] - MYOPIC_RETURN) < 4, hand
    assert hand["kale first"] < hand["random"] - 30, hand  # ≈ 1083: kale alone never pays back
    for mean, (low, high) in res["hand_policies"].values():
        assert low < mean < high


def test_tutorial_runs_report_what_their_run_dirs_hold(tutorial):
    _, res, out = tutorial
    assert set(res["comparison"]) == {"lin_ucb", "slateq"}
    assert set(res["baselines"]) == {"random", "myopic"}  # the fixed policies the comparison shows
    for algo, shown in res["comparison"].items():
        run_dir = out / algo
        assert Path(shown["run_dir"]) == run_dir
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert shown["eval_return_mean"] == summary["eval_return_mean"] and shown["eval_ci95"] == summary["eval_ci95"]
        assert summary["timesteps"] >= SMOKE_STEPS and summary["eval_episodes"] == 20
        low, high = summary["eval_ci95"]
        assert low <= summary["eval_return_mean"] <= high
    # The offline (cql) checkpoint started online SlateQ training in the simulator from its weights.
    online = json.loads((out / "cql_online" / "run.json").read_text())
    assert online["status"] == "completed" and res["cql_online"]["status"] == "completed"
    saved = (out / "cql_online" / "config.yaml").read_text()
    assert "name: slateq" in saved and str(out / "cql") in saved
    assert res["cql_online"]["timesteps"] >= 200
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert sorted(t["params"]["algo.training.gamma"] for t in sweep["trials"]) == [0.0, 1.0]
    assert all(t["status"] == "TERMINATED" for t in sweep["trials"])
    assert res["sweep"]["best"] == sweep["best"]


def test_tutorial_logs_are_whole_sessions_and_its_ope_intervals_are_intervals(tutorial):
    import pyarrow.parquet as pq

    _, res, out = tutorial
    data = out / "record" / "data"
    table = pq.read_table(sorted(data.glob("*.parquet")))  # the Parquet files themselves
    episodes, steps = table["episode_id"].to_numpy(), table["step"].to_numpy()
    assert res["record"]["rows"] == table.num_rows >= SMOKE_RECORD
    ids, lengths = np.unique(episodes, return_counts=True)
    assert res["record"]["sessions"] == len(ids) and (lengths == TIME_BUDGET).all()  # complete sessions only
    assert sorted(steps[episodes == ids[0]].tolist()) == list(range(TIME_BUDGET))
    propensity = table["propensity"].to_numpy()
    assert ((propensity > 0) & (propensity <= 1)).all()
    reward = table["reward"].to_numpy()
    horizon = sum(0.9 ** t for t in range(TIME_BUDGET))  # Σ γ^t over the longest logged session
    feasible = [min(0.0, reward.min()) * horizon, max(0.0, reward.max()) * horizon]

    for algo in ("bc", "cql"):
        ope = json.loads((out / f"ope_{algo}" / "ope.json").read_text())
        assert res["ope"][algo]["estimates"] == ope["estimates"] and ope["gamma"] == 0.9
        assert list(ope["estimates"]) == ["ips", "snips", "dm", "dr", "iips"]  # offline.estimators' default
        assert ope["data"]["rows"] == table.num_rows and ope["feasible_range"] == pytest.approx(feasible)
        for name, e in ope["estimates"].items():
            low, high = e["ci95"]
            assert low <= e["value"] <= high, (algo, name, e)
            assert isinstance(e["reliable"], bool) and e["reason"]
        assert ope["recommended"] is None or ope["estimates"][ope["recommended"]]["reliable"]
        sim = ope["simulated"]
        assert sim["ci95"][0] <= sim["value"] <= sim["ci95"][1] and sim["episodes"] == 20


def test_tutorial_recommends_and_serves_the_checkpoints_own_slates(tutorial):
    """The loaded policy's slate and every served slate equal the answering checkpoint's own RLlib
    inference on the same observation; the selector's state adds up the feedback the notebook sent."""
    import recsys_exp
    from recsys_exp.envs.spec import env_spec

    _, res, out = tutorial
    space = env_spec(recsys_exp.compose(["env=long_term_satisfaction_tutorial"])).observation_space
    rec = res["recommend"]
    checkpoint = (Path(rec["run_dir"]) / "checkpoints" / "last").resolve()
    np.testing.assert_array_equal(rec["slate"], module_slates(checkpoint, space, [rec["obs"]])[0])

    serve_json = json.loads((out / "serve" / "serve.json").read_text())
    assert serve_json["url"] == res["serve"]["url"] and res["serve"]["url"].endswith("/long_term_satisfaction")
    served, models = res["serve"]["requests"], serve_json["models"]
    assert set(models) == {"slateq", "lin_ucb"} and len(served) == 30
    for name, ckpt in models.items():
        mine = [r for r in served if r["model"] == name]
        if mine:
            expected = module_slates(Path(ckpt), space, [r["obs"] for r in mine])
            np.testing.assert_array_equal([r["slate"] for r in mine], expected, err_msg=name)
        state = res["serve"]["selection"]["models"][name]
        assert state["served"] == state["feedback"] == len(mine)
        assert state["reward_sum"] == pytest.approx(sum(r["reward"] for r in mine))
    state_file = json.loads((out / "serve" / "selector.json").read_text())  # saved after every feedback
    assert state_file == res["serve"]["selection"]
