"""``algo=slateq``: SlateQ (Ie et al., IJCAI 2019) as a plugin on RLlib's DQN.

SlateQ reuses DQN's machinery: vectorised sampling, RLlib's (prioritised) episode replay buffer,
n-step sampling, ``training_intensity``, the epsilon schedule and target-network syncs. What
differs is the module (:mod:`.module`: item values, choice model, slate optimiser) and the loss
(:mod:`.learner`); with ``targets=monte_carlo`` the training step hands the learner batch columns
gathered by the replay buffer instead of one-step episodes (:meth:`SlateQ.training_step`).
Settings beyond DQN's: ``slate_optimizer`` (auto | exact | top_k | greedy, :mod:`.slate_value`),
``choice_lr``, ``clipped_double_q``, ``targets``: ``td``
(1- or n-step Q-learning targets) or ``monte_carlo`` (each replayed step's return to the end of its
session, bootstrapped only where the session is still running: :mod:`.replay`), and with Monte Carlo
targets ``session_baseline``: the inputs of the baseline h the learner subtracts from every return,
``step`` (h(t)), ``step_and_past_reward`` (h(t, r̄_t), r̄_t the session's mean reward before t) or ``auto``
(h(t, r̄_t) when the observation has no user features, else h(t): :func:`.module.resolve_session_baseline`).
"""

from __future__ import annotations

from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_ADD_DATA_TIMER,
    REPLAY_BUFFER_RESULTS,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)
from ray.rllib.utils.replay_buffers import EpisodeReplayBuffer
from ray.rllib.utils.serialization import deserialize_type

from recsys_exp.algorithms.slateq.learner import SlateQLearner
from recsys_exp.algorithms.slateq.module import SlateQModule
from recsys_exp.algorithms.slateq.replay import SlateQEpisodeReplayBuffer
from recsys_exp.algorithms.slateq.slate_value import MAX_EXACT_SLATES, OPTIMIZERS
from recsys_exp.algorithms.slates import num_ordered_slates

TARGETS = ("td", "monte_carlo")
SESSION_BASELINES = ("auto", "step", "step_and_past_reward")  # the inputs of h with Monte Carlo targets (.module)


def replay_buffer_class(buffer_type, error: bool = False):
    """The class ``replay_buffer_config.type`` names: a dotted class path resolved (None if it does not
    resolve, or an error with ``error``), anything else (a class, an RLlib short name) as given."""
    if isinstance(buffer_type, str) and "." in buffer_type:
        return deserialize_type(buffer_type, error=error)
    return buffer_type


class SlateQConfig(DQNConfig):
    """DQN's settings plus ``slate_optimizer`` and ``choice_lr``; defaults suit RecSim on 2 cores."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or SlateQ)
        self.slate_optimizer = "auto"
        self.choice_lr = 1e-2
        self.clipped_double_q = False
        self.targets = "td"
        self.session_baseline = "auto"
        self.lr = 1e-3
        self.gamma = 0.99
        self.double_q = True
        self.dueling = False
        self.td_error_loss_fn = "mse"
        self.grad_clip = 10.0
        self.train_batch_size_per_learner = 256
        self.num_steps_sampled_before_learning_starts = 1000
        self.target_network_update_freq = 2000
        self.replay_buffer_config = {"type": "recsys_exp.algorithms.slateq.replay.SlateQEpisodeReplayBuffer",
                                     "capacity": 100_000}
        self.rollout_fragment_length = 4

    def training(self, *, slate_optimizer=NotProvided, choice_lr=NotProvided, clipped_double_q=NotProvided,
                 targets=NotProvided, session_baseline=NotProvided, **kwargs):
        """SlateQ settings on top of ``DQNConfig.training``."""
        super().training(**kwargs)
        if targets is not NotProvided:
            self.targets = targets
        if session_baseline is not NotProvided:
            self.session_baseline = session_baseline
        if clipped_double_q is not NotProvided:
            self.clipped_double_q = clipped_double_q
        if slate_optimizer is not NotProvided:
            self.slate_optimizer = slate_optimizer
        if choice_lr is not NotProvided:
            self.choice_lr = choice_lr
        return self

    @property
    def _model_config_auto_includes(self):
        return super()._model_config_auto_includes | {"slate_optimizer": self.slate_optimizer,
                                                      "session_baseline": self.targets == "monte_carlo"
                                                      and self.session_baseline}

    def validate(self):
        super().validate()
        if self.slate_optimizer not in OPTIMIZERS:
            self._value_error(f"slate_optimizer={self.slate_optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
        if self.targets not in TARGETS:
            self._value_error(f"targets={self.targets!r}: allowed {', '.join(TARGETS)}")
        if self.session_baseline not in SESSION_BASELINES:
            self._value_error(f"session_baseline={self.session_baseline!r}: allowed {', '.join(SESSION_BASELINES)}")
        if self.targets == "monte_carlo":
            if self.n_step != 1:
                self._value_error("targets=monte_carlo sums each session to its end: n_step must be 1, "
                                  f"not {self.n_step}")
            buffer = self.replay_buffer_config.get("type")
            buffer_class = replay_buffer_class(buffer)
            if not (isinstance(buffer_class, type) and issubclass(buffer_class, SlateQEpisodeReplayBuffer)):
                self._value_error("targets=monte_carlo needs replay_buffer_config.type="
                                  f"recsys_exp.algorithms.slateq.replay.SlateQEpisodeReplayBuffer, not {buffer!r}")
        layout = self.model_config.get("slate_layout")
        if self.slate_optimizer == "exact" and layout:
            n, k = layout["doc"][1], layout["click"][1]
            if num_ordered_slates(n, k) > MAX_EXACT_SLATES:
                self._value_error(f"slate_optimizer=exact enumerates {num_ordered_slates(n, k)} slates for N={n}, K={k} "
                                  f"(limit {MAX_EXACT_SLATES}); use greedy or top_k")

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=SlateQModule)

    def get_default_learner_class(self):
        return SlateQLearner


class SlateQ(DQN):
    """DQN's training step with :class:`SlateQConfig`'s module and learner (Monte Carlo targets: batch
    columns from the replay buffer, :meth:`training_step`)."""

    @classmethod
    def get_default_config(cls):
        return SlateQConfig()

    def _create_local_replay_buffer_if_necessary(self, config):
        """As RLlib's, but also for a buffer class (RLlib resolves a class path given in a config
        dict into the class, then tests ``"EpisodeReplayBuffer" in type`` on it and fails)."""
        buffer_config = dict(config.get("replay_buffer_config") or {})
        buffer_type = replay_buffer_class(buffer_config.pop("type", None), error=True)
        if not isinstance(buffer_type, type) or buffer_config.get("no_local_replay_buffer"):
            return super()._create_local_replay_buffer_if_necessary(config)
        if issubclass(buffer_type, EpisodeReplayBuffer):
            buffer_config["metrics_num_episodes_for_smoothing"] = self.config.metrics_num_episodes_for_smoothing
        if self.config.targets == "monte_carlo":
            buffer_config["returns_to_end"] = True
        return buffer_type(**buffer_config)

    def training_step(self) -> None:
        """DQN's new-API-stack training step; with ``targets=monte_carlo`` the replay buffer returns the
        batch columns (:meth:`.replay.SlateQEpisodeReplayBuffer.sample_returns_to_end`) and the learner
        is updated from them, skipping the one-step episodes RLlib's sampling builds per row and its
        learner connector takes apart again. Same steps drawn, same columns, same losses as that route;
        sampling, replay ratio, metrics and weight sync are DQN's (uniform replay only: no priorities)."""
        if self.config.targets != "monte_carlo":
            return super().training_step()
        store_weight, sample_and_train_weight = calculate_rr_weights(self.config)
        for _ in range(store_weight):
            with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
                episodes, env_runner_results = synchronous_parallel_sample(
                    worker_set=self.env_runner_group, concat=True, sample_timeout_s=self.config.sample_timeout_s,
                    _uses_new_env_runners=True, _return_metrics=True)
            self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_ADD_DATA_TIMER)):
                self.local_replay_buffer.add(episodes)
        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if sampled < self.config.num_steps_sampled_before_learning_starts:
            return
        timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: sampled,
                     NUM_AGENT_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                         (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME), default={})}
        for _ in range(sample_and_train_weight):
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                columns = self.local_replay_buffer.sample_returns_to_end(self.config.total_train_batch_size,
                                                                         gamma=self.config.gamma)
                self.metrics.aggregate([self.local_replay_buffer.get_metrics()], key=REPLAY_BUFFER_RESULTS)
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=len(columns["weights"]))
                learner_results = self.learner_group.update(batch=batch, timesteps=timesteps)
                for results in learner_results:  # per-row TD errors feed priorities only: none here
                    for module_results in results.values():
                        module_results.pop(TD_ERROR_KEY, None)
                self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group,
                                               policies=set(learner_results[0].keys()) - {ALL_MODULES},
                                               global_vars=None, inference_only=True)
