"""Online model selection: a multi-armed bandit over served checkpoints (``serve.candidates``).

Each request is answered by the model the selector picks; ``POST <prefix>/feedback`` with the
request's id and its observed reward updates that model's statistics. Rewards have an unknown
scale, so the exploration terms use σ̂, the pooled within-model standard deviation of the rewards:

* ``ucb`` — UCB1 (Auer et al. 2002): argmax mean_a + alpha·σ̂·sqrt(2 ln t / n_a);
* ``thompson`` — Gaussian Thompson sampling: draw mean_a + σ̂/sqrt(n_a)·z, take the argmax;
* ``epsilon_greedy`` — a uniform model with probability ε, else the best mean.

Models without feedback yet are tried first. The state (counts, sums, sums of squares) is a small
JSON document, saved atomically so the selection survives a restart of the app.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SELECTORS = ("ucb", "thompson", "epsilon_greedy")


class ModelSelector:
    """Bandit state over ``names``; ``choose()`` an arm, ``update(arm, reward)`` with its feedback."""

    def __init__(self, names: list[str], kind: str = "ucb", alpha: float = 1.0, epsilon: float = 0.1,
                 seed: int = 0):
        if kind not in SELECTORS:
            raise ValueError(f"serve.selector={kind!r}: allowed {', '.join(SELECTORS)}")
        self.names, self.kind, self.alpha, self.epsilon = list(names), kind, alpha, epsilon
        self.counts = np.zeros(len(names))
        self.sums = np.zeros(len(names))
        self.squares = np.zeros(len(names))
        self.served = np.zeros(len(names), dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def _std(self) -> float:
        """Pooled within-model standard deviation of the rewards (1 until there are two per model)."""
        rated = self.counts > 0
        n = self.counts[rated]
        if n.sum() - rated.sum() < 1:
            return 1.0
        within = (self.squares[rated] - self.sums[rated] ** 2 / n).sum() / (n.sum() - rated.sum())
        return max(math.sqrt(max(within, 0.0)), 1e-6)

    def choose(self) -> int:
        """Index of the model that answers the next request."""
        untried = np.flatnonzero(self.counts == 0)
        if len(untried):
            arm = int(untried[np.argmin(self.served[untried])])  # spread first requests over them
        else:
            means = self.sums / self.counts
            if self.kind == "ucb":
                bonus = self.alpha * self._std() * np.sqrt(2.0 * math.log(self.counts.sum()) / self.counts)
                arm = int(np.argmax(means + bonus))
            elif self.kind == "thompson":
                arm = int(np.argmax(means + self._std() / np.sqrt(self.counts) * self.rng.standard_normal(len(means))))
            else:
                explore = self.rng.random() < self.epsilon
                arm = int(self.rng.integers(len(means))) if explore else int(np.argmax(means))
        self.served[arm] += 1
        return arm

    def update(self, arm: int, reward: float) -> None:
        """Add one observed reward of model ``arm``."""
        self.counts[arm] += 1
        self.sums[arm] += reward
        self.squares[arm] += reward * reward

    def state(self) -> dict[str, Any]:
        """JSON-able state (also what /info shows)."""
        return {"selector": self.kind, "alpha": self.alpha, "epsilon": self.epsilon,
                "models": {name: {"feedback": int(self.counts[i]), "served": int(self.served[i]),
                                  "reward_sum": float(self.sums[i]), "reward_sq_sum": float(self.squares[i]),
                                  "mean_reward": float(self.sums[i] / self.counts[i]) if self.counts[i] else None}
                           for i, name in enumerate(self.names)}}

    def load(self, path: Path) -> bool:
        """Restore counts from a saved state of the same models; False if there is none to load."""
        path = Path(path)
        if not path.exists():
            return False
        saved = json.loads(path.read_text())["models"]
        if set(saved) != set(self.names):
            raise ValueError(f"{path}: saved selector state is for models {sorted(saved)}, "
                             f"not {sorted(self.names)}; delete it to start fresh")
        for i, name in enumerate(self.names):
            m = saved[name]
            self.counts[i], self.served[i] = m["feedback"], m["served"]
            self.sums[i], self.squares[i] = m["reward_sum"], m["reward_sq_sum"]
        return True
