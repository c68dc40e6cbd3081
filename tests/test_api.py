"""The Python API (recsys_exp.compose / run / load_policy) from a plain Python session."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import recsys_exp

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light():
    """``import recsys_exp`` (and composing) must not pull in Ray or torch."""
    import subprocess

    code = ("import sys, recsys_exp; c = recsys_exp.compose(['algo=lin_ucb']); "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    (["exploration.final_epsilon=1.5"], "exploration.final_epsilon=1.5: must be in [0, 1]"),
    (["algo=lin_ucb", "exploration=thompson"], "exploration.type='thompson': lin_ucb supports"),
    (["algo.training.lrr=1"], "algo.training.lrr"),  # Hydra's own override error, as a ConfigError
    (["algo=nope"], "algo/nope"),
])
def test_compose_raises_config_errors_and_never_exits(overrides, message):
    with pytest.raises(recsys_exp.ConfigError, match=re.escape(message)):
        recsys_exp.compose(overrides)


def test_run_writes_the_cli_run_dir_and_a_composed_config_runs_alike(ray_session, tmp_path):
    """``run(overrides)`` writes the CLI's run dir and leaves the session's Ray running; a config from
    ``compose()`` runs exactly like the overrides it came from (same seed: the same learned policy,
    so the same evaluation; LinUCB's policy depends on what it saw)."""
    import ray

    overrides = ["algo=lin_ucb", "stop.timesteps=1024", "eval.episodes=10", "logger.mode=disabled", "progress=false"]
    result = recsys_exp.run(overrides, run_dir=tmp_path / "run")
    assert ray.is_initialized()  # the session's Ray is not stopped by a run that did not start it
    assert result.status == "completed" and result.run_dir == tmp_path / "run"
    for name in ("config.yaml", "run.json", "metrics.csv", "summary.json", "learning_curve.png"):
        assert (result.run_dir / name).is_file(), name
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["algo"]["name"] == "lin_ucb" and saved["choices"]["algo"] == "lin_ucb"
    assert result.summary["timesteps"] >= 1024 and result.summary["eval_episodes"] == 10
    assert result.checkpoint is not None and (result.checkpoint / "rllib_checkpoint.json").is_file()
    assert result.result == result.summary["eval_return_mean"]

    composed = recsys_exp.run(recsys_exp.compose(overrides), run_dir=tmp_path / "composed")
    assert composed.summary["eval_return_mean"] == result.summary["eval_return_mean"]
    assert composed.summary["eval_ci95"] == result.summary["eval_ci95"]


def test_a_bad_restore_is_a_config_error_before_anything_is_written(ray_session, tmp_path):
    with pytest.raises(recsys_exp.ConfigError):
        recsys_exp.run(["mode=evaluate", f"restore={tmp_path / 'missing'}"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()  # a config error: nothing was written


def _readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- python-api-example")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    return block


def test_readme_python_example_runs(ray_session, tmp_path, monkeypatch, capsys):
    """The README's Python API block, verbatim; its recommendation equals the module's own inference."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_python_example(), "README.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("completed ") for line in out)  # after Tune's and the progress lines
    assert "lin_ucb supports: ucb, none, epsilon_greedy" in out[-1]
    slate = namespace["policy"].recommend(namespace["obs"])
    assert slate.shape == (2,) and len(set(slate.tolist())) == 2
    np.testing.assert_array_equal(slate, _module_inference(namespace["result"].checkpoint, namespace["obs"],
                                                           namespace["env"]))


def _module_inference(checkpoint: Path, obs: dict, env) -> np.ndarray:
    """The slate of the checkpoint's RLModule's own forward_inference, the observation flattened by
    RLlib's own FlattenObservations connector (independent of recsys_exp's policy code)."""
    import torch
    from ray.rllib.connectors.env_to_module import FlattenObservations
    from ray.rllib.core import (COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE,
                                DEFAULT_MODULE_ID)
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    module = RLModule.from_checkpoint(checkpoint / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER
                                      / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID)
    connector = FlattenObservations(input_observation_space=env.observation_space,
                                    input_action_space=env.action_space)
    episode = SingleAgentEpisode(observations=[obs], observation_space=env.observation_space,
                                 action_space=env.action_space)
    connector(rl_module=module, batch={}, episodes=[episode], explore=False)  # flattens the episode's last obs
    flat = np.asarray(episode.get_observations(-1), dtype=np.float32)
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.as_tensor(flat)[None]})
    return out[Columns.ACTIONS][0].numpy()
