"""``algo=bernoulli_ts`` (recsys_exp.algorithms.bernoulli_ts): Bernoulli Thompson sampling over arms.

* unit (no Ray): the posterior update by hand; Monte Carlo per-slot, slate and whole-distribution
  probabilities against exact values (3 arms with 1-2 candidates, K = 2; arm orders integrated
  numerically over the Beta densities with scipy); the posterior-mean ranking's exact probabilities;
* config: the prior and propensity_samples checks (one ConfigError line naming the key);
* online (the session's Ray): a short run on Interest Exploration whose learned posterior ranks
  the topics like the env's constants do, beats algo=random under the same seed, and whose
  checkpoint carries the posterior.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import compose_config
from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space
from scipy import integrate, stats

from recsys_exp.algorithms.bandit_arms import arm_spec
from recsys_exp.algorithms.bernoulli_ts import BernoulliTSModule
from recsys_exp.envs.layout import slate_layout
from recsys_exp.errors import ConfigError

S = 20_000  # posterior draws of the Monte Carlo estimates in the unit tests
ARMS_OF = [0, 1, 1, 2, 2]  # 5 candidates: arm 0 has one, arms 1 and 2 two each
PRIOR = {"alpha": [3.0, 2.0, 7.0], "beta": [4.0, 3.0, 12.0]}


def cluster_space(n: int, k: int, clusters: int) -> gym.spaces.Dict:
    """An IExp-like observation space with ``clusters`` topics (doc = [one-hot topic | quality])."""
    return gym.spaces.Dict({
        "user": gym.spaces.Box(-np.inf, np.inf, (0,), np.float32),
        "doc": gym.spaces.Box(-np.inf, np.inf, (n, clusters + 1), np.float32),
        "response": gym.spaces.Dict({"click": gym.spaces.MultiDiscrete([2] * k),
                                     "cluster_id": gym.spaces.MultiDiscrete([clusters] * k)})})


def obs_of(space: gym.spaces.Dict, arms, quality=None) -> torch.Tensor:
    n, c = space["doc"].shape[0], space["doc"].shape[1] - 1
    k = len(space["response"]["click"].nvec)
    doc = np.zeros((1, n, c + 1), np.float32)
    doc[0, np.arange(n), arms] = 1.0
    doc[0, :, c] = 1.0 if quality is None else quality
    obs = {"user": np.zeros((1, 0), np.float32), "doc": doc,
           "response": {"click": np.zeros((1, k), np.int64), "cluster_id": np.zeros((1, k), np.int64)}}
    flat = flatten_inputs_to_1d_tensor(obs, spaces_struct=get_base_struct_from_space(space), batch_axis=True)
    return torch.as_tensor(np.asarray(flat), dtype=torch.float32)


def make_bts(space: gym.spaces.Dict, prior=None, mode: str = "thompson", samples: int = S,
             tie_feature=None) -> BernoulliTSModule:
    layout = slate_layout(space)
    n, k = layout["doc"][1], layout["click"][1]
    return BernoulliTSModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (layout["obs_dim"],), np.float32),
        action_space=gym.spaces.MultiDiscrete([n] * k), inference_only=False,
        model_config={"slate_layout": layout, "epsilon": None, "arms": "cluster", "tie_feature": tie_feature,
                      "prior": prior, "propensity_samples": samples, "exploration_mode": mode,
                      **arm_spec(space, "cluster")})


def arm_order_probabilities(alpha, beta) -> dict[tuple[int, ...], float]:
    """P(theta_a > theta_b > theta_c) for every order of 3 independent Betas:
    the integral over x of f_b(x) (1 - F_a(x)) F_c(x)."""
    d = [stats.beta(a, b) for a, b in zip(alpha, beta)]
    out = {}
    for a, b, c in itertools.permutations(range(3)):
        out[(a, b, c)] = integrate.quad(lambda x, a=a, b=b, c=c: d[b].pdf(x) * d[a].sf(x) * d[c].cdf(x), 0, 1,
                                        epsabs=1e-12, epsrel=1e-10)[0]
    return out


def exact_slot_and_slate(alpha, beta, arms_of, k):
    """Exact P(slot k shows j) (K, N) and P(slate) {slate: p} of "top-K by one draw per arm,
    candidates of an arm shuffled uniformly", by enumerating arm orders and within-arm orders."""
    n = len(arms_of)
    members = {a: [j for j in range(n) if arms_of[j] == a] for a in range(3)}
    slot = np.zeros((k, n))
    slate_p: dict[tuple[int, ...], float] = {}
    for order, p in arm_order_probabilities(alpha, beta).items():
        shuffles = list(itertools.product(*[list(itertools.permutations(members[a])) for a in order]))
        for shuffle in shuffles:
            ranking = [j for block in shuffle for j in block]
            q = p / len(shuffles)
            for pos in range(k):
                slot[pos, ranking[pos]] += q
            slate_p[tuple(ranking[:k])] = slate_p.get(tuple(ranking[:k]), 0.0) + q
    return slot, slate_p


# ---------------------------------------------------------------------------------------
# 1. the posterior
# ---------------------------------------------------------------------------------------
def test_posterior_update_by_hand():
    m = make_bts(cluster_space(5, 2, 3), prior=PRIOR)
    # pulls: arm 0 x3 (clicks 1, 0, 1), arm 1 x1 (0), arm 2 x2 (1, 1)
    m.absorb(torch.tensor([0, 0, 1, 2, 0, 2]), torch.tensor([1, 0, 0, 1, 1, 1]))
    alpha, beta = m.posterior()
    torch.testing.assert_close(alpha, torch.tensor([3.0 + 2, 2.0 + 0, 7.0 + 2], dtype=torch.float64))
    torch.testing.assert_close(beta, torch.tensor([4.0 + 1, 3.0 + 1, 12.0 + 0], dtype=torch.float64))
    torch.testing.assert_close(m.posterior_mean(), torch.tensor([5 / 10, 2 / 6, 9 / 21], dtype=torch.float64))
    assert all(b.dtype == torch.float64 for b in (m.prior_alpha, m.prior_beta, m.arm_pulls, m.arm_clicks))
    assert {"prior_alpha", "prior_beta", "arm_pulls", "arm_clicks"} <= set(m.state_dict())
    flat = make_bts(cluster_space(5, 2, 3))  # prior null: Beta(1, 1) per arm
    flat.absorb(torch.tensor([2, 2]), torch.tensor([1, 0]))
    assert [t.tolist() for t in flat.posterior()] == [[1.0, 1.0, 2.0], [1.0, 1.0, 2.0]]


def test_greedy_ranks_by_the_posterior_mean_with_exact_probabilities():
    space = cluster_space(5, 2, 3)
    m = make_bts(space, prior=PRIOR, mode="none")  # means 3/7, 2/5, 7/19: arm 0, then 1, then 2
    obs = obs_of(space, ARMS_OF)
    assert m.greedy_slate(obs)[0, 0] == 0 and m.greedy_slate(obs)[0, 1] in (1, 2)
    slate, logp, slot_logp = m.sample_slate(obs)  # exploration=none: the same ranking
    assert slate[0, 0] == 0 and logp.exp().item() == pytest.approx(0.5)
    np.testing.assert_allclose(slot_logp.exp().numpy(), [[1.0, 0.5]])
    probs = m.slot_probabilities(obs, explore=False)[0]
    np.testing.assert_allclose(probs.numpy(), [[1, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0]])


# ---------------------------------------------------------------------------------------
# 2. Monte Carlo propensities against exact values
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exact():
    return exact_slot_and_slate(PRIOR["alpha"], PRIOR["beta"], ARMS_OF, 2)


def within(estimate: np.ndarray, truth: np.ndarray, draws: int, sigmas: float = 4.0) -> None:
    se = np.sqrt(truth * (1 - truth) / draws) + 1e-9
    assert (np.abs(estimate - truth) <= sigmas * se).all(), (estimate, truth, se)


def test_monte_carlo_slot_probabilities_match_exact_enumeration(exact):
    torch.manual_seed(0)
    space = cluster_space(5, 2, 3)
    m = make_bts(space, prior=PRIOR)
    slot_exact, _ = exact
    assert slot_exact.sum(1) == pytest.approx([1.0, 1.0])
    est = m.slot_probabilities(obs_of(space, ARMS_OF).repeat(3, 1))  # rows share one estimate
    assert est.shape == (3, 2, 5)
    torch.testing.assert_close(est[0], est[2])
    within(est[0].numpy(), slot_exact, S)
    # the arms' draws are exchangeable with the candidates' order: a permuted row permutes the columns
    perm = [3, 1, 4, 0, 2]
    permuted = m.slot_probabilities(obs_of(space, [ARMS_OF[j] for j in perm]))[0]
    within(permuted.numpy(), slot_exact[:, perm], S)


def test_monte_carlo_slate_probabilities_match_exact_enumeration(exact):
    torch.manual_seed(1)
    space = cluster_space(5, 2, 3)
    m = make_bts(space, prior=PRIOR)
    obs = obs_of(space, ARMS_OF)
    _, slate_exact = exact
    support, probs = m.slate_distribution(obs)
    assert support.shape == (1, 20, 2) and probs.sum().item() == pytest.approx(1.0)
    est = {tuple(s.tolist()): p.item() for s, p in zip(support[0], probs[0])}
    truth = np.array([slate_exact.get(s, 0.0) for s in est])
    within(np.array(list(est.values())), truth, S)
    # sampled slates: their logged propensity estimates the exact probability (the acting draw is one of S + 1)
    slates, logp, slot_logp = m.sample_slate(obs.repeat(200, 1))
    shown = [tuple(s) for s in slates.tolist()]
    within(logp.exp().numpy(), np.array([slate_exact[s] for s in shown]), S, sigmas=5.0)
    slot_exact = exact[0]
    within(slot_logp.exp().numpy(), slot_exact[[0, 1], slates.numpy()], S, sigmas=5.0)
    # and the slates themselves follow the exact distribution (200 draws: a loose frequency check)
    freq = np.mean([s[0] == 3 or s[0] == 4 for s in shown])
    assert abs(freq - slot_exact[0, 3:].sum()) < 4 * np.sqrt(0.25 / 200)


def test_monte_carlo_tie_feature_orders_candidates_of_one_arm():
    torch.manual_seed(2)
    space = cluster_space(5, 2, 3)
    m = make_bts(space, prior=PRIOR, tie_feature=3)  # quality: candidate 4 before 3 in arm 2
    obs = obs_of(space, ARMS_OF, quality=np.array([1, 1, 1, 0.5, 2.0], np.float32))
    slot_exact, _ = exact_slot_and_slate(PRIOR["alpha"], PRIOR["beta"], ARMS_OF, 2)
    est = m.slot_probabilities(obs)[0].numpy()
    p_arm2_first = slot_exact[0, 3] + slot_exact[0, 4]
    within(est[0, [3, 4]], np.array([0.0, p_arm2_first]), S)
    # the first slot of arm 2's block always shows candidate 4, the second candidate 3
    slates = m.thompson_slate(obs.repeat(300, 1))[0]
    assert all(s.index(4) < s.index(3) for s in slates.tolist() if 3 in s and 4 in s)


def test_forward_exploration_is_cheap_and_logs_unknown_propensities():
    from ray.rllib.core.columns import Columns

    space = cluster_space(5, 2, 3)
    m = make_bts(space, prior=PRIOR)
    out = m.forward_exploration({Columns.OBS: obs_of(space, ARMS_OF).repeat(4, 1)})
    assert out[Columns.ACTIONS].shape == (4, 2) and torch.isnan(out[Columns.ACTION_LOGP]).all()
    out = m.forward_inference({Columns.OBS: obs_of(space, ARMS_OF)})
    assert out[Columns.ACTIONS][0, 0] == 0  # the posterior mean's best arm (arm 0, one candidate)


# ---------------------------------------------------------------------------------------
# 3. config checks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (("algo.training.prior={alpha:[1,2],beta:[1]}",), "algo.training.prior.beta: 1 value, expected 2 (one per arm)"),
    (("algo.training.prior={alpha:[1,2,3],beta:[1,1,1]}",), "algo.training.prior.alpha: 3 values, expected 2"),
    (("algo.training.prior={alpha:[1,2],beta:[1,0]}",), "algo.training.prior.beta[1]=0: must be a finite number > 0"),
    (("algo.training.prior={alpha:[1,-2],beta:[1,1]}",), "algo.training.prior.alpha[1]=-2: must be a finite number"),
    (("algo.training.prior={alpha:[1,2]}",), "algo.training.prior.beta: missing"),
    (("algo.training.prior={alpha:[1,2],beta:[1,1],gamma:[1]}",), "algo.training.prior.gamma: unknown key"),
    (("algo.training.prior=3",), "algo.training.prior=3: must be null (Beta(1, 1) for every arm) or {alpha"),
    (("algo.training.propensity_samples=0",), "algo.training.propensity_samples=0: must be an integer >= 1"),
    (("exploration=ucb",), "exploration.type='ucb': bernoulli_ts supports: thompson, none"),
    (("algo.training.arms=item",), "algo.training.arms='item'"),  # needs env.resample_documents=false
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        compose_config("algo=bernoulli_ts", "env=interest_exploration", *overrides)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_config_reaches_the_module():
    from recsys_exp.runner.build import build_algorithm_config

    _, config = build_algorithm_config(compose_config(
        "algo=bernoulli_ts", "env=interest_exploration", "algo.training.prior={alpha:[2,1],beta:[3,4]}",
        "algo.training.propensity_samples=500"))
    mc = config.model_config
    assert mc["prior"] == {"alpha": [2, 1], "beta": [3, 4]} and mc["propensity_samples"] == 500
    assert mc["exploration_mode"] == "thompson" and mc["num_arms"] == 2
    _, config = build_algorithm_config(compose_config("algo=bernoulli_ts", "env=interest_exploration",
                                                      "exploration=none"))
    assert config.model_config["exploration_mode"] == "none"
    # items as arms (fixed candidates): one arm per candidate position
    _, config = build_algorithm_config(compose_config(
        "algo=bernoulli_ts", "env=interest_exploration", "algo.training.arms=item", "env.resample_documents=false",
        "algo.env_runners.num_envs_per_env_runner=1"))
    assert config.model_config["num_arms"] == 10


# ---------------------------------------------------------------------------------------
# 4. online, through the runner
# ---------------------------------------------------------------------------------------
QUIET = ["logger.mode=disabled", "progress=false"]


def iexp_topic_oracle() -> np.ndarray:
    """Expected click logit per topic from the env's constants: E[affinity_t] over user types
    (affinity ~ LogN(M[type][t], S[type][t])) + E[quality_t] (LogN(mu_t, sigma_t))."""
    from recsys_exp.envs.interest_exploration import InterestExplorationParams

    p = InterestExplorationParams()
    m, s = np.array(p.affinity_mean), np.array(p.affinity_stddev)
    affinity = np.array(p.user_type_probs) @ np.exp(m + s ** 2 / 2)
    quality = np.exp(np.array(p.topic_quality_mean) + np.array(p.topic_quality_stddev) ** 2 / 2)
    return affinity + quality


@pytest.mark.slow
def test_online_run_learns_the_topic_order_and_beats_random(ray_session, tmp_path):
    import recsys_exp

    common = ["env=interest_exploration", "seed=0", "stop.timesteps=5000", "eval.episodes=50", *QUIET]
    bts = recsys_exp.run(["algo=bernoulli_ts", *common], run_dir=tmp_path / "bts")
    rnd = recsys_exp.run(["algo=random", *common], run_dir=tmp_path / "random")
    assert bts.status == "completed" and rnd.status == "completed"
    # the posterior, as the checkpoint carries it (what mode=evaluate and serving restore)
    module = recsys_exp.load_policy(bts.run_dir).module
    pulls = module.arm_pulls
    assert pulls.sum() >= 2 * 5000 and module.prior_alpha.tolist() == [1.0, 1.0]
    alpha, beta = module.posterior()
    torch.testing.assert_close(alpha + beta, 2.0 + pulls)
    mean = module.posterior_mean().numpy()
    oracle = iexp_topic_oracle()
    assert list(np.argsort(-mean)) == list(np.argsort(-oracle)), (mean, oracle)
    assert bts.summary["eval_return_mean"] > rnd.summary["eval_return_mean"] + 5, (
        bts.summary["eval_return_mean"], rnd.summary["eval_return_mean"])
