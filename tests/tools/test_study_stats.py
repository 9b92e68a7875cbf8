"""The study's statistics: the bootstrap on curve pairs with a known difference, reach and saving."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.tools.study.stats import bootstrap, reach, saving


@pytest.mark.parametrize(
    ("values", "target", "expected"),
    [
        ([0.1, 0.3, 0.5], 0.4, 25.0),
        ([0.1, 0.3, 0.5], 0.1, 10.0),
        ([0.1, 0.3, 0.5], 0.6, float("inf")),
        ([0.2, 0.2, 0.4], 0.2, 10.0),
        ([0.0, 0.5, 0.4], 0.45, 19.0),
    ],
)
def test_reach(values: list[float], target: float, expected: float) -> None:
    assert reach(np.array([10.0, 20.0, 30.0]), np.array(values), target) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("ref", "other", "expected"),
    [
        ((10, 20, 30), (10, 20, 30), 0.0),  # the same curve: nothing saved
        ((10, 20, 30), (5, 10, 15), 0.5),  # the same scores at half the cost
        ((10, 20, 30), (20, 40, 60), -1.0),  # twice the cost
    ],
)
def test_saving_on_the_cost_axis(ref, other, expected: float) -> None:
    score = np.array([0.2, 0.3, 0.4])
    assert saving(np.array(ref, float), score, np.array(other, float), score) == pytest.approx(expected)


def test_a_curve_that_never_gets_there_saves_minus_infinity() -> None:
    assert saving(np.array([10.0, 20.0]), np.array([0.2, 0.5]), np.array([10.0, 20.0]), np.array([0.2, 0.4])) == float("-inf")


def _curves(rng: np.random.Generator, seeds: int, cost_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, a learning curve 0.1 + 0.1 * round with seed noise, at a cost of ``cost_factor`` per unit."""
    rounds = np.arange(5)
    noise = rng.normal(0, 0.01, size=(seeds, 1))
    score = 0.1 + 0.1 * rounds[None, :] + noise
    cost = np.tile(20.0 * (rounds + 1) * cost_factor, (seeds, 1))
    return cost, score


def _interval(factor: float, offset: float, noise: float):  # noqa: ANN202
    rng = np.random.default_rng(3)
    ref_cost, ref_score = _curves(rng, 5, 1.0)
    other_cost, _ = _curves(rng, 5, factor)
    other_score = ref_score + offset + rng.normal(0, noise, size=ref_score.shape)  # the same model quality, noise of its own

    def stat(idx: np.ndarray) -> float:
        return saving(ref_cost[idx].mean(0), ref_score[idx].mean(0), other_cost[idx].mean(0), other_score[idx].mean(0))

    return bootstrap(stat, 5, resamples=2000, seed=1)


def test_the_bootstrap_finds_a_known_saving() -> None:
    """Curves of the same quality, one at 70% of the other's cost per label: a 30% saving, interval above zero."""
    ci = _interval(0.7, 0.001, 0.0)
    assert ci.estimate == pytest.approx(0.3, abs=0.01)
    assert ci.low - 0.01 <= 0.3 <= ci.high + 0.01 and ci.excludes_zero and ci.words() == "above zero"


def test_the_bootstrap_finds_no_saving_where_there_is_none() -> None:
    """The same cost and quality up to noise: the interval includes zero."""
    ci = _interval(1.0, 0.0, 0.01)
    assert not ci.excludes_zero and ci.words() == "includes zero"
    assert ci.low <= 0.0 <= ci.high


def test_a_known_mean_difference_and_its_interval() -> None:
    diffs = np.array([0.05, 0.07, 0.04, 0.06, 0.05])
    ci = bootstrap(lambda idx: float(diffs[idx].mean()), 5, resamples=5000)
    assert ci.estimate == pytest.approx(0.054)
    assert diffs.min() <= ci.low < 0.054 < ci.high <= diffs.max()
    assert ci.words() == "above zero"
    noisy = np.array([0.05, -0.07, 0.04, -0.06, 0.01])
    assert bootstrap(lambda idx: float(noisy[idx].mean()), 5).words() == "includes zero"


def test_the_bootstrap_is_repeatable_and_reports_never_reached() -> None:
    values = np.array([1.0, -np.inf, 2.0])
    a = bootstrap(lambda idx: float(values[idx].mean()), 3, resamples=500, seed=7)
    assert a == bootstrap(lambda idx: float(values[idx].mean()), 3, resamples=500, seed=7)
    assert a.low == float("-inf") and a.to_json()["low"] is None
