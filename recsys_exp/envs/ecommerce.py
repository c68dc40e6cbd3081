"""Parts of a small e-commerce simulator (``conf/env/ecommerce.yaml``), assembled by ``env=custom``.

* **Products** (:class:`ProductSampler`): a category c ~ Cat(category_probs) and a price
  ~ LogNormal with mean price_mean[c]; observed as [one-hot category (C), price / price_scale].
* **Shoppers** (:class:`ShopperSampler`): category preferences p ~ Dirichlet(α·1_C) and a session
  budget ~ U(budget_low, budget_high); observed as [p (C), budget / budget_scale].
* **Affinity** (:class:`ShopperAffinity`): s_k = w_p·C·p[c_k] − w_$·price_k / price_scale; a
  product the shopper cannot afford (price > remaining budget) is never bought (s_k = −inf).
* **Choice**: a cascade with position bias (:class:`~recsys_exp.envs.components.CascadeChoice`):
  the shopper scans the slate top-down and buys at most one product.
* **Response** (:class:`PurchaseResponse`): ``click`` (= purchase), ``revenue`` (its price, on
  the bought slot) and ``price`` of every shown slot.
* **Transition** (:class:`BudgetTransition`): every step costs ``step_cost`` (browsing uses up the
  session) and a purchase its price; a purchase satiates: p[c] ← satiation·p[c], renormalised.
  The session ends when the budget is used up (≤ 0).
* **Reward**: revenue (``ClickedFieldReward(field=revenue)``) or purchases (``ClickReward``).

Revenue trades click probability against price (expensive products sell less often), the
order of the slate matters (position bias), and satiation plus the budget make it sequential.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from recsys_exp.envs.components import (
    Affinity,
    DocumentSampler,
    ResponseModel,
    UserSampler,
    UserTransition,
    click_matrix,
    per_slot_box,
    per_slot_discrete,
)
from recsys_exp.envs.parts import check_distribution, check_preferences_fit, one_hot, per_category


class ProductSampler(DocumentSampler):
    """category ~ Cat(category_probs), price ~ LogN(log μ_c − σ²/2, σ) (mean μ_c = price_mean[c]).

    Arrays ``category`` (B, N) int64 and ``price`` (B, N); features (B, N, C + 1) =
    [one-hot category, price / price_scale].
    """

    feature_low, feature_high = 0.0, np.inf

    def __init__(self, category_probs: Sequence[float], price_mean: float | Sequence[float],
                 price_sigma: float = 0.3, price_scale: float = 100.0):
        self.probs = check_distribution("category_probs", category_probs)
        self.num_categories = len(self.probs)
        self.price_mean = per_category("price_mean", price_mean, self.num_categories)
        if (self.price_mean <= 0).any():
            raise ValueError(f"price_mean must be > 0, got {price_mean!r}")
        if price_sigma < 0 or price_scale <= 0:
            raise ValueError(f"price_sigma must be >= 0 and price_scale > 0, got {price_sigma}, {price_scale}")
        self.price_sigma, self.price_scale = float(price_sigma), float(price_scale)
        self.feature_dim = self.num_categories + 1
        self._cdf = np.cumsum(self.probs)
        # The log-normal's location so that E[price] = price_mean[c].
        self._log_loc = np.log(self.price_mean) - 0.5 * self.price_sigma ** 2

    def sample(self, rng, batch, num_candidates):
        shape = (batch, num_candidates)
        category = np.minimum(np.searchsorted(self._cdf, rng.random(shape) * self._cdf[-1], side="right"),
                              self.num_categories - 1)
        price = np.exp(self._log_loc[category] + self.price_sigma * rng.standard_normal(shape))
        features = np.empty(shape + (self.feature_dim,), dtype=np.float32)
        features[..., :-1] = one_hot(category, self.num_categories)
        features[..., -1] = price / self.price_scale
        return {"category": category, "price": price, "features": features}


class ShopperSampler(UserSampler):
    """preferences ~ Dirichlet(concentration·1_C) (B, C), budget ~ U(budget_low, budget_high) (B,).

    Observed: [preferences (C), budget / budget_scale] (U = C + 1).
    """

    observation_low, observation_high = 0.0, np.inf

    def __init__(self, num_categories: int, concentration: float | Sequence[float] = 0.5,
                 budget_low: float = 100.0, budget_high: float = 300.0, budget_scale: float = 100.0):
        if not isinstance(num_categories, int) or num_categories <= 0:
            raise ValueError(f"num_categories must be a positive integer, got {num_categories!r}")
        self.num_categories = num_categories
        self.concentration = per_category("concentration", concentration, num_categories)
        if (self.concentration <= 0).any():
            raise ValueError(f"concentration must be > 0, got {concentration!r}")
        if not 0 < budget_low <= budget_high:
            raise ValueError(f"need 0 < budget_low <= budget_high, got {budget_low}, {budget_high}")
        if budget_scale <= 0:
            raise ValueError(f"budget_scale must be > 0, got {budget_scale}")
        self.budget_low, self.budget_high = float(budget_low), float(budget_high)
        self.budget_scale = float(budget_scale)
        self.observation_dim = num_categories + 1

    def sample(self, rng, n):
        return {"preferences": rng.dirichlet(self.concentration, n),
                "budget": rng.uniform(self.budget_low, self.budget_high, n)}

    def observe(self, users):
        out = np.empty((len(users["budget"]), self.observation_dim), dtype=np.float32)
        out[:, :-1] = users["preferences"]
        # A negative budget only exists on the terminal step; the observation stays in [0, inf).
        out[:, -1] = np.maximum(users["budget"], 0.0) / self.budget_scale
        return out


def _check_shopper_state(ctx) -> None:
    if "budget" not in ctx.users:
        raise ValueError(f"needs users.budget (B,), but the user sampler draws {', '.join(sorted(ctx.users))}")
    if "price" not in ctx.docs:
        raise ValueError(f"needs documents.price (B, N), but the document sampler draws {', '.join(sorted(ctx.docs))}")


class ShopperAffinity(Affinity):
    """s_k = preference_weight·C·p[c_k] − price_weight·price_k / price_scale; −inf if price_k > budget.

    C·p[c] is 1 for a shopper without taste (uniform p) and up to C for a single-category shopper.
    """

    def __init__(self, preference_weight: float = 2.0, price_weight: float = 1.0, price_scale: float = 100.0):
        if price_scale <= 0:
            raise ValueError(f"price_scale must be > 0, got {price_scale}")
        self.preference_weight, self.price_weight = float(preference_weight), float(price_weight)
        self.price_scale = float(price_scale)

    def check(self, ctx):
        check_preferences_fit(ctx)
        _check_shopper_state(ctx)

    def score(self, users, slate):
        prefs = users["preferences"]
        rows = np.arange(prefs.shape[0])[:, None]
        price = slate["price"]
        scores = (self.preference_weight * prefs.shape[1] * prefs[rows, slate["category"]]
                  - self.price_weight * price / self.price_scale)
        return np.where(price > users["budget"][:, None], -np.inf, scores)


class PurchaseResponse(ResponseModel):
    """``click`` = purchase (B, K), ``revenue`` = price on the bought slot, ``price`` of every slot."""

    def check(self, ctx):
        if "price" not in ctx.docs:
            raise ValueError(f"needs documents.price, but the document sampler draws {', '.join(sorted(ctx.docs))}")

    def respond(self, rng, users, slate, clicked):
        click = click_matrix(clicked, slate["price"].shape[1])
        return {"click": click, "revenue": slate["price"] * click, "price": slate["price"]}

    def response_spaces(self, slate_size):
        return {"click": per_slot_discrete(2, slate_size), "revenue": per_slot_box(0.0, np.inf, slate_size),
                "price": per_slot_box(0.0, np.inf, slate_size)}


class BudgetTransition(UserTransition):
    """budget ← budget − step_cost − price of the purchase; p[c] ← satiation·p[c] (renormalised).

    Terminates when the budget is ≤ 0; with step_cost > 0 every session ends within
    budget_high / step_cost steps.
    """

    def __init__(self, step_cost: float = 5.0, satiation: float = 0.5):
        if step_cost <= 0:
            raise ValueError(f"step_cost must be > 0 (it guarantees that sessions end), got {step_cost}")
        if not 0.0 < satiation <= 1.0:
            raise ValueError(f"satiation must be in (0, 1] (1 = no satiation), got {satiation}")
        self.step_cost, self.satiation = float(step_cost), float(satiation)

    def check(self, ctx):
        check_preferences_fit(ctx)
        _check_shopper_state(ctx)

    def transition(self, rng, users, slate, clicked, responses):
        budget, prefs = users["budget"], users["preferences"]
        budget -= self.step_cost + responses["revenue"].sum(axis=1)
        rows = np.nonzero(clicked < slate["price"].shape[1])[0]
        if len(rows) and self.satiation < 1.0:
            bought = slate["category"][rows, clicked[rows]]
            prefs[rows, bought] *= self.satiation
            prefs[rows] /= prefs[rows].sum(axis=1, keepdims=True)

    def terminated(self, users):
        return users["budget"] <= 0.0
