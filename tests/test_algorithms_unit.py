"""Unit tests of the slate algorithms' building blocks (recsys_exp.algorithms).

No Ray cluster and no Algorithm: the RLModules are constructed directly and fed observations
flattened exactly like RLlib's ``FlattenObservations`` connector does. Every random draw comes
from a fixed seed; the whole file runs in a few seconds.
"""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

from recsys_exp.algorithms.common import (
    SlatePolicyModule,
    decode_flat_slate,
    encode_flat_slate,
    num_ordered_slates,
    random_slate,
    top_k_slate,
)
from recsys_exp.algorithms.greedy import GreedySlateModule
from recsys_exp.algorithms.linear_bandit import LinearBanditModule, candidate_features
from recsys_exp.algorithms.random_slates import RandomSlateModule
from recsys_exp.envs.layout import slate_layout
from recsys_exp.algorithms.slateq.module import SlateQModule
from recsys_exp.algorithms.slates import all_ordered_slates as all_slates
from recsys_exp.algorithms.slateq.slate_value import (
    choice_probabilities,
    optimize_slate,
    slate_values,
)
from recsys_exp.envs import make_vector_env
from recsys_exp.envs.wrappers import decode_flat_slate as np_decode_flat_slate

IEV, LTS, IEXP = "interest_evolution", "long_term_satisfaction", "interest_exploration"
ENVS = (IEV, LTS, IEXP)

LIN = {"alpha": 1.0, "posterior_scale": 1.0, "ridge": 1.0}
MODULES = {  # name -> (class, model_config without slate_layout / epsilon)
    "random": (RandomSlateModule, {}),
    "greedy": (GreedySlateModule, {"score": "affinity", "feature_index": 0, "descending": True}),
    "lin_ucb": (LinearBanditModule, {**LIN, "exploration_mode": "ucb"}),
    "lin_ts": (LinearBanditModule, {**LIN, "exploration_mode": "thompson"}),
    "lin_greedy": (LinearBanditModule, {**LIN, "exploration_mode": "none"}),
    **{f"slateq_{opt}": (SlateQModule, {"hidden_sizes": [16], "activation": "relu", "embedding_size": None,
                                        "slate_optimizer": opt}) for opt in ("exact", "top_k", "greedy")},
}


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def flatten(space: gym.spaces.Dict, obs: dict) -> torch.Tensor:
    """A batch of Dict observations -> (B, obs_dim) float32, as RLlib's FlattenObservations."""
    flat = flatten_inputs_to_1d_tensor(obs, spaces_struct=get_base_struct_from_space(space), batch_axis=True)
    return torch.as_tensor(np.asarray(flat), dtype=torch.float32)


def toy_space(n: int = 6, d: int = 3, u: int = 2, k: int = 2) -> gym.spaces.Dict:
    """A small slate observation space with continuous features (no ties between candidates)."""
    box = lambda shape: gym.spaces.Box(-np.inf, np.inf, shape, np.float32)  # noqa: E731
    return gym.spaces.Dict({"doc": box((n, d)), "user": box((u,)),
                            "response": gym.spaces.Dict({"click": gym.spaces.MultiDiscrete([2] * k)})})


def toy_obs(space: gym.spaces.Dict, batch: int, seed: int = 0) -> torch.Tensor:
    """Flattened random observations of :func:`toy_space` (Gaussian user and documents)."""
    rng = np.random.default_rng(seed)
    n, d = space["doc"].shape
    obs = {"doc": rng.normal(size=(batch, n, d)).astype(np.float32),
           "user": rng.normal(size=(batch, space["user"].shape[0])).astype(np.float32),
           "response": {"click": rng.integers(0, 2, size=(batch, len(space["response"]["click"].nvec)))}}
    return flatten(space, obs)


def make_module(name: str, space: gym.spaces.Dict, action_space: gym.Space | None = None,
                epsilon=None, **overrides) -> SlatePolicyModule:
    """Construct the RLModule ``name`` of :data:`MODULES` for the slate observation ``space``."""
    cls, config = MODULES[name]
    layout = slate_layout(space)
    n, k = layout["doc"][1], layout["click"][1]
    obs_space = gym.spaces.Box(-np.inf, np.inf, (layout["obs_dim"],), np.float32)
    return cls(observation_space=obs_space, action_space=action_space or gym.spaces.MultiDiscrete([n] * k),
               inference_only=False,
               model_config={"slate_layout": layout, "epsilon": epsilon, **config, **overrides})


def stepped_env_obs(name: str, num_envs: int = 16, n: int = 12, k: int = 3, steps: int = 3):
    """(space, dict observation, flat observation) of ``name`` after a few steps of fixed slates."""
    env = make_vector_env(name, num_envs=num_envs, seed=0, num_candidates=n, slate_size=k)
    obs, _ = env.reset(seed=0)
    for t in range(steps):
        obs, *_ = env.step(np.tile((np.arange(k) + t) % n, (num_envs, 1)))
    return env.single_observation_space, obs, flatten(env.single_observation_space, obs)


def assert_valid_slates(slates: torch.Tensor, n: int, k: int) -> None:
    """Every row is K distinct candidate indices in [0, N)."""
    s = slates.numpy()
    assert s.ndim == 2 and s.shape[1] == k
    assert s.min() >= 0 and s.max() < n
    assert all(len(set(row)) == k for row in s.tolist()), s


def slate_value_loop(q, q_null, logits, null_logit, position_bias, slate) -> float:
    """Reference Q(s, A) for one user and one slate, written out with floats (stable softmax)."""
    slot_logits = [logits[a] + position_bias[k] for k, a in enumerate(slate)]
    top = max(slot_logits + [null_logit])
    w = [math.exp(x - top) for x in slot_logits]
    w_null = math.exp(null_logit - top)
    total = w_null + sum(w)
    return sum(wk / total * q[a] for wk, a in zip(w, slate)) + w_null / total * q_null


def reference_greedy_value(q, q_null, logits, null_logit, position_bias, slate_size) -> float:
    """The paper's greedy slate optimiser (fill positions by decreasing bias, each time with the
    item that maximises the partial slate's value), evaluated with stable float arithmetic."""
    order = torch.as_tensor(position_bias).argsort(descending=True).tolist()
    chosen: dict[int, int] = {}
    for pos in order:
        best_item, best_value = None, -math.inf
        for item in range(len(q)):
            if item in chosen.values():
                continue
            partial = {**chosen, pos: item}
            positions = sorted(partial)
            value = slate_value_loop(q, q_null, logits, null_logit, [position_bias[p] for p in positions],
                                     [partial[p] for p in positions])
            if value > best_value:
                best_item, best_value = item, value
        chosen[pos] = best_item
    return slate_value_loop(q, q_null, logits, null_logit, position_bias, [chosen[p] for p in range(slate_size)])


# ---------------------------------------------------------------------------------------
# 1. the layout of the flattened observation
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENVS)
def test_slate_layout_locates_every_block_of_the_flat_observation(name):
    """slate_layout's offsets read back doc, user and the last clicks from RLlib's flat vector."""
    space, obs, flat = stepped_env_obs(name)
    layout = slate_layout(space)
    b, (n, d), u = flat.shape[0], space["doc"].shape, space["user"].shape[0]
    assert layout["obs_dim"] == flat.shape[1]
    assert layout["doc"][1:] == [n, d] and layout["user"][1] == u and layout["click"][1] == 3

    ds, us, cs = layout["doc"][0], layout["user"][0], layout["click"][0]
    np.testing.assert_array_equal(flat[:, ds:ds + n * d].reshape(b, n, d).numpy(), obs["doc"])
    np.testing.assert_array_equal(flat[:, us:us + u].numpy(), obs["user"])
    pairs = flat[:, cs:cs + 6].reshape(b, 3, 2).numpy()
    np.testing.assert_array_equal(pairs.sum(-1), 1.0)  # one-hot pairs
    click = obs["response"]["click"]
    assert click.any(), "the test needs at least one click"
    np.testing.assert_array_equal(pairs.argmax(-1), click)

    # The module's readers use the same offsets.
    module = make_module("random", space)
    np.testing.assert_array_equal(module.docs(flat).numpy(), obs["doc"])
    np.testing.assert_array_equal(module.user(flat).numpy(), obs["user"])
    np.testing.assert_array_equal(module.clicks(flat).numpy(), click)


def test_slate_layout_names_the_missing_key():
    """A Dict that is not a slate observation is rejected with a message naming what is missing."""
    space = toy_space()
    without_doc = gym.spaces.Dict({k: v for k, v in space.spaces.items() if k != "doc"})
    with pytest.raises(ValueError, match="no doc"):
        slate_layout(without_doc)
    with pytest.raises(ValueError, match="Dict"):
        slate_layout(space["doc"])


# ---------------------------------------------------------------------------------------
# 2. flat (Discrete(N**K)) slate actions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(5, 1), (5, 3), (10, 2), (4, 4)])
def test_flat_slate_encoding_round_trips_and_matches_the_env_wrapper(n, k):
    """encode/decode are inverse, little-endian, and agree with the env's numpy decoder."""
    slates = all_slates(n, k)
    assert len(slates) == num_ordered_slates(n, k) == math.factorial(n) // math.factorial(n - k)
    flat = encode_flat_slate(slates, n)
    assert flat.min() >= 0 and flat.max() < n ** k and len(set(flat.tolist())) == len(slates)
    torch.testing.assert_close(decode_flat_slate(flat, n, k), slates)

    # Little-endian: slot 0 is the lowest base-N digit.
    expected = [sum(int(a) * n ** i for i, a in enumerate(row)) for row in slates]
    assert flat.tolist() == expected

    every_index = torch.arange(n ** k)
    np.testing.assert_array_equal(decode_flat_slate(every_index, n, k).numpy(),
                                  np_decode_flat_slate(every_index.numpy(), n, k))


# ---------------------------------------------------------------------------------------
# 3. every module emits valid slates
# ---------------------------------------------------------------------------------------
def test_random_slate_and_top_k_slate_are_valid():
    """random_slate rows are K distinct in-range indices; top_k_slate is the K best, best first."""
    g = torch.Generator().manual_seed(0)
    assert_valid_slates(random_slate(500, 7, 3, generator=g), 7, 3)
    scores = torch.randn(50, 9, generator=g)
    slates = top_k_slate(scores, 4)
    assert_valid_slates(slates, 9, 4)
    np.testing.assert_array_equal(slates.numpy(), np.argsort(-scores.numpy(), axis=-1)[:, :4])


@pytest.mark.parametrize("flat_actions", [False, True], ids=["multidiscrete", "discrete"])
@pytest.mark.parametrize("name", list(MODULES))
def test_module_actions_are_valid_slates(name, flat_actions):
    """forward_inference / forward_exploration emit K distinct candidates per row, in the env's
    action format (MultiDiscrete slates or little-endian Discrete(N**K) indices)."""
    n, k = 10, 3
    space, _, flat = stepped_env_obs(IEV, num_envs=32, n=n, k=k)
    action_space = gym.spaces.Discrete(n ** k) if flat_actions else gym.spaces.MultiDiscrete([n] * k)
    module = make_module(name, space, action_space)
    torch.manual_seed(0)
    for out in (module.forward_inference({"obs": flat}), module.forward_exploration({"obs": flat}, t=0)):
        actions, logp = out["actions"], out["action_logp"]
        assert logp.shape == (32,)
        if flat_actions:
            assert actions.shape == (32,) and actions.min() >= 0 and actions.max() < n ** k
            actions = decode_flat_slate(actions, n, k)
        assert_valid_slates(actions, n, k)


# ---------------------------------------------------------------------------------------
# 4. the random baseline
# ---------------------------------------------------------------------------------------
def test_random_module_logs_the_uniform_slate_probability():
    """The random module's action_logp is log((N-K)!/N!), at inference and while exploring."""
    n, k = 12, 3
    space, _, flat = stepped_env_obs(LTS, n=n, k=k)
    module = make_module("random", space)
    expected = -math.log(math.factorial(n) / math.factorial(n - k))
    for out in (module.forward_inference({"obs": flat}), module.forward_exploration({"obs": flat}, t=0)):
        torch.testing.assert_close(out["action_logp"], torch.full((flat.shape[0],), expected))


def test_random_slates_are_uniform():
    """The module's first slot is uniform over candidates, and random_slate is uniform over all
    ordered slates (chi-square statistics below their 99.9% quantiles)."""
    n, k = 12, 3
    space, _, flat = stepped_env_obs(LTS, num_envs=1, n=n, k=k)
    module = make_module("random", space)
    torch.manual_seed(0)
    rows = 6000
    first = module.forward_exploration({"obs": flat.expand(rows, -1)}, t=0)["actions"][:, 0]
    counts = np.bincount(first.numpy(), minlength=n)
    chi2 = ((counts - rows / n) ** 2 / (rows / n)).sum()
    assert chi2 < 31.3, counts  # df = 11

    g = torch.Generator().manual_seed(1)
    slates = random_slate(20 * 200, 5, 2, generator=g)  # 20 ordered slates, 200 expected each
    counts = np.bincount(encode_flat_slate(slates, 5).numpy(), minlength=25)
    valid = counts[[int(encode_flat_slate(s[None], 5)) for s in all_slates(5, 2)]]
    assert valid.sum() == len(slates)
    chi2 = ((valid - 200) ** 2 / 200).sum()
    assert chi2 < 43.8, valid  # df = 19


# ---------------------------------------------------------------------------------------
# 5. epsilon-greedy on top of any module
# ---------------------------------------------------------------------------------------
def _greedy_feature_module(space, epsilon):
    return make_module("greedy", space, epsilon=epsilon, score="feature", feature_index=0)


def test_epsilon_one_gives_uniform_slates_with_uniform_logp():
    """With ε = 1 every slate is uniformly random and its logp is -log(#slates)."""
    space = toy_space(n=6, k=2)
    obs = toy_obs(space, 1).expand(400, -1)
    module = _greedy_feature_module(space, [(0, 1.0), (1, 1.0)])
    torch.manual_seed(0)
    out = module.forward_exploration({"obs": obs}, t=0)
    slates = out["actions"]
    assert_valid_slates(slates, 6, 2)
    assert len({tuple(s) for s in slates.tolist()}) > 20  # of 30 possible
    torch.testing.assert_close(out["action_logp"], torch.full((400,), -math.log(30.0)))


def test_epsilon_mix_logp_follows_the_mixture_formula():
    """With 0 < ε < 1: P(slate) = ε/#slates + (1-ε)·[slate == greedy], about ε of the rows explore."""
    eps, num = 0.4, num_ordered_slates(6, 2)
    space = toy_space(n=6, k=2)
    obs = toy_obs(space, 1).expand(3000, -1)
    module = _greedy_feature_module(space, [(0, eps), (1, eps)])
    greedy = module.greedy_slate(obs)
    torch.manual_seed(0)
    out = module.forward_exploration({"obs": obs}, t=0)
    same = (out["actions"] == greedy).all(-1)
    expected = torch.where(same, torch.tensor(math.log(eps / num + 1 - eps)), torch.tensor(math.log(eps / num)))
    torch.testing.assert_close(out["action_logp"], expected)
    assert abs((~same).float().mean().item() - eps * (1 - 1 / num)) < 0.04


@pytest.mark.parametrize("epsilon,t", [(None, 0), (0.0, 0), ([(0, 0.0), (1, 0.0)], 0), ([(0, 1.0), (100, 0.0)], 100)],
                         ids=["none", "zero", "zero-schedule", "decayed-schedule"])
def test_zero_epsilon_leaves_the_greedy_slate(epsilon, t):
    """Without ε (or once the schedule has decayed to 0 at step t) exploration is the greedy slate."""
    space = toy_space(n=6, k=2)
    obs = toy_obs(space, 200)
    module = _greedy_feature_module(space, epsilon)
    out = module.forward_exploration({"obs": obs}, t=t)
    torch.testing.assert_close(out["actions"], module.greedy_slate(obs))
    torch.testing.assert_close(out["action_logp"], torch.zeros(200))


def test_epsilon_schedule_follows_the_env_step():
    """The same schedule explores at t=0 (ε=1) but not at t=100 (ε=0): t reaches the schedule."""
    space = toy_space(n=6, k=2)
    obs = toy_obs(space, 1).expand(200, -1)
    module = _greedy_feature_module(space, [(0, 1.0), (100, 0.0)])
    torch.manual_seed(0)
    greedy = module.greedy_slate(obs)
    early = module.forward_exploration({"obs": obs}, t=0)["actions"]
    assert (early != greedy).any(-1).float().mean() > 0.8
    late = module.forward_exploration({"obs": obs}, t=100)["actions"]
    torch.testing.assert_close(late, greedy)


# ---------------------------------------------------------------------------------------
# 6. LinUCB / LinTS: closed-form posterior and acting
# ---------------------------------------------------------------------------------------
def _lin_module(mode, space, **overrides):
    return make_module({"ucb": "lin_ucb", "thompson": "lin_ts", "none": "lin_greedy"}[mode], space, **overrides)


def _feature_width(space) -> int:
    (_, d), u, k = space["doc"].shape, space["user"].shape[0], len(space["response"]["click"].nvec)
    return k + d + u + u * d


@pytest.mark.parametrize("ridge", [1.0, 0.3])
def test_absorb_matches_ridge_regression(ridge):
    """After absorb(X, y): θ = (λI + XᵀX)⁻¹Xᵀy, A_inv = (λI + XᵀX)⁻¹, cov_chol·cov_cholᵀ = A_inv."""
    space = toy_space()
    module = _lin_module("ucb", space, ridge=ridge)
    f = _feature_width(space)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, f)), rng.normal(size=40)
    module.absorb(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))

    x32 = x.astype(np.float32).astype(np.float64)  # what the module saw
    a = ridge * np.eye(f) + x32.T @ x32
    a_inv = np.linalg.inv(a)
    np.testing.assert_allclose(module.theta.numpy(), np.linalg.solve(a, x32.T @ y.astype(np.float32)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(module.A_inv.numpy(), a_inv, rtol=1e-4, atol=1e-6)
    chol = module.cov_chol.numpy().astype(np.float64)
    np.testing.assert_allclose(chol @ chol.T, a_inv, rtol=1e-4, atol=1e-6)
    assert np.allclose(chol, np.tril(chol))  # lower-triangular factor


def test_absorb_is_additive():
    """Absorbing two batches in sequence equals absorbing their concatenation once."""
    space = toy_space()
    f = _feature_width(space)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(15, f, generator=g), torch.randn(25, f, generator=g)
    y1, y2 = torch.randn(15, generator=g), torch.randn(25, generator=g)
    twice, once = _lin_module("ucb", space), _lin_module("ucb", space)
    twice.absorb(x1, y1)
    twice.absorb(x2, y2)
    once.absorb(torch.cat([x1, x2]), torch.cat([y1, y2]))
    for name in ("A", "b", "theta", "A_inv", "cov_chol"):
        torch.testing.assert_close(getattr(twice, name), getattr(once, name), rtol=1e-5, atol=1e-6)


def _trained_lin_module(mode, space, seed=0, rows=30, **overrides):
    module = _lin_module(mode, space, **overrides)
    g = torch.Generator().manual_seed(seed)
    f = _feature_width(space)
    module.absorb(torch.randn(rows, f, generator=g), torch.randn(rows, generator=g))
    return module


@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_ucb_slate_is_top_k_of_the_upper_confidence_bound(alpha):
    """explore_slate (ucb) is the top K of θᵀx + α·sqrt(xᵀA⁻¹x), computed here in numpy."""
    space = toy_space(n=8, k=3)
    module = _trained_lin_module("ucb", space, alpha=alpha)
    obs = toy_obs(space, 64, seed=1)
    x = module.features(obs).numpy().astype(np.float64)
    a_inv, theta = module.A_inv.numpy().astype(np.float64), module.theta.numpy().astype(np.float64)
    ucb = x @ theta + alpha * np.sqrt(np.einsum("bnf,fg,bng->bn", x, a_inv, x))
    slate, logp = module.explore_slate(obs, 0)
    np.testing.assert_array_equal(slate.numpy(), np.argsort(-ucb, axis=-1)[:, :3])
    assert logp is None  # deterministic: logged as probability 1
    # The bonus matters here: the optimistic slate is not the greedy one for every user.
    assert not torch.equal(slate, module.greedy_slate(obs))
    np.testing.assert_array_equal(module.greedy_slate(obs).numpy(), np.argsort(-(x @ theta), axis=-1)[:, :3])


def test_thompson_without_posterior_noise_is_greedy():
    """posterior_scale = 0 collapses Thompson sampling onto the greedy slate; logp is NaN (unknown)."""
    space = toy_space(n=8, k=3)
    module = _trained_lin_module("thompson", space, posterior_scale=0.0)
    obs = toy_obs(space, 64, seed=1)
    slate, logp = module.explore_slate(obs, 0)
    torch.testing.assert_close(slate, module.greedy_slate(obs))
    assert torch.isnan(logp).all()


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_thompson_samples_theta_from_the_posterior(scale):
    """With one user repeated and K = N (a full ranking per row), the frequency with which item i
    is ranked above item j matches Φ(dᵀθ / (v·sqrt(dᵀA⁻¹d))), d = x_i - x_j: the sampled θ̃ has
    mean θ and covariance v²·A⁻¹ (an anisotropic posterior, so the covariance's shape matters)."""
    space = toy_space(n=4, d=2, u=1, k=4)
    module = _lin_module("thompson", space, posterior_scale=scale)
    f = _feature_width(space)
    g = torch.Generator().manual_seed(1)
    module.absorb(torch.randn(6, f, generator=g) * torch.linspace(0.2, 3.0, f), torch.randn(6, generator=g))
    obs = toy_obs(space, 1, seed=3)
    rows = 20000
    torch.manual_seed(0)
    slate, _ = module.explore_slate(obs.expand(rows, -1), 0)
    rank = slate.argsort(-1).numpy()  # rank[r, i]: slot of item i in row r

    x = module.features(obs)[0].double().numpy()  # (N, F)
    theta, a_inv = module.theta.double().numpy(), module.A_inv.double().numpy()
    for i, j in itertools.combinations(range(4), 2):
        d = x[i] - x[j]
        expected = 0.5 * (1 + math.erf(d @ theta / (scale * math.sqrt(2 * d @ a_inv @ d))))
        assert (rank[:, i] < rank[:, j]).mean() == pytest.approx(expected, abs=0.02), (i, j)


# ---------------------------------------------------------------------------------------
# 7. bandit features
# ---------------------------------------------------------------------------------------
def test_candidate_features_layout_by_hand():
    """[position one-hot (K) | doc | user | vec(user ⊗ doc)], user-major outer product."""
    user = torch.tensor([[2.0, 3.0]])
    docs = torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]]])
    x = candidate_features(user, docs, torch.tensor([[1, 0]]), slate_size=3)
    expected = torch.tensor([[[0, 1, 0, 1, 0, 5, 2, 3, 2, 0, 10, 3, 0, 15],
                              [1, 0, 0, 0, 1, 7, 2, 3, 0, 2, 14, 0, 3, 21]]], dtype=torch.float32)
    torch.testing.assert_close(x, expected)


def test_candidate_features_without_user_are_position_and_doc():
    """With an unobserved user (U = 0) the features are just [position one-hot | doc] (K + D)."""
    docs = torch.randn(4, 5, 3)
    positions = torch.tensor([[0, 1, 2, 0, 1]]).expand(4, 5)
    x = candidate_features(torch.zeros(4, 0), docs, positions, slate_size=3)
    assert x.shape == (4, 5, 3 + 3)
    torch.testing.assert_close(x[..., :3], torch.nn.functional.one_hot(positions, 3).float())
    torch.testing.assert_close(x[..., 3:], docs)


def test_module_features_of_a_slate_put_each_item_at_its_position():
    """features(obs, slate)[k] is the features of item slate[k] with position k, features(obs)[j]
    those of candidate j at position 0."""
    space = toy_space(n=6, d=3, u=2, k=3)
    module = _lin_module("ucb", space)
    obs = toy_obs(space, 5)
    slates = random_slate(5, 6, 3, generator=torch.Generator().manual_seed(0))
    all_x, slate_x = module.features(obs), module.features(obs, slates)
    assert all_x.shape == (5, 6, _feature_width(space)) and slate_x.shape == (5, 3, _feature_width(space))
    eye = torch.eye(3)
    torch.testing.assert_close(all_x[..., :3], eye[0].expand(5, 6, 3))  # every candidate at position 0
    for b in range(5):
        for k in range(3):
            torch.testing.assert_close(slate_x[b, k, :3], eye[k])
            torch.testing.assert_close(slate_x[b, k, 3:], all_x[b, slates[b, k], 3:])


# ---------------------------------------------------------------------------------------
# 8. SlateQ: slate-value decomposition and slate optimisers
# ---------------------------------------------------------------------------------------
def _random_slateq_inputs(b, n, k, seed, logit_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, generator=g), torch.randn(b, generator=g),
            logit_scale * torch.randn(b, n, generator=g), logit_scale * torch.randn(b, generator=g),
            torch.randn(k, generator=g))


@pytest.mark.parametrize("k", [2, 3])
def test_slate_values_match_a_brute_force_loop(k):
    """choice_probabilities and slate_values equal the multinomial-logit formulas written out."""
    b, n = 3, 5
    q, q_null, logits, null_logit, bias = _random_slateq_inputs(b, n, k, seed=k)
    slates = all_slates(n, k)
    values = slate_values(q, q_null, logits, null_logit, bias, slates.expand(b, -1, -1))
    probs = choice_probabilities(logits, null_logit, bias, slates.expand(b, -1, -1))
    assert values.shape == (b, len(slates)) and probs.shape == (b, len(slates), k + 1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(b, len(slates)))
    for i in range(b):
        for s, slate in enumerate(slates.tolist()):
            w = [math.exp(logits[i, a] + bias[j]) for j, a in enumerate(slate)]
            total = math.exp(null_logit[i]) + sum(w)
            expected_p = [x / total for x in w] + [math.exp(null_logit[i]) / total]
            np.testing.assert_allclose(probs[i, s].numpy(), expected_p, rtol=1e-5)
            expected_v = sum(p * float(q[i, a]) for p, a in zip(expected_p, slate)) + expected_p[-1] * float(q_null[i])
            assert values[i, s].item() == pytest.approx(expected_v, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_exact_optimizer_is_the_brute_force_argmax(k):
    """optimize_slate('exact') returns the best permutation and its value; a precomputed
    enumeration gives the same answer."""
    b, n = 4, 5
    inputs = _random_slateq_inputs(b, n, k, seed=10 + k)
    q, q_null, logits, null_logit, bias = inputs
    slate, value = optimize_slate("exact", *inputs, k)
    again, _ = optimize_slate("exact", *inputs, k, enumeration=all_slates(n, k))
    torch.testing.assert_close(again, slate)
    for i in range(b):
        args = (q[i].tolist(), float(q_null[i]), logits[i].tolist(), float(null_logit[i]), bias.tolist())
        brute = {p: slate_value_loop(*args, p) for p in itertools.permutations(range(n), k)}
        best = max(brute, key=brute.get)
        assert tuple(slate[i].tolist()) == best
        assert value[i].item() == pytest.approx(brute[best], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("method", ["top_k", "greedy"])
@pytest.mark.parametrize("k", [2, 3])
def test_approximate_optimizers_return_valid_slates_no_better_than_exact(method, k):
    """top_k and greedy return valid slates, their reported value is that slate's value, <= exact."""
    b, n = 16, 5
    inputs = _random_slateq_inputs(b, n, k, seed=20 + k)
    slate, value = optimize_slate(method, *inputs, k)
    assert_valid_slates(slate, n, k)
    q, q_null, logits, null_logit, bias = inputs
    torch.testing.assert_close(value, slate_values(q, q_null, logits, null_logit, bias, slate[:, None, :])[:, 0])
    _, best = optimize_slate("exact", *inputs, k)
    assert (value <= best + 1e-5).all()


@pytest.mark.parametrize("k", [2, 3])
def test_greedy_optimizer_follows_the_greedy_recursion(k):
    """optimize_slate('greedy') has the value of the paper's greedy algorithm written out here."""
    b, n = 8, 6
    q, q_null, logits, null_logit, bias = _random_slateq_inputs(b, n, k, seed=30 + k, logit_scale=2.0)
    _, value = optimize_slate("greedy", q, q_null, logits, null_logit, bias, k)
    for i in range(b):
        expected = reference_greedy_value(q[i].tolist(), float(q_null[i]), logits[i].tolist(),
                                          float(null_logit[i]), bias.tolist(), k)
        assert value[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_top_k_puts_the_best_item_in_the_most_clicked_position():
    """top_k ranks items by exp(ℓ)·Q̄ and assigns them to positions by decreasing bias."""
    q = torch.tensor([[1.0, 4.0, 2.0, 3.0, 0.5]])
    logits, bias = torch.zeros(1, 5), torch.tensor([-1.0, 2.0, 0.5])  # position 1 is clicked most
    slate, _ = optimize_slate("top_k", q, torch.zeros(1), logits, torch.zeros(1), bias, 3)
    assert slate.tolist() == [[2, 1, 3]]  # best (1) in slot 1, second (3) in slot 2, third (2) in slot 0


def test_all_optimizers_agree_when_the_best_items_are_clear():
    """Equal logits and no position bias: the value depends only on the set of items, so top_k
    and greedy both reach the exact optimum (the K largest Q̄)."""
    q = torch.tensor([[0.1, 5.0, -1.0, 3.0, 4.0], [2.0, 0.0, 1.0, -3.0, 0.5]])
    args = (q, torch.zeros(2), torch.full((2, 5), 0.7), torch.zeros(2), torch.zeros(3), 3)
    exact_slate, exact = optimize_slate("exact", *args)
    assert [sorted(s) for s in exact_slate.tolist()] == [[1, 3, 4], [0, 2, 4]]
    for method in ("top_k", "greedy"):
        slate, value = optimize_slate(method, *args)
        assert [sorted(s) for s in slate.tolist()] == [[1, 3, 4], [0, 2, 4]]
        torch.testing.assert_close(value, exact)


def test_unknown_slate_optimizer_is_rejected():
    """A typo in slate_optimizer raises a ValueError listing the allowed optimisers."""
    with pytest.raises(ValueError, match="exact, top_k, greedy"):
        optimize_slate("beam", *_random_slateq_inputs(2, 4, 2, seed=0), 2)


LARGE_LOGITS = {  # item logits far above (or below) the no-click logit: exp-weights under/overflow
    "item-1000": ([[1000.0, 0.0, 0.0, 0.0, 0.0]], [0.0]),
    "null-1000": ([[0.0, 0.0, 0.0, 0.0, 0.0]], [1000.0]),
    "spread-2000": ([[1000.0, -1000.0, 0.0, 500.0, 3.0]], [-1000.0]),
}


@pytest.mark.parametrize("case", list(LARGE_LOGITS))
@pytest.mark.parametrize("method", ["top_k", "greedy", "exact"])
def test_optimizers_stay_finite_with_huge_logits(method, case):
    """Logits of ±1000 give valid slates and finite values (no exp overflow to inf/NaN)."""
    logits, null_logit = (torch.tensor(v) for v in LARGE_LOGITS[case])
    q = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    slate, value = optimize_slate(method, q, torch.tensor([0.5]), logits, null_logit, torch.tensor([0.3, 0.0]), 2)
    assert_valid_slates(slate, 5, 2)
    assert torch.isfinite(value).all()


def test_greedy_optimizer_is_shift_invariant_with_huge_logits():
    """A logit 1000 above the no-click logit must not change greedy's choice: here (q rising with
    the index, item 0 certain to be clicked but worth little) greedy should avoid item 0 and reach
    the exact optimum, as the stable reference greedy does."""
    q, q_null = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]), torch.tensor([0.0])
    logits, null_logit, bias = torch.tensor([[1000.0, 0.0, 0.0, 0.0, 0.0]]), torch.tensor([0.0]), torch.zeros(2)
    _, value = optimize_slate("greedy", q, q_null, logits, null_logit, bias, 2)
    expected = reference_greedy_value(q[0].tolist(), 0.0, logits[0].tolist(), 0.0, [0.0, 0.0], 2)
    assert expected == pytest.approx(optimize_slate("exact", q, q_null, logits, null_logit, bias, 2)[1].item())
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_slateq_module_acts_with_the_exact_optimum_of_its_own_networks():
    """SlateQModule's greedy slate maximises the decomposed value of its Q-network and choice model
    (position biases included) over all permutations."""
    n, k = 5, 2
    space = toy_space(n=n, d=3, u=2, k=k)
    torch.manual_seed(0)
    module = make_module("slateq_exact", space)
    with torch.no_grad():
        module.choice.position_bias.copy_(torch.tensor([1.5, -1.0]))
        module.choice.interaction.normal_()
    obs = toy_obs(space, 6)
    slate = module.forward_inference({"obs": obs})["actions"]
    with torch.no_grad():
        q, q_null = module.item_values(obs)
        logits, null_logit = module.choice_logits(obs)
    for i in range(6):
        args = (q[i].tolist(), float(q_null[i]), logits[i].tolist(), float(null_logit[i]), [1.5, -1.0])
        brute = {p: slate_value_loop(*args, p) for p in itertools.permutations(range(n), k)}
        assert brute[tuple(slate[i].tolist())] == pytest.approx(max(brute.values()), rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------
# 9. the greedy baseline
# ---------------------------------------------------------------------------------------
def test_greedy_affinity_ranks_by_user_doc_dot_product():
    """score=affinity picks the K largest ⟨user, doc_j⟩ on Interest Evolution, best first
    (scores compared, since same-cluster documents tie)."""
    space, obs, flat = stepped_env_obs(IEV, num_envs=32)
    module = make_module("greedy", space)
    slate = module.forward_inference({"obs": flat})["actions"].numpy()
    affinity = np.einsum("bu,bnu->bn", obs["user"], obs["doc"])
    chosen = np.take_along_axis(affinity, slate, axis=1)
    np.testing.assert_allclose(chosen, -np.sort(-affinity, axis=-1)[:, :3], atol=1e-5)
    assert_valid_slates(torch.as_tensor(slate), 12, 3)


def test_greedy_feature_ascending_picks_the_least_clickbait():
    """score=feature, feature_index=0, descending=False picks the lowest clickbait scores on LTS."""
    space, obs, flat = stepped_env_obs(LTS, num_envs=32)
    module = make_module("greedy", space, score="feature", feature_index=0, descending=False)
    slate = module.forward_inference({"obs": flat})["actions"].numpy()
    np.testing.assert_array_equal(slate, np.argsort(obs["doc"][..., 0], axis=-1)[:, :3])
    descending = make_module("greedy", space, score="feature", feature_index=0, descending=True)
    np.testing.assert_array_equal(descending.forward_inference({"obs": flat})["actions"].numpy(),
                                  np.argsort(-obs["doc"][..., 0], axis=-1)[:, :3])


def test_greedy_cluster_picks_the_highest_cluster_indices():
    """score=cluster on Interest Evolution: the slate's clusters are the K largest cluster ids among
    the candidates, highest first (the ids read here from the env's own per-document cluster)."""
    space, obs, flat = stepped_env_obs(IEV, num_envs=32)
    num_clusters = int(space["response"]["cluster_id"].nvec[0])
    module = make_module("greedy", space, score="cluster", cluster_features=[0, num_clusters])
    slate = module.forward_inference({"obs": flat})["actions"].numpy()
    clusters = obs["doc"][..., :num_clusters].argmax(-1)  # the documents' one-hot clusters
    assert ((obs["doc"][..., :num_clusters] == 1).sum(-1) == 1).all()
    chosen = np.take_along_axis(clusters, slate, axis=1)
    np.testing.assert_array_equal(chosen, -np.sort(-clusters, axis=-1)[:, :3])
    assert_valid_slates(torch.as_tensor(slate), 12, 3)


def test_greedy_cluster_needs_an_env_with_clusters():
    import recsys_exp

    with pytest.raises(recsys_exp.ConfigError, match=r"algo.training.score=cluster: env=long_term_satisfaction"):
        recsys_exp.compose(["algo=greedy", "env=long_term_satisfaction", "algo.training.score=cluster"])
    assert recsys_exp.compose(["algo=greedy", "algo.training.score=cluster"])["algo"]["training"]["score"] == "cluster"


@pytest.mark.parametrize("embedding_size", [None, 4])
def test_choice_model_logits_match_their_formula(embedding_size):
    """ℓ(s, i) = userᵀW doc_i + wᵀdoc_i + c, with W = P_uᵀP_d when model.embedding_size is set;
    ℓ_⊥(s) = w_⊥ᵀuser + c_⊥. Random weights so that every term contributes."""
    from recsys_exp.algorithms.slateq.module import ChoiceModel

    torch.manual_seed(0)
    model = ChoiceModel(user_dim=3, doc_dim=5, slate_size=2, embedding_size=embedding_size)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    user, docs = torch.randn(4, 3), torch.randn(4, 6, 5)
    logits, null_logit = model(user, docs)
    if embedding_size:
        w = model.user_embedding.weight.T @ model.doc_embedding.weight  # (U, D)
        assert not hasattr(model, "interaction")
    else:
        w = model.interaction
    expected = torch.einsum("bu,ud,bnd->bn", user, w, docs) + docs @ model.doc_term.weight[0] + model.doc_term.bias
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(null_logit, user @ model.null_weight + model.null_bias)
    assert logits.shape == (4, 6) and null_logit.shape == (4,)
