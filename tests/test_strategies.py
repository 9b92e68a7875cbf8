import numpy as np
import pytest

from ml_backend.strategies import STRATEGIES, Pool, StrategyParams, class_rarity, get_strategy


def make_pool(n: int = 60, seed: int = 0, labeled: bool = True) -> Pool:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 16)).astype(np.float32)
    return Pool(
        uncertainty=rng.random(n),
        embeddings=X,
        labeled_embeddings=rng.standard_normal((5, 16)).astype(np.float32) if labeled else None,
        class_counts=rng.integers(0, 3, size=(n, 4)),
        labeled_class_counts=np.array([50, 20, 5, 0]),
    )


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("labeled", [True, False])
def test_strategy_contract(name: str, labeled: bool) -> None:
    """Every registered strategy: one finite priority in [0, 1] per item, deterministic for a seed."""
    pool = make_pool(labeled=labeled)
    params = StrategyParams(batch_size=10, seed=3, class_balance_weight=0.5)
    prio = get_strategy(name)(pool, params)
    assert prio.shape == (len(pool),)
    assert np.isfinite(prio).all() and (prio >= 0).all() and (prio <= 1).all()
    assert np.array_equal(prio, get_strategy(name)(pool, params))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_handles_a_single_item(name: str) -> None:
    pool = Pool(uncertainty=np.array([0.3]), embeddings=np.ones((1, 4), dtype=np.float32))
    assert get_strategy(name)(pool, StrategyParams()).shape == (1,)


def test_random_differs_by_seed() -> None:
    pool = make_pool()
    assert not np.array_equal(STRATEGIES["random"](pool, StrategyParams(seed=1)), STRATEGIES["random"](pool, StrategyParams(seed=2)))


def test_uncertainty_ranks_by_uncertainty() -> None:
    pool = Pool(uncertainty=np.array([0.2, 0.8, 0.5]))
    assert np.argsort(-STRATEGIES["uncertainty"](pool, StrategyParams())).tolist() == [1, 2, 0]


def test_class_balance_favours_predicted_rare_classes() -> None:
    pool = Pool(uncertainty=np.array([0.5, 0.5]), class_counts=np.array([[2, 0], [0, 1]]), labeled_class_counts=np.array([100, 0]))
    assert class_rarity(pool.class_counts, pool.labeled_class_counts, 2) == pytest.approx([2 / 101, 1.0])
    prio = STRATEGIES["uncertainty"](pool, StrategyParams(class_balance_weight=1.0))
    assert prio[1] > prio[0]


def test_hybrid_spreads_the_top_of_the_queue_over_clusters() -> None:
    """Twenty near-identical, very uncertain frames must not fill the top of the queue."""
    rng = np.random.default_rng(0)
    dup = np.ones((20, 8)) + 0.001 * rng.standard_normal((20, 8))
    others = np.eye(8)[1:] * 5 + 0.01 * rng.standard_normal((7, 8))
    X = np.vstack([dup, others]).astype(np.float32)
    u = np.r_[np.full(20, 0.95), np.full(7, 0.6)]
    pool = Pool(uncertainty=u, embeddings=X)
    top8_unc = np.argsort(-STRATEGIES["uncertainty"](pool, StrategyParams()))[:8]
    top8_hyb = np.argsort(-STRATEGIES["hybrid"](pool, StrategyParams(batch_size=8)))[:8]
    assert (top8_unc < 20).all()  # uncertainty alone: all duplicates
    assert (top8_hyb < 20).sum() == 1  # hybrid: one duplicate, then the other clusters


def test_hybrid_prefers_uncertain_among_equally_new_items() -> None:
    X = np.eye(4, dtype=np.float32)
    pool = Pool(uncertainty=np.array([0.1, 0.9, 0.2, 0.3]), embeddings=X)
    assert int(np.argmax(STRATEGIES["hybrid"](pool, StrategyParams(batch_size=1)))) == 1


def test_diversity_needs_embeddings() -> None:
    with pytest.raises(ValueError, match="needs embeddings"):
        STRATEGIES["diversity"](Pool(uncertainty=np.zeros(3)), StrategyParams())


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="random, uncertainty, diversity, hybrid"):
        get_strategy("smart")


@pytest.mark.parametrize("bad", [{"uncertainty_weight": -1}, {"batch_size": 0}])
def test_bad_params(bad) -> None:
    with pytest.raises(ValueError):
        StrategyParams(**bad)
