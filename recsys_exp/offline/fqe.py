"""Fitted Q evaluation (FQE) of a slate policy, the model behind ``dm`` and the doubly robust estimators.

FQE (Le, Voloshin & Yue 2019) evaluates a fixed target policy ``pi`` by repeated regression::

    y = clip(r + gamma * (1 - done) * sum_m p_m Q_old(s', A'_m))   # A'_m ~ pi(.|s') with probability p_m
    Q <- argmin_Q  mean (Q(s, A) - y)^2                             # Adam from the current Q, early-stopped
    Q_old <- Q

``Q`` is an MLP on ``[standardised obs, remaining-horizon fraction, one-hot of the slate per slot,
the shown items' features]``. With a finite horizon H and gamma = 1, H iterations are needed for
the value to reach the first step. ``clip`` keeps every target inside the returns the logged
per-step rewards allow over the remaining steps, so the iteration cannot run away. The fitted
values themselves are not clipped: clipping each prediction to a bound the truth sits near (a
click rate near 0) biases their mean, and a value outside the feasible range is the verdict's
to flag (:mod:`.verdict`), not something to hide.

How far the fitted value can be from the truth: for any Q, the telescoping identity
``V_Q(s_0) - V^pi(s_0) = E_pi[sum_t gamma^t delta_t]``, ``delta_t = Q(s_t, A_t) - r_t - gamma V_Q(s_{t+1})``
(e.g. Jiang & Li 2016, Sec. 4; Voloshin et al. 2021) bounds the model's bias by its Bellman
residual accumulated over a session. :func:`fit_fqe` measures the residual on held-out sessions
(under the logging policy's state-action distribution, the only one with rewards) and reports
``bias_bound = |mean delta| * G``, ``G`` the mean discounted length ``sum_{t<L} gamma^t`` of the
logged sessions; :mod:`.ope` widens the model-based intervals by it.

One fit trains an *ensemble* of networks side by side (batched, one optimiser step for all):

* member 0 on every training session: the model the point estimates use;
* ``refits`` members on bootstrap resamples of the sessions (Poisson(1) weights per session, the
  online bootstrap of Oza & Russell 2001): the spread of their estimates is the model's own
  uncertainty, which :mod:`.ope` adds to the intervals of dm and the doubly robust family;
* with the logged next slates, one *behaviour* member: the same regression for the logging policy
  itself (SARSA-style targets ``r + gamma Q_old(s', A'_logged)``). Its value of the logged first
  states must match the logged returns; :func:`fit_fqe`'s ``behaviour_check`` says by how much it
  does not: the bias this model class has on this data, measured where the truth is known.

Then, for :mod:`.ope`: ``q_logged = q_values(q, obs, slates, steps)`` and
``v_target = support_values(q, obs, support, support_prob, steps)`` over the target's slates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recsys_exp.offline.ope import OPEError
from recsys_exp.offline.verdict import discount_sum, return_bounds

_CHUNK_CELLS = 65536  # (row, support slate, member) triples per forward pass: bounds memory


@dataclass
class FQEConfig:
    """Model size and optimisation schedule of :func:`fit_fqe`.

    Each FQE iteration regresses on its targets for ``epochs_per_iteration`` passes (at least
    ``min_updates_per_iteration`` gradient steps). With ``max_rounds`` > 1 and held-out sessions it
    trains up to that many such rounds while the held-out loss improves by ``improvement``
    (relative) and keeps the best round's weights. With gamma < 1, iterations stop before
    ``iterations`` once what further iterations can still add is below ``value_tolerance`` of the
    values: the held-out values moved by ``d`` (mean absolute change) and later moves shrink by gamma
    per iteration, so at most ``d gamma / (1 - gamma)`` is left; the stop fires when that is below
    ``value_tolerance`` times their mean absolute value. (With gamma = 1, H iterations are exact for
    horizon H and all are run.)
    """

    hidden_sizes: tuple[int, ...] = (64, 64)
    iterations: int = 20  # outer FQE iterations (target refreshes), at most
    epochs_per_iteration: float = 2.0  # passes over the data per round ...
    min_updates_per_iteration: int = 200  # ... but at least this many gradient steps (small data)
    max_rounds: int = 1  # rounds per iteration while the held-out loss improves (1: a fixed schedule)
    improvement: float = 0.0  # relative held-out loss decrease that counts as improving
    validation_fraction: float = 0.1  # sessions held out of the regression (diagnostics, early stopping)
    value_tolerance: float = 0.01  # stop when the remaining change is below this share of the values (gamma < 1)
    refits: int = 3  # bootstrap members (model uncertainty in the intervals); 0 = none
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0


class SlateQFunction(nn.Module):
    """An ensemble of ``members`` MLPs ``Q_e(s, A)`` on ``[obs (d), one-hot of A per slot (K*N)]``
    (plus, with ``layout``, the shown items' features), evaluated side by side: (B, d), (B, K) -> (E, B).

    Each member's first layer is ``obs @ W_obs + sum_k E[k*N + A_k] + items @ W_items + b``: the
    embedding table ``E`` is the one-hot part of one linear map without building the K*N one-hot
    vector. Weights carry a leading member axis and layers are batched matrix products, so E
    members cost about one forward pass of Python overhead. Observations are standardised with the
    training mean/std and outputs are ``q_scale`` times the network's, so the networks fit targets
    of order one; all three are buffers.
    """

    def __init__(self, obs_dim: int, num_candidates: int, slate_size: int,
                 hidden_sizes: tuple[int, ...] = (64, 64), layout: dict | None = None, members: int = 1) -> None:
        super().__init__()
        # With the observation's slate layout, the features of the shown items themselves enter
        # the first layer (position, doc, user, user⊗doc per slot, as the linear bandits use):
        # picking doc features out of the flat observation by index is hard to learn from logs.
        self.layout = layout
        self.num_candidates = num_candidates
        self.slate_size = slate_size
        self.members = members
        widths = (*hidden_sizes, 1)
        # nn.Linear's default init over the concatenated input of width d + K*N.
        bound = 1.0 / np.sqrt(obs_dim + slate_size * num_candidates)
        self.obs_weight = _uniform((members, obs_dim, widths[0]), bound)
        self.first_bias = _uniform((members, 1, widths[0]), bound)
        self.slot_weight = _uniform((members, slate_size * num_candidates, widths[0]), bound)
        if layout is not None:
            u, d = layout["user"][1], layout["doc"][2]
            width = slate_size * (slate_size + d + (u + u * d if u else 0))
            self.item_weight = _uniform((members, width, widths[0]), 1.0 / np.sqrt(width))
        self.head_weights = nn.ParameterList(
            [_uniform((members, w_in, w_out), 1.0 / np.sqrt(w_in)) for w_in, w_out in zip(widths[:-1], widths[1:])])
        self.head_biases = nn.ParameterList(
            [_uniform((members, 1, w_out), 1.0 / np.sqrt(w_in)) for w_in, w_out in zip(widths[:-1], widths[1:])])
        self.register_buffer("slot_offset", torch.arange(slate_size) * num_candidates)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("q_scale", torch.tensor(1.0))

    def scaled(self, obs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """``Q_e(s, A) / q_scale``, (E, B): what training regresses."""
        x = ((obs - self.obs_mean) / self.obs_std).expand(self.members, -1, -1)
        hidden = torch.baddbmm(self.first_bias, x, self.obs_weight)
        hidden = hidden + self.slot_weight[:, slates + self.slot_offset].sum(2)
        if self.layout is not None:
            items = self.item_features(obs, slates).expand(self.members, -1, -1)
            hidden = hidden + torch.bmm(items, self.item_weight)
        for weight, bias in zip(self.head_weights, self.head_biases):
            hidden = torch.baddbmm(bias, torch.relu(hidden), weight)
        return hidden.squeeze(-1)

    def item_features(self, obs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """(B, K·F): the candidate features (position, doc, user, user⊗doc) of each shown item."""
        from recsys_exp.algorithms.linear_bandit import candidate_features

        (us, u), (ds, n, d) = self.layout["user"], self.layout["doc"]
        docs = obs[:, ds:ds + n * d].reshape(-1, n, d)
        shown = docs.gather(1, slates[..., None].expand(-1, -1, d))
        positions = torch.arange(self.slate_size, device=obs.device).expand_as(slates)
        return candidate_features(obs[:, us:us + u], shown, positions, self.slate_size).flatten(1)

    def forward(self, obs: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """``Q_e(s, A)`` for obs (B, d) float32 and slates (B, K) long -> (E, B)."""
        return self.scaled(obs, slates) * self.q_scale


def _uniform(shape: tuple[int, ...], bound: float) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


@dataclass
class FittedQ:
    """A fitted ``Q^pi`` ensemble: the networks, the value bounds its targets were clipped to, diagnostics.

    Members: 0 = fitted on every training session, ``1..refits`` = bootstrap refits, then the
    behaviour member when there is one (see the module docstring). With ``horizon`` (a time-aware
    fit) the networks' last input is the remaining-horizon fraction ``(H - t) / H`` of the row's
    step ``t`` and targets at step ``t`` are clipped to :func:`return_bounds` of ``H - t`` remaining
    steps; without it, to the infinite-horizon bounds (none when ``gamma = 1``).
    """

    module: SlateQFunction
    gamma: float
    reward_range: tuple[float, float]  # logged per-step rewards (min, max)
    horizon: int | None  # H, the longest logged session, when fitted with steps
    refits: int
    diagnostics: dict = field(default_factory=dict)

    @property
    def num_candidates(self) -> int:
        return self.module.num_candidates

    def inputs(self, obs: np.ndarray, steps: np.ndarray | None) -> torch.Tensor:
        """The networks' observation input (B, d [+1]) for rows at ``steps`` (B,)."""
        obs_t = torch.as_tensor(np.asarray(obs, np.float32))
        if self.horizon is None:
            return obs_t
        if steps is None:
            raise OPEError("this Q model was fitted with session steps: pass the rows' steps")
        remaining = (self.horizon - np.asarray(steps, np.float64)) / self.horizon
        return torch.cat([obs_t, torch.as_tensor(remaining, dtype=torch.float32)[:, None]], 1)

    def bounds(self, steps: np.ndarray | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) per row (n,) of the returns possible from ``steps`` (what targets are clipped to)."""
        remaining = None if self.horizon is None or steps is None else self.horizon - np.asarray(steps)
        low, high = return_bounds(*self.reward_range, self.gamma, remaining)
        as_rows = lambda bound: torch.as_tensor(np.asarray(bound, np.float32)).expand(n)  # noqa: E731
        return as_rows(low), as_rows(high)


def fit_fqe(obs: np.ndarray, slates: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray, dones: np.ndarray,
            next_support: np.ndarray, next_support_prob: np.ndarray, num_candidates: int, gamma: float,
            config: FQEConfig | None = None, layout: dict | None = None, steps: np.ndarray | None = None,
            episodes: np.ndarray | None = None, next_logged_slates: np.ndarray | None = None) -> FittedQ:
    """Fit ``Q^pi`` by FQE on logged transitions; deterministic given ``config.seed``.

    obs (n, d), slates (n, K) ints in [0, num_candidates), rewards (n,), next_obs (n, d),
    dones (n,) bool (True = no bootstrap: terminated, or the last row without a next state),
    next_support (n, M, K): the target policy's possible slates at s', next_support_prob (n, M)
    their probabilities. next_obs/next_support of done rows are ignored. ``steps`` (n,): each
    row's step in its session; given, the fit is time-aware (see :class:`FittedQ`): values of
    finite sessions depend on how much of the session is left, which the observation alone may
    not tell. ``episodes`` (n,): session ids (rows of a session contiguous, in step order), so held-out
    rows and bootstrap weights are whole sessions. ``next_logged_slates`` (n, K): the slate logged
    at each row's next state (ignored on done rows and each session's last row, which ends the
    logged return); given with ``episodes``, a behaviour member is fitted and
    ``diagnostics["behaviour_check"]`` compares its value with the logged returns.

    Every target ``r + γ V(s')`` (and ``V(s')`` itself) is clipped to the returns the logged reward
    range allows over the remaining horizon (:func:`return_bounds`). Rewards and targets are
    divided by the reward standard deviation (``q_scale``). The first iteration bootstraps from
    ``Q_old = 0`` (it fits the immediate reward), so H iterations are exact for horizon H.
    ``diagnostics`` (on the held-out sessions, member 0): ``fit_r2`` of the last regression, the
    final Bellman residual ``Q(s, A) - (r + γ V(s'))`` (mean and rmse, reward units),
    ``discounted_length`` G (mean ``sum_{t<L} γ^t`` of the sessions, or 1 without ``episodes``) and
    ``bias_bound`` = |mean residual| G (module docstring), ``clipped_share`` (targets clipped in the
    last iteration), ``iterations``, ``converged`` (the value stop of :class:`FQEConfig` fired),
    ``gradient_steps``, ``held_out_rows``. ``config=None`` means ``FQEConfig()``.
    """
    config = config or FQEConfig()
    data = _transitions(obs, slates, rewards, next_obs, dones, next_support, next_support_prob,
                        num_candidates, gamma)
    n = len(data["obs"])
    steps = _check_rows("steps", steps, n, np.int64)
    episodes = _check_rows("episodes", episodes, n, None)
    behaviour = next_logged_slates is not None and episodes is not None
    if behaviour:
        next_logged = torch.as_tensor(np.where(data["dones"].numpy()[:, None], 0,
                                               _check_rows("next_logged_slates", next_logged_slates, n, np.int64)))
        if ((next_logged < 0) | (next_logged >= num_candidates)).any():
            raise OPEError(f"next_logged_slates must hold item indices in [0, {num_candidates})")
    fitted = FittedQ(None, gamma, (float(data["rewards"].min()), float(data["rewards"].max())),
                     None if steps is None else int(steps.max()) + 1, config.refits)
    x = fitted.inputs(data["obs"].numpy(), steps)
    next_x = fitted.inputs(data["next_obs"].numpy(), None if steps is None else steps + 1)
    low, high = fitted.bounds(steps, n)
    next_low, next_high = fitted.bounds(None if steps is None else steps + 1, n)

    rng = np.random.default_rng(config.seed)
    # each row's session index 0..S-1 (each row its own "session" without episodes): the unit of the
    # held-out split and of the bootstrap weights
    groups = np.arange(n) if episodes is None else np.unique(episodes, return_inverse=True)[1]
    held_out = _held_out_rows(groups, config.validation_fraction, rng)
    train = torch.as_tensor(np.flatnonzero(~held_out))
    val = torch.as_tensor(np.flatnonzero(held_out))
    members = 1 + config.refits + int(behaviour)
    weights = torch.ones(members, n)
    if config.refits:  # online bootstrap: every session of a refit member counts Poisson(1) times
        counts = rng.poisson(1.0, size=(config.refits, int(groups.max()) + 1))
        weights[1:1 + config.refits] = torch.as_tensor(counts[:, groups], dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(config.seed)
        q = SlateQFunction(x.shape[1], num_candidates, data["slates"].shape[1], tuple(config.hidden_sizes), layout,
                           members)
    fitted.module = q
    _set_normalisation(q, x[train], data["rewards"][train])
    optimiser = torch.optim.Adam(q.parameters(), lr=config.lr)
    not_done = (~data["dones"]).to(torch.float32).expand(members, n).clone()
    if behaviour:  # the logging policy's next slate is known within a session only: its last row ends it
        last = np.r_[episodes[1:] != episodes[:-1], True]
        not_done[-1, torch.as_tensor(last)] = 0.0
    next_values = torch.zeros(members, n)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    round_steps = max(math.ceil(config.epochs_per_iteration * steps_per_epoch), config.min_updates_per_iteration)
    diag = {"held_out_rows": int(len(val)), "gradient_steps": 0, "fit_r2": None, "converged": False,
            "refits": config.refits}
    previous = None
    iteration = 0
    for iteration in range(1, config.iterations + 1):
        if iteration > 1:
            next_values = _support_values(q, next_x, data["next_support"], data["next_prob"])
            if behaviour:
                next_values[-1] = _support_values(q, next_x, next_logged[:, None, :], torch.ones(n, 1))[-1]
            next_values = _clip(next_values, next_low, next_high)
        raw = data["rewards"] + gamma * not_done * next_values
        targets = _clip(raw, low, high)
        diag["clipped_share"] = float((raw[0] != targets[0]).float().mean())
        diag["gradient_steps"] += _fit_round_by_round(q, optimiser, x, data["slates"], targets / q.q_scale, weights,
                                                      train, val, round_steps, config, rng, diag)
        if len(val) and gamma < 1.0:
            values = q(x[val], data["slates"][val]).detach()[0]
            if previous is not None:  # what later iterations can still add: a geometric tail
                left = float((values - previous).abs().mean()) * gamma / (1.0 - gamma)
                if left < config.value_tolerance * float(values.abs().mean()):
                    diag["converged"] = True
                    break
            previous = values
    diag["iterations"] = iteration
    q.eval()
    if len(val):
        final_next = _support_values(q, next_x[val], data["next_support"][val], data["next_prob"][val])[0]
        residual = q(x[val], data["slates"][val]).detach()[0] - (
            data["rewards"][val] + gamma * not_done[0, val] * final_next)
        diag["bellman_residual"] = {"mean": float(residual.mean()), "rmse": float(residual.pow(2).mean().sqrt())}
        diag["discounted_length"] = _discounted_length(groups, gamma)
        diag["bias_bound"] = abs(diag["bellman_residual"]["mean"]) * diag["discounted_length"]
    if behaviour:
        diag["behaviour_check"] = _behaviour_check(fitted, x, data, steps, episodes, gamma)
    fitted.diagnostics = diag
    return fitted


def _behaviour_check(fitted: FittedQ, x: torch.Tensor, data: dict, steps: np.ndarray | None,
                     episodes: np.ndarray, gamma: float) -> dict:
    """The behaviour member's value of the logged first states, mean_i Q_b(s_i0, A_i0), next to the
    mean logged (γ-discounted) session return with its 95% t-interval; ``gap`` = model - logged."""
    from recsys_exp.stats import mean_ci95

    first = np.r_[True, episodes[1:] != episodes[:-1]]
    rows = torch.as_tensor(np.flatnonzero(first))
    model = fitted.module(x[rows], data["slates"][rows]).detach()[-1]
    step_of_row = np.arange(len(episodes)) - np.flatnonzero(first)[np.cumsum(first) - 1]
    returns = np.bincount(np.cumsum(first) - 1, weights=data["rewards"].numpy() * gamma ** step_of_row)
    logged, _, _, ci = mean_ci95(returns)
    value = float(model.double().mean())
    return {"model": value, "logged": float(logged), "logged_ci95": [float(ci[0]), float(ci[1])],
            "gap": value - float(logged), "sessions": int(len(returns))}


def support_values(q: FittedQ, obs: np.ndarray, support: np.ndarray, support_prob: np.ndarray,
                   steps: np.ndarray | None = None, refits: bool = False):
    """``sum_m p_m Q(s, A_m)`` per row (not clipped; see the module docstring): ``V^pi(s)`` when the
    support is pi's slates at s. (n,) float64 of member 0; with ``refits``, ``(main (n,), refits
    (R, n))`` from the same forward pass. ``steps`` (n,): the rows' session steps (time-aware fits)."""
    x = q.inputs(obs, steps)
    support_t = torch.from_numpy(np.array(support, np.int64))  # a copy: broadcast views are read-only
    prob_t = torch.as_tensor(np.asarray(support_prob, np.float32))
    values = _support_values(q.module, x, support_t, prob_t).numpy().astype(np.float64)
    return (values[0], values[1:1 + q.refits]) if refits else values[0]


def q_values(q: FittedQ, obs: np.ndarray, slates: np.ndarray, steps: np.ndarray | None = None,
             refits: bool = False):
    """``Q(s, A)`` per row (not clipped); (n,) of member 0, with ``refits``
    ``(main (n,), refits (R, n))`` as :func:`support_values`."""
    slates = np.asarray(slates, np.int64)
    return support_values(q, obs, slates[:, None, :], np.ones((len(slates), 1)), steps, refits)


def _check_rows(name: str, values: np.ndarray | None, n: int, dtype) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values) if dtype is None else np.asarray(values, dtype)
    if len(values) != n or (values.dtype.kind in "iu" and name == "steps" and (values < 0).any()):
        raise OPEError(f"{name} must have one valid entry per row ({n}), got shape {values.shape}")
    return values


def _clip(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.maximum(values, low), high)


def _discounted_length(groups: np.ndarray, gamma: float) -> float:
    """G = the mean over sessions of sum_{t<L} gamma^t (L its rows): the expected discounted number of
    decisions a session holds, which a per-step model bias is multiplied by. Rows without session
    ids (``groups`` = arange) count as one-step sessions."""
    return float(discount_sum(gamma, np.bincount(groups)).mean())


def _held_out_rows(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: about ``fraction`` of the sessions, given each row's session index ``groups`` (n,);
    none when fewer than 10 sessions would be held out or fewer than 10 remain to train on."""
    count = int(groups.max()) + 1 if len(groups) else 0
    chosen = int(round(fraction * count))
    if chosen < 10 or count - chosen < 10:
        return np.zeros(len(groups), dtype=bool)
    picked = np.zeros(count, dtype=bool)
    picked[rng.permutation(count)[:chosen]] = True
    return picked[groups]


@torch.no_grad()
def _support_values(q: SlateQFunction, x: torch.Tensor, support: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """(E, n) ``sum_m p_m Q_e(s, A_m)`` of every member on network inputs ``x`` (unclipped), in
    chunks of rows to bound memory."""
    rows_total, m = prob.shape
    chunk = max(1, _CHUNK_CELLS // (m * q.members))
    out = []
    for start in range(0, rows_total, chunk):
        o, s, p = x[start:start + chunk], support[start:start + chunk], prob[start:start + chunk]
        rows = len(p)
        values = q(o.repeat_interleave(m, dim=0), s.reshape(rows * m, -1)).reshape(q.members, rows, m)
        out.append((values * p).sum(-1))
    return torch.cat(out, 1) if out else torch.zeros(q.members, 0)


def _fit_round_by_round(q: SlateQFunction, optimiser: torch.optim.Optimizer, x: torch.Tensor, slates: torch.Tensor,
                        targets: torch.Tensor, weights: torch.Tensor, train: torch.Tensor, val: torch.Tensor,
                        round_steps: int, config: FQEConfig, rng: np.random.Generator, diag: dict) -> int:
    """Regress ``q.scaled`` (E, .) on ``targets`` (E, n; scaled) with per-member row ``weights``
    (E, n) over the ``train`` rows, in rounds of ``round_steps`` gradient steps, keeping the best
    round's weights by the members' mean held-out loss (one round without held-out rows). Sets
    ``diag["fit_r2"]`` (member 0); returns the gradient steps taken."""
    taken, best, best_state, stale = 0, math.inf, None, False
    rounds = config.max_rounds if len(val) else 1
    for _ in range(rounds):
        taken += _regression_steps(q, optimiser, x[train], slates[train], targets[:, train], weights[:, train],
                                   config.batch_size, round_steps, rng)
        if not len(val):
            break
        with torch.no_grad():
            errors = (q.scaled(x[val], slates[val]) - targets[:, val]).pow(2).mean(1)  # (E,)
        loss = float(errors.mean())
        if loss < best * (1.0 - config.improvement):
            best, best_errors = loss, errors
            best_state = {k: v.clone() for k, v in q.state_dict().items()}
        else:
            stale = True
            break
    if stale:
        q.load_state_dict(best_state)
    if len(val):
        variance = float(targets[0, val].var(unbiased=False))
        diag["fit_r2"] = 1.0 - float(best_errors[0]) / variance if variance > 0 else None
    return taken


def _regression_steps(q: SlateQFunction, optimiser: torch.optim.Optimizer, x: torch.Tensor, slates: torch.Tensor,
                      targets: torch.Tensor, weights: torch.Tensor, batch_size: int, n_steps: int,
                      rng: np.random.Generator) -> int:
    """``n_steps`` minibatch steps of weighted MSE regression of every member's ``q.scaled`` on its
    ``targets`` (E, n; scaled) with row ``weights`` (E, n), in shuffled passes over the rows."""
    taken = 0
    while taken < n_steps:
        order = torch.as_tensor(rng.permutation(len(x)))
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            errors = (q.scaled(x[batch], slates[batch]) - targets[:, batch]).pow(2)
            loss = (errors * weights[:, batch]).mean(1).sum()  # members are independent: sum their losses
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            taken += 1
            if taken == n_steps:
                break
    return taken


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
