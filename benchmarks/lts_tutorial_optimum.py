"""What the best policies can return on the tutorial's Long-Term Satisfaction env (the SlateQ ceiling).

Value iteration on the *true* model (recsim.md §2 with the tutorial's constants: sensitivity
0.058, choc/kale std 0.1, 20 candidates, satisfaction observed): state NPE on a grid, action the
clickbait score c of the consumed (first-slot) document, reward E[engagement] = exp((4+c)·SAT + σ²/2),
NPE' = 0.7·NPE − 2(c − 0.5) + N(0, 0.05²). For each discount γ the γ-optimal stationary policy is
then simulated on the real episode (120 steps, 20 fresh candidates per step, random initial NPE)
and its undiscounted return printed, next to the myopic policy (γ = 0: highest clickbait) and
random. This is why the tutorial preset trains SlateQ with γ = 0.95 (0.9 leaves ~15 on the table).

    python benchmarks/lts_tutorial_optimum.py
    python benchmarks/lts_tutorial_optimum.py --setting lts_50_2   # RecSim's own constants, 50 candidates

``--setting lts_50_2`` solves Long-Term Satisfaction 50-2 the same way (RecSim's constants: sensitivity
0.01, engagement std 1, 50 candidates, 60 steps). Its policies read the true NPE, which that env keeps
latent, so they bound what any policy of the observations can return.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import numpy as np


class Setting(NamedTuple):
    """The constants that differ between the two envs (memory discount 0.7, NPE noise 0.05 and the
    engagement means 4 + c are shared)."""

    label: str
    sensitivity: float
    std: float  # the log-engagement's standard deviation (the same for choc and kale here)
    candidates: int
    steps: int


SETTINGS = {
    "tutorial": Setting("Tutorial LTS 20-2 (satisfaction observed)", 0.058, 0.1, 20, 120),
    "lts_50_2": Setting("Long-Term Satisfaction 50-2 (RecSim's constants; NPE latent in the env)", 0.01, 1.0, 50, 60),
}
MEMORY = 0.7
NPE_GRID = np.linspace(-8.0, 8.0, 641)
CLICKBAIT = np.linspace(0.0, 1.0, 41)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def q_table(setting: Setting, gamma: float, iterations: int = 400) -> np.ndarray:
    """Q(NPE, c) of the γ-optimal policy on the grid, shape (len(NPE_GRID), len(CLICKBAIT))."""
    noise = np.random.default_rng(1).normal(0.0, 0.05, 8)
    reward = np.exp((4.0 + CLICKBAIT[None]) * sigmoid(setting.sensitivity * NPE_GRID)[:, None] + setting.std ** 2 / 2)
    nxt = MEMORY * NPE_GRID[:, None, None] - 2.0 * (CLICKBAIT[None, :, None] - 0.5) + noise
    value = np.zeros_like(NPE_GRID)
    for _ in range(iterations):
        q = reward + gamma * np.interp(nxt, NPE_GRID, value).mean(-1)
        value = q.max(1)
    return q


def episode_return(setting: Setting, q: np.ndarray | None, users: int = 20000, seed: int = 0) -> float:
    """Mean undiscounted return of the greedy policy of ``q`` (None: random slates) on the real episode."""
    rng = np.random.default_rng(seed)
    npe = (rng.random(users) - 0.5) / (1.0 - MEMORY)
    total = 0.0
    for _ in range(setting.steps):
        candidates = rng.random((users, setting.candidates))
        if q is None:
            pick = candidates[:, 0]
        else:
            index = np.clip(np.round(candidates * (len(CLICKBAIT) - 1)).astype(int), 0, len(CLICKBAIT) - 1)
            q_rows = np.stack([np.interp(npe, NPE_GRID, q[:, j]) for j in range(len(CLICKBAIT))], 1)
            best = np.take_along_axis(q_rows, index, 1).argmax(1)
            pick = np.take_along_axis(candidates, best[:, None], 1)[:, 0]
        total += np.exp(rng.normal((4.0 + pick) * sigmoid(setting.sensitivity * npe), setting.std)).mean()
        npe = MEMORY * npe - 2.0 * (pick - 0.5) + rng.normal(0.0, 0.05, users)
    return float(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="tutorial")
    args = parser.parse_args()
    setting = SETTINGS[args.setting]
    print(f"{setting.label}\n\n| policy | return per episode (20,000 simulated users) |\n|---|---:|")
    print(f"| random | {episode_return(setting, None):.1f} |")
    for gamma in (0.0, 0.9, 0.95, 0.98, 0.99):
        label = "myopic (gamma = 0: highest clickbait)" if gamma == 0.0 else f"gamma-optimal, gamma = {gamma}"
        print(f"| {label} | {episode_return(setting, q_table(setting, gamma)):.1f} |")
    flag = "" if args.setting == "tutorial" else f" --setting {args.setting}"
    print(f"\nMeasured with `python benchmarks/lts_tutorial_optimum.py{flag}`.")


if __name__ == "__main__":
    main()
