import numpy as np
import pytest

from ml_backend.al.diversity import ObjectSet
from ml_backend.al.strategies import REGISTRY, Pool, StrategyParams, capped_rank, class_rarity, get_strategy, resolve


def random_objects(rng: np.random.Generator, n: int, classes: int = 4, dims: int = 8) -> ObjectSet:
    """Items with 0 to 3 objects each, of random classes and features."""
    return ObjectSet.from_items(
        [
            (rng.standard_normal((k, dims)).astype(np.float32), rng.integers(0, classes, k), rng.random(k))
            for k in rng.integers(0, 4, size=n)
        ]
    )


def make_pool(n: int = 60, seed: int = 0, labeled: bool = True) -> Pool:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 16)).astype(np.float32)
    return Pool(
        uncertainty=rng.random(n),
        embeddings=X,
        labeled_embeddings=rng.standard_normal((5, 16)).astype(np.float32) if labeled else None,
        class_counts=rng.integers(0, 3, size=(n, 4)),
        labeled_class_counts=np.array([50, 20, 5, 0]),
        ids=np.arange(100, 100 + n),
        objects=random_objects(rng, n),
        labeled_objects=random_objects(rng, 5) if labeled else None,
        expected_cost=rng.uniform(2, 60, size=n),
        n_labeled=5 if labeled else 0,
    )


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("labeled", [True, False])
@pytest.mark.parametrize("which", ["rank", "stream"])
def test_strategy_contract(name: str, labeled: bool, which: str) -> None:
    """Every registered strategy, for the whole pool and for new tasks: one finite priority in [0, 1]
    per item, deterministic for a seed; its record names it and says what it needs."""
    spec = get_strategy(name)
    assert spec.name == name and spec.summary
    assert spec.needs <= set(Pool.__dataclass_fields__) - {"uncertainty"}
    chain = [spec]
    while chain[-1].needs:  # its fallbacks end in one that always runs
        assert chain[-1].fallback is not None and len(chain) < 5
        chain.append(get_strategy(chain[-1].fallback))
    pool = make_pool(labeled=labeled)
    params = StrategyParams(batch_size=10, seed=3, class_balance_weight=0.5, cost_weight=0.5, cold_start_labels=3)
    fn = getattr(spec, which)
    prio = fn(pool, params)
    assert prio.shape == (len(pool),)
    assert np.isfinite(prio).all() and (prio >= 0).all() and (prio <= 1).all()
    assert np.array_equal(prio, fn(pool, params))


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("which", ["rank", "stream"])
def test_strategy_handles_a_single_item(name: str, which: str) -> None:
    one = ObjectSet.from_items([(np.ones((1, 4), dtype=np.float32), np.array([0]), np.array([0.9]))])
    pool = Pool(uncertainty=np.array([0.3]), embeddings=np.ones((1, 4), dtype=np.float32), objects=one)
    assert getattr(get_strategy(name), which)(pool, StrategyParams()).shape == (1,)


@pytest.mark.parametrize(
    ("name", "embeddings", "expected"),
    [("hybrid", True, "hybrid"), ("hybrid", False, "uncertainty"), ("diversity", False, "uncertainty"), ("random", False, "random")],
)
def test_a_strategy_without_what_it_needs_falls_back(name: str, embeddings: bool, expected: str) -> None:
    pool = Pool(uncertainty=np.zeros(3), embeddings=np.eye(3, dtype=np.float32) if embeddings else None)
    assert resolve(name, pool).name == expected


def test_new_tasks_get_a_random_draw_of_their_own_task_id() -> None:
    """A task keeps its random priority whatever else arrives with it."""
    spec, params = get_strategy("random"), StrategyParams(seed=4)
    alone = spec.stream(Pool(uncertainty=np.zeros(1), ids=np.array([7])), params)
    together = spec.stream(Pool(uncertainty=np.zeros(3), ids=np.array([5, 7, 9])), params)
    assert together[1] == alone[0]


@pytest.mark.parametrize(
    ("uncertainty", "labeled", "weight", "expected"),
    [
        # nothing labeled: distance term 1, so 0.5 * (eps + u)^a
        (0.64, None, 1.0, 0.5 * (1e-6 + 0.64)),
        (0.64, None, 0.0, 0.5),  # diversity_weight only: the uncertainty exponent is 0 for "diversity"
        # the same point labeled: distance 0, bottom of the lower half
        (0.64, [[1.0, 0.0]], 1.0, 0.0),
    ],
)
def test_hybrid_places_new_tasks_in_the_lower_half_by_its_own_objective(uncertainty, labeled, weight, expected) -> None:
    pool = Pool(
        uncertainty=np.array([uncertainty]),
        embeddings=np.array([[1.0, 0.0]], dtype=np.float32),
        labeled_embeddings=None if labeled is None else np.array(labeled, dtype=np.float32),
    )
    spec = get_strategy("hybrid" if weight else "diversity")
    assert spec.stream(pool, StrategyParams(uncertainty_weight=1.0)) == pytest.approx([expected], abs=1e-6)


def test_random_differs_by_seed() -> None:
    pool = make_pool()
    assert not np.array_equal(
        get_strategy("random").rank(pool, StrategyParams(seed=1)), get_strategy("random").rank(pool, StrategyParams(seed=2))
    )


def test_uncertainty_ranks_by_uncertainty() -> None:
    pool = Pool(uncertainty=np.array([0.2, 0.8, 0.5]))
    assert np.argsort(-get_strategy("uncertainty").rank(pool, StrategyParams())).tolist() == [1, 2, 0]


def test_class_balance_favours_predicted_rare_classes() -> None:
    pool = Pool(uncertainty=np.array([0.5, 0.5]), class_counts=np.array([[2, 0], [0, 1]]), labeled_class_counts=np.array([100, 0]))
    assert class_rarity(pool.class_counts, pool.labeled_class_counts, 2) == pytest.approx([2 / 101, 1.0])
    prio = get_strategy("uncertainty").rank(pool, StrategyParams(class_balance_weight=1.0))
    assert prio[1] > prio[0]


def test_hybrid_spreads_the_top_of_the_queue_over_clusters() -> None:
    """Twenty near-identical, very uncertain frames must not fill the top of the queue."""
    rng = np.random.default_rng(0)
    dup = np.ones((20, 8)) + 0.001 * rng.standard_normal((20, 8))
    others = np.eye(8)[1:] * 5 + 0.01 * rng.standard_normal((7, 8))
    X = np.vstack([dup, others]).astype(np.float32)
    u = np.r_[np.full(20, 0.95), np.full(7, 0.6)]
    pool = Pool(uncertainty=u, embeddings=X)
    top8_unc = np.argsort(-get_strategy("uncertainty").rank(pool, StrategyParams()))[:8]
    top8_hyb = np.argsort(-get_strategy("hybrid").rank(pool, StrategyParams(batch_size=8)))[:8]
    assert (top8_unc < 20).all()  # uncertainty alone: all duplicates
    assert (top8_hyb < 20).sum() == 1  # hybrid: one duplicate, then the other clusters


def test_hybrid_prefers_uncertain_among_equally_new_items() -> None:
    X = np.eye(4, dtype=np.float32)
    pool = Pool(uncertainty=np.array([0.1, 0.9, 0.2, 0.3]), embeddings=X)
    assert int(np.argmax(get_strategy("hybrid").rank(pool, StrategyParams(batch_size=1)))) == 1


def test_diversity_needs_embeddings() -> None:
    with pytest.raises(ValueError, match="needs embeddings"):
        get_strategy("diversity").rank(Pool(uncertainty=np.zeros(3)), StrategyParams())


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="random, uncertainty, diversity, hybrid"):
        get_strategy("smart")


@pytest.mark.parametrize("bad", [{"uncertainty_weight": -1}, {"batch_size": 0}])
def test_bad_params(bad) -> None:
    with pytest.raises(ValueError):
        StrategyParams(**bad)


def test_objects_picks_uncertain_items_whose_objects_differ() -> None:
    """Four equally uncertain near-copies of one fish and a less uncertain starfish, batch 2: the
    prefiltered k-center takes one fish and the starfish; uncertainty alone takes two fish."""
    fish = [([[1.0, 0, 0]], [0], [0.9])] * 4
    star = [([[1.0, 0, 0]], [5], [0.9])]
    objs = ObjectSet.from_items([(np.array(e, dtype=np.float32), np.array(c), np.array(w)) for e, c, w in fish + star])
    pool = Pool(uncertainty=np.array([0.9, 0.9, 0.9, 0.9, 0.6]), embeddings=np.eye(5, dtype=np.float32), objects=objs)
    params = StrategyParams(batch_size=2, prefilter=3)
    top2 = np.argsort(-get_strategy("objects").rank(pool, params), kind="stable")[:2]
    assert sorted(top2.tolist()) == [0, 4]
    assert sorted(np.argsort(-get_strategy("uncertainty").rank(pool, params), kind="stable")[:2].tolist()) == [0, 1]


def test_objects_only_considers_the_prefiltered_pool() -> None:
    """An item outside the prefilter (the least uncertain) is never among the batch, however novel."""
    objs = ObjectSet.from_items([(np.eye(3, dtype=np.float32)[[i % 3]], np.array([i]), np.array([0.9])) for i in range(6)])
    pool = Pool(uncertainty=np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.01]), embeddings=np.eye(6, dtype=np.float32), objects=objs)
    prio = get_strategy("objects").rank(pool, StrategyParams(batch_size=2, prefilter=2))
    assert set(np.argsort(-prio)[:2].tolist()) <= {0, 1, 2, 3} and prio[5] <= 0.5


@pytest.mark.parametrize(("labeled", "expected"), [(0, "typical"), (39, "typical"), (40, "objects")])
def test_adaptive_switches_from_typical_to_objects_at_the_cold_start_threshold(labeled: int, expected: str, monkeypatch) -> None:
    """The documented rule: typical images while fewer than AL_COLD_START_LABELS tasks are labeled."""
    import ml_backend.al.strategies as st

    used = []
    for name in ("typical", "objects"):
        spec = st.REGISTRY[name]
        monkeypatch.setitem(st.REGISTRY, name, st.StrategySpec(name, lambda p, q, n=name: used.append(n) or np.zeros(len(p)), spec.stream))
    pool = make_pool(n=10)
    pool = Pool(**{**pool.__dict__, "n_labeled": labeled})
    get_strategy("adaptive").rank(pool, StrategyParams(cold_start_labels=40))
    assert used == [expected]


def test_cost_awareness_prefers_the_cheaper_of_two_equal_items() -> None:
    pool = Pool(uncertainty=np.array([0.5, 0.5]), expected_cost=np.array([40.0, 10.0]))
    off = get_strategy("uncertainty").rank(pool, StrategyParams())
    on = get_strategy("uncertainty").rank(pool, StrategyParams(cost_weight=1.0))
    assert off[0] == off[1] and on[1] > on[0]
    assert (on >= 0).all() and (on <= 1).all()


def crowded_pool(n: int = 80, seed: int = 3) -> Pool:
    """A pool whose uncertainty grows faster than its cost (crowded scenes)."""
    base = make_pool(n, seed)
    rng = np.random.default_rng(seed)
    cost = rng.uniform(3, 60, size=n)
    return Pool(**{**base.__dict__, "uncertainty": np.clip((cost / 60) ** 3 + rng.normal(0, 0.02, n), 0, 1), "expected_cost": cost})


def batch_cost(pool: Pool, prio: np.ndarray, k: int) -> float:
    return float(pool.expected_cost[np.argsort(-prio, kind="stable")[:k]].mean())


@pytest.mark.parametrize("name", ["uncertainty", "hybrid", "objects", "adaptive"])
def test_the_cost_cap_holds_a_cost_aware_batch_to_a_random_batchs_cost(name: str) -> None:
    pool, k = crowded_pool(), 10
    params = StrategyParams(batch_size=k, cost_weight=1.0, class_balance_weight=0.5)
    rank = get_strategy(name).rank
    assert batch_cost(pool, rank(pool, params), k) > pool.expected_cost.mean()  # value per second alone picks the costly ones
    capped = capped_rank(rank, pool, StrategyParams(**{**params.__dict__, "cost_cap": 1.0}))
    assert batch_cost(pool, capped, k) <= pool.expected_cost.mean()


@pytest.mark.parametrize(("cap", "expected_weight"), [(None, 0.0), (3.0, 0.0), (1.0, 1.0), (0.3, 1.0), (0.2, 1.0)])
def test_the_cap_raises_the_cost_weight_only_as_far_as_needed(cap, expected_weight) -> None:
    pool = Pool(np.array([0.9, 0.8, 0.3, 0.2]), expected_cost=np.array([40.0, 30.0, 5.0, 5.0]))
    rank = get_strategy("uncertainty").rank
    params = StrategyParams(batch_size=2, cost_weight=0.0, cost_cap=cap)
    expected = rank(pool, StrategyParams(batch_size=2, cost_weight=expected_weight))
    np.testing.assert_array_equal(capped_rank(rank, pool, params), expected)


@pytest.mark.parametrize("name", ["random", "diversity", "typical"])
def test_strategies_that_ignore_the_cost_are_not_changed_by_the_cap(name: str) -> None:
    pool, k = crowded_pool(), 10
    params = StrategyParams(batch_size=k, cost_weight=1.0)
    rank = get_strategy(name).rank
    np.testing.assert_array_equal(capped_rank(rank, pool, StrategyParams(**{**params.__dict__, "cost_cap": 0.5})), rank(pool, params))


def test_bad_cost_cap() -> None:
    with pytest.raises(ValueError, match="cost_cap"):
        StrategyParams(cost_cap=0)


def test_typical_picks_the_dense_middle_of_uncovered_clusters_first() -> None:
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal([5, 0], 0.05, (20, 2)), rng.normal([0, 5], 0.05, (20, 2)), [[3, 3]]]).astype(np.float32)
    prio = get_strategy("typical").rank(Pool(uncertainty=np.zeros(41), embeddings=X), StrategyParams(batch_size=2))
    assert prio[40] < 0.5  # the lone point between the clusters is not typical of anything
    top = np.argsort(-prio)[:2]
    assert {int(t) < 20 for t in top} == {True, False}
