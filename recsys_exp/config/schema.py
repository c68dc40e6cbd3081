"""Typed schema of every config group, registered in Hydra's ConfigStore.

Each YAML option of a group lists its base (``defaults: [base_<group>]``), so Hydra rejects
unknown keys and wrong types while composing. The free-form blocks (``algo.training``,
``algo.env_runners``, ``env.params``) are checked when the RLlib config and the env are built,
still before Ray starts (see :mod:`recsys_exp.config.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# The shipped config groups (conf/ at the top of the repository: an editable install reads them in place).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class EnvConfig:
    """A RecSim environment (``recsys_exp.envs.make_vector_env`` keywords), a simulator assembled
    from parts (``custom``) or any gymnasium env (``gym``)."""

    name: str = MISSING  # interest_evolution | long_term_satisfaction | interest_exploration | custom | gym
    num_candidates: int = 10  # N candidates per step (not used by gym)
    slate_size: int = 2  # K slots per slate (not used by gym)
    resample_documents: bool = True  # fresh candidates every step (not used by gym)
    max_episode_steps: Optional[int] = None  # truncation; null = the env ends by itself
    params: Dict[str, Any] = field(default_factory=dict)  # model constants, e.g. sensitivity; custom: the parts
    entry_point: Optional[str] = None  # gym only: a gymnasium id (CartPole-v1) or package.module:Class
    kwargs: Dict[str, Any] = field(default_factory=dict)  # gym only: keywords of the env's constructor


@dataclass
class AlgoConfig:
    """An algorithm plugin (``_target_``, :mod:`recsys_exp.algorithms.plugin`) and how the slate env
    is presented to it."""

    _target_: str = MISSING  # the plugin class, e.g. recsys_exp.algorithms.plugins.SlateQ
    name: str = MISSING  # the option's name (random, greedy, lin_ucb, slateq, ..., or a user plugin's)
    flatten_actions: bool = False  # slate MultiDiscrete([N]*K) -> Discrete(N**K)
    flatten_observations: bool = True  # Dict observation -> one float vector
    training: Dict[str, Any] = field(default_factory=dict)  # AlgorithmConfig.training(**); checked by the plugin
    env_runners: Dict[str, Any] = field(default_factory=dict)  # AlgorithmConfig.env_runners(**)


@dataclass
class ExplorationConfig:
    """How the behaviour policy explores while training (greedy at evaluation)."""

    type: str = "none"  # none (greedy / the policy's own sampling) | epsilon_greedy | ucb | thompson
    initial_epsilon: float = 1.0  # epsilon_greedy: linear decay from initial to final ...
    final_epsilon: float = 0.05
    epsilon_timesteps: int = 10000  # ... over this many env steps
    alpha: float = 1.0  # ucb: width of the confidence bonus
    scale: float = 1.0  # thompson: posterior scale v (samples θ ~ N(θ̂, v²A⁻¹))


@dataclass
class ModelConfig:
    """Network sizes of the RLModule (RLlib ``DefaultModelConfig`` for the built-ins, SlateQ's Q-network)."""

    hidden_sizes: List[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"  # relu | tanh | swish | elu | linear
    embedding_size: Optional[int] = None  # SlateQ choice model: user/doc embedding width (null = bilinear)


@dataclass
class AshaConfig:
    """ASHA (Li et al. 2020) early stopping; units are those of ``tune.time_attr``."""

    max_t: Optional[int] = None  # null = the run's stop budget in time_attr units
    grace_period: int = 1  # every trial runs at least this long
    reduction_factor: float = 2.0  # keep the top 1/rf at each rung


@dataclass
class PbtConfig:
    """Population-based training (Jaderberg et al. 2017): exploit the top, perturb the rest."""

    perturbation_interval: int = 2  # in time_attr units
    quantile_fraction: float = 0.25  # bottom fraction copies the top fraction
    resample_probability: float = 0.25  # else perturb by x0.8 / x1.2


@dataclass
class TuneConfig:
    """Ray Tune: ``none`` runs one trial; a sweep samples ``search_space`` (keys of the algo,
    model and exploration groups) and trains every configuration under ``seeds`` seeds."""

    name: str = "none"
    metric: str = "env_runners/episode_return_mean"  # averaged over the seeds of a configuration
    mode: str = "max"
    num_samples: int = 1  # configurations drawn (x every grid point)
    max_concurrent_trials: Optional[int] = None
    seeds: int = 1  # seeds per configuration: seed, seed+1, ...
    scheduler: str = "none"  # none | asha | pbt
    search_alg: str = "random"  # random | optuna
    time_attr: str = "num_env_steps_sampled_lifetime"  # progress unit of the schedulers
    search_space: Dict[str, Any] = field(default_factory=dict)  # key -> {type, values | low, high}
    asha: AshaConfig = field(default_factory=AshaConfig)
    pbt: PbtConfig = field(default_factory=PbtConfig)


@dataclass
class OfflineConfig:
    """Logged data: where it is, how ``mode=record`` writes it, how off-policy evaluation reads it.

    ``none`` = online training; ``logged`` (or ``bc`` / ``marwil`` / ``cql``, which also choose the
    algorithm) trains from ``path``. ``mode=evaluate`` with a ``path`` adds ope.json.
    """

    name: str = "none"
    path: Optional[str] = None  # Parquet file or dir (mode=record: where to write; default <run dir>/data)
    record_steps: int = 50_000  # mode=record: log at least this many steps (complete sessions)
    record_num_envs: int = 100  # mode=record: users simulated in parallel
    target: str = "greedy"  # OPE target: greedy (the policy as served) | explore (with its exploration)
    estimators: List[str] = field(default_factory=lambda: ["ips", "snips", "dm", "dr", "iips"])
    bootstrap: int = 1000  # bootstrap resamples (over sessions) for the 95% intervals
    gamma: float = 1.0  # discount of the estimated return (1 = the session return); < 1 tames IS weights
    fqe_iterations: Optional[int] = None  # fitted Q evaluation (dm, dr) refreshes; null = the horizon
    fqe_refits: int = 3  # FQE refits on bootstrap resamples of sessions (model uncertainty in dm/dr CIs); 0 = none
    clip: Optional[float] = None  # largest importance weight of ips, snips, dr, sndr, iips, rips; null = none
    dros_lambda: Optional[float] = None  # dros shrinkage lambda (>= 0); null = tuned (estimated MSE)
    switch_tau: Optional[float] = None  # switch_dr weight threshold tau (>= 0); null = tuned (estimated MSE)
    eval_fraction: float = 0.2  # env=logged: sessions held out of training for the off-policy evaluation
    select_by: str = "recommended"  # env=logged: the estimate that is a run's objective: recommended | an estimator


@dataclass
class ServeConfig:
    """Ray Serve settings of ``mode=serve`` (the app serves ``restore``'s checkpoint)."""

    name: str = "none"
    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 exposes the server to the network
    port: int = 8000
    route_prefix: Optional[str] = None  # null = /<env name>
    num_replicas: int = 1
    replica_num_cpus: float = 0.5
    max_batch_size: int = 16  # @serve.batch: requests answered by one forward pass ...
    batch_wait_timeout_s: float = 0.002  # ... gathered for at most this long
    max_ongoing_requests: int = 64  # per replica (Serve's default 5 turns concurrent clients away)
    max_body_bytes: int = 2_000_000  # larger bodies get 413 (a full 256-request IEv batch is ≈ 1.2 MB)
    max_request_batch: int = 256  # most observations in one batch-form request
    foreground: bool = True  # keep running until Ctrl-C (false: start, write serve.json, return)
    candidates: List[str] = field(default_factory=list)  # run dirs: a bandit picks one per request
    selector: str = "ucb"  # ucb | thompson | epsilon_greedy (over candidates, from /feedback rewards)
    selector_alpha: float = 1.0  # ucb: width of the confidence bonus
    selector_epsilon: float = 0.1  # epsilon_greedy: share of requests sent to a random model


@dataclass
class LoggerConfig:
    """Weights & Biases tracking (offline by default: no network needed)."""

    name: str = "wandb"
    mode: str = "offline"  # offline | online | disabled
    project: str = "recsys_exp"
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    run_name: Optional[str] = None


@dataclass
class StopConfig:
    """When training stops (whichever comes first)."""

    timesteps: Optional[int] = 100_000  # env steps sampled
    iterations: Optional[int] = None  # training iterations


@dataclass
class EvalConfig:
    """Greedy evaluation in the simulator after training and in ``mode=evaluate``."""

    episodes: int = 100
    num_envs: int = 100  # users evaluated in parallel (one episode each per round)


@dataclass
class CheckpointConfig:
    """Periodic checkpoints (a final one is always written)."""

    frequency: int = 5  # every N training iterations; 0 = only at the end
    num_to_keep: Optional[int] = 3


@dataclass
class RayConfig:
    """Where to run: a fresh local Ray (address null) or an existing cluster."""

    address: Optional[str] = None  # null | auto | ray://host:port | host:port
    num_cpus: Optional[int] = 2  # for a local Ray; ignored when joining a cluster
    object_store_memory_mb: int = 200
    storage_path: Optional[str] = None  # Tune storage: null = <run dir>/ray_results; a shared dir or URI on clusters


@dataclass
class StudyConfig:
    """``mode=offline_study``: behaviour policy → logged data → offline algorithms → OPE vs truth."""

    behaviour_algo: str = "slateq"  # trained online first, then recorded with exploration
    behaviour_steps: int = 50_000  # its online training budget (env steps)
    record_epsilon: float = 0.3  # constant ε of the recorded behaviour (propensities stay > 0)
    algos: List[str] = field(default_factory=lambda: ["bc", "marwil", "cql"])
    train_steps: int = 256_000  # logged rows each offline algorithm trains on (1000 updates of 256)


@dataclass
class Config:
    """The whole experiment."""

    env: EnvConfig = MISSING
    algo: AlgoConfig = MISSING
    exploration: ExplorationConfig = MISSING
    model: ModelConfig = MISSING
    tune: TuneConfig = MISSING
    offline: OfflineConfig = MISSING
    serve: ServeConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0
    mode: str = "train"  # train | evaluate | record | offline_study | serve
    restore: Optional[str] = None  # a run dir or checkpoint dir to start from
    resume: bool = False  # continue the interrupted run in hydra.run.dir
    stop: StopConfig = field(default_factory=StopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    progress: bool = True  # print one progress line per iteration
    choices: Dict[str, str] = field(default_factory=dict)  # chosen group options (filled at run time)


GROUPS: dict[str, type] = {
    "env": EnvConfig,
    "algo": AlgoConfig,
    "exploration": ExplorationConfig,
    "model": ModelConfig,
    "tune": TuneConfig,
    "offline": OfflineConfig,
    "serve": ServeConfig,
    "logger": LoggerConfig,
}


def register_configs() -> None:
    """Store ``base_config`` and one ``base_<group>`` per group in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, node in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=node)
