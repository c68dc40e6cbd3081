"""Fitted Q evaluation (FQE) of a slate policy, the model behind the ``dm`` and ``dr`` estimators.

FQE (Le, Voloshin & Yue 2019) evaluates a fixed target policy ``pi`` by repeated regression::

    y = r + gamma * (1 - done) * sum_m p_m Q_old(s', A'_m)      # A'_m ~ pi(.|s') with probability p_m
    Q <- argmin_Q  mean (Q(s, A) - y)^2                          # a few epochs of Adam from the current Q
    Q_old <- Q

``Q`` is an MLP on ``[standardised obs, one-hot of the slate per slot]``. With a finite horizon H
and gamma = 1, at least H iterations are needed for the value to reach the first step.

Then, for :mod:`.ope`: ``q_logged = q_values(q, obs, slates)`` and
``v_target = support_values(q, obs, support, support_prob)`` over the target policy's slates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_exp.offline.ope import OPEError

_CHUNK_ROWS = 4096


@dataclass
class FQEConfig:
    """Model size and optimisation schedule of :func:`fit_fqe`."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    iterations: int = 20  # outer FQE iterations (target refreshes)
    epochs_per_iteration: int = 2  # passes over the data per iteration ...
    min_updates_per_iteration: int = 200  # ... but at least this many gradient steps (small data)
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0


class SlateQFunction(nn.Module):
    """``Q(s, A)``: an MLP on ``[obs (d), one-hot of A per slot (K*N)]`` -> scalar.

    The first layer on the one-hot part is stored as an embedding table (row ``k*N + a`` is the
    weight column of "slot k shows item a"), which is the same linear map without building the
    K*N one-hot vector. Observations are standardised with the training mean/std and the output
    is ``q_scale`` times the network's, so the network itself fits targets of order one; all
    three are buffers, saved with the state dict.
    """

    def __init__(self, obs_dim: int, num_candidates: int, slate_size: int,
                 hidden_sizes: tuple[int, ...] = (64, 64), layout: dict | None = None) -> None:
        super().__init__()
        # With the observation's slate layout, the features of the shown items themselves enter
        # the first layer (position, doc, user, user⊗doc per slot, as the linear bandits use):
        # picking doc features out of the flat observation by index is hard to learn from logs.
        self.layout = layout
        self.num_candidates = num_candidates
        self.slate_size = slate_size
        widths = (*hidden_sizes, 1)
        self.obs_layer = nn.Linear(obs_dim, widths[0])
        self.slot_layer = nn.Embedding(slate_size * num_candidates, widths[0])
        # The default init of one nn.Linear over the concatenated input of width d + K*N.
        bound = 1.0 / np.sqrt(obs_dim + slate_size * num_candidates)
        for param in (self.obs_layer.weight, self.obs_layer.bias, self.slot_layer.weight):
            nn.init.uniform_(param, -bound, bound)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ReLU(), nn.Linear(w_in, w_out)]
        self.head = nn.Sequential(*layers)
        if layout is not None:
            u, d = layout["user"][1], layout["doc"][2]
            width = slate_size * (slate_size + d + (u + u * d if u else 0))
            self.item_layer = nn.Linear(width, widths[0])
        self.register_buffer("slot_offset", torch.arange(slate_size) * num_candidates)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("q_scale", torch.tensor(1.0))

    def scaled(self, obs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """``Q(s, A) / q_scale``, (B,): what training regresses."""
        hidden = self.obs_layer((obs - self.obs_mean) / self.obs_std)
        hidden = hidden + self.slot_layer(slates + self.slot_offset).sum(1)
        if self.layout is not None:
            hidden = hidden + self.item_layer(self.item_features(obs, slates))
        return self.head(hidden).squeeze(-1)

    def item_features(self, obs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """(B, K·F): the candidate features (position, doc, user, user⊗doc) of each shown item."""
        from recsys_exp.algorithms.linear_bandit import candidate_features

        (us, u), (ds, n, d) = self.layout["user"], self.layout["doc"]
        docs = obs[:, ds:ds + n * d].reshape(-1, n, d)
        shown = docs.gather(1, slates[..., None].expand(-1, -1, d))
        positions = torch.arange(self.slate_size, device=obs.device).expand_as(slates)
        return candidate_features(obs[:, us:us + u], shown, positions, self.slate_size).flatten(1)

    def forward(self, obs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """``Q(s, A)`` for obs (B, d) float32 and slates (B, K) long -> (B,)."""
        return self.scaled(obs, slates) * self.q_scale


def fit_fqe(obs: np.ndarray, slates: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray, dones: np.ndarray,
            next_support: np.ndarray, next_support_prob: np.ndarray, num_candidates: int, gamma: float,
            config: FQEConfig | None = None, layout: dict | None = None) -> SlateQFunction:
    """Fit ``Q^pi`` by FQE on logged transitions; deterministic given ``config.seed``.

    obs (n, d), slates (n, K) ints in [0, num_candidates), rewards (n,), next_obs (n, d),
    dones (n,) bool (True = no bootstrap: terminated, or the last row without a next state),
    next_support (n, M, K): the target policy's possible slates at s', next_support_prob (n, M)
    their probabilities. next_obs/next_support of done rows are ignored.

    Rewards and targets are divided by the reward standard deviation (``q_scale``) so the network
    fits values of order one whatever the reward units. The first iteration bootstraps from
    ``Q_old = 0`` (it fits the immediate reward), so H iterations are exact for horizon H. Targets
    are computed once per iteration from the current Q, which is then the frozen ``Q_old``.
    ``config=None`` means ``FQEConfig()``.
    """
    config = config or FQEConfig()
    data = _transitions(obs, slates, rewards, next_obs, dones, next_support, next_support_prob,
                        num_candidates, gamma)
    n, obs_dim = data["obs"].shape
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(config.seed)
        q = SlateQFunction(obs_dim, num_candidates, data["slates"].shape[1], tuple(config.hidden_sizes), layout)
    _set_normalisation(q, data["obs"], data["rewards"])
    optimiser = torch.optim.Adam(q.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    not_done = (~data["dones"]).to(torch.float32)
    next_values = torch.zeros(n)
    # Small datasets get more passes: each regression must converge before the next refresh, so
    # every iteration takes at least min_updates_per_iteration gradient steps.
    steps_per_epoch = math.ceil(n / config.batch_size)
    epochs = max(config.epochs_per_iteration, math.ceil(config.min_updates_per_iteration / steps_per_epoch))
    for iteration in range(config.iterations):
        if iteration > 0:
            next_values = _support_values(q, data["next_obs"], data["next_support"], data["next_prob"])
        targets = (data["rewards"] + gamma * not_done * next_values) / q.q_scale
        for _ in range(epochs):
            _regression_epoch(q, optimiser, data["obs"], data["slates"], targets, config.batch_size, rng)
    return q.eval()


def support_values(q: SlateQFunction, obs: np.ndarray, support: np.ndarray, support_prob: np.ndarray) -> np.ndarray:
    """``sum_m p_m Q(s, A_m)`` per row, (n,) float64: ``V^pi(s)`` when the support is pi's slates at s."""
    obs_t = torch.as_tensor(np.asarray(obs, np.float32))
    support_t = torch.from_numpy(np.array(support, np.int64))  # a copy: broadcast views are read-only
    prob_t = torch.as_tensor(np.asarray(support_prob, np.float32))
    return _support_values(q, obs_t, support_t, prob_t).numpy().astype(np.float64)


def q_values(q: SlateQFunction, obs: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """``Q(s, A)`` per row, (n,) float64."""
    slates = np.asarray(slates, np.int64)
    return support_values(q, obs, slates[:, None, :], np.ones((len(slates), 1)))


@torch.no_grad()
def _support_values(q: SlateQFunction, obs: torch.Tensor, support: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """Tensor version of :func:`support_values`, in chunks of rows to bound memory."""
    out = []
    for start in range(0, len(obs), _CHUNK_ROWS):
        o, s, p = obs[start:start + _CHUNK_ROWS], support[start:start + _CHUNK_ROWS], prob[start:start + _CHUNK_ROWS]
        rows, m = p.shape
        values = q(o.repeat_interleave(m, dim=0), s.reshape(rows * m, -1)).reshape(rows, m)
        out.append((values * p).sum(1))
    return torch.cat(out) if out else torch.zeros(0)


def _regression_epoch(q: SlateQFunction, optimiser: torch.optim.Optimizer, obs: torch.Tensor, slates: torch.Tensor,
                      targets: torch.Tensor, batch_size: int, rng: np.random.Generator) -> None:
    """One shuffled pass of MSE regression of ``q.scaled`` on ``targets`` (already scaled)."""
    order = torch.as_tensor(rng.permutation(len(obs)))
    for start in range(0, len(obs), batch_size):
        batch = order[start:start + batch_size]
        loss = nn.functional.mse_loss(q.scaled(obs[batch], slates[batch]), targets[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()


def _set_normalisation(q: SlateQFunction, obs: torch.Tensor, rewards: torch.Tensor) -> None:
    """Store the training obs mean/std and the reward scale in ``q``'s buffers."""
    std = obs.std(0, unbiased=False)
    q.obs_mean.copy_(obs.mean(0))
    q.obs_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))  # constant features pass unscaled
    scale = float(rewards.std(unbiased=False)) if len(rewards) > 1 else 0.0
    if scale < 1e-8:  # constant rewards: fall back to their magnitude
        scale = max(float(rewards.abs().mean()), 1.0)
    q.q_scale.fill_(scale)


def _transitions(obs: np.ndarray, slates: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray, dones: np.ndarray,
                 next_support: np.ndarray, next_support_prob: np.ndarray, num_candidates: int,
                 gamma: float) -> dict[str, torch.Tensor]:
    """Validate the FQE inputs and return them as tensors, done rows' next state zeroed."""
    obs = np.asarray(obs, np.float32)
    slates = np.asarray(slates)
    if obs.ndim != 2 or len(obs) == 0:
        raise OPEError(f"obs must be a non-empty (n, d) array, got shape {obs.shape}")
    n, d = obs.shape
    if slates.ndim != 2 or len(slates) != n:
        raise OPEError(f"slates has shape {slates.shape}, expected ({n}, K)")
    k = slates.shape[1]
    next_obs = np.array(next_obs, np.float32)  # copies: done rows are overwritten below
    next_support = np.array(next_support, np.int64)
    next_prob = np.array(next_support_prob, np.float32)
    dones = np.asarray(dones, bool)
    rewards = np.asarray(rewards, np.float32)
    if next_support.ndim != 3:
        raise OPEError(f"next_support has shape {next_support.shape}, expected ({n}, M, {k})")
    m = next_support.shape[1]
    expected = {"rewards": (rewards, (n,)), "next_obs": (next_obs, (n, d)), "dones": (dones, (n,)),
                "next_support": (next_support, (n, m, k)), "next_support_prob": (next_prob, (n, m))}
    for name, (array, shape) in expected.items():
        if array.shape != shape:
            raise OPEError(f"{name} has shape {array.shape}, expected {shape}")
    if not 0.0 <= gamma <= 1.0:
        raise OPEError(f"gamma must be in [0, 1], got {gamma!r}")
    live = ~dones
    next_obs[dones], next_support[dones], next_prob[dones] = 0.0, 0, 1.0 / m
    checks = [("obs", np.isfinite(obs).all(1)), ("rewards", np.isfinite(rewards)),
              ("slates", ((slates >= 0) & (slates < num_candidates)).all(1)),
              ("next_obs", np.isfinite(next_obs).all(1)),
              ("next_support", ((next_support >= 0) & (next_support < num_candidates)).all((1, 2))),
              ("next_support_prob", (next_prob >= 0).all(1) & (np.abs(next_prob.sum(1) - 1.0) < 1e-4))]
    for name, ok in checks:
        bad = np.flatnonzero(~ok & (live if name.startswith("next") else True))
        if bad.size:
            raise OPEError(f"{name} invalid in {bad.size} rows (first: row {bad[0]}); "
                           f"need finite values, item indices in [0, {num_candidates}), probabilities summing to 1")
    return {"obs": torch.from_numpy(obs), "slates": torch.from_numpy(slates.astype(np.int64)),
            "rewards": torch.from_numpy(rewards), "next_obs": torch.from_numpy(next_obs),
            "dones": torch.from_numpy(dones), "next_support": torch.from_numpy(next_support),
            "next_prob": torch.from_numpy(next_prob)}
