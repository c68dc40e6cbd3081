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

from recsys_exp.algorithms.registry import ALGORITHMS
from recsys_exp.config.schema import Config

MODES = ("train", "evaluate", "record", "offline_study", "serve")
LOGGER_MODES = ("offline", "online", "disabled")
OFFLINE_NAMES = ("none", "logged", "bc", "marwil", "cql")
OPE_ESTIMATORS = ("ips", "snips", "dm", "dr", "iips")
ACTIVATIONS = ("relu", "tanh", "swish", "silu", "elu", "linear")
EXPLORATIONS = ("none", "epsilon_greedy", "ucb", "thompson")
MAX_FLAT_ACTIONS = 100_000
SCHEDULERS = ("none", "asha", "pbt")
SEARCH_ALGS = ("random", "optuna")
TIME_ATTRS = ("num_env_steps_sampled_lifetime", "training_iteration")


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key and what is allowed."""


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


def check_env(env: dict[str, Any], seed: int) -> None:
    """Validate the env group by building it as the env constructor will: RecSim's envs resolve
    their settings, ``custom`` instantiates and checks its parts (one dry-run step), ``gym``
    constructs the user's env once."""
    from recsys_exp.envs import custom, gym_env
    from recsys_exp.envs.registry import ENVS, build_simulator, resolve_settings

    if env["name"] == gym_env.NAME:
        _require(not env["params"], "env.params", env["params"], "env=gym passes constructor keywords as env.kwargs")
        _require(env["max_episode_steps"] is None or env["max_episode_steps"] > 0, "env.max_episode_steps",
                 env["max_episode_steps"], "must be a positive integer or null")
        try:
            gym_env.env_spaces(env["entry_point"], env["kwargs"])
        except gym_env.GymEnvError as e:
            raise ConfigError(f"env.entry_point={env['entry_point'] or 'null'}: {e}") from None
        return
    _require(env.get("entry_point") is None, "env.entry_point", env.get("entry_point"),
             f"only env=gym takes an entry point (env={env['name']})")
    _require(not env.get("kwargs"), "env.kwargs", env.get("kwargs"),
             f"only env=gym takes constructor keywords; the constants of env={env['name']} go in env.params")
    try:
        settings = resolve_settings(env["name"], num_candidates=env["num_candidates"], slate_size=env["slate_size"],
                                    resample_documents=env["resample_documents"], seed=seed,
                                    max_episode_steps=env["max_episode_steps"], **env["params"])
        build_simulator(settings)
    except custom.PartError as e:
        raise ConfigError(str(e)) from None
    except (ValueError, TypeError) as e:
        extra = f", {gym_env.NAME} (any gymnasium env, env.entry_point)" if env["name"] not in ENVS else ""
        raise ConfigError(f"env: {e}{extra}") from None


def config_vector_env(c: dict[str, Any], num_envs: int, seed: int):
    """The vector env of config ``c`` with ``num_envs`` users (no Ray): the native slate env
    (slate actions, never flattened), or a ``SyncVectorEnv`` of the user's env for ``env=gym``."""
    from recsys_exp.envs import gym_env
    from recsys_exp.envs.registry import make_vector_env

    env = c["env"]
    if env["name"] == gym_env.NAME:
        return gym_env.make_gym_vector_env(env["entry_point"], num_envs, env["kwargs"], env["max_episode_steps"], seed)
    return make_vector_env(env["name"], num_envs=num_envs, num_candidates=env["num_candidates"],
                           slate_size=env["slate_size"], resample_documents=env["resample_documents"],
                           max_episode_steps=env["max_episode_steps"], seed=seed, **env["params"])


def env_observation_space(c: dict[str, Any]):
    """The single observation space of the configured env (builds one env, no Ray)."""
    return config_vector_env(c, 1, c["seed"]).single_observation_space


GYM_MODES = ("train", "evaluate")


def gym_space_mismatch(algo: str, obs_space, action_space) -> str | None:
    """Why ``algo`` cannot run on an env with these spaces, or None if it can.

    DQN-like algorithms need ``Discrete`` actions; slate algorithms the slate observation
    (``user`` (U,), ``doc`` (N, D), ``response.click`` (K,)) and ``MultiDiscrete([N]*K)`` actions;
    RLlib's other algorithms ``Discrete``/``MultiDiscrete``/``Box`` actions and an observation
    RLlib's ``FlattenObservations`` can flatten.
    """
    import gymnasium as gym

    from recsys_exp.algorithms.slate_view import slate_layout

    info = ALGORITHMS[algo]
    if info.discrete_actions_only and not isinstance(action_space, gym.spaces.Discrete):
        return f"algo={algo} needs a Discrete action space, the env has {action_space}"
    if info.slate_policy:
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


def check_gym_env(c: dict[str, Any]) -> None:
    """``env=gym``: the mode and algorithm can use a bring-your-own env and its spaces fit the algorithm.

    ``algo.flatten_actions`` is ignored (the env keeps its own action space).
    """
    from recsys_exp.envs import gym_env

    env, algo = c["env"], c["algo"]["name"]
    _require(c["mode"] in GYM_MODES, "mode", c["mode"], "env=gym supports mode=train and mode=evaluate; record, "
             "serve and offline_study need a slate env (user, doc and response observations)")
    _require(not ALGORITHMS[algo].offline, "algo.name", algo, "offline algorithms learn from logged slate data; "
             "with env=gym train an online algorithm")
    _require(not c["offline"]["path"], "offline.path", c["offline"]["path"], "off-policy evaluation reads logged "
             "slate data; not available with env=gym")
    obs_space, action_space = gym_env.env_spaces(env["entry_point"], env["kwargs"])
    reason = gym_space_mismatch(algo, obs_space, action_space)
    if reason:
        raise ConfigError(f"env.entry_point={env['entry_point']}: {reason}")
    if ALGORITHMS[algo].slate_policy:
        check_algo_env(c)  # the algorithm's own options against the layout (e.g. greedy's score)


def check_algo_env(c: dict[str, Any]) -> None:
    """Can this slate algorithm run on this env? One line naming algorithm, env and the fix if not."""
    from recsys_exp.algorithms.slate_view import slate_layout

    name, env = c["algo"]["name"], c["env"]["name"]
    try:
        layout = slate_layout(env_observation_space(c))
    except ValueError as e:
        raise ConfigError(f"algo={name} cannot run on env={env}: {e}; slate algorithms need a Dict observation "
                          f"with user (U,), doc (N, D) and a per-slot response.click") from None
    training = c["algo"]["training"]
    if name == "greedy":
        score = training.get("score", "affinity")
        user_dim, doc_dim = layout["user"][1], layout["doc"][2]
        if score == "affinity" and (user_dim == 0 or user_dim != doc_dim):
            raise ConfigError(f"algo.training.score=affinity: algo=greedy ranks by <user, doc>, but env={env} has "
                              f"user features of width {user_dim} and doc features of width {doc_dim}; "
                              f"use algo.training.score=feature (with algo.training.feature_index)")
        if score == "feature":
            index = training.get("feature_index", 0)
            _require(isinstance(index, int) and 0 <= index < doc_dim, "algo.training.feature_index", index,
                     f"env={env} has {doc_dim} doc feature(s): allowed 0..{doc_dim - 1}")
        _require(score in ("affinity", "feature"), "algo.training.score", score, "allowed: affinity, feature")
    if name in ("ucb1", "epsilon_greedy_bandit"):
        check_stateless_bandit(c, layout)


def check_stateless_bandit(c: dict[str, Any], layout: dict[str, Any]) -> None:
    """``algo=ucb1`` / ``algo=epsilon_greedy_bandit``: the arms exist in this env (bandit_arms.py)."""
    from recsys_exp.algorithms.bandit_arms import ARMS, CLUSTER_ENVS, cluster_features

    name, env, training = c["algo"]["name"], c["env"]["name"], c["algo"]["training"]
    arms = training.get("arms", "cluster")
    _require(arms in ARMS, "algo.training.arms", arms, f"allowed: {', '.join(ARMS)}")
    if arms == "cluster":
        vec = config_vector_env(c, 1, c["seed"])
        try:
            start, width = cluster_features(vec.single_observation_space)
        except ValueError as e:
            raise ConfigError(f"algo.training.arms=cluster: algo={name} cannot find clusters in env={env}: {e}; "
                              f"or use algo.training.arms=item with env.resample_documents=false") from None
        docs = vec.reset(seed=c["seed"])[0]["doc"][0, :, start:start + width]
        if not ((docs == 0) | (docs == 1)).all() or not (docs.sum(-1) == 1).all():
            raise ConfigError(f"algo.training.arms=cluster: the doc features of env={env} do not start with a "
                              f"one-hot of its {width} clusters ({CLUSTER_ENVS} do)")
    else:
        runners = c["algo"]["env_runners"]
        _require(not c["env"]["resample_documents"], "algo.training.arms", arms,
                 "an arm is a candidate position, the same document only while the candidates stay fixed: "
                 "set env.resample_documents=false (or use algo.training.arms=cluster)")
        _require(runners.get("num_envs_per_env_runner", 1) == 1 and runners.get("num_env_runners", 0) <= 1,
                 "algo.training.arms", arms, "every simulated user keeps its own fixed candidates: set "
                 "algo.env_runners.num_envs_per_env_runner=1 and num_env_runners<=1")
    tie = training.get("tie_feature")
    doc_dim = layout["doc"][2]
    _require(tie is None or (isinstance(tie, int) and not isinstance(tie, bool) and 0 <= tie < doc_dim),
             "algo.training.tie_feature", tie, f"env={env} has {doc_dim} doc feature(s): allowed null or "
             f"0..{doc_dim - 1}")


def check_offline(c: dict[str, Any], info) -> None:
    """The offline group against the mode and algorithm; the data's sizes against the env."""
    off, mode, name = c["offline"], c["mode"], c["algo"]["name"]
    _require(off["name"] in OFFLINE_NAMES, "offline.name", off["name"], f"allowed: {', '.join(OFFLINE_NAMES)}")
    offline_algos = ", ".join(a for a, i in ALGORITHMS.items() if i.offline)
    if mode == "train" and info.offline and not off["path"]:
        raise ConfigError(f"offline.path: algo={name} learns from logged data; set offline.path=<Parquet file or dir> "
                          f"(record some with mode=record)")
    if mode in ("train", "offline_study") and not info.offline and (off["path"] or off["name"] != "none"):
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
    if off["path"] and mode in ("train", "evaluate"):
        check_logged_data(c)
    if mode == "offline_study":
        study = c["study"]
        _require(study["behaviour_algo"] in ALGORITHMS and not ALGORITHMS[study["behaviour_algo"]].offline,
                 "study.behaviour_algo", study["behaviour_algo"], "an online algorithm: "
                 + ", ".join(a for a, i in ALGORITHMS.items() if not i.offline))
        bad = [a for a in study["algos"] if a not in ALGORITHMS or not ALGORITHMS[a].offline]
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
    space = env_observation_space(c)
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
    from recsys_exp.sweep.space import SINGLE_RUN, SearchSpaceError, check_search_space

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
    check_env(c["env"], c["seed"])

    algo = c["algo"]
    _require(algo["name"] in ALGORITHMS, "algo.name", algo["name"], f"allowed: {', '.join(ALGORITHMS)}")
    info = ALGORITHMS[algo["name"]]
    n, k = c["env"]["num_candidates"], c["env"]["slate_size"]
    is_gym = c["env"]["name"] == "gym"  # bring-your-own env: fits by its own spaces, no slate flattening
    if is_gym:
        check_gym_env(c)
    elif info.discrete_actions_only and not algo["flatten_actions"]:
        raise ConfigError(f"algo.flatten_actions=False: {algo['name']} needs a Discrete action space but the "
                          f"slate env has MultiDiscrete([{n}]*{k}); set algo.flatten_actions=true")
    if algo["flatten_actions"] and not is_gym:
        _require(n ** k <= MAX_FLAT_ACTIONS, "algo.flatten_actions", True,
                 f"N**K = {n}**{k} = {n ** k} flat actions exceeds {MAX_FLAT_ACTIONS}; use a slate algorithm")
    _require(algo["flatten_observations"], "algo.flatten_observations", False,
             f"{algo['name']} reads the flattened observation (RLlib's FlattenObservations connector); "
             f"set algo.flatten_observations=true")
    if info.slate_policy and not is_gym:
        check_algo_env(c)
    for key in ("num_learners",):
        _require(key not in algo["training"], f"algo.training.{key}", algo["training"].get(key),
                 "set learners through the runner, not algo.training")

    ex = c["exploration"]
    _require(ex["type"] in EXPLORATIONS, "exploration.type", ex["type"], f"allowed: {', '.join(EXPLORATIONS)}")
    _require(ex["type"] in info.explorations, "exploration.type", ex["type"],
             f"{algo['name']} supports: {', '.join(info.explorations)}")
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
    check_offline(c, info)
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
