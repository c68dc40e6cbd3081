"""Offline training: RLlib algorithms whose training step reads logged data instead of the simulator.

``algo=bc`` and ``algo=marwil`` are RLlib's own BC and MARWIL (config, RLModule, learner and its
connectors: MARWIL's advantage estimation runs as usual); ``algo=cql`` / ``algo=cql_dqn`` are the
discrete CQL variants of :mod:`recsys_exp.algorithms.cql`. Only the data source changes: instead
of RLlib's Ray-Data reader (which expects its own column layout), :class:`LoggedDataTraining`
samples rows of :class:`~recsys_exp.offline.dataset.LoggedData` — observations rebuilt exactly as
the policy saw them in the simulator — and hands them to the learner as episodes (one-step, or
chunks of ``logged_chunk_length`` consecutive steps for MARWIL), the form DQN's replay buffer
uses. Each iteration is ``updates_per_iteration`` (default 10) gradient updates, each on
``train_batch_size_per_learner`` rows; "env steps sampled" counts rows consumed (as RLlib's
MARWIL does), so ``stop.timesteps`` bounds the data passes.

The bandits (``lin_ucb``, ``lin_ts``, ``ucb1``, ``epsilon_greedy_bandit``, ``bernoulli_ts``) learn
from the logs too when ``offline.path`` is set: their own closed-form learners absorb each
training row once (:class:`LoggedRowsOnce`), the same statistics they would have gathered had
they shown those slates themselves.

The env stays configured: the runner evaluates the final policy in the simulator (with
``env=logged``: off-policy, on the held-out sessions), and the checkpoints restore, evaluate and
continue online like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.algorithms.marwil import MARWIL, MARWILConfig
from ray.rllib.utils.metrics import LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from recsys_exp.algorithms.bernoulli_ts import BernoulliTS, BernoulliTSConfig
from recsys_exp.algorithms.common import encode_flat_slate
from recsys_exp.algorithms.cql import CQLDQN, CQLDQNConfig, CQLSlateQ, CQLSlateQConfig
from recsys_exp.algorithms.linear_bandit import LinearBandit, LinTSConfig, LinUCBConfig
from recsys_exp.algorithms.stateless_bandit import EpsilonGreedyBanditConfig, StatelessBandit, UCB1Config
from recsys_exp.offline.dataset import LoggedData, held_out_sessions, to_episodes


class LoggedRows:
    """The logged data in the learner's observation and action format, sampled uniformly by row."""

    def __init__(self, path: str, env: str, env_config: dict[str, Any], seed: int, holdout: float = 0.0):
        import torch

        from recsys_exp.envs.spec import from_rllib_env_config

        space = from_rllib_env_config(env, env_config)[0].observation_space
        data = LoggedData.read(path)
        data.check_space(space, f"offline.path={path}")
        # Sessions held out for the final off-policy evaluation (env=logged) are never sampled.
        self.data = data.select(~held_out_sessions(data.episode_id, holdout, seed)) if holdout > 0 else data
        self.obs, self.next_obs, self.has_next = self.data.observations(space)
        slates = self.data.slate
        if env_config.get("flatten_actions"):
            self.actions = encode_flat_slate(torch.as_tensor(slates), self.data.num_candidates).numpy()
        else:
            self.actions = slates
        self.action_logp = np.log(np.where(np.isfinite(self.data.propensity), self.data.propensity, 1.0))
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int, length: int = 1) -> list:
        """About ``batch_size`` logged steps as RLlib episodes: chunks of up to ``length`` consecutive
        steps starting at uniformly drawn rows (``length`` 1: independent transitions)."""
        starts = self.rng.integers(0, self.data.num_rows, max(1, -(-batch_size // length)))
        return self.episodes(starts, length)

    def episodes(self, starts: np.ndarray, length: int = 1) -> list:
        """RLlib episodes of up to ``length`` consecutive logged steps from each row of ``starts``."""
        return to_episodes(self.data, self.obs, self.next_obs, self.has_next, self.actions, starts, length,
                           self.action_logp)


class LoggedDataTraining:
    """Mixin (first base) replacing an algorithm's ``training_step`` by updates on logged rows."""

    def setup(self, config):
        super().setup(config)
        self.logged = LoggedRows(self.config.logged_data_path, self.config.env, self.config.env_config,
                                 self.config.seed or 0, self.config.logged_holdout)

    def training_step(self) -> None:
        batch_size = self.config.train_batch_size_per_learner
        for _ in range(self.config.updates_per_iteration):
            episodes = self.logged.sample(batch_size, self.config.logged_chunk_length)
            self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, sum(len(e) for e in episodes),
                                   reduce="lifetime_sum")
            results = self.learner_group.update(
                episodes=episodes,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME)})
            self.metrics.aggregate(results, key=LEARNER_RESULTS)


class LoggedRowsOnce(LoggedDataTraining):
    """Mixin (first base) for the bandits: each iteration absorbs the next
    ``train_batch_size_per_learner`` training rows of the logs, in one seeded random order, each row
    once. A closed-form posterior must see every observation once (a second pass would count each
    click twice and shrink the intervals for nothing), so the run is done after one pass over the
    training rows, or earlier at ``stop.timesteps`` rows.

    Iteration i takes rows ``order[i·B:(i+1)·B]``: the position is the restored iteration count,
    so a resumed run continues where it stopped.
    """

    def setup(self, config):
        super().setup(config)  # LoggedDataTraining: self.logged
        self.row_order = np.random.default_rng(self.config.seed or 0).permutation(self.logged.data.num_rows)

    def _rows_of(self, iteration: int) -> np.ndarray:
        size = self.config.train_batch_size_per_learner
        return self.row_order[iteration * size:(iteration + 1) * size]

    def training_step(self) -> None:
        rows = self._rows_of(self.iteration)
        if not len(rows):
            return
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, len(rows), reduce="lifetime_sum")
        results = self.learner_group.update(
            episodes=self.logged.episodes(rows),
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(NUM_ENV_STEPS_SAMPLED_LIFETIME)})
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)

    def step(self):
        result = super().step()
        result["logged_rows_left"] = max(0, len(self.row_order) - (self.iteration + 1)
                                         * self.config.train_batch_size_per_learner)
        result["done"] = result["logged_rows_left"] == 0  # Tune stops the trial after one pass
        return result


def _offline_defaults(config) -> None:
    config.logged_data_path = None  # set by the runner from offline.path
    config.logged_holdout = 0.0  # share of sessions held out of training (env=logged), by session id
    # RLlib's MARWIL/BC configs say "offline" and then build no EnvRunner; ours keep the local one:
    # it gives the module its spaces and the checkpoint the env-runner state evaluation restores.
    config._is_online = True
    # An iteration = `updates_per_iteration` gradient steps. RLlib would otherwise repeat the
    # training step until the (never sampling) EnvRunners reach min_sample_timesteps_per_iteration.
    config.min_sample_timesteps_per_iteration = 0
    config.min_train_timesteps_per_iteration = 0
    config.min_time_s_per_iteration = 0
    config.updates_per_iteration = 10
    config.logged_chunk_length = 1  # consecutive logged steps per sampled episode chunk


class LoggedBCConfig(BCConfig):
    """RLlib's BC reading logged data (``logged_data_path``)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or LoggedBC)
        _offline_defaults(self)
        self.dataset_num_iters_per_learner = 1
        self.train_batch_size_per_learner = 256
        self.lr = 1e-3


class LoggedBC(LoggedDataTraining, BC):
    @classmethod
    def get_default_config(cls):
        return LoggedBCConfig()


class LoggedMARWILConfig(MARWILConfig):
    """RLlib's MARWIL (β = 1 by default) reading logged data (``logged_data_path``)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or LoggedMARWIL)
        _offline_defaults(self)
        # MARWIL's advantages come from GAE over each chunk: longer chunks carry real returns
        # instead of one-step bootstraps from a value function that is still being learned.
        self.logged_chunk_length = 32
        self.dataset_num_iters_per_learner = 1
        self.train_batch_size_per_learner = 256
        self.lr = 1e-3


class LoggedMARWIL(LoggedDataTraining, MARWIL):
    @classmethod
    def get_default_config(cls):
        return LoggedMARWILConfig()


class LoggedCQLConfig(CQLSlateQConfig):
    """Discrete CQL on SlateQ reading logged data; target network refreshed every 8000 rows."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or LoggedCQL)
        _offline_defaults(self)
        self.num_steps_sampled_before_learning_starts = 0
        self.target_network_update_freq = 8000


class LoggedCQL(LoggedDataTraining, CQLSlateQ):
    @classmethod
    def get_default_config(cls):
        return LoggedCQLConfig()


class LoggedCQLDQNConfig(CQLDQNConfig):
    """Discrete CQL on RLlib's DQN (flat slate actions) reading logged data."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or LoggedCQLDQN)
        _offline_defaults(self)
        self.num_steps_sampled_before_learning_starts = 0
        self.target_network_update_freq = 8000


class LoggedCQLDQN(LoggedDataTraining, CQLDQN):
    @classmethod
    def get_default_config(cls):
        return LoggedCQLDQNConfig()


# --- the bandits, learning from logged rows (one pass; see LoggedRowsOnce) -------------------------
def _logged_bandit(config_base: type, algo_base: type, name: str, doc: str) -> tuple[type, type]:
    """``(Logged<name>Config, Logged<name>)``: ``config_base``'s algorithm with its rows from the logs."""

    def __init__(self, algo_class=None):
        config_base.__init__(self, algo_class=algo_class or algo)
        _offline_defaults(self)
        self.updates_per_iteration = 1  # one closed-form update on each batch of rows

    config = type(f"Logged{name}Config", (config_base,), {"__init__": __init__, "__doc__": doc})
    algo = type(f"Logged{name}", (LoggedRowsOnce, algo_base),
                {"get_default_config": classmethod(lambda cls: config()), "__doc__": doc})
    return config, algo


LoggedLinUCBConfig, LoggedLinUCB = _logged_bandit(
    LinUCBConfig, LinearBandit, "LinUCB", "LinUCB's ridge regression fit to logged (context, slot, click) rows.")
LoggedLinTSConfig, LoggedLinTS = _logged_bandit(
    LinTSConfig, LinearBandit, "LinTS", "Linear TS's ridge regression fit to logged (context, slot, click) rows.")
LoggedUCB1Config, LoggedUCB1 = _logged_bandit(
    UCB1Config, StatelessBandit, "UCB1", "UCB1's per-arm counts from the logged (arm, click) rows.")
LoggedEpsilonGreedyBanditConfig, LoggedEpsilonGreedyBandit = _logged_bandit(
    EpsilonGreedyBanditConfig, StatelessBandit, "EpsilonGreedyBandit",
    "The ε-greedy bandit's per-arm counts from the logged (arm, click) rows.")
LoggedBernoulliTSConfig, LoggedBernoulliTS = _logged_bandit(
    BernoulliTSConfig, BernoulliTS, "BernoulliTS", "Bernoulli TS's Beta posteriors from the logged (arm, click) rows.")
