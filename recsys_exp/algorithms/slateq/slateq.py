"""``algo=slateq``: SlateQ (Ie et al., IJCAI 2019) as a plugin on RLlib's DQN.

SlateQ reuses DQN's training step as is: vectorised sampling, RLlib's (prioritised) episode
replay buffer, n-step sampling, ``training_intensity``, the epsilon schedule and target-network
syncs. What differs is the module (:mod:`.module`: item values, choice model, slate optimiser)
and the loss (:mod:`.learner`). Settings beyond DQN's: ``slate_optimizer`` (auto | exact |
top_k | greedy, :mod:`.slate_value`), ``choice_lr``, ``clipped_double_q`` and ``targets``: ``td``
(1- or n-step Q-learning targets) or ``monte_carlo`` (each replayed step's return to the end of its
session, bootstrapped only where the session is still running: :mod:`.replay`).
"""

from __future__ import annotations

from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.replay_buffers import EpisodeReplayBuffer
from ray.rllib.utils.serialization import deserialize_type

from recsys_exp.algorithms.slateq.learner import SlateQLearner
from recsys_exp.algorithms.slateq.module import SlateQModule
from recsys_exp.algorithms.slateq.replay import SlateQEpisodeReplayBuffer
from recsys_exp.algorithms.slateq.slate_value import MAX_EXACT_SLATES, OPTIMIZERS
from recsys_exp.algorithms.slates import num_ordered_slates

TARGETS = ("td", "monte_carlo")


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
                 targets=NotProvided, **kwargs):
        """SlateQ settings on top of ``DQNConfig.training``."""
        super().training(**kwargs)
        if targets is not NotProvided:
            self.targets = targets
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
                                                      "session_baseline": self.targets == "monte_carlo"}

    def validate(self):
        super().validate()
        if self.slate_optimizer not in OPTIMIZERS:
            self._value_error(f"slate_optimizer={self.slate_optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
        if self.targets not in TARGETS:
            self._value_error(f"targets={self.targets!r}: allowed {', '.join(TARGETS)}")
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
    """DQN's training step with :class:`SlateQConfig`'s module and learner."""

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
