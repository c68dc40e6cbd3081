"""Discrete CQL(H) for SlateQ and DQN (recsys_exp.algorithms.cql).

No Ray cluster and no Algorithm: the Learners are built in-process with
``config.build_learner()`` and fed hand-made train batches (Interest Evolution observations,
flattened like RLlib's ``FlattenObservations``). Every random draw has a fixed seed.
"""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.dqn.dqn_learner import QF_PREDS
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

from recsys_exp.algorithms.common import encode_flat_slate
from recsys_exp.algorithms.cql import (
    CQLDQN,
    CQLDQNConfig,
    CQLDQNLearner,
    CQLSlateQ,
    CQLSlateQConfig,
    CQLSlateQLearner,
    slate_cql_terms,
)
from recsys_exp.envs.layout import slate_layout
from recsys_exp.algorithms.slateq.slate_value import MAX_EXACT_SLATES, choice_probabilities, slate_values
from recsys_exp.algorithms.slates import all_ordered_slates as all_slates
from recsys_exp.algorithms.slateq.slateq import SlateQ, SlateQConfig
from recsys_exp.envs import make_vector_env

N, K = 4, 2  # 12 ordered slates
MID = DEFAULT_MODULE_ID


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def flatten(space: gym.spaces.Dict, obs: dict) -> torch.Tensor:
    """A batch of Dict observations -> (B, obs_dim) float32, as RLlib's FlattenObservations."""
    flat = flatten_inputs_to_1d_tensor(obs, spaces_struct=get_base_struct_from_space(space), batch_axis=True)
    return torch.as_tensor(np.asarray(flat), dtype=torch.float32)


def env_batch(num_envs: int = 16, steps: int = 2, seed: int = 0, flat_actions: bool = False):
    """(layout, train batch) of ``steps`` transitions of ``num_envs`` Interest Evolution users
    under uniformly random slates; B = num_envs · steps."""
    env = make_vector_env("interest_evolution", num_envs, num_candidates=N, slate_size=K, seed=seed)
    space = env.single_observation_space
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {key: [] for key in ("obs", "actions", "rewards", "new_obs", "terminateds")}
    for _ in range(steps):
        slates = np.stack([rng.permutation(N)[:K] for _ in range(num_envs)])
        next_obs, reward, terminated, truncated, _ = env.step(slates)
        rows["obs"].append(flatten(space, obs))
        rows["new_obs"].append(flatten(space, next_obs))
        rows["actions"].append(torch.as_tensor(slates))
        rows["rewards"].append(torch.as_tensor(reward, dtype=torch.float32))
        rows["terminateds"].append(torch.as_tensor(terminated))
        obs = next_obs
    batch = {key: torch.cat(v) for key, v in rows.items()}
    if flat_actions:
        batch["actions"] = encode_flat_slate(batch["actions"], N)
    b = batch["rewards"].shape[0]
    batch.update({"n_step": torch.ones(b), "weights": torch.ones(b)})
    return slate_layout(space), batch


def slateq_config(config_cls, layout, action_space=None, **training):
    """A CQLSlateQConfig / SlateQConfig for the flattened observation of ``layout``."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (layout["obs_dim"],), np.float32)
    return (config_cls()
            .environment(observation_space=obs_space, action_space=action_space or gym.spaces.MultiDiscrete([N] * K))
            .rl_module(model_config={"slate_layout": layout, "hidden_sizes": [16], "activation": "relu",
                                     "embedding_size": None, "epsilon": None})
            .training(slate_optimizer="exact", **training))


def build(config, seed=0, state=None):
    """config.build_learner() with fixed initial weights (or ``state``, a module state_dict)."""
    torch.manual_seed(seed)
    learner = config.build_learner()
    module = learner.module[MID]
    if state is None:
        with torch.no_grad():  # a choice model that matters: random interaction, position biases
            module.choice.interaction.normal_(std=0.5)
            module.choice.position_bias.copy_(torch.tensor([0.8, -0.4]))
    else:
        module.load_state_dict(state)
    return learner


def loss_of(learner, batch, learner_cls=None):
    """The learner's (or ``learner_cls``'s) loss on ``batch`` from a fresh forward pass."""
    fwd = learner.module[MID].forward_train(batch)
    fn = (learner_cls or type(learner)).compute_loss_for_module
    return fn(learner, module_id=MID, config=learner.config.get_config_for_module(MID), batch=batch, fwd_out=fwd)


def hand_slate_value(q, q_null, logits, null_logit, bias, slate) -> torch.Tensor:
    """Q(s, A) = Σ_k P(k)·Q̄(a_k) + P(⊥)·Q̄(⊥) for one user, the multinomial logit written out."""
    w = torch.stack([torch.exp(logits[a] + bias[k]) for k, a in enumerate(slate)])
    total = w.sum() + torch.exp(null_logit)
    return (w * q[list(slate)]).sum() / total + torch.exp(null_logit) / total * q_null


def hand_slate_cql(module, batch) -> torch.Tensor:
    """mean_b [log Σ_{12 slates} exp Q(s_b, A) − Q(s_b, A_b)] by enumeration with itertools."""
    with torch.no_grad():
        q, q_null = module.item_values(batch["obs"])
        logits, null_logit = module.choice_logits(batch["obs"])
        bias = module.choice.position_bias
    terms = []
    for i, slate in enumerate(module.slates_from_actions(batch["actions"]).tolist()):
        args = (q[i], q_null[i], logits[i], null_logit[i], bias)
        values = torch.stack([hand_slate_value(*args, p) for p in itertools.permutations(range(N), K)])
        terms.append(torch.log(torch.exp(values).sum()) - hand_slate_value(*args, tuple(slate)))
    return torch.stack(terms).mean()


def data_vs_unseen_gap(module, batch) -> float:
    """mean_b [Q(s_b, A_b) − mean of Q(s_b, A) over the 11 slates A ≠ A_b]."""
    with torch.no_grad():
        q, q_null = module.item_values(batch["obs"])
        logits, null_logit = module.choice_logits(batch["obs"])
        slates = all_slates(N, K)
        values = slate_values(q, q_null, logits, null_logit, module.choice.position_bias,
                              slates.expand(q.shape[0], -1, -1))
        data = (slates[None] == batch["actions"][:, None, :]).all(-1)  # (B, 12), one True per row
        unseen = values.masked_fill(data, 0.0).sum(-1) / (~data).sum(-1)
        return (values[data] - unseen).mean().item()


def gradient_steps(learner, batch, steps):
    """``steps`` gradient updates of the learner's loss on a fixed batch (no target syncs)."""
    for _ in range(steps):
        loss = loss_of(learner, batch)
        grads = learner.compute_gradients({MID: loss})
        learner.apply_gradients(learner.postprocess_gradients(grads))


# ---------------------------------------------------------------------------------------------
# SlateQ
# ---------------------------------------------------------------------------------------------
def test_cql_slateq_config_defaults_and_classes():
    """Defaults, the learner class, SlateQ's module and the minimal algorithm class."""
    config = CQLSlateQConfig()
    assert (config.cql_alpha, config.cql_num_sampled_slates, config.cql_max_exact_slates) == \
        (1.0, 256, MAX_EXACT_SLATES)
    assert config.algo_class is CQLSlateQ and CQLSlateQ.__bases__ == (SlateQ,)
    assert isinstance(CQLSlateQ.get_default_config(), CQLSlateQConfig)
    assert config.get_default_learner_class() is CQLSlateQLearner
    assert config.get_default_rl_module_spec().module_class is SlateQConfig().get_default_rl_module_spec().module_class
    config.training(cql_alpha=0.3, cql_num_sampled_slates=17, lr=5e-4)
    assert (config.cql_alpha, config.cql_num_sampled_slates, config.lr) == (0.3, 17, 5e-4)


@pytest.mark.parametrize("flat_actions", [False, True])
def test_slate_cql_term_matches_a_hand_enumeration(flat_actions):
    """loss(α) − loss(α = 0) = α · the hand-enumerated CQL(H) term over all 12 ordered slates,
    loss(α = 0) equals SlateQ's loss exactly, and the metrics are logged (also with flat
    Discrete(N**K) actions)."""
    layout, batch = env_batch(flat_actions=flat_actions)
    action_space = gym.spaces.Discrete(N ** K) if flat_actions else None
    alpha = 2.5
    cql = build(slateq_config(CQLSlateQConfig, layout, action_space, cql_alpha=alpha))
    state = {k: v.clone() for k, v in cql.module[MID].state_dict().items()}
    zero = build(slateq_config(CQLSlateQConfig, layout, action_space, cql_alpha=0.0), state=state)
    plain = build(slateq_config(SlateQConfig, layout, action_space), state=state)
    expected = hand_slate_cql(cql.module[MID], batch)  # before the losses update feature statistics

    loss_cql, loss_zero, loss_plain = (loss_of(learner, batch) for learner in (cql, zero, plain))
    assert loss_zero.item() == loss_plain.item()
    assert (loss_cql - loss_zero).item() == pytest.approx(alpha * expected.item(), rel=1e-4, abs=1e-5)
    assert expected.item() > 0  # log Σ exp >= the data term, strictly with 12 slates
    assert cql.metrics.peek((MID, "cql_loss")) == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
    for name in ("q_data_mean", "q_logsumexp_mean"):
        assert math.isfinite(cql.metrics.peek((MID, name)))


def test_cql_gradient_reaches_only_the_q_network():
    """The regulariser's gradient flows into the item-value network, not into the choice model."""
    layout, batch = env_batch()
    learner = build(slateq_config(CQLSlateQConfig, layout))
    m = learner.module[MID]
    fwd = m.forward_train(batch)
    lse, q_data = slate_cql_terms(fwd["q_items"], fwd["q_null"], fwd["choice_logits"], fwd["null_logit"],
                                  m.choice.position_bias, batch["actions"])
    (lse - q_data).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.q_net.parameters())
    assert all(p.grad is None for p in m.choice.parameters())


def _random_inputs(b, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    data = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])
    return (torch.randn(b, n, generator=g), torch.randn(b, generator=g), torch.randn(b, n, generator=g),
            torch.randn(b, generator=g), 0.5 * torch.randn(k, generator=g), data)


@pytest.mark.parametrize("n,k,num_sampled", [(4, 2, 8), (7, 3, 32)])
def test_sampled_logsumexp_is_unbiased_in_exp(n, k, num_sampled):
    """Forced onto the sampling path (max_exact_slates=1), exp of the importance-corrected
    estimate averages to Σ_A exp Q(s, A): its log-mean-exp over many draws matches the exact
    log-sum-exp; the data term is identical on both paths."""
    *inputs, data = _random_inputs(6, n, k, seed=n)
    exact, q_data = slate_cql_terms(*inputs, data)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([slate_cql_terms(*inputs, data, num_sampled_slates=num_sampled, max_exact_slates=1,
                                         generator=g)[0] for _ in range(400)])
    log_mean_exp = torch.logsumexp(draws, 0) - math.log(len(draws))
    torch.testing.assert_close(log_mean_exp, exact, rtol=0, atol=0.02)
    assert (draws.std(0) > 0).all()  # really sampled
    torch.testing.assert_close(slate_cql_terms(*inputs, data, max_exact_slates=1)[1], q_data)


def test_large_slate_spaces_sample_by_default():
    """N=30, K=3 (24,360 ordered slates > MAX_EXACT_SLATES) uses the sampled estimate by default,
    close to the exact log-sum-exp (computed here by raising the limit)."""
    n, k = 30, 3
    assert math.perm(n, k) > MAX_EXACT_SLATES
    *inputs, data = _random_inputs(3, n, k, seed=3)
    exact, _ = slate_cql_terms(*inputs, data, max_exact_slates=10 ** 6)
    torch.manual_seed(0)
    a, _ = slate_cql_terms(*inputs, data, num_sampled_slates=4096)
    b, _ = slate_cql_terms(*inputs, data, num_sampled_slates=4096)
    assert not torch.equal(a, b)  # two different random draws: the default path samples
    torch.testing.assert_close(a, exact, rtol=0, atol=0.05)


def test_learner_follows_cql_max_exact_slates():
    """With cql_max_exact_slates below 12 the learner's term is sampled and close to the exact one."""
    layout, batch = env_batch()
    exact = build(slateq_config(CQLSlateQConfig, layout))
    state = {k: v.clone() for k, v in exact.module[MID].state_dict().items()}
    sampled = build(slateq_config(CQLSlateQConfig, layout, cql_max_exact_slates=11, cql_num_sampled_slates=4096),
                    state=state)
    torch.manual_seed(0)
    loss_exact, loss_sampled = loss_of(exact, batch), loss_of(sampled, batch)
    assert loss_exact.item() != loss_sampled.item()
    assert loss_sampled.item() == pytest.approx(loss_exact.item(), abs=0.02)


@pytest.mark.parametrize("targets", ["zero", "env"])
def test_large_alpha_makes_unseen_slates_worth_less_than_logged_ones(targets):
    """Gradient steps with α = 5 on a fixed batch raise Q of the logged slates relative to the
    other slates of the same state (the conservative effect).

    ``zero``: zero-reward terminal transitions, so the TD loss has no preferred direction and
    α = 0 leaves the gap where it was. ``env``: Interest Evolution's rewards; TD alone already
    raises the logged slates (their clicked items get positive targets, unshown items none), and
    α = 5 adds clearly more on top.
    """
    layout, batch = env_batch(num_envs=32, steps=1, seed=3)
    if targets == "zero":
        batch["rewards"], batch["terminateds"] = torch.zeros(32), torch.ones(32, dtype=torch.bool)
    changes, state = {}, None
    for alpha in (0.0, 5.0):
        learner = build(slateq_config(CQLSlateQConfig, layout, cql_alpha=alpha, lr=1e-2), state=state)
        # Input statistics first: the first loss call would otherwise change the standardisation.
        learner.module[MID].update_feature_statistics(batch["obs"])
        if state is None:
            state = {k: v.clone() for k, v in learner.module[MID].state_dict().items()}
        before = data_vs_unseen_gap(learner.module[MID], batch)
        gradient_steps(learner, batch, steps=30)
        changes[alpha] = data_vs_unseen_gap(learner.module[MID], batch) - before
    if targets == "zero":
        assert changes[5.0] > 0.5 and abs(changes[0.0]) < 0.1 * changes[5.0], changes
    else:
        assert changes[5.0] > changes[0.0] + 0.15, changes


# ---------------------------------------------------------------------------------------------
# DQN
# ---------------------------------------------------------------------------------------------
def dqn_learner(alpha=1.0, **training):
    """A CQLDQN learner on a 6-dim Box observation with Discrete(5) actions."""
    config = (CQLDQNConfig()
              .environment(observation_space=gym.spaces.Box(-1.0, 1.0, (6,), np.float32),
                           action_space=gym.spaces.Discrete(5))
              .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[16]))
              .training(cql_alpha=alpha, **training))
    torch.manual_seed(0)
    return config.build_learner()


def dqn_batch(b=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {Columns.OBS: torch.rand(b, 6, generator=g) * 2 - 1, Columns.NEXT_OBS: torch.rand(b, 6, generator=g) * 2 - 1,
            Columns.ACTIONS: torch.randint(0, 5, (b,), generator=g), Columns.REWARDS: torch.randn(b, generator=g),
            Columns.TERMINATEDS: torch.rand(b, generator=g) < 0.1, "n_step": torch.ones(b), "weights": torch.ones(b)}


def test_cql_dqn_config_defaults():
    """The DQN variant's defaults and classes."""
    config = CQLDQNConfig()
    assert (config.cql_alpha, config.lr, config.train_batch_size_per_learner, config.double_q,
            config.td_error_loss_fn) == (1.0, 1e-3, 256, True, "mse")
    assert config.algo_class is CQLDQN and isinstance(CQLDQN.get_default_config(), CQLDQNConfig)
    assert config.get_default_learner_class() is CQLDQNLearner


@pytest.mark.parametrize("model", [{}, {"dueling": True}, {"num_atoms": 5, "v_min": -2.0, "v_max": 2.0}])
def test_dqn_cql_term_matches_a_hand_computation(model):
    """loss − DQN's loss = α · mean_b [log Σ_a exp Q(s_b, a) − Q(s_b, a_b)], Q from ``qf_preds``
    (plain, dueling and distributional heads)."""
    alpha = 0.7
    learner, batch = dqn_learner(alpha, **model), dqn_batch()
    fwd = learner.module[MID].forward_train(batch)
    q = fwd[QF_PREDS].detach()
    assert q.shape == (32, 5)
    expected = (torch.log(torch.exp(q).sum(-1)) - q[torch.arange(32), batch[Columns.ACTIONS]]).mean()
    config = learner.config.get_config_for_module(MID)
    loss = learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out=fwd)
    base = DQNTorchLearner.compute_loss_for_module(learner, module_id=MID, config=config, batch=batch, fwd_out=fwd)
    assert (loss - base).item() == pytest.approx(alpha * expected.item(), rel=1e-5, abs=1e-6)
    assert learner.metrics.peek((MID, "cql_loss")) == pytest.approx(expected.item(), rel=1e-5)


def test_dqn_large_alpha_lowers_unlogged_actions():
    """Gradient steps with α = 5 widen Q(s, a_data) − mean Q(s, a ≠ a_data); α = 0 much less."""
    batch = dqn_batch(64, seed=1)
    changes = {}
    for alpha in (0.0, 5.0):
        learner = dqn_learner(alpha, lr=1e-2)

        def gap():
            with torch.no_grad():
                q = learner.module[MID].forward_train(batch)[QF_PREDS]
            data = torch.nn.functional.one_hot(batch[Columns.ACTIONS], 5).bool()
            return (q[data] - q.masked_fill(data, 0).sum(-1) / 4).mean().item()

        before = gap()
        gradient_steps(learner, batch, steps=30)
        changes[alpha] = gap() - before
    assert changes[5.0] > 0.2 and abs(changes[0.0]) < 0.25 * changes[5.0], changes


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_cls", [CQLSlateQConfig, CQLDQNConfig])
def test_validate_rejects_a_negative_alpha(config_cls):
    """cql_alpha < 0 is rejected by validate() with a message naming cql_alpha."""
    layout, _ = env_batch(num_envs=1, steps=1)
    if config_cls is CQLSlateQConfig:
        config = slateq_config(CQLSlateQConfig, layout)
    else:
        config = CQLDQNConfig().environment(observation_space=gym.spaces.Box(-1.0, 1.0, (6,), np.float32),
                                            action_space=gym.spaces.Discrete(5))
    config.validate()  # valid as built
    config.training(cql_alpha=-0.1)
    with pytest.raises(ValueError, match="cql_alpha"):
        config.validate()


@pytest.mark.parametrize("key", ["cql_num_sampled_slates", "cql_max_exact_slates"])
def test_validate_rejects_zero_slate_counts(key):
    """cql_num_sampled_slates / cql_max_exact_slates < 1 are rejected with their name."""
    layout, _ = env_batch(num_envs=1, steps=1)
    config = slateq_config(CQLSlateQConfig, layout, **{key: 0})
    with pytest.raises(ValueError, match=key):
        config.validate()


@pytest.mark.parametrize("session_baseline", ["step", "step_and_past_reward"])
def test_monte_carlo_slateq_regresses_value_plus_session_baseline_on_the_return(session_baseline):
    """``targets=monte_carlo``: the loss is mean((Q̄(s, consumed) + h_t − y)²) with y = G for a finished
    session and y = G + γⁿ·(V_target(o_T) + h_{t+n}) for a running one. h's network is set by hand to
    h_t = 2 + 3·t/100 (one ReLU unit), plus 5·z_t with ``step_and_past_reward`` (a second unit, ReLU(z + 10)
    − 10), z_t the session's mean reward before t standardised by the batch's own mean and population std
    (the running statistics after their first batch; z_T from the mean of all its stored rewards), in units
    of the value scale σ (1 before the first batch, the std of its returns after); Q̄ and V_target come
    from the module's own networks."""
    layout, batch = env_batch(num_envs=8, steps=2, seed=3)
    learner = build(slateq_config(SlateQConfig, layout, targets="monte_carlo", double_q=False, gamma=0.9,
                                  session_baseline=session_baseline))
    m = learner.module[MID]
    with_past = session_baseline == "step_and_past_reward"
    with torch.no_grad():
        for p in m.session_baseline.parameters():
            p.zero_()
        m.session_baseline[0].weight[0, 0] = 1.0
        m.session_baseline[2].weight[0, 0] = 3.0
        m.session_baseline[2].bias.fill_(2.0)
        if with_past:
            m.session_baseline[0].weight[1, 1] = 1.0
            m.session_baseline[0].bias[1] = 10.0
            m.session_baseline[2].weight[0, 1] = 5.0
            m.session_baseline[2].bias.fill_(2.0 - 50.0)
    b = batch["rewards"].shape[0]
    g = torch.Generator().manual_seed(0)
    batch.update({"session_step": torch.randint(0, 50, (b,), generator=g),
                  "n_step": torch.randint(1, 30, (b,), generator=g),
                  "rewards": torch.rand(b, generator=g) * 100.0,
                  "terminateds": torch.arange(b) % 2 == 0,
                  "past_reward": torch.rand(b, generator=g) * 4.0,
                  "past_reward_end": torch.rand(b, generator=g) * 4.0})
    batch["next_obs_1"] = batch["new_obs"]  # o_{t+1}: whose response says what was consumed

    with torch.no_grad():
        before = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("feature_", "return_"))}
        # forward with the old input and return statistics, bootstrap with the ones refreshed by the batch
        total = loss_of(learner, batch)
        _, v_next = m.best_slate(batch["new_obs"], m._target_q_net)
        mean_after = m.return_mean.item()
        m.load_state_dict({**m.state_dict(), **before})
        q, q_null = m.item_values(batch["obs"])
        clicks = m.clicks(batch["new_obs"])
        slates = m.slates_from_actions(batch["actions"])
        taken = torch.where(clicks.sum(-1) > 0, q.gather(1, slates.gather(1, clicks.argmax(-1, keepdim=True)))[:, 0],
                            q_null)
        past = batch["past_reward"].double()
        z = lambda p: ((p.double() - past.mean()) / (past.std(unbiased=False) + 1e-6)).float()  # noqa: E731
        h_step = lambda t: 2.0 + 3.0 * t.float() / 100.0  # noqa: E731
        h_now = h_step(batch["session_step"]) + (5.0 * z(batch["past_reward"]) if with_past else 0.0)
        h_end = h_step(batch["session_step"] + batch["n_step"]) + (5.0 * z(batch["past_reward_end"]) if with_past
                                                                     else 0.0)
        # the value scale after the first batch: its returns' std (population) and mean, in closed form
        sigma = batch["rewards"].double().std(unbiased=False).item() + 1e-6
        assert np.isclose(mean_after, batch["rewards"].double().mean().item(), rtol=1e-5)
        running = (~batch["terminateds"]).float()
        y = batch["rewards"] + 0.9 ** batch["n_step"].float() * running * (v_next + sigma * h_end)
        q_loss = (taken + h_now - y).pow(2).mean()  # h_t at the old scale (σ = 1)
        logits, null_logit = m.choice_logits(batch["obs"])
        probs = choice_probabilities(logits, null_logit, m.choice.position_bias, slates[:, None, :])[:, 0]
        slot = torch.where(clicks.sum(-1) > 0, clicks.argmax(-1), torch.full((b,), K))
        choice_loss = -probs.gather(1, slot[:, None]).log().mean()
    assert torch.isclose(total, q_loss + choice_loss, rtol=1e-5), (total, q_loss + choice_loss)


def test_auto_session_baseline_reads_the_past_reward_only_without_user_features():
    """``session_baseline=auto`` is h(t, r̄_t) for an observation without user features (Long-Term
    Satisfaction's latent user) and h(t) with them (Interest Evolution's interests: the module built on
    its layout gets a one-input h; ``step_and_past_reward`` a two-input one); True, the setting of
    checkpoints from before the option, is h(t)."""
    from recsys_exp.algorithms.slateq.module import resolve_session_baseline

    assert resolve_session_baseline("auto", 0) == "step_and_past_reward"
    assert resolve_session_baseline("auto", 3) == "step" and resolve_session_baseline(True, 0) == "step"
    assert resolve_session_baseline(False, 0) is None
    layout, _ = env_batch(num_envs=1, steps=1)
    assert layout["user"][1] > 0
    widths = {}
    for setting in ("auto", "step_and_past_reward"):
        m = build(slateq_config(SlateQConfig, layout, targets="monte_carlo", session_baseline=setting)).module[MID]
        widths[setting] = (m.baseline_inputs, m.session_baseline[0].in_features)
    assert widths == {"auto": ("step", 1), "step_and_past_reward": ("step_and_past_reward", 2)}


@pytest.mark.parametrize("training, message", [
    ({"targets": "sarsa"}, "targets='sarsa': allowed td, monte_carlo"),
    ({"targets": "monte_carlo", "n_step": 3}, "n_step must be 1"),
    ({"session_baseline": "user"}, "session_baseline='user': allowed auto, step, step_and_past_reward"),
    ({"targets": "monte_carlo", "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 1000}},
     "needs replay_buffer_config.type"),
])
def test_slateq_validate_rejects_targets_it_cannot_build(training, message):
    """SlateQ's ``targets``: an unknown name, n-step rows and a buffer without returns to the end are
    rejected by validate() with a message naming the setting (before any training)."""
    layout, _ = env_batch(num_envs=1, steps=1)
    config = slateq_config(SlateQConfig, layout, targets="monte_carlo")
    config.validate()  # valid as built
    config.training(**training)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        config.validate()
