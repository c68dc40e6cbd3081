"""Config tests: every group option and preset composes and validates; bad configs stop before Ray.

Spec: recsys_exp/config/{schema,validate,compose}.py, /work/shared/reference/hydra-tune-wandb.md §3–4.
Ray-free: configs are composed in process with Hydra's compose API; the error table runs the
real CLI (``python -m recsys_exp``) in subprocesses, which must fail before any Ray start (checked
by behaviour: the subprocess's own Ray temp dir, ``RAY_TMPDIR``, is never created). Group options and presets are discovered from conf/, so new YAML files are tested
without editing this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from recsys_exp.algorithms.plugin import load_plugin
from recsys_exp.config.compose import apply_overrides
from recsys_exp.config.schema import GROUPS, register_configs
from recsys_exp.config.validate import ConfigError, check_schema, check_semantics
from recsys_exp.run_dir import load_config, write_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
ERROR_PREFIX = "recsys_exp: config error:"
RAY_STARTUP = ("Started a local Ray instance", "Connecting to existing Ray cluster")

register_configs()


# ---------------------------------------------------------------------------------------------
# helpers


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file of every config group except the presets."""
    pairs = []
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name != "experiment"):
        pairs += [(group_dir.name, f.stem) for f in sorted(group_dir.glob("*.yaml"))]
    return pairs


def presets() -> list[str]:
    return sorted(f.stem for f in (CONF / "experiment").glob("*.yaml"))


def compose_cfg(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The composed job config (without the ``hydra`` node) and the chosen group options."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if k in GROUPS or k == "experiment"}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def validate(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict:
    """What a fresh run does with a composed config (recsys_exp.config.compose.resolve_run_config)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["choices"] = dict(choices or {})
    config = check_schema(plain)
    check_semantics(config)
    return config


def cli_env(ray_tmp: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true",
               RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(ray_tmp))
    env.pop("HYDRA_FULL_ERROR", None)  # the messages asserted below are Hydra's compact ones
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(args: list[str], run_dir: Path, timeout: float = 120, extra: tuple[str, ...] = ()):
    """``python [extra] -m recsys_exp hydra.run.dir=run_dir *args`` with its own Ray temp dir
    (``RAY_TMPDIR=<run_dir>.ray``, which a Ray start would create); returns (process, started_ray)."""
    ray_tmp = Path(f"{run_dir}.ray")
    proc = subprocess.run([sys.executable, *extra, "-m", "recsys_exp", f"hydra.run.dir={run_dir}", *args],
                          cwd=REPO, env=cli_env(ray_tmp), capture_output=True, text=True, timeout=timeout)
    return proc, ray_tmp.exists()


# ---------------------------------------------------------------------------------------------
# 1. every group option and every preset composes and validates


def test_discovery_finds_groups_and_presets():
    groups = {g for g, _ in group_options()}
    assert groups == set(GROUPS), "every conf/ group needs a schema in GROUPS (and vice versa)"
    assert {"quick", "tutorial_lts"} <= set(presets())


def test_default_config_validates():
    cfg, choices = compose_cfg([])
    config = validate(cfg, choices)
    assert config["algo"]["name"] == "slateq" and config["exploration"]["type"] == "epsilon_greedy"
    assert config["env"]["name"] == "interest_evolution"
    assert "experiment" not in choices  # presets stay out of the defaults list


@pytest.mark.parametrize(("group", "option"), group_options(), ids=lambda x: x)
def test_group_option_composes_and_validates(group, option, logged_iev):
    overrides = [f"{group}={option}"]
    if (group, option) == ("offline", "logged"):  # logged data for an offline algorithm
        overrides.insert(0, "algo=bc")
    if (group, option) == ("tune", "bandit_alpha"):  # searches the UCB width: needs a UCB algorithm
        overrides.insert(0, "algo=lin_ucb")
    if (group, option) == ("env", "logged"):  # no simulator: an algorithm that learns from the logs, and logs
        overrides[:0] = ["algo=bc", f"offline.path={logged_iev}"]
    cfg, choices = compose_cfg(overrides)
    if load_plugin(cfg.algo).needs.logged_data:  # offline algorithms need logged data
        overrides.append(f"offline.path={logged_iev}")
        cfg, choices = compose_cfg(overrides)
    if group == "exploration" and cfg.exploration.type not in load_plugin(cfg.algo).explorations:
        # An exploration the default algorithm does not support: pair it with one that does.
        algos = [name for g, name in group_options() if g == "algo"
                 if cfg.exploration.type in load_plugin(compose_cfg([f"algo={name}"])[0].algo).explorations]
        assert algos, f"no algorithm supports exploration {option}"
        overrides.insert(0, f"algo={algos[0]}")
        cfg, choices = compose_cfg(overrides)
    assert choices[group] == option
    config = validate(cfg, choices)
    assert config["choices"][group] == option


@pytest.mark.parametrize("preset", presets())
def test_preset_composes_and_validates(preset):
    cfg, choices = compose_cfg([f"+experiment={preset}"])
    assert choices["experiment"] == preset
    validate(cfg, choices)


def test_quick_preset_values():
    cfg, choices = compose_cfg(["+experiment=quick"])
    assert choices["model"] == "small" and list(cfg.model.hidden_sizes) == [64, 64]
    assert cfg.stop.timesteps == 2000 and cfg.logger.mode == "disabled" and cfg.eval.episodes == 10


def test_dqn_selects_epsilon_greedy_by_default():
    cfg, choices = compose_cfg(["algo=dqn"])
    assert choices["exploration"] == "epsilon_greedy"
    config = validate(cfg, choices)
    assert config["exploration"]["type"] == "epsilon_greedy"
    assert config["algo"]["flatten_actions"] is True


def test_dqn_without_exploration_is_allowed():
    cfg, choices = compose_cfg(["algo=dqn", "exploration=none"])
    assert choices["exploration"] == "none"
    assert validate(cfg, choices)["exploration"]["type"] == "none"


def test_ppo_rejects_epsilon_greedy():
    cfg, choices = compose_cfg(["algo=ppo", "exploration=epsilon_greedy"])
    with pytest.raises(ConfigError, match=r"exploration\.type='epsilon_greedy': ppo supports: none"):
        validate(cfg, choices)


def test_long_term_satisfaction_tutorial_env():
    cfg, choices = compose_cfg(["env=long_term_satisfaction_tutorial"])
    env = validate(cfg, choices)["env"]
    assert env["name"] == "long_term_satisfaction"
    assert env["num_candidates"] == 20 and env["slate_size"] == 2
    p = env["params"]
    assert p["sensitivity"] == pytest.approx(0.058)
    assert p["time_budget"] == 120
    assert p["choc_stddev"] == pytest.approx(0.1) and p["kale_stddev"] == pytest.approx(0.1)


def test_check_schema_defaults_choices():
    cfg, _ = compose_cfg([])
    assert check_schema(cfg)["choices"] == {}


def test_offline_estimators_and_their_settings_validate():
    from recsys_exp.config.validate import OPE_ESTIMATORS
    from recsys_exp.offline.ope import ALL_ESTIMATORS, ESTIMATORS

    assert OPE_ESTIMATORS == ALL_ESTIMATORS
    config = validate(*compose_cfg([]))
    assert config["offline"]["estimators"] == list(ESTIMATORS)  # the default set is unchanged
    assert (config["offline"]["clip"], config["offline"]["dros_lambda"], config["offline"]["switch_tau"]) == (
        None, None, None)
    config = validate(*compose_cfg(["offline.estimators=[ips,sndr,dros,switch_dr,rips]", "offline.select_by=dros",
                                    "offline.clip=100", "offline.dros_lambda=0", "offline.switch_tau=50"]))
    assert (config["offline"]["clip"], config["offline"]["dros_lambda"], config["offline"]["switch_tau"]) == (
        100.0, 0.0, 50.0)


@pytest.mark.parametrize(("override", "message"), [
    ("offline.clip=0", "offline.clip=0.0: must be > 0 (the largest importance weight) or null (no clipping)"),
    ("offline.dros_lambda=-1", "offline.dros_lambda=-1.0: must be >= 0"),
    ("offline.switch_tau=-0.5", "offline.switch_tau=-0.5: must be >= 0"),
    ("offline.estimators=[ips,magic]", "offline.estimators=['ips', 'magic']: allowed: a non-empty list of ips,"),
])
def test_offline_estimator_settings_are_rejected(override, message):
    with pytest.raises(ConfigError) as e:
        validate(*compose_cfg([override]))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# 2. bad configs: one clear message naming the key, before Ray starts

# (overrides, message fragment, raised by our validation (exit 2, one line) rather than by Hydra).
# Through the CLI: one case of each kind of error (Hydra's own, the typed schema, the semantic checks,
# a missing restore dir); the RLlib keyword check (which imports RLlib) is checked in process below.
CLI_ERRORS = [
    (["algo.stop_iter=3"], "'algo.stop_iter'", False),
    (["seed=abc"], "full_key: seed", False),
    (["+foo=1"], "foo: unknown key", True),
    (["env.slate_size=20"], "slate_size (20) must be <= num_candidates (10)", True),
    (["restore=/nonexistent"], "restore=/nonexistent", True),
]
# The same checks in process (recsys_exp.run raises the ConfigError the CLI prints as its one line).
IN_PROCESS_ERRORS = [
    (["+algo.foo=1"], "algo.foo: unknown key"),
    (["exploration.final_epsilon=1.5"], "exploration.final_epsilon=1.5"),
    (["+env.params.no_such_constant=1"], "unknown parameter(s) no_such_constant"),
    (["env.params.no_such_constant=1"], "'env.params.no_such_constant'"),  # Hydra's: a key not in the group
    (["env.name=nope"], "known envs: interest_evolution, long_term_satisfaction, interest_exploration"),
    (["algo=dqn", "algo.flatten_actions=false"], "algo.flatten_actions=False: dqn needs a Discrete"),
    (["mode=evaluate"], "mode=evaluate needs restore="),
    (["logger.mode=loud"], "logger.mode='loud'"),
    (["model.activation=gelu"], "model.activation='gelu'"),
    (["stop.timesteps=0"], "stop.timesteps=0"),
    (["+algo.training.lrr=0.1"], "algo.training.lrr: not a parameter of"),  # RLlib's keywords, before Ray
]


@pytest.mark.parametrize(("overrides", "fragment"),
                         [pytest.param(*case, id=" ".join(case[0])) for case in IN_PROCESS_ERRORS])
def test_run_rejects_bad_config_before_ray_and_writes_nothing(overrides, fragment, tmp_path, monkeypatch):
    import ray

    import recsys_exp

    def tripwire(*args, **kwargs):
        raise AssertionError("Ray started before the config error")

    monkeypatch.setattr(ray, "init", tripwire)
    with pytest.raises(ConfigError) as e:
        recsys_exp.run(overrides, run_dir=tmp_path / "run")
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(("overrides", "fragment", "ours"),
                         [pytest.param(*case, id=" ".join(case[0])) for case in CLI_ERRORS])
def test_cli_rejects_bad_config(overrides, fragment, ours, tmp_path):
    proc, started_ray = run_cli(overrides, tmp_path / "run")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert not started_ray, "Ray started before the config error"
    assert not any(text in output for text in RAY_STARTUP), output
    # nothing of a run was written: no run record, no saved config, no Tune experiment
    assert not any((tmp_path / "run" / name).exists() for name in ("run.json", "config.yaml", "ray_results"))
    assert fragment in proc.stderr, proc.stderr
    if not ours:
        assert ERROR_PREFIX not in proc.stderr
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines[-1].startswith(ERROR_PREFIX), proc.stderr
    assert fragment in lines[-1]
    assert sum(line.startswith(ERROR_PREFIX) for line in lines) == 1


# ---------------------------------------------------------------------------------------------
# 3. presets: +experiment=NAME, the wrong form, and a team preset outside the repo


def test_experiment_without_plus_fails_helpfully(tmp_path):
    proc, started_ray = run_cli(["experiment=quick"], tmp_path / "run")
    assert proc.returncode != 0
    assert "+experiment=quick" in proc.stderr, proc.stderr
    assert not started_ray and not (tmp_path / "run" / "run.json").exists()


def test_team_preset_on_searchpath(tmp_path):
    team = tmp_path / "team_presets"
    (team / "experiment").mkdir(parents=True)
    (team / "experiment" / "team_x.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n"
        "  - override /env: long_term_satisfaction\n"
        "  - override /model: small\n"
        "seed: 1234\n"
        "eval:\n"
        "  episodes: 17\n"
        "algo:\n"
        "  training:\n"
        "    lr: 0.00042\n")
    proc, started_ray = run_cli([f"hydra.searchpath=[file://{team}]", "+experiment=team_x", "--cfg", "job"],
                                tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert not started_ray
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["seed"] == 1234
    assert cfg["eval"]["episodes"] == 17
    assert cfg["algo"]["training"]["lr"] == pytest.approx(0.00042)
    slateq_yaml = yaml.safe_load((CONF / "algo" / "slateq.yaml").read_text())
    assert cfg["algo"]["training"]["gamma"] == slateq_yaml["training"]["gamma"]  # the rest of algo/slateq stays
    assert cfg["env"]["name"] == "long_term_satisfaction"
    assert cfg["model"]["hidden_sizes"] == [64, 64]
    # The printed config is a complete, valid job config.
    cfg["choices"] = {}
    check_semantics(check_schema(cfg))
    assert not (tmp_path / "run").exists()  # --cfg job runs nothing


# ---------------------------------------------------------------------------------------------
# 4. composing stays light


def test_cfg_job_imports_neither_rllib_nor_torch(tmp_path):
    proc, started_ray = run_cli(["--cfg", "job"], tmp_path / "run", extra=("-X", "importtime"))
    assert proc.returncode == 0, proc.stderr
    assert not started_ray
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")}
    assert "hydra" in modules and "omegaconf" in modules  # the import log was parsed
    heavy = sorted(m for m in modules if m in ("ray", "torch") or m.startswith(("ray.", "torch.")))
    assert not heavy, f"--cfg job imported {heavy[:10]}"
    assert yaml.safe_load(proc.stdout)["algo"]["name"] == "slateq"


# ---------------------------------------------------------------------------------------------
# 5. restore: the saved config is the base, this command line's overrides go on top


@pytest.fixture
def saved_config(tmp_path) -> dict:
    """A config as a run saves it (config.yaml), different from today's defaults."""
    cfg, choices = compose_cfg(["env=long_term_satisfaction", "seed=5", "algo.training.gamma=0.9",
                                "+experiment=quick"])
    config = validate(cfg, choices)
    config["restore"], config["mode"] = "/old/run", "evaluate"  # invocation keys: never taken from here
    write_config(tmp_path / "config.yaml", config)
    return load_config(tmp_path / "config.yaml")


def test_apply_overrides_keeps_saved_values(saved_config):
    overrides = ["algo.training.lr=0.001", "eval.episodes=7", "hydra.run.dir=/tmp/x"]
    composed, _ = compose_cfg(overrides)
    result = apply_overrides(saved_config, composed, overrides)
    assert result["algo"]["training"]["lr"] == pytest.approx(0.001)
    assert result["eval"]["episodes"] == 7
    # everything else comes from the saved config, not from today's composition
    assert result["seed"] == 5
    assert result["algo"]["training"]["gamma"] == pytest.approx(0.9)
    assert result["env"]["name"] == "long_term_satisfaction"
    assert result["model"]["hidden_sizes"] == [64, 64]
    assert result["stop"]["timesteps"] == 2000
    assert result["choices"] == saved_config["choices"]
    # invocation keys describe this command line
    assert result["restore"] is None and result["mode"] == "train"
    unchanged = {k: v for k, v in saved_config.items() if k not in ("algo", "eval", "mode", "restore")}
    assert {k: result[k] for k in unchanged} == unchanged
    validate(OmegaConf.create({k: v for k, v in result.items() if k != "choices"}), result["choices"])


def test_apply_overrides_rejects_presets(saved_config):
    overrides = ["+experiment=quick"]
    composed, _ = compose_cfg(overrides)
    with pytest.raises(ConfigError, match="presets"):
        apply_overrides(saved_config, composed, overrides)


def test_apply_overrides_rejects_deletes(saved_config):
    overrides = ["~algo.training.lr"]
    composed, _ = compose_cfg(overrides)
    with pytest.raises(ConfigError, match="deleting"):
        apply_overrides(saved_config, composed, overrides)


def test_apply_overrides_switches_group(tmp_path):
    cfg, choices = compose_cfg([])
    saved = validate(cfg, choices)
    assert saved["env"]["name"] == "interest_evolution"
    overrides = ["env=long_term_satisfaction_tutorial"]
    composed, _ = compose_cfg(overrides)
    result = apply_overrides(saved, composed, overrides)
    assert result["choices"]["env"] == "long_term_satisfaction_tutorial"
    assert result["env"] == OmegaConf.to_container(composed.env, resolve=True)
    assert result["env"]["num_candidates"] == 20 and result["env"]["params"]["sensitivity"] == pytest.approx(0.058)
    assert result["algo"] == saved["algo"]
    config = check_schema(result)
    check_semantics(config)


def test_apply_overrides_switches_to_plain_lts():
    cfg, choices = compose_cfg(["env=long_term_satisfaction_tutorial"])
    saved = validate(cfg, choices)
    overrides = ["env=long_term_satisfaction"]
    composed, _ = compose_cfg(overrides)
    result = apply_overrides(saved, composed, overrides)
    assert result["choices"]["env"] == "long_term_satisfaction"
    assert result["env"]["params"] == {}  # the tutorial's constants do not leak into the new option
    assert result["env"]["num_candidates"] == 10
    check_semantics(check_schema(result))


def test_tutorial_preset_sweeps_four_algorithms_over_five_seeds():
    """``-m +experiment=tutorial_lts`` expands to random/lin_ucb/lin_ts/slateq x seeds 0-4, and every
    combination validates; its SlateQ is the bare ``algo=slateq`` (the same settings as composed alone)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=tutorial_lts"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    algos, seeds = params["algo"].split(","), [int(s) for s in params["seed"].split(",")]
    assert algos == ["random", "lin_ucb", "lin_ts", "slateq"] and seeds == [0, 1, 2, 3, 4]
    for algo in algos:
        config = validate(*compose_cfg(["+experiment=tutorial_lts", f"algo={algo}", "seed=4"]))
        assert config["env"]["params"]["observe_satisfaction"] is True
        assert config["env"]["num_candidates"] == 20 and config["stop"]["timesteps"] == 200_000
        assert config["algo"]["name"] == algo
    preset = validate(*compose_cfg(["+experiment=tutorial_lts"]))
    bare = validate(*compose_cfg(["algo=slateq", "env=long_term_satisfaction_tutorial"]))
    assert preset["algo"] == bare["algo"] and preset["exploration"] == bare["exploration"]
    assert preset["exploration"]["type"] == "epsilon_greedy" and preset["model"]["hidden_sizes"] == [64, 64]
