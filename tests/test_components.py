"""Each simulator part alone: distributions against closed forms, shapes, seeding, parameter errors.

The parts are the ones ``env=custom`` picks from config (recsys_exp/envs/parts.py, ecommerce.py,
the choice models and rewards of components.py); the RecSim envs' own parts are covered by
tests/test_envs.py and tests/test_fidelity.py.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from recsys_exp.envs import ecommerce as ecom
from recsys_exp.envs import interest_evolution, interest_exploration, long_term_satisfaction
from recsys_exp.envs.components import (
    Affinity,
    CascadeChoice,
    CheckContext,
    ChoiceModel,
    ClickedFieldReward,
    ClickReward,
    DocumentSampler,
    FirstSlotChoice,
    MultinomialLogitChoice,
    MultinomialProportionalChoice,
    ResponseModel,
    Reward,
    UserModel,
    UserSampler,
    UserTransition,
    click_matrix,
)
from recsys_exp.envs.parts import (
    CategoryAffinity,
    CategoryDocumentSampler,
    ClickResponse,
    PreferenceUserSampler,
    StaticUsers,
)

REPS = 200_000


def freq_close(samples: np.ndarray, probs: np.ndarray) -> None:
    """Empirical frequencies of ``samples`` (n,) in 0..len(probs)−1 within 5 standard errors of ``probs``."""
    n = len(samples)
    freq = np.bincount(samples, minlength=len(probs)) / n
    tol = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-12
    assert np.all(np.abs(freq - probs) <= tol), (freq, probs)


def ctx(docs_part, users_part, n=6, k=3, b=4, seed=0) -> CheckContext:
    rng = np.random.default_rng(seed)
    return CheckContext(n, k, docs_part, users_part, docs_part.sample(rng, b, n), users_part.sample(rng, b))


# ---------------------------------------------------------------------------------------
# cascade choice: exact probabilities by hand, sampling, errors
# ---------------------------------------------------------------------------------------
def test_cascade_probabilities_match_a_hand_computed_closed_form():
    # proportional attraction a = s / (s + 1); β = (1, 0.8, 0.5)
    choice = CascadeChoice(position_bias=[1.0, 0.8, 0.5], attraction="proportional", no_click_mass=1.0)
    scores = np.array([[1.0, 3.0, 0.0],    # a = (1/2, 3/4, 0)
                       [0.0, 1.0, 1.0],    # a = (0, 1/2, 1/2)
                       [3.0, 3.0, 3.0]])   # a = (3/4, 3/4, 3/4)
    expected = np.array([
        # P(0) = 1·a0;  P(1) = 1·0.8·(1−a0)·a1;  P(2) = 1·0.8·0.5·(1−a0)(1−a1)·a2;  P(none) = rest
        [0.5, 0.8 * 0.5 * 0.75, 0.0, 1 - 0.5 - 0.3],
        [0.0, 0.8 * 1.0 * 0.5, 0.4 * 1.0 * 0.5 * 0.5, 1 - 0.4 - 0.1],
        [0.75, 0.8 * 0.25 * 0.75, 0.4 * 0.25 * 0.25 * 0.75, 1 - 0.75 - 0.15 - 0.01875],
    ])
    np.testing.assert_allclose(choice.probabilities(scores), expected, atol=1e-12)
    for row in range(3):
        clicked = choice.choose(np.random.default_rng(row), np.tile(scores[row], (REPS, 1)))
        freq_close(clicked, expected[row])


def test_cascade_logistic_attraction_and_scalar_position_bias():
    # logistic: a = σ(s − m); with s = m every attraction is 1/2. Scalar γ: β = (1, γ, γ).
    choice = CascadeChoice(position_bias=0.6, attraction="logistic", no_click_mass=2.0)
    np.testing.assert_allclose(choice.continuation(3), [1.0, 0.6, 0.6])
    probs = choice.probabilities(np.full((1, 3), 2.0))[0]
    np.testing.assert_allclose(probs, [0.5, 0.6 * 0.5 * 0.5, 0.36 * 0.25 * 0.5, 1 - 0.5 - 0.15 - 0.045])
    freq_close(choice.choose(np.random.default_rng(0), np.full((REPS, 3), 2.0)), probs)
    # an unaffordable item (score −inf) is never clicked and the user goes on past it
    probs = choice.probabilities(np.array([[-np.inf, 2.0, 2.0]]))[0]
    np.testing.assert_allclose(probs, [0.0, 0.6 * 0.5, 0.36 * 0.5 * 0.5, 1 - 0.3 - 0.09])


def test_cascade_is_position_biased_unlike_the_multinomial_models():
    scores = np.array([[3.0, 1.0], [1.0, 3.0]])
    cascade = CascadeChoice([1.0, 0.5], attraction="proportional", no_click_mass=1.0).probabilities(scores)
    assert cascade[0, 0] > cascade[1, 1]  # the same item is clicked more in the top slot
    logit = MultinomialLogitChoice(0.0).probabilities(scores)
    assert logit[0, 0] == pytest.approx(logit[1, 1])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"position_bias": [1.0, 1.2]}, r"position_bias must be probabilities in \[0, 1\], got \[1.0, 1.2\]"),
    ({"position_bias": -0.1}, r"position_bias must be probabilities in \[0, 1\]"),
    ({"attraction": "softmax"}, "attraction='softmax': allowed logistic, proportional"),
    ({"attraction": "proportional", "no_click_mass": 0.0}, "no_click_mass must be > 0 with attraction=proportional"),
])
def test_cascade_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CascadeChoice(**kwargs)


def test_cascade_checks_position_bias_against_the_slate_size():
    c = ctx(CategoryDocumentSampler([0.5, 0.5]), PreferenceUserSampler(2), k=2)
    CascadeChoice([1.0, 0.5]).check(c)
    CascadeChoice(0.5).check(c)  # a scalar fits any slate size
    with pytest.raises(ValueError, match="position_bias has 3 entries but env.slate_size=2"):
        CascadeChoice([1.0, 0.5, 0.5]).check(c)
    with pytest.raises(ValueError, match="scores must be >= 0"):
        CascadeChoice([1.0, 0.5], attraction="proportional", no_click_mass=1.0).choose(
            np.random.default_rng(0), np.array([[-1.0, 0.0]]))


# ---------------------------------------------------------------------------------------
# multinomial choice models: probabilities() agrees with choose()
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("choice", "expected"), [
    # logit: softmax([1, 2, 0, 1]) with no-click logit 1
    (MultinomialLogitChoice(no_click_mass=1.0), np.exp([1.0, 2.0, 0.0, 1.0]) / np.exp([1.0, 2.0, 0.0, 1.0]).sum()),
    # proportional: (s − m) / (Σ (s − m) + c − m) with m = −1, c = 1: (2, 3, 1, 2) / 8
    (MultinomialProportionalChoice(no_click_mass=1.0, min_normalizer=-1.0), np.array([2.0, 3.0, 1.0, 2.0]) / 8),
    (FirstSlotChoice(), np.array([1.0, 0.0, 0.0, 0.0])),
])
def test_multinomial_choice_probabilities(choice, expected):
    scores = np.array([[1.0, 2.0, 0.0]])
    np.testing.assert_allclose(choice.probabilities(scores)[0], expected, atol=1e-12)
    freq_close(choice.choose(np.random.default_rng(0), np.tile(scores, (REPS, 1))), expected)


def test_proportional_choice_rejects_a_negative_no_click_mass():
    with pytest.raises(ValueError, match="no_click_mass .* must be >= min_normalizer"):
        MultinomialProportionalChoice(no_click_mass=-2.0, min_normalizer=-1.0)


# ---------------------------------------------------------------------------------------
# documents and users
# ---------------------------------------------------------------------------------------
def test_category_documents_distribution_shapes_and_seeding():
    sampler = CategoryDocumentSampler([0.5, 0.3, 0.2], quality_mean=[0.0, 1.0, 2.0], quality_stddev=[0.1, 0.2, 0.3])
    docs = sampler.sample(np.random.default_rng(0), 400, 500)
    assert docs["category"].shape == (400, 500) and docs["features"].shape == (400, 500, 4)
    assert docs["features"].dtype == np.float32 and sampler.feature_dim == 4
    freq_close(docs["category"].ravel(), np.array([0.5, 0.3, 0.2]))
    for c, (mean, std) in enumerate([(0.0, 0.1), (1.0, 0.2), (2.0, 0.3)]):
        q = docs["quality"][docs["category"] == c]
        assert abs(q.mean() - mean) < 5 * std / np.sqrt(len(q)) and abs(q.std() - std) < 0.01
    np.testing.assert_array_equal(docs["features"][..., :3].argmax(-1), docs["category"])
    np.testing.assert_allclose(docs["features"][..., 3], docs["quality"], rtol=1e-6)
    again = sampler.sample(np.random.default_rng(0), 400, 500)
    np.testing.assert_array_equal(again["quality"], docs["quality"])
    assert not np.array_equal(sampler.sample(np.random.default_rng(1), 400, 500)["category"], docs["category"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"category_probs": [0.5, 0.6]}, r"category_probs must sum to 1, got \[0.5, 0.6\] \(sum 1.1\)"),
    ({"category_probs": [1.5, -0.5]}, r"category_probs must be probabilities in \[0, 1\]"),
    ({"category_probs": []}, "category_probs must be a non-empty list"),
    ({"category_probs": [0.5, 0.5], "quality_mean": [0.0, 1.0, 2.0]},
     "quality_mean has 3 entries but there are 2 categories"),
    ({"category_probs": [0.5, 0.5], "quality_stddev": -1.0}, "quality_stddev must be >= 0"),
])
def test_category_documents_reject_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CategoryDocumentSampler(**kwargs)


def test_preference_users_are_dirichlet():
    alpha = np.array([0.5, 1.0, 2.5])
    sampler = PreferenceUserSampler(3, concentration=alpha.tolist())
    users = sampler.sample(np.random.default_rng(0), 100_000)
    prefs = users["preferences"]
    np.testing.assert_allclose(prefs.sum(axis=1), 1.0)
    # Dirichlet(α): mean α/α₀, variance α(α₀ − α) / (α₀²(α₀ + 1))
    a0 = alpha.sum()
    np.testing.assert_allclose(prefs.mean(axis=0), alpha / a0, atol=5e-3)
    np.testing.assert_allclose(prefs.var(axis=0), alpha * (a0 - alpha) / (a0 ** 2 * (a0 + 1)), rtol=0.03)
    obs = sampler.observe(users)
    assert obs.shape == (100_000, 3) and obs.dtype == np.float32 and sampler.observation_dim == 3
    latent = PreferenceUserSampler(3, observed=False)
    assert latent.observe(users).shape == (100_000, 0) and latent.observation_dim == 0
    with pytest.raises(ValueError, match="concentration must be > 0"):
        PreferenceUserSampler(3, concentration=0.0)
    with pytest.raises(ValueError, match="concentration has 2 entries but there are 3 categories"):
        PreferenceUserSampler(3, concentration=[1.0, 1.0])


# ---------------------------------------------------------------------------------------
# affinity, response, transition, reward
# ---------------------------------------------------------------------------------------
def test_category_affinity_and_its_fit_check():
    affinity = CategoryAffinity(scale=2.0, quality_weight=0.5, offset=1.0)
    users = {"preferences": np.array([[0.1, 0.9], [0.6, 0.4]])}
    slate = {"category": np.array([[1, 0, 1], [0, 0, 1]]), "quality": np.array([[1.0, 2.0, 0.0], [0.0, 4.0, 2.0]])}
    np.testing.assert_allclose(affinity.score(users, slate), [[1 + 1.8 + 0.5, 1 + 0.2 + 1.0, 1 + 1.8],
                                                               [1 + 1.2, 1 + 1.2 + 2.0, 1 + 0.8 + 1.0]])
    affinity.check(ctx(CategoryDocumentSampler([0.5, 0.5]), PreferenceUserSampler(2)))
    with pytest.raises(ValueError, match="users.preferences has 3 entries per user but the documents have 2 categ"):
        affinity.check(ctx(CategoryDocumentSampler([0.5, 0.5]), PreferenceUserSampler(3)))
    no_category = CheckContext(6, 3, None, None, {"price": np.zeros((4, 6))}, {"preferences": np.zeros((4, 1))})
    with pytest.raises(ValueError, match="needs documents.category .* but the document sampler draws price"):
        affinity.check(no_category)


def test_click_response_fields_and_spaces():
    response = ClickResponse(echo=["quality"], on_click=["price"])
    slate = {"quality": np.array([[1.0, 2.0], [3.0, 4.0]]), "price": np.array([[10.0, 20.0], [30.0, 40.0]])}
    out = response.respond(np.random.default_rng(0), {}, slate, np.array([1, 2]))  # 2 = no click
    np.testing.assert_array_equal(out["click"], [[0, 1], [0, 0]])
    np.testing.assert_array_equal(out["quality"], slate["quality"])
    np.testing.assert_array_equal(out["price"], [[0.0, 20.0], [0.0, 0.0]])
    spaces = response.response_spaces(2)
    assert set(spaces) == {"click", "quality", "price"}
    assert spaces["click"] == gym.spaces.MultiDiscrete([2, 2]) and spaces["price"].shape == (2,)
    with pytest.raises(ValueError, match="documents have no attribute price"):
        response.check(ctx(CategoryDocumentSampler([1.0]), PreferenceUserSampler(1)))
    with pytest.raises(ValueError, match="named twice"):
        ClickResponse(echo=["click"])


def test_static_users_and_rewards():
    users = {"preferences": np.array([[0.2, 0.8]])}
    StaticUsers().transition(None, users, {}, np.array([0]), {})
    np.testing.assert_array_equal(users["preferences"], [[0.2, 0.8]])
    assert not StaticUsers().terminated(users).any() and StaticUsers.ends_sessions is False
    responses = {"click": np.array([[0, 1], [0, 0]]), "revenue": np.array([[0.0, 12.5], [0.0, 0.0]])}
    np.testing.assert_array_equal(ClickReward()(responses), [1.0, 0.0])
    np.testing.assert_array_equal(ClickedFieldReward("revenue")(responses), [12.5, 0.0])
    with pytest.raises(KeyError, match="reward reads responses\\['watch'\\], but the responses are click, revenue"):
        ClickedFieldReward("watch")(responses)


# ---------------------------------------------------------------------------------------
# e-commerce parts
# ---------------------------------------------------------------------------------------
def test_products_have_the_configured_mean_price_per_category():
    sampler = ecom.ProductSampler([0.6, 0.4], price_mean=[10.0, 50.0], price_sigma=0.3, price_scale=100.0)
    docs = sampler.sample(np.random.default_rng(0), 500, 200)
    assert docs["features"].shape == (500, 200, 3) and sampler.feature_dim == 3
    freq_close(docs["category"].ravel(), np.array([0.6, 0.4]))
    for c, mean in enumerate([10.0, 50.0]):
        price = docs["price"][docs["category"] == c]
        # log-normal with E = mean: std = mean·sqrt(exp(σ²) − 1)
        std = mean * np.sqrt(np.exp(0.09) - 1)
        assert abs(price.mean() - mean) < 5 * std / np.sqrt(len(price))
        assert abs(np.log(price).std() - 0.3) < 0.005
    np.testing.assert_allclose(docs["features"][..., 2], docs["price"] / 100.0, rtol=1e-6)
    with pytest.raises(ValueError, match="price_mean must be > 0"):
        ecom.ProductSampler([1.0], price_mean=0.0)


def test_shoppers_budget_and_observation():
    sampler = ecom.ShopperSampler(4, concentration=0.3, budget_low=100.0, budget_high=300.0, budget_scale=100.0)
    users = sampler.sample(np.random.default_rng(0), 50_000)
    assert users["preferences"].shape == (50_000, 4) and users["budget"].shape == (50_000,)
    assert 100.0 <= users["budget"].min() and users["budget"].max() <= 300.0
    assert abs(users["budget"].mean() - 200.0) < 5 * (200 / np.sqrt(12)) / np.sqrt(50_000)
    obs = sampler.observe(users)
    assert obs.shape == (50_000, 5) and sampler.observation_dim == 5
    np.testing.assert_allclose(obs[:, 4], users["budget"] / 100.0, rtol=1e-6)
    with pytest.raises(ValueError, match="need 0 < budget_low <= budget_high"):
        ecom.ShopperSampler(4, budget_low=300.0, budget_high=100.0)


def test_shopper_affinity_prices_and_affordability():
    affinity = ecom.ShopperAffinity(preference_weight=2.0, price_weight=1.0, price_scale=100.0)
    users = {"preferences": np.array([[0.5, 0.25, 0.25]]), "budget": np.array([60.0])}
    slate = {"category": np.array([[0, 1, 0]]), "price": np.array([[20.0, 50.0, 80.0]])}
    # s = 2·3·p[c] − price/100; the 80-price product exceeds the budget of 60
    np.testing.assert_allclose(affinity.score(users, slate), [[3.0 - 0.2, 1.5 - 0.5, -np.inf]])


def test_purchase_response_and_budget_transition():
    slate = {"category": np.array([[0, 1], [1, 1]]), "price": np.array([[20.0, 50.0], [30.0, 40.0]])}
    users = {"preferences": np.array([[0.5, 0.5], [0.2, 0.8]]), "budget": np.array([100.0, 12.0])}
    clicked = np.array([1, 2])  # user 0 buys slot 1; user 1 buys nothing
    responses = ecom.PurchaseResponse().respond(None, users, slate, clicked)
    np.testing.assert_array_equal(responses["click"], click_matrix(clicked, 2))
    np.testing.assert_array_equal(responses["revenue"], [[0.0, 50.0], [0.0, 0.0]])
    transition = ecom.BudgetTransition(step_cost=10.0, satiation=0.5)
    transition.transition(None, users, slate, clicked, responses)
    np.testing.assert_allclose(users["budget"], [100.0 - 10.0 - 50.0, 12.0 - 10.0])
    # satiation: p[1] = 0.5·0.5 = 0.25, renormalised (0.5, 0.25) / 0.75
    np.testing.assert_allclose(users["preferences"], [[2 / 3, 1 / 3], [0.2, 0.8]])
    np.testing.assert_array_equal(transition.terminated({"budget": np.array([0.0, -1.0, 0.5])}), [True, True, False])
    with pytest.raises(ValueError, match="step_cost must be > 0"):
        ecom.BudgetTransition(step_cost=0.0)
    with pytest.raises(ValueError, match=r"satiation must be in \(0, 1\]"):
        ecom.BudgetTransition(satiation=0.0)


# ---------------------------------------------------------------------------------------
# the RecSim envs are assembled from the same kinds of parts
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [interest_evolution, long_term_satisfaction, interest_exploration])
def test_recsim_envs_are_assembled_from_typed_parts(module):
    params = {interest_evolution: interest_evolution.InterestEvolutionParams,
              long_term_satisfaction: long_term_satisfaction.LongTermSatisfactionParams,
              interest_exploration: interest_exploration.InterestExplorationParams}[module]()
    sim = module.build(params)
    kinds = {"documents": DocumentSampler, "users": UserSampler, "affinity": Affinity, "choice": ChoiceModel,
             "response": ResponseModel, "transition": UserTransition, "reward": Reward}
    parts = sim.parts()
    assert set(parts) == set(kinds)
    for role, kind in kinds.items():
        assert isinstance(parts[role], kind), role
    assert isinstance(sim.user_model, UserModel)
