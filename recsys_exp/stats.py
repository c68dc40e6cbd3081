"""Small statistics shared by every room (a leaf: numpy and scipy only)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float, float, list[float]]:
    """``(mean, std, half, [mean - half, mean + half])`` of ``values``: the sample standard deviation
    (ddof = 1) and the Student-t 95% interval of the mean, half = t_{0.975, n-1} · std / √n.

    With one value the std and the half-width are 0 (no interval can be estimated).
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
    return mean, std, half, [mean - half, mean + half]
