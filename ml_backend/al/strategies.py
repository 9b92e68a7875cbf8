"""Query strategies: which unlabeled tasks to label first.

A strategy is a plain function ``(pool, params) -> priority``: numpy arrays in, one priority in
``[0, 1]`` per pool item out (higher = label sooner). Strategies know nothing of HTTP, models or
Label Studio. Each is registered in :data:`REGISTRY` (looked up by the ``AL_STRATEGY`` setting)
as a :class:`StrategySpec` record: the function that orders the whole unlabeled pool (``rank``,
a full scoring), the function that places tasks imported between two full scorings (``stream``:
from each task's own scores, without re-ordering the rest), and what inputs it needs. Every
strategy is deterministic for a given ``params.seed``.

Formulas (``u`` uncertainty, ``d`` distance to the nearest labeled or already chosen item,
``r`` class rarity, all per item; ``a, b, c`` the strengths ``uncertainty_weight``,
``diversity_weight``, ``class_balance_weight``):

* ``random``: a seeded uniform draw.
* ``uncertainty``: ``u * r^c``.
* ``diversity``: greedy k-center order on the embeddings (farthest from everything labeled or
  chosen first), then the rest by ``d``.
* ``hybrid``: uncertainty-weighted k-center: each step picks the item maximizing
  ``d^(2b) * (eps + u)^a * r^c``, so the top of the queue is uncertain *and* spread out, not
  twenty near-identical frames.

Class rarity ``r_i = sum_k n_ik w_k / max_j(...)`` with ``n_ik`` the number of objects of class
``k`` predicted in item ``i`` and ``w_k = 1 / (1 + labeled objects of class k)``: items predicted
to hold classes that are rare among the labels score higher.

Newly imported tasks (``stream``): ``uncertainty`` as above; ``random`` a seeded draw per task id;
``diversity`` and ``hybrid`` ``0.5 * D^(2b) * (eps + u)^a * r^c`` (``a = 0`` for diversity, ``D``
the distance to the nearest labeled item / 2): the same objective as the k-center step, placed in
the lower half of the queue, below the batch the last full scoring spread out; the next full
scoring places them exactly.

Example:
    >>> import numpy as np
    >>> pool = Pool(uncertainty=np.array([0.1, 0.9, 0.5]))
    >>> get_strategy("uncertainty").rank(pool, StrategyParams()).round(2).tolist()
    [0.1, 0.9, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ml_backend.al.diversity import (
    ObjectSet,
    diversity_scores,
    k_center_greedy,
    nearest_distance,
    object_k_center,
    similarity_to_set,
    typical_cover,
    typicality,
)

EPS = 1e-6


@dataclass(frozen=True)
class Pool:
    """What strategies may look at, for ``n`` unlabeled items.

    Attributes:
        uncertainty: (n,) in [0, 1].
        embeddings: (n, d) or None.
        labeled_embeddings: (m, d) of labeled items, or None.
        class_counts: (n, C) predicted objects per class per item, or None.
        labeled_class_counts: (C,) labeled objects per class, or None.
        ids: (n,) task ids, or None (seeds the per-task draw of ``random`` for new tasks).
        objects: the detected objects of the ``n`` items (object-level diversity), or None.
        labeled_objects: the labeled items' detected objects, or None.
        expected_cost: (n,) annotator seconds each item is expected to cost (cost awareness), or None.
        n_labeled: how many items are labeled (the cold-start rule).
    """

    uncertainty: np.ndarray
    embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    class_counts: np.ndarray | None = None
    labeled_class_counts: np.ndarray | None = None
    ids: np.ndarray | None = None
    objects: ObjectSet | None = None
    labeled_objects: ObjectSet | None = None
    expected_cost: np.ndarray | None = None
    n_labeled: int = 0

    def __len__(self) -> int:
        return len(self.uncertainty)


@dataclass(frozen=True)
class StrategyParams:
    """Strengths of each term, the k-center batch, and the seed.

    Attributes:
        cost_weight: ``lambda`` of cost awareness: value per ``expected_cost^lambda`` (0: off).
        cost_cap: the top ``batch_size`` items may cost on average at most this multiple of the
            pool's average ``expected_cost`` (what a random batch costs); :func:`capped_rank` raises
            ``cost_weight`` until they do. None: no cap.
        prefilter: ``objects`` runs k-center over the ``prefilter x batch_size`` most uncertain items.
        cold_start_labels: ``adaptive`` picks typical items while fewer items than this are labeled.
    """

    uncertainty_weight: float = 1.0
    diversity_weight: float = 1.0
    class_balance_weight: float = 0.0
    batch_size: int = 100
    seed: int = 0
    cost_weight: float = 0.0
    prefilter: float = 4.0
    cold_start_labels: int = 0
    cost_cap: float | None = None

    def __post_init__(self) -> None:
        for name in ("uncertainty_weight", "diversity_weight", "class_balance_weight", "cost_weight", "cold_start_labels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.prefilter < 1:
            raise ValueError(f"prefilter must be >= 1, got {self.prefilter}")
        if self.cost_cap is not None and self.cost_cap <= 0:
            raise ValueError(f"cost_cap must be > 0 or None, got {self.cost_cap}")


Strategy = Callable[[Pool, StrategyParams], np.ndarray]


def class_rarity(class_counts: np.ndarray | None, labeled_class_counts: np.ndarray | None, n: int) -> np.ndarray:
    """Per-item rarity in [0, 1] (all ones when class counts are unknown)."""
    if class_counts is None or len(class_counts) == 0:
        return np.ones(n)
    counts = np.asarray(class_counts, dtype=np.float64)
    labeled = np.zeros(counts.shape[1]) if labeled_class_counts is None else np.asarray(labeled_class_counts, dtype=np.float64)
    r = counts @ (1.0 / (1.0 + labeled))
    top = r.max()
    return r / top if top > 0 else np.ones(n)


def _rank_priority(order: np.ndarray, n: int, rest: np.ndarray) -> np.ndarray:
    """Priority from a selection order: chosen items in (0.5, 1] by rank, the rest in [0, 0.5] by ``rest``."""
    prio = np.zeros(n)
    k = len(order)
    if k:
        prio[order] = 1.0 - 0.5 * np.arange(k) / k
    others = np.setdiff1d(np.arange(n), order)
    if len(others):
        v = rest[others]
        span = v.max() - v.min()
        prio[others] = 0.5 * ((v - v.min()) / span if span > 0 else np.full(len(v), 0.5))
    return prio


def cost_factor(pool: Pool, params: StrategyParams) -> np.ndarray:
    """``(expected_cost / its median)^-lambda``: value per unit of annotator effort (ones when off).

    Example:
        >>> cost_factor(Pool(np.zeros(2), expected_cost=np.array([10.0, 40.0])), StrategyParams(cost_weight=1.0)).tolist()
        [2.5, 0.625]
    """
    if not params.cost_weight or pool.expected_cost is None or not len(pool):
        return np.ones(len(pool))
    c = np.maximum(np.asarray(pool.expected_cost, dtype=np.float64), 1e-3)
    return (c / np.median(c)) ** (-params.cost_weight)


def _value(pool: Pool, params: StrategyParams) -> np.ndarray:
    """Uncertainty x rarity^c x cost factor: what an item is worth labeling, before diversity."""
    r = class_rarity(pool.class_counts, pool.labeled_class_counts, len(pool))
    return np.clip(np.asarray(pool.uncertainty, dtype=np.float64), 0, 1) * r**params.class_balance_weight * cost_factor(pool, params)


# The cost weights capped_rank tries, in order, after the configured one.
CAP_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def capped_rank(rank: Strategy, pool: Pool, params: StrategyParams) -> np.ndarray:
    """``rank``'s priorities, with the cost weight raised until the top ``batch_size`` items cost on
    average at most ``cost_cap`` times the pool's average expected cost.

    Value per expected second (``cost_weight`` 1) can still prefer the costliest images when value
    grows faster than cost with the objects in an image (crowded scenes: more uncertain objects,
    more unlike the labeled ones). The cap holds the batch to what a random batch of the pool is
    expected to cost: the configured weight first, then each of :data:`CAP_WEIGHTS` above it; the
    first that meets the cap wins, else the one whose batch is cheapest. Strategies that ignore the
    cost (``random``, ``typical``) are run once.

    Args:
        rank: a registered strategy's ``rank``.
        pool: the unlabeled items, with ``expected_cost``.
        params: the strengths; ``cost_cap`` None (or no ``expected_cost``) runs ``rank`` as it is.

    Returns:
        (n,) priorities, as ``rank`` returns them.

    Example:
        >>> pool = Pool(np.array([0.9, 0.8, 0.3, 0.2]), expected_cost=np.array([40.0, 30.0, 5.0, 5.0]))
        >>> p = capped_rank(uncertainty_strategy, pool, StrategyParams(batch_size=2, cost_weight=0.0, cost_cap=1.0))
        >>> sorted(np.argsort(-p)[:2].tolist())  # the two most uncertain cost 35 s on average, the pool 20 s
        [2, 3]
    """
    first = rank(pool, params)
    if params.cost_cap is None or pool.expected_cost is None or len(pool) <= params.batch_size:
        return first
    cost = np.asarray(pool.expected_cost, dtype=np.float64)
    limit = params.cost_cap * cost.mean()

    def batch_cost(prio: np.ndarray) -> float:
        return float(cost[np.argsort(-prio, kind="stable")[: params.batch_size]].mean())

    best, best_cost = first, batch_cost(first)
    for weight in (w for w in CAP_WEIGHTS if w > params.cost_weight):
        if best_cost <= limit:
            break
        prio = rank(pool, replace(params, cost_weight=weight))
        if np.array_equal(prio, first):  # the strategy ignores the cost
            break
        c = batch_cost(prio)
        if c < best_cost:
            best, best_cost = prio, c
    return best


def random_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    return np.random.default_rng(params.seed).random(len(pool))


def uncertainty_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    v = _value(pool, params)
    return v / v.max() if params.cost_weight and v.max() > 1 else v


def _need_embeddings(pool: Pool, name: str) -> np.ndarray:
    if pool.embeddings is None:
        raise ValueError(f"the {name} strategy needs embeddings")
    return pool.embeddings


def diversity_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    X = _need_embeddings(pool, "diversity")
    r = class_rarity(pool.class_counts, pool.labeled_class_counts, len(pool))
    weights = r**params.class_balance_weight if params.class_balance_weight else None
    order = k_center_greedy(X, params.batch_size, pool.labeled_embeddings, weights=weights, seed=params.seed)
    d = nearest_distance(X, pool.labeled_embeddings)
    return _rank_priority(order, len(pool), np.where(np.isinf(d), 2.0, d))


def hybrid_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    X = _need_embeddings(pool, "hybrid")
    u = np.clip(np.asarray(pool.uncertainty, dtype=np.float64), 0, 1)
    r = class_rarity(pool.class_counts, pool.labeled_class_counts, len(pool))
    w = (EPS + u) ** params.uncertainty_weight * r**params.class_balance_weight * cost_factor(pool, params)
    if params.diversity_weight == 0:
        return w / w.max() if w.max() > 0 else w
    # k_center_greedy maximizes d^2 * weights; d^(2b) * w == (d^2 * w^(1/b))^b, the same argmax.
    order = k_center_greedy(X, params.batch_size, pool.labeled_embeddings, weights=w ** (1.0 / params.diversity_weight), seed=params.seed)
    d = nearest_distance(X, pool.labeled_embeddings)
    return _rank_priority(order, len(pool), np.where(np.isinf(d), 2.0, d) ** (2 * params.diversity_weight) * w)


def random_stream(pool: Pool, params: StrategyParams) -> np.ndarray:
    """A seeded draw per task id: a task gets the same priority whenever it is scored."""
    ids = pool.ids if pool.ids is not None else np.arange(len(pool))
    return np.array([np.random.default_rng([params.seed, int(t)]).random() for t in ids])


def _k_center_stream(pool: Pool, params: StrategyParams, uncertainty_weight: float) -> np.ndarray:
    if pool.objects is not None and pool.labeled_objects is not None:  # object-level novelty, when the pool has it
        D = 1.0 - similarity_to_set(pool.objects, pool.labeled_objects)
    else:
        D = diversity_scores(_need_embeddings(pool, "k-center"), pool.labeled_embeddings)
    u = np.clip(np.asarray(pool.uncertainty, dtype=np.float64), 0, 1)
    r = class_rarity(pool.class_counts, pool.labeled_class_counts, len(pool))
    value = np.clip(D, 0, 1) ** (2 * params.diversity_weight) * (EPS + u) ** uncertainty_weight * r**params.class_balance_weight
    return 0.5 * np.clip(value * cost_factor(pool, params), 0, 1)


def diversity_stream(pool: Pool, params: StrategyParams) -> np.ndarray:
    return _k_center_stream(pool, params, 0.0)


def hybrid_stream(pool: Pool, params: StrategyParams) -> np.ndarray:
    return _k_center_stream(pool, params, params.uncertainty_weight)


def objects_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    """Uncertainty-prefiltered, class-conditioned object-level k-center (after PPAL).

    The ``prefilter x batch_size`` items of highest value (uncertainty x rarity x cost factor) are
    the candidates; among them, greedy k-center picks items whose objects are unlike the labeled
    objects of the same class and unlike those already picked (``diversity_weight`` its strength),
    weighted by value. The rest follow by value.
    """
    if pool.objects is None:
        raise ValueError("the objects strategy needs object embeddings")
    v = _value(pool, params)
    n = len(pool)
    m = int(min(n, max(params.batch_size, round(params.prefilter * params.batch_size))))
    candidates = np.argsort(-v, kind="stable")[:m]
    w = (EPS + v[candidates]) ** params.uncertainty_weight
    if params.diversity_weight:
        w = w ** (1.0 / params.diversity_weight)
    picked = object_k_center(pool.objects.subset(candidates), params.batch_size, pool.labeled_objects, weights=w)
    return _rank_priority(candidates[picked], n, v)


def typical_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    """Cold start (TypiClust): the most typical item of each cluster no labeled item is in, largest
    clusters first; the rest by typicality."""
    X = _need_embeddings(pool, "typical")
    order = typical_cover(X, params.batch_size, pool.labeled_embeddings, seed=params.seed)
    return _rank_priority(order, len(pool), typicality(X))


def adaptive_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    """``typical`` while fewer than ``cold_start_labels`` items are labeled, then ``objects``
    (``hybrid`` when the pool has no object embeddings)."""
    return _adaptive(pool, params).rank(pool, params)


def adaptive_stream(pool: Pool, params: StrategyParams) -> np.ndarray:
    return _adaptive(pool, params).stream(pool, params)


def _adaptive(pool: Pool, params: StrategyParams) -> StrategySpec:
    if pool.n_labeled < params.cold_start_labels:
        return REGISTRY["typical"]
    return REGISTRY["objects"] if pool.objects is not None else REGISTRY["hybrid"]


@dataclass(frozen=True)
class StrategySpec:
    """One registered strategy.

    Attributes:
        name: the ``AL_STRATEGY`` value.
        rank: orders the whole unlabeled pool (a full scoring).
        stream: places tasks imported between full scorings, from their own scores.
        needs: the :class:`Pool` fields it cannot do without (besides ``uncertainty``).
        fallback: the strategy used when one of ``needs`` is missing (exported weights give no
            embeddings), or None.
        summary: one line for the docs.
    """

    name: str
    rank: Strategy
    stream: Strategy
    needs: frozenset[str] = frozenset()
    fallback: str | None = None
    summary: str = ""

    def usable(self, pool: Pool) -> bool:
        """Whether ``pool`` has everything this strategy needs."""
        return all(getattr(pool, field) is not None for field in self.needs)


REGISTRY: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("random", random_strategy, random_stream, summary="a seeded uniform draw (the study's reference)"),
        StrategySpec("uncertainty", uncertainty_strategy, uncertainty_strategy, summary="most uncertain first, rare classes weighted up"),
        StrategySpec(
            "diversity",
            diversity_strategy,
            diversity_stream,
            frozenset({"embeddings"}),
            "uncertainty",
            "greedy k-center on image embeddings: farthest from everything labeled first",
        ),
        StrategySpec(
            "hybrid",
            hybrid_strategy,
            hybrid_stream,
            frozenset({"embeddings"}),
            "uncertainty",
            "uncertainty-weighted k-center: uncertain and spread out",
        ),
        StrategySpec(
            "objects",
            objects_strategy,
            hybrid_stream,
            frozenset({"objects", "embeddings"}),
            "hybrid",
            "uncertainty-prefiltered k-center on class-matched object features (PPAL-style)",
        ),
        StrategySpec(
            "typical",
            typical_strategy,
            diversity_stream,
            frozenset({"embeddings"}),
            "uncertainty",
            "cold start: the most typical image of each uncovered cluster (TypiClust)",
        ),
        StrategySpec(
            "adaptive",
            adaptive_strategy,
            adaptive_stream,
            frozenset({"embeddings"}),
            "uncertainty",
            "typical while few images are labeled (AL_COLD_START_LABELS), then objects",
        ),
    )
}
STRATEGY_NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_strategy(name: str) -> StrategySpec:
    """The strategy registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(REGISTRY)}") from None


def resolve(name: str, pool: Pool) -> StrategySpec:
    """The strategy ``name``, or its fallback when ``pool`` lacks what it needs.

    Raises:
        ValueError: unknown name, or neither it nor its fallbacks can run on ``pool``.
    """
    spec = get_strategy(name)
    while not spec.usable(pool):
        if spec.fallback is None:
            raise ValueError(f"the {spec.name} strategy needs {', '.join(sorted(spec.needs))}")
        spec = get_strategy(spec.fallback)
    return spec
