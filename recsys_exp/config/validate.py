"""Turn a composed Hydra config into one validated plain dict, or stop with one clear line.

Three layers, all before Ray starts:
1. Hydra + the ConfigStore schema reject unknown keys and wrong types in YAML and overrides.
2. :func:`check_schema` re-merges onto the schema, so ``+key=value`` cannot add an unknown key.
3. :func:`check_semantics` checks ranges and combinations (e.g. DQN on an unflattened slate).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recsys_exp.algorithms.plugin import AlgorithmPlugin, load_plugin
from recsys_exp.config.schema import Config
from recsys_exp.envs.spec import EnvSpec, env_spec
from recsys_exp.errors import ConfigError

MODES = ("train", "evaluate", "record", "offline_study", "serve")
LOGGER_MODES = ("offline", "online", "disabled")
OFFLINE_NAMES = ("none", "logged", "bc", "marwil", "cql")
OPE_ESTIMATORS = ("ips", "snips", "dm", "dr", "iips", "sndr", "dros", "switch_dr", "rips")  # = ope.ALL_ESTIMATORS
ACTIVATIONS = ("relu", "tanh", "swish", "silu", "elu", "linear")
EXPLORATIONS = ("none", "epsilon_greedy", "ucb", "thompson")
MAX_FLAT_ACTIONS = 100_000
SCHEDULERS = ("none", "asha", "pbt")
SEARCH_ALGS = ("random", "optuna")
TIME_ATTRS = ("num_env_steps_sampled_lifetime", "training_iteration")


def check_schema(config: dict[str, Any] | DictConfig) -> dict[str, Any]:
    """Strictly re-merge ``config`` onto the schema; return a resolved plain dict."""
    try:
        plain = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
        merged = OmegaConf.merge(OmegaConf.structured(Config), plain)
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None) or "config"
        reason = str(e).splitlines()[0]
        if "not in" in reason:
            reason = f"unknown key ({reason})"
        raise ConfigError(f"{key}: {reason}") from None


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def _positive(c: dict, path: str, allow_none: bool = False) -> None:
    value = _get(c, path)
    if value is None and allow_none:
        return
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, path, value,
             "must be a positive integer" + (" or null" if allow_none else ""))


def _get(c: dict, path: str) -> Any:
    for part in path.split("."):
        c = c[part]
    return c


def check_env(c: dict[str, Any]) -> EnvSpec:
    """Validate the env group by building its :class:`EnvSpec` once, as the env constructor will:
    RecSim's envs resolve their settings, ``custom`` instantiates and checks its parts (one
    dry-run step), ``gym`` constructs the user's env once. Returns the checked spec."""
    from recsys_exp.envs import custom, gym_env
    from recsys_exp.envs.settings import ENVS

    env = c["env"]
    spec = env_spec(c)
    if spec.is_gym:
        _require(not env["params"], "env.params", env["params"], "env=gym passes constructor keywords as env.kwargs")
        _require(env["max_episode_steps"] is None or env["max_episode_steps"] > 0, "env.max_episode_steps",
                 env["max_episode_steps"], "must be a positive integer or null")
        try:
            return spec.check()
        except gym_env.GymEnvError as e:
            raise ConfigError(f"env.entry_point={env['entry_point'] or 'null'}: {e}") from None
    _require(env.get("entry_point") is None, "env.entry_point", env.get("entry_point"),
             f"only env=gym takes an entry point (env={env['name']})")
    _require(not env.get("kwargs"), "env.kwargs", env.get("kwargs"),
             f"only env=gym takes constructor keywords; the constants of env={env['name']} go in env.params")
    try:
        return spec.check()
    except custom.PartError as e:
        raise ConfigError(str(e)) from None
    except (ValueError, TypeError) as e:
        extra = f", {gym_env.NAME} (any gymnasium env, env.entry_point)" if env["name"] not in ENVS else ""
        raise ConfigError(f"env: {e}{extra}") from None


GYM_MODES = ("train", "evaluate")


def gym_space_mismatch(algo: str, plugin: AlgorithmPlugin, obs_space, action_space) -> str | None:
    """Why ``algo`` (its plugin's :class:`EnvNeeds`) cannot run on an env with these spaces, or None.

    Algorithms that need ``Discrete`` actions get them; slate algorithms the slate observation
    (``user`` (U,), ``doc`` (N, D), ``response.click`` (K,)) and ``MultiDiscrete([N]*K)`` actions;
    RLlib's other algorithms ``Discrete``/``MultiDiscrete``/``Box`` actions and an observation
    RLlib's ``FlattenObservations`` can flatten.
    """
    import gymnasium as gym

    from recsys_exp.envs.layout import slate_layout

    needs = plugin.needs
    if needs.discrete_actions and not isinstance(action_space, gym.spaces.Discrete):
        return f"algo={algo} needs a Discrete action space, the env has {action_space}"
    if needs.slate:
        try:
            layout = slate_layout(obs_space)
        except ValueError as e:
            return (f"algo={algo} is a slate algorithm: it needs a Dict observation with user (U,), doc (N, D) and "
                    f"a per-slot response.click, but {e}")
        n, k = layout["doc"][1], layout["click"][1]
        fits = (isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.shape == (k,)
                and bool((action_space.nvec == n).all()))
        if not fits:
            return (f"algo={algo} is a slate algorithm: it needs a MultiDiscrete([{n}]*{k}) action space ({n} = rows "
                    f"of the observation's doc, {k} = slots of its response.click), the env has {action_space}")
        return None
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box)):
        return f"algo={algo} needs a Discrete, MultiDiscrete or Box action space, the env has {action_space}"
    bad = _unflattenable(obs_space)
    if bad is not None:
        return (f"algo={algo} reads the flattened observation (Box, Discrete, MultiDiscrete, MultiBinary or a "
                f"Dict/Tuple of them), but the env's observation has {bad}")
    return None


def _unflattenable(space):
    """The first leaf of ``space`` that RLlib's FlattenObservations cannot flatten, or None."""
    import gymnasium as gym

    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        subs = space.spaces.values() if isinstance(space, gym.spaces.Dict) else space.spaces
        return next((bad for bad in map(_unflattenable, subs) if bad is not None), None)
    flat = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    return None if isinstance(space, flat) else space


def check_gym_env(c: dict[str, Any], spec: EnvSpec, plugin: AlgorithmPlugin) -> None:
    """``env=gym``: the mode and algorithm can use a bring-your-own env and its spaces fit the algorithm.

    ``algo.flatten_actions`` is ignored (the env keeps its own action space).
    """
    algo = c["algo"]["name"]
    _require(c["mode"] in GYM_MODES, "mode", c["mode"], "env=gym supports mode=train and mode=evaluate; record, "
             "serve and offline_study need a slate env (user, doc and response observations)")
    _require(not plugin.needs.logged_data, "algo.name", algo, "offline algorithms learn from logged slate data; "
             "with env=gym train an online algorithm")
    _require(not c["offline"]["path"], "offline.path", c["offline"]["path"], "off-policy evaluation reads logged "
             "slate data; not available with env=gym")
    reason = gym_space_mismatch(algo, plugin, spec.observation_space, spec.action_space)
    if reason:
        raise ConfigError(f"env.entry_point={spec.entry_point}: {reason}")


def check_slate_env(c: dict[str, Any], spec: EnvSpec) -> None:
    """A slate algorithm needs the slate observation; one line naming algorithm, env and the fix if not."""
    try:
        spec.slate_layout
    except ValueError as e:
        raise ConfigError(f"algo={c['algo']['name']} cannot run on env={spec.name}: {e}; slate algorithms need a Dict "
                          f"observation with user (U,), doc (N, D) and a per-slot response.click") from None


LOGGED_MODES = ("train", "evaluate", "serve")


def check_logged_env(c: dict[str, Any], plugin: AlgorithmPlugin) -> None:
    """``env=logged`` (no simulator): only what logged data can do — train algorithms that learn from
    it, evaluate off-policy, serve."""
    name, off = c["algo"]["name"], c["offline"]
    _require(c["mode"] in LOGGED_MODES, "mode", c["mode"], "env=logged has no simulator; it supports mode=train "
             "(algorithms that learn from logged data), evaluate (off-policy estimates) and serve")
    _require(bool(off["path"]), "offline.path", off["path"], "env=logged takes its sizes and spaces from logged "
             "data: set offline.path=<Parquet file or dir>")
    if c["mode"] == "train":
        _require(plugin.learns_from_logs, "algo.name", name, f"{name} samples the simulator and env=logged has "
                 f"none: train an algorithm that learns from logged data ({', '.join(offline_algorithms())})")
        _require(0.0 < off["eval_fraction"] < 1.0, "offline.eval_fraction", off["eval_fraction"],
                 "must be in (0, 1): the share of sessions held out of training for the off-policy evaluation")
    _require(off["select_by"] == "recommended" or off["select_by"] in off["estimators"], "offline.select_by",
             off["select_by"], f"recommended (ope.json's recommended estimate) or one of offline.estimators "
             f"({', '.join(off['estimators'])})")


def builtin_plugins() -> dict[str, AlgorithmPlugin]:
    """The built-in algorithms by option name (for messages that list what exists)."""
    from recsys_exp.algorithms.plugins import BUILTIN
    from recsys_exp.offline.plugins import OFFLINE

    return {name: cls() for name, cls in {**BUILTIN, **OFFLINE}.items()}


def offline_algorithms() -> list[str]:
    """The built-in algorithms that can learn from logged data (``offline.path``)."""
    return [name for name, plugin in builtin_plugins().items() if plugin.learns_from_logs]


def online_algorithms() -> list[str]:
    """The built-in algorithms that can sample a simulator."""
    return [name for name, plugin in builtin_plugins().items() if not plugin.needs.logged_data]


def check_offline(c: dict[str, Any], plugin: AlgorithmPlugin) -> None:
    """The offline group against the mode and algorithm; the data's sizes against the env."""
    off, mode, name = c["offline"], c["mode"], c["algo"]["name"]
    _require(off["name"] in OFFLINE_NAMES, "offline.name", off["name"], f"allowed: {', '.join(OFFLINE_NAMES)}")
    offline_algos = ", ".join(offline_algorithms())
    if mode == "train" and plugin.needs.logged_data and not off["path"]:
        raise ConfigError(f"offline.path: algo={name} learns from logged data; set offline.path=<Parquet file or dir> "
                          f"(record some with mode=record)")
    if mode in ("train", "offline_study") and not plugin.learns_from_logs and (off["path"] or off["name"] != "none"):
        key = f"offline.path={off['path']}" if off["path"] else f"offline={off['name']}"
        raise ConfigError(f"{key}: algo={name} trains in the simulator; "
                          f"algorithms that learn from logged data: {offline_algos}")
    _positive(c, "offline.record_steps")
    _positive(c, "offline.record_num_envs")
    _require(off["target"] in ("greedy", "explore"), "offline.target", off["target"], "allowed: greedy, explore")
    bad = [e for e in off["estimators"] if e not in OPE_ESTIMATORS]
    _require(not bad and len(off["estimators"]) > 0, "offline.estimators", off["estimators"],
             f"allowed: a non-empty list of {', '.join(OPE_ESTIMATORS)}")
    _require(off["bootstrap"] >= 0, "offline.bootstrap", off["bootstrap"], "must be >= 0 (0 = no interval)")
    _require(0.0 <= off["gamma"] <= 1.0, "offline.gamma", off["gamma"], "must be in [0, 1]")
    _positive(c, "offline.fqe_iterations", allow_none=True)
    _require(isinstance(off["fqe_refits"], int) and not isinstance(off["fqe_refits"], bool) and off["fqe_refits"] >= 0,
             "offline.fqe_refits", off["fqe_refits"], "must be an integer >= 0 (0 = no model refits)")
    _require(off["clip"] is None or off["clip"] > 0, "offline.clip", off["clip"],
             "must be > 0 (the largest importance weight) or null (no clipping)")
    _require(off["dros_lambda"] is None or off["dros_lambda"] >= 0, "offline.dros_lambda", off["dros_lambda"],
             "must be >= 0 (0 = dm, larger = closer to dr) or null (tuned)")
    _require(off["switch_tau"] is None or off["switch_tau"] >= 0, "offline.switch_tau", off["switch_tau"],
             "must be >= 0 (the largest importance weight dr's correction keeps) or null (tuned)")
    if off["path"] and mode in ("train", "evaluate"):
        check_logged_data(c)
    if mode == "offline_study":
        study = c["study"]
        _require(study["behaviour_algo"] in online_algorithms(), "study.behaviour_algo", study["behaviour_algo"],
                 "an online algorithm: " + ", ".join(online_algorithms()))
        bad = [a for a in study["algos"] if a not in offline_algorithms()]
        _require(not bad, "study.algos", study["algos"], f"offline algorithms: {offline_algos}")
        _require(0.0 < study["record_epsilon"] <= 1.0, "study.record_epsilon", study["record_epsilon"],
                 "must be in (0, 1] (IS estimators need every slate possible)")
        _positive(c, "study.behaviour_steps")
        _positive(c, "study.train_steps")


def check_logged_data(c: dict[str, Any]) -> None:
    """``offline.path`` exists, holds logged data, and its sizes fit the env (reads file metadata only)."""
    import pyarrow.parquet as pq

    from recsys_exp.offline.schema import data_files, read_meta

    path = c["offline"]["path"]
    try:
        first = data_files(path)[0]
        meta = read_meta(pq.read_schema(first))
    except (FileNotFoundError, OSError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    if not meta:
        raise ConfigError(f"offline.path={path}: {first} has no recsys_exp metadata (write data with mode=record "
                          f"or python -m recsys_exp.offline.jsonl)")
    env = c["env"]
    space = env_spec(c).observation_space
    want = {"num_candidates": env["num_candidates"], "slate_size": env["slate_size"],
            "user_dim": int(space["user"].shape[0]), "doc_dim": int(space["doc"].shape[1])}
    bad = [f"{k} {meta.get(k)} (env={env['name']}: {v})" for k, v in want.items() if meta.get(k) != v]
    if bad:
        raise ConfigError(f"offline.path={path}: the logged data does not fit the env: {', '.join(bad)}")


def check_serve(c: dict[str, Any]) -> None:
    """The serve group: names, ranges, and a checkpoint to serve in mode=serve."""
    s = c["serve"]
    _require(s["name"] in ("none", "http"), "serve.name", s["name"], "allowed: none, http")
    _require(0 < s["port"] < 65536, "serve.port", s["port"], "must be in 1..65535")
    for key in ("num_replicas", "max_batch_size", "max_ongoing_requests", "max_body_bytes", "max_request_batch"):
        _positive(c, f"serve.{key}")
    _require(s["replica_num_cpus"] > 0, "serve.replica_num_cpus", s["replica_num_cpus"], "must be > 0")
    _require(s["batch_wait_timeout_s"] >= 0, "serve.batch_wait_timeout_s", s["batch_wait_timeout_s"], "must be >= 0")
    _require(s["selector"] in ("ucb", "thompson", "epsilon_greedy"), "serve.selector", s["selector"],
             "allowed: ucb, thompson, epsilon_greedy")
    _require(s["selector_alpha"] >= 0, "serve.selector_alpha", s["selector_alpha"], "must be >= 0")
    _require(0 <= s["selector_epsilon"] <= 1, "serve.selector_epsilon", s["selector_epsilon"], "must be in [0, 1]")
    if s["candidates"]:
        _require(len(s["candidates"]) >= 2, "serve.candidates", s["candidates"], "model selection needs >= 2 run dirs")
        _require(s["num_replicas"] == 1, "serve.num_replicas", s["num_replicas"],
                 "model selection keeps its bandit state in one replica: use 1")
    if c["mode"] == "serve":
        _require(c["restore"] is not None or bool(s["candidates"]), "restore", None,
                 "mode=serve needs restore=<run dir or checkpoint dir> or serve.candidates=[<run dir>, ...]")


def is_sweep(c: dict[str, Any]) -> bool:
    """A Tune sweep (search space, seeds, scheduler) rather than one training run."""
    return c["tune"]["name"] != "none"


def check_tune(c: dict[str, Any]) -> None:
    """The tune group: names, ranges, scheduler/searcher combinations and the search space."""
    from recsys_exp.config.search_space import SINGLE_RUN, SearchSpaceError, check_search_space

    tune = c["tune"]
    _require(tune["mode"] in ("max", "min"), "tune.mode", tune["mode"], "allowed: max, min")
    _positive(c, "tune.num_samples")
    _positive(c, "tune.max_concurrent_trials", allow_none=True)
    _positive(c, "tune.seeds")
    _require(tune["scheduler"] in SCHEDULERS, "tune.scheduler", tune["scheduler"], f"allowed: {', '.join(SCHEDULERS)}")
    _require(tune["search_alg"] in SEARCH_ALGS, "tune.search_alg", tune["search_alg"],
             f"allowed: {', '.join(SEARCH_ALGS)}")
    _require(tune["time_attr"] in TIME_ATTRS, "tune.time_attr", tune["time_attr"], f"allowed: {', '.join(TIME_ATTRS)}")
    if not is_sweep(c):
        for key, default in SINGLE_RUN.items():
            _require(tune[key] == default, f"tune.{key}", tune[key],
                     "tune=none trains one configuration; choose a sweep (tune=sweep, tune=slateq_asha, "
                     "tune=bandit_alpha) or set tune.name")
        return
    _require(c["mode"] == "train", "tune.name", tune["name"], f"sweeps train; mode={c['mode']} runs without Tune "
             f"(use tune=none)")
    _require(c["restore"] is None, "restore", c["restore"], "a sweep starts every trial fresh; use tune=none to "
             "continue from a checkpoint")
    a = tune["asha"]
    _require(a["grace_period"] > 0, "tune.asha.grace_period", a["grace_period"], "must be > 0")
    _require(a["reduction_factor"] > 1, "tune.asha.reduction_factor", a["reduction_factor"], "must be > 1")
    _positive(c, "tune.asha.max_t", allow_none=True)
    p = tune["pbt"]
    _positive(c, "tune.pbt.perturbation_interval")
    _require(0 < p["quantile_fraction"] <= 0.5, "tune.pbt.quantile_fraction", p["quantile_fraction"],
             "must be in (0, 0.5]")
    _require(0 <= p["resample_probability"] <= 1, "tune.pbt.resample_probability", p["resample_probability"],
             "must be in [0, 1]")
    if tune["time_attr"] == "num_env_steps_sampled_lifetime" and tune["scheduler"] != "none":
        _require(c["stop"]["timesteps"] is not None or a["max_t"] is not None, "tune.time_attr", tune["time_attr"],
                 "the scheduler measures env steps but stop.timesteps is null: set it or tune.asha.max_t")
    try:
        flat = check_search_space(c, _validate_probe)
    except SearchSpaceError as e:
        raise ConfigError(str(e)) from None
    kinds = {spec["type"] for spec in flat.values()}
    if tune["search_alg"] == "optuna":
        _require("grid" not in kinds, "tune.search_alg", "optuna", "Optuna samples its own points: use choice "
                 "instead of grid in tune.search_space")
        _require(bool(flat), "tune.search_alg", "optuna", "Optuna needs a non-empty tune.search_space")
        _require(tune["scheduler"] != "pbt", "tune.search_alg", "optuna", "pbt mutates its population itself: "
                 "use search_alg=random with scheduler=pbt")
    if tune["scheduler"] == "pbt":
        _require(any(k != "grid" for k in kinds), "tune.scheduler", "pbt",
                 "pbt perturbs choice/uniform/loguniform/randint keys: tune.search_space has none")
        _require(tune["num_samples"] >= 2, "tune.num_samples", tune["num_samples"], "pbt needs a population of >= 2")


def _validate_probe(probe: dict[str, Any]) -> None:
    check_semantics(check_schema(probe))


def check_semantics(c: dict[str, Any]) -> None:
    """Ranges and combinations the types cannot express."""
    _require(c["mode"] in MODES, "mode", c["mode"], f"allowed: {', '.join(MODES)}")
    _require(c["seed"] >= 0, "seed", c["seed"], "must be >= 0")
    spec = check_env(c)

    algo = c["algo"]
    plugin = load_plugin(algo)
    needs = plugin.needs
    n, k = spec.num_candidates, spec.slate_size
    if spec.is_gym:  # bring-your-own env: fits by its own spaces, no slate flattening
        check_gym_env(c, spec, plugin)
    elif needs.discrete_actions and not algo["flatten_actions"]:
        raise ConfigError(f"algo.flatten_actions=False: {algo['name']} needs a Discrete action space but the "
                          f"slate env has MultiDiscrete([{n}]*{k}); set algo.flatten_actions=true")
    if algo["flatten_actions"] and not spec.is_gym:
        _require(n ** k <= MAX_FLAT_ACTIONS, "algo.flatten_actions", True,
                 f"N**K = {n}**{k} = {n ** k} flat actions exceeds {MAX_FLAT_ACTIONS}; use a slate algorithm")
    _require(algo["flatten_observations"], "algo.flatten_observations", False,
             f"{algo['name']} reads the flattened observation (RLlib's FlattenObservations connector); "
             f"set algo.flatten_observations=true")
    if needs.slate:
        check_slate_env(c, spec)
    for key in ("num_learners",):
        _require(key not in algo["training"], f"algo.training.{key}", algo["training"].get(key),
                 "set learners through the runner, not algo.training")
    plugin.check(c, spec)  # the algorithm's own options against the env (e.g. greedy's score)
    if spec.is_logged:
        check_logged_env(c, plugin)

    ex = c["exploration"]
    _require(ex["type"] in EXPLORATIONS, "exploration.type", ex["type"], f"allowed: {', '.join(EXPLORATIONS)}")
    _require(ex["type"] in plugin.explorations, "exploration.type", ex["type"],
             f"{algo['name']} supports: {', '.join(plugin.explorations)}")
    for key in ("initial_epsilon", "final_epsilon"):
        _require(0.0 <= ex[key] <= 1.0, f"exploration.{key}", ex[key], "must be in [0, 1]")
    _positive(c, "exploration.epsilon_timesteps")
    _require(ex["alpha"] >= 0.0, "exploration.alpha", ex["alpha"], "must be >= 0")
    _require(ex["scale"] >= 0.0, "exploration.scale", ex["scale"], "must be >= 0")

    model = c["model"]
    _require(len(model["hidden_sizes"]) > 0 and all(h > 0 for h in model["hidden_sizes"]),
             "model.hidden_sizes", model["hidden_sizes"], "must be a non-empty list of positive integers")
    _require(model["embedding_size"] is None or model["embedding_size"] > 0, "model.embedding_size",
             model["embedding_size"], "must be a positive integer or null")
    _require(model["activation"] in ACTIVATIONS, "model.activation", model["activation"],
             f"allowed: {', '.join(ACTIVATIONS)}")

    check_tune(c)
    check_offline(c, plugin)
    check_serve(c)
    _require(c["logger"]["mode"] in LOGGER_MODES, "logger.mode", c["logger"]["mode"],
             f"allowed: {', '.join(LOGGER_MODES)}")

    stop = c["stop"]
    _require(stop["timesteps"] is not None or stop["iterations"] is not None, "stop", stop,
             "set stop.timesteps or stop.iterations")
    _positive(c, "stop.timesteps", allow_none=True)
    _positive(c, "stop.iterations", allow_none=True)
    _positive(c, "eval.episodes")
    _positive(c, "eval.num_envs")
    _require(c["checkpoint"]["frequency"] >= 0, "checkpoint.frequency", c["checkpoint"]["frequency"], "must be >= 0")
    _positive(c, "checkpoint.num_to_keep", allow_none=True)
    _positive(c, "ray.num_cpus", allow_none=True)
    _positive(c, "ray.object_store_memory_mb")

    if c["mode"] == "evaluate":
        _require(c["restore"] is not None, "restore", None, "mode=evaluate needs restore=<run dir or checkpoint dir>")
    _require(not (c["resume"] and c["restore"]), "resume", True,
             "resume=true continues hydra.run.dir; do not combine it with restore")
