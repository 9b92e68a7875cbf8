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
from dataclasses import dataclass

import numpy as np

from ml_backend.al.diversity import diversity_scores, k_center_greedy, nearest_distance

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
    """

    uncertainty: np.ndarray
    embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    class_counts: np.ndarray | None = None
    labeled_class_counts: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.uncertainty)


@dataclass(frozen=True)
class StrategyParams:
    """Strengths of each term, the k-center batch, and the seed."""

    uncertainty_weight: float = 1.0
    diversity_weight: float = 1.0
    class_balance_weight: float = 0.0
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("uncertainty_weight", "diversity_weight", "class_balance_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


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


def random_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    return np.random.default_rng(params.seed).random(len(pool))


def uncertainty_strategy(pool: Pool, params: StrategyParams) -> np.ndarray:
    r = class_rarity(pool.class_counts, pool.labeled_class_counts, len(pool))
    return np.clip(np.asarray(pool.uncertainty, dtype=np.float64), 0, 1) * r**params.class_balance_weight


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
    w = (EPS + u) ** params.uncertainty_weight * r**params.class_balance_weight
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
    D = diversity_scores(_need_embeddings(pool, "k-center"), pool.labeled_embeddings)
    u = np.clip(np.asarray(pool.uncertainty, dtype=np.float64), 0, 1)
    r = class_rarity(pool.class_counts, pool.labeled_class_counts, len(pool))
    value = np.clip(D, 0, 1) ** (2 * params.diversity_weight) * (EPS + u) ** uncertainty_weight * r**params.class_balance_weight
    return 0.5 * np.clip(value, 0, 1)


def diversity_stream(pool: Pool, params: StrategyParams) -> np.ndarray:
    return _k_center_stream(pool, params, 0.0)


def hybrid_stream(pool: Pool, params: StrategyParams) -> np.ndarray:
    return _k_center_stream(pool, params, params.uncertainty_weight)


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
