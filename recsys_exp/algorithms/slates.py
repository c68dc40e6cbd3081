"""Slates as tensors, and the few formulas every slate policy shares (torch only, no RLlib).

A slate is an ordered tuple of K distinct candidate indices out of N, shape (B, K) long. There
are N!/(N-K)! of them (:func:`num_ordered_slates`); :func:`all_ordered_slates` enumerates them
(the one enumeration of the package: SlateQ's exact optimiser, CQL's log-sum-exp, the support
of an exploring policy). When an env flattens slates into one ``Discrete(N**K)`` action, the
index is little-endian, ``Σ_k slate[k]·N^k`` (:func:`encode_flat_slate`).

ε-mixing (:func:`epsilon_mixture`): a policy that shows a uniformly random slate with probability
ε and its own choice otherwise gives a slate A the probability

    P(A) = ε·u + (1-ε)·P_policy(A)

with u = (N-K)!/N! for uniform ordered slates (1/N**K for uniform flat actions), and per slot
P(slot k shows i) = ε/N + (1-ε)·P_policy(slot k shows i) (a uniform slate of either kind shows any
item in slot k with probability 1/N).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

MAX_SUPPORT = 5040  # most slates a policy's distribution is enumerated over (7!, e.g. N=7, K=7 or N=10, K=4)


class NotEnumerable(ValueError):
    """A policy's slate distribution cannot be listed: it has no closed form (e.g. Thompson
    sampling) or spreads over more than :data:`MAX_SUPPORT` slates."""


def num_ordered_slates(num_candidates: int, slate_size: int) -> int:
    """N! / (N-K)!: the number of ordered slates of K distinct candidates."""
    return math.perm(num_candidates, slate_size)


@functools.lru_cache(maxsize=16)
def _permutations(num_candidates: int, slate_size: int) -> torch.Tensor:
    return torch.tensor(list(itertools.permutations(range(num_candidates), slate_size)),
                        dtype=torch.long).reshape(-1, slate_size)


def all_ordered_slates(num_candidates: int, slate_size: int, limit: int | None = None) -> torch.Tensor:
    """Every ordered slate of K distinct candidates, in ``itertools.permutations`` order:
    (N!/(N-K)!, K) long (cached per (N, K); do not modify it in place).

    ``limit``: raise :class:`NotEnumerable` when there are more slates than that.
    """
    count = num_ordered_slates(num_candidates, slate_size)
    if limit is not None and count > limit:
        raise NotEnumerable(f"N={num_candidates}, K={slate_size} has {count} ordered slates (limit {limit})")
    return _permutations(num_candidates, slate_size)


def top_k_slate(scores: torch.Tensor, slate_size: int) -> torch.Tensor:
    """The K highest-scoring candidates, best first: (B, N) -> (B, K) long."""
    return scores.topk(slate_size, dim=-1).indices


def random_slate(batch_size: int, num_candidates: int, slate_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random ordered slates of K distinct candidates: (B, K) long."""
    return top_k_slate(torch.rand(batch_size, num_candidates, generator=generator), slate_size)


def encode_flat_slate(slate: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """(B, K) slates -> (B,) indices of Discrete(N**K), little-endian (slot 0 is the lowest digit)."""
    weights = num_candidates ** torch.arange(slate.shape[-1], device=slate.device)
    return (slate * weights).sum(-1)


def decode_flat_slate(action: torch.Tensor, num_candidates: int, slate_size: int) -> torch.Tensor:
    """Inverse of :func:`encode_flat_slate`: (B,) -> (B, K)."""
    weights = num_candidates ** torch.arange(slate_size, device=action.device)
    return (action[..., None] // weights) % num_candidates


def epsilon_mixture(p_policy: torch.Tensor, epsilon: float, p_uniform: float) -> torch.Tensor:
    """ε·p_uniform + (1-ε)·p_policy: the probability of the ε-mixed policy (module docstring),
    for whole slates (p_uniform = 1/#slates) or single slots (p_uniform = 1/N); any shape."""
    return epsilon * p_uniform + (1.0 - epsilon) * p_policy


def slot_matrix(support: torch.Tensor, probs: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """Per-slot marginals of a slate distribution: support (B, M, K), probs (B, M) ->
    (B, K, N) with entry [b, k, i] = Σ_m probs[b, m]·[support[b, m, k] = i]."""
    b, m, k = support.shape
    out = torch.zeros(b, k, num_candidates, dtype=probs.dtype)
    return out.scatter_add_(2, support.permute(0, 2, 1), probs[:, None, :].expand(b, k, m).contiguous())


def epsilon_mixed_support(support: torch.Tensor, probs: torch.Tensor, epsilon: float,
                          universe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The support of the ε-mixture of (support (B, M, K), probs (B, M)) with the uniform
    distribution over ``universe`` (U, K): ((B, M + U, K), (B, M + U)). A slate may be listed
    twice (once from each part); its probability is the sum of its entries."""
    b = support.shape[0]
    u = universe.shape[0]
    slates = torch.cat([support, universe[None].expand(b, u, universe.shape[1])], dim=1)
    weights = torch.cat([(1.0 - epsilon) * probs.double(), torch.full((b, u), epsilon / u, dtype=torch.float64)], 1)
    return slates, weights
