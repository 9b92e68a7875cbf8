"""Confidence intervals for the study's figures: a paired bootstrap over seeds.

Every strategy of a seed shares that seed's round 0 and test split, so a seed is one paired
observation of "strategy against random". The bootstrap draws seeds with replacement (the same
draw for both sides of a comparison), recomputes the figure from the resampled seeds, and takes
the 2.5th and 97.5th percentiles of the results (the percentile interval; each percentile is an
actual resampled value, so "not reached" resamples, scored ``-inf``, stay meaningful).

Example:
    >>> import numpy as np
    >>> diffs = np.array([0.05, 0.07, 0.04, 0.06, 0.05])
    >>> ci = bootstrap(lambda idx: float(diffs[idx].mean()), len(diffs), seed=0)
    >>> ci.excludes_zero, round(ci.estimate, 3)
    (True, 0.054)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """An estimate and its bootstrap interval.

    Attributes:
        estimate: the figure on all seeds.
        low, high: the interval's ends (``-inf`` when over 2.5% of the resamples never got there).
        level: the interval's coverage, e.g. 0.95.
        resamples: how many bootstrap draws.
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    resamples: int = 0

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def words(self) -> str:
        """Whether the interval says anything, in words."""
        if self.low > 0:
            return "above zero"
        if self.high < 0:
            return "below zero"
        return "includes zero"

    def to_json(self) -> dict[str, float | bool | None]:
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return {
            "estimate": num(self.estimate),
            "low": num(self.low),
            "high": num(self.high),
            "level": self.level,
            "excludes_zero": self.excludes_zero,
        }


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap of ``statistic`` over ``n`` paired units (seeds).

    Args:
        statistic: the figure computed from the indices of the units drawn (a unit may repeat);
            ``-inf`` for "never reached", NaN for "cannot be computed" (left out).
        n: how many units.
        resamples: how many draws.
        seed: the draw's seed (the same seed, the same interval).
        level: the coverage.

    Raises:
        ValueError: no units.
    """
    if n < 1:
        raise ValueError("the bootstrap needs at least one seed")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(n)))
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return Interval(estimate, float("nan"), float("nan"), level, 0)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], method="inverted_cdf")
    return Interval(estimate, float(low), float(high), level, int(len(values)))


def reach(cost: np.ndarray, score: np.ndarray, target: float) -> float:
    """The cost at which a learning curve first reaches ``target`` (linear between rounds); ``inf`` if never.

    Example:
        >>> reach(np.array([10.0, 20.0, 30.0]), np.array([0.1, 0.3, 0.5]), 0.4)
        25.0
    """
    for k in range(len(cost)):
        if score[k] >= target:
            if k == 0:
                return float(cost[0])
            x0, x1, y0, y1 = cost[k - 1], cost[k], score[k - 1], score[k]
            return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0)) if y1 > y0 else float(x1)
    return float("inf")


def saving(ref_cost: np.ndarray, ref_score: np.ndarray, cost: np.ndarray, score: np.ndarray) -> float:
    """``1 - (cost to reach the reference's final score) / (the reference's own cost to reach it)``.

    The reference's own first crossing (not its last round) is the denominator, so a noisy
    reference curve that got there early is not counted as a saving of anything else. ``-inf``
    when the curve never reaches the reference's final score.

    Example:
        >>> ref = (np.array([10.0, 20.0]), np.array([0.2, 0.4]))
        >>> saving(*ref, np.array([10.0, 20.0]), np.array([0.4, 0.5]))
        0.5
    """
    target = float(ref_score[-1])
    own = reach(ref_cost, ref_score, target)
    mine = reach(cost, score, target)
    return 1.0 - mine / own if np.isfinite(mine) and own > 0 else float("-inf")
