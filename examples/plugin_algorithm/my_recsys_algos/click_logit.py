"""``algo=click_logit``: a per-candidate logistic click model, trained by gradient descent.

Every slot of a served slate is one logged example: its features x (width F) are

    features=doc:   [slot one-hot (K) | doc (D)]
    features=full:  [slot one-hot (K) | doc (D) | user (U) | vec(user ⊗ doc) (U·D)]

and its label is whether the user clicked that slot (the click of step t is in the response of
the *next* observation). The model is P(click | x) = σ(wᵀx + b), fitted with Adam on the binary
cross-entropy over the logged slots (+ ``l2``·‖w‖²), ``num_epochs`` passes of ``minibatch_size``
rows over each batch of ``train_batch_size_per_learner`` env steps.

Acting scores every candidate at slot 0 (the slot term is the same for all, so it does not change
the ranking) and shows the top K by predicted click probability; ``exploration=epsilon_greedy``
mixes in uniform slates with the exploration group's schedule (done by ``SlatePolicyModule``).
"""

from __future__ import annotations

import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from recsys_exp.algorithms.common import ReadsNextObservations, SampleThenUpdate, SlatePolicyModule, top_k_slate


class ClickLogitModule(SlatePolicyModule):
    """σ(wᵀx + b) per candidate; the greedy slate is the top K by that probability."""

    def setup(self):
        super().setup()  # the slate layout, ε-greedy schedule, slate helpers
        self.use_user = self.model_config["features"] == "full"
        u, d, k = self.user_dim, self.doc_dim, self.slate_size
        width = k + d + (u + u * d if self.use_user else 0)
        self.click = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(self.click.weight)  # start indifferent: every candidate P = 0.5
        torch.nn.init.zeros_(self.click.bias)
        # Gradient steps taken so far: a buffer, so it travels with the weights (sync, checkpoints).
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def features(self, obs: torch.Tensor, slates: torch.Tensor | None = None) -> torch.Tensor:
        """Features of every candidate at slot 0 (B, N, F), or of a slate's items at their slots
        (B, K, F) when ``slates`` (B, K) is given."""
        docs = self.docs(obs)
        if slates is None:
            slots = torch.zeros(docs.shape[:2], dtype=torch.long)
        else:
            docs = docs.gather(1, slates[..., None].expand(-1, -1, docs.shape[-1]))
            slots = torch.arange(self.slate_size).expand_as(slates)
        parts = [torch.nn.functional.one_hot(slots, self.slate_size).to(docs.dtype), docs]
        if self.use_user:
            b, m, _ = docs.shape
            users = self.user(obs)[:, None, :].expand(b, m, self.user_dim)
            parts += [users, (users[..., :, None] * docs[..., None, :]).reshape(b, m, -1)]
        return torch.cat(parts, dim=-1)

    def click_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F) features -> (...) click logits."""
        return self.click(x)[..., 0]

    def greedy_slate(self, obs):
        return top_k_slate(self.click_logits(self.features(obs)), self.slate_size)


class ClickLogitLearner(ReadsNextObservations, TorchLearner):
    """Binary cross-entropy of the logged slots (clicked / not clicked); Adam with ``lr``."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        m = self.module[module_id].unwrapped()
        slates = m.slates_from_actions(batch[Columns.ACTIONS])
        x = m.features(batch[Columns.OBS], slates)  # (B, K, F)
        y = m.clicks(batch[Columns.NEXT_OBS]).float()  # (B, K) in {0, 1}
        logits = m.click_logits(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        if config.l2:
            loss = loss + config.l2 * m.click.weight.pow(2).sum()
        with torch.no_grad():
            m.num_updates += 1
        self.metrics.log_value((module_id, "slot_click_rate"), y.mean().item(), window=20)
        self.metrics.log_value((module_id, "bce"), loss.item(), window=20)
        return loss


class ClickLogitConfig(AlgorithmConfig):
    """Settings: ``lr`` (Adam), ``l2``, ``features`` (doc | full), ``train_batch_size_per_learner``
    (env steps per iteration), ``num_epochs`` and ``minibatch_size`` (gradient passes over them)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or ClickLogitAlgorithm)
        self.lr = 0.05
        self.l2 = 0.0
        self.features = "doc"
        self.train_batch_size_per_learner = 1000
        self.num_epochs = 4
        self.minibatch_size = 250
        self.shuffle_batch_per_epoch = True
        self.rollout_fragment_length = "auto"  # one iteration = train_batch_size_per_learner env steps

    def training(self, *, l2=NotProvided, features=NotProvided, **kwargs):
        """ClickLogit settings on top of ``AlgorithmConfig.training``."""
        super().training(**kwargs)
        if l2 is not NotProvided:
            self.l2 = l2
        if features is not NotProvided:
            self.features = features
        return self

    @property
    def _model_config_auto_includes(self):
        return super()._model_config_auto_includes | {"features": self.features}

    def validate(self):
        super().validate()
        if self.l2 < 0:
            self._value_error(f"l2={self.l2}: must be >= 0")
        if self.features not in ("doc", "full"):
            self._value_error(f"features={self.features!r}: allowed doc, full")

    def get_default_rl_module_spec(self):
        return RLModuleSpec(module_class=ClickLogitModule)

    def get_default_learner_class(self):
        return ClickLogitLearner


class ClickLogitAlgorithm(SampleThenUpdate):
    """Sample ``train_batch_size_per_learner`` env steps, take ``num_epochs`` passes of gradient
    steps on them, sync the new weights to the env runners."""

    @classmethod
    def get_default_config(cls):
        return ClickLogitConfig()

    def update_kwargs(self) -> dict:
        return {"num_epochs": self.config.num_epochs, "minibatch_size": self.config.minibatch_size,
                "shuffle_batch_per_epoch": self.config.shuffle_batch_per_epoch}
