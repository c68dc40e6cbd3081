"""SlateQ's slate-value decomposition and slate optimisation (Ie et al., IJCAI 2019, §4–§5).

A user facing slate A = (a_1, …, a_K) clicks the item in slot k with probability

    P(k | s, A) = exp(ℓ(s, a_k) + β_k) / (exp(ℓ_⊥(s)) + Σ_m exp(ℓ(s, a_m) + β_m))

(a multinomial-logit choice model with item logits ℓ, a no-click logit ℓ_⊥ and per-position
biases β) and nothing with the remaining probability P(⊥ | s, A). The slate's long-term value
decomposes into item values Q̄:

    Q(s, A) = P(⊥ | s, A)·Q̄(s, ⊥) + Σ_k P(k | s, A)·Q̄(s, a_k)

Shapes: item Q̄ and logits (B, N), no-click Q̄ and logit (B,), position biases (K,),
slates (B, S, K) long (S candidate slates per user). Optimisers return (B, K) slates (slot
order) and their values (B,):

* ``auto``: ``exact`` for small slate spaces, ``greedy`` otherwise (:func:`resolve_optimizer`);
* ``exact``: enumerate all N!/(N-K)! ordered slates (:func:`~recsys_exp.algorithms.slates.all_ordered_slates`) (the paper's LP-exact optimum, by brute force);
* ``top_k``: the K items with the largest exp(ℓ)·Q̄, best in the position with the largest β (paper's TS);
* ``greedy``: fill positions (largest β first) one at a time with the item that maximises the
  partial slate's value (paper's GS).
"""

from __future__ import annotations

import math

import torch

from recsys_exp.algorithms.slates import all_ordered_slates, num_ordered_slates

OPTIMIZERS = ("auto", "exact", "top_k", "greedy")
MAX_EXACT_SLATES = 20_000
AUTO_EXACT_SLATES = 1_000
LOGIT_FLOOR = 80.0  # "auto": exact up to this many ordered slates (10-2: 90, 20-2: 380), else greedy


def resolve_optimizer(method: str, num_candidates: int, slate_size: int) -> str:
    """``auto`` -> ``exact`` when N!/(N-K)! <= AUTO_EXACT_SLATES, else ``greedy``; others unchanged."""
    if method != "auto":
        return method
    return "exact" if num_ordered_slates(num_candidates, slate_size) <= AUTO_EXACT_SLATES else "greedy"


def choice_probabilities(logits: torch.Tensor, null_logit: torch.Tensor, position_bias: torch.Tensor,
                         slates: torch.Tensor) -> torch.Tensor:
    """P(click slot k | slate) for k < K and P(no click) last: (B, S, K + 1)."""
    b, s, k = slates.shape
    slot_logits = logits.gather(1, slates.reshape(b, -1)).reshape(b, s, k) + position_bias
    return torch.cat([slot_logits, null_logit[:, None, None].expand(b, s, 1)], dim=-1).softmax(-1)


def slate_values(q: torch.Tensor, q_null: torch.Tensor, logits: torch.Tensor, null_logit: torch.Tensor,
                 position_bias: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
    """Q(s, A) of each slate: (B, S)."""
    b, s, k = slates.shape
    probs = choice_probabilities(logits, null_logit, position_bias, slates)
    slot_q = q.gather(1, slates.reshape(b, -1)).reshape(b, s, k)
    return (probs[..., :k] * slot_q).sum(-1) + probs[..., k] * q_null[:, None]


def _positions_by_bias(position_bias: torch.Tensor) -> torch.Tensor:
    return position_bias.argsort(descending=True)


def optimize_slate(method: str, q: torch.Tensor, q_null: torch.Tensor, logits: torch.Tensor,
                   null_logit: torch.Tensor, position_bias: torch.Tensor, slate_size: int,
                   enumeration: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The slate chosen by ``method`` (exact | top_k | greedy) and its value: ((B, K), (B,))."""
    b, n = q.shape
    if method == "exact":
        slates = all_ordered_slates(n, slate_size) if enumeration is None else enumeration
        values = slate_values(q, q_null, logits, null_logit, position_bias, slates.expand(b, -1, -1))
        best = values.argmax(-1)
        return slates[best], values.gather(1, best[:, None])[:, 0]
    order = _positions_by_bias(position_bias)
    # Values are ratios of exp-weights: shift every logit by one per-user constant against overflow,
    # and floor the shifted logits so no weight underflows to 0 (0/0 would make a NaN value that
    # argmax prefers). exp(-80) ~ 1e-35 is still a normal float32; items that far below the best
    # keep their order by Q̄ and change a slate's value by a negligible amount.
    shift = torch.maximum(logits.max(-1).values + position_bias.max(), null_logit)
    logits = (logits - shift[:, None]).clamp_min(-LOGIT_FLOOR)
    null_logit = (null_logit - shift).clamp_min(-LOGIT_FLOOR)
    if method == "top_k":
        items = (logits.exp() * q).topk(slate_size, dim=-1).indices  # best first
        slate = torch.empty_like(items)
        slate[:, order] = items  # best item into the most-clicked position
    elif method == "greedy":
        slate = torch.empty(b, slate_size, dtype=torch.long)
        # Running numerator / denominator of the value, starting from the no-click term.
        num = null_logit.exp() * q_null
        den = null_logit.exp()
        taken = torch.zeros(b, n, dtype=torch.bool)
        for pos in order.tolist():
            w = (logits + position_bias[pos]).clamp_min(-LOGIT_FLOOR).exp()  # (B, N), <= 1 after the shift
            value = (num[:, None] + w * q) / (den[:, None] + w)
            item = value.masked_fill(taken, -math.inf).argmax(-1)
            slate[:, pos] = item
            taken[torch.arange(b), item] = True
            w_item = w.gather(1, item[:, None])[:, 0]
            num = num + w_item * q.gather(1, item[:, None])[:, 0]
            den = den + w_item
    else:
        raise ValueError(f"unknown slate optimizer {method!r}; allowed: {', '.join(OPTIMIZERS)}")
    value = slate_values(q, q_null, logits, null_logit, position_bias, slate[:, None, :])[:, 0]
    return slate, value
