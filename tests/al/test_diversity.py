import numpy as np
import pytest

from ml_backend.al.diversity import (
    ObjectSet,
    distance_to_item,
    diversity_scores,
    k_center_greedy,
    kmeans_clusters,
    nearest_distance,
    normalize,
    object_k_center,
    similarity_to_set,
    typical_cover,
)


def blobs(n_per: int, centers: np.ndarray, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([c + spread * rng.standard_normal((n_per, centers.shape[1])) for c in centers])
    return X.astype(np.float32), np.repeat(np.arange(len(centers)), n_per)


CENTERS = np.eye(8, dtype=np.float32)[:5] * 10  # 5 well separated directions


def test_normalize() -> None:
    X = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert X.dtype == np.float32
    assert X[0] == pytest.approx([0.6, 0.8])
    assert X[1] == pytest.approx([0.0, 0.0])


def test_nearest_distance_and_diversity() -> None:
    X = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    d = nearest_distance(X, np.array([[1, 0]], dtype=np.float32))
    assert d == pytest.approx([0.0, np.sqrt(2), 2.0], abs=1e-5)
    assert diversity_scores(X, np.array([[1, 0]], dtype=np.float32)) == pytest.approx([0.0, np.sqrt(2) / 2, 1.0], abs=1e-5)
    assert diversity_scores(X, None).tolist() == [1.0, 1.0, 1.0]


def test_k_center_covers_every_cluster_before_repeating_one() -> None:
    X, label = blobs(200, CENTERS, 0.3)
    chosen = k_center_greedy(X, 5, seed=1)
    assert sorted(label[chosen].tolist()) == [0, 1, 2, 3, 4]


def test_k_center_skips_clusters_already_labeled() -> None:
    X, label = blobs(100, CENTERS, 0.3)
    labeled = np.concatenate([X[label == c][:3] for c in range(3)])
    chosen = k_center_greedy(X, 2, labeled=labeled, seed=0)
    assert sorted(label[chosen].tolist()) == [3, 4]


def test_k_center_radius_shrinks_to_the_known_spread() -> None:
    """After choosing one centre per cluster, every point lies within its cluster's radius."""
    X, label = blobs(300, CENTERS, 0.2, seed=3)
    Xn = normalize(X)
    chosen = k_center_greedy(X, 5, seed=0)
    radius = nearest_distance(Xn, Xn[chosen]).max()
    within = max(nearest_distance(Xn[label == c], Xn[label == c]).max() for c in range(5))
    largest_cluster_diameter = max(np.sqrt(((Xn[label == c][:, None] - Xn[label == c][None]) ** 2).sum(-1)).max() for c in range(5))
    assert within == pytest.approx(0.0, abs=1e-5)
    assert radius <= largest_cluster_diameter + 1e-6
    assert radius < 0.2  # far below the ~1.41 distance between clusters


def test_k_center_weights_prefer_heavier_items() -> None:
    X = np.array([[1, 0], [-1, 0], [0, 1]], dtype=np.float32)
    assert k_center_greedy(X, 1, weights=np.array([0.1, 0.9, 0.2]))[0] == 1


@pytest.mark.parametrize("k", [0, 1, 7, 50])
def test_k_center_returns_distinct_indices(k) -> None:
    X, _ = blobs(10, CENTERS[:2], 0.5)
    chosen = k_center_greedy(X, k, seed=0)
    assert len(chosen) == min(k, len(X)) == len(set(chosen.tolist()))


def test_k_center_is_deterministic_for_a_seed() -> None:
    X, _ = blobs(50, CENTERS, 0.5)
    assert k_center_greedy(X, 10, seed=4).tolist() == k_center_greedy(X, 10, seed=4).tolist()


def test_kmeans_recovers_separated_blobs() -> None:
    X, label = blobs(60, CENTERS, 0.2)
    clusters = kmeans_clusters(X, 5, seed=0)
    # each true blob maps to exactly one cluster
    assert all(len(set(clusters[label == c].tolist())) == 1 for c in range(5))
    assert len(set(clusters.tolist())) == 5


def test_kmeans_with_few_items() -> None:
    assert kmeans_clusters(np.ones((1, 4)), 8).tolist() == [0]
    assert len(set(kmeans_clusters(np.eye(3), 8).tolist())) == 3


def _objs(items) -> ObjectSet:  # noqa: ANN001 - [(feature rows, classes, confidences)]
    return ObjectSet.from_items(
        [(np.array(e, dtype=np.float32).reshape(-1, 3), np.array(c), np.array(w, dtype=float)) for e, c, w in items]
    )


X, Y, Z = [1, 0, 0], [0, 1, 0], [0, 0, 1]


def test_object_sets_keep_their_owners_through_subsets() -> None:
    objs = _objs([([X, Y], [0, 1], [0.9, 0.5]), ([], [], []), ([Z], [2], [0.7])])
    assert objs.n == 3 and objs.owner.tolist() == [0, 0, 2]
    sub = objs.subset(np.array([2, 0]))
    assert sub.n == 2 and sub.owner.tolist() == [1, 1, 0] and sub.classes.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (([X], [0], [1.0]), 1.0),  # the same feature, the same class: covered
        (([X], [1], [1.0]), 0.0),  # the same feature but a class the labels lack: not covered at all
        (([Y], [0], [1.0]), 0.0),  # the labeled class, an orthogonal feature
        (([X, Y], [0, 0], [0.75, 0.25]), 0.75),  # confidence-weighted: the sure object is covered
        (([], [], []), 0.0),  # nothing detected
    ],
)
def test_similarity_to_the_labeled_objects_is_class_conditioned(item, expected: float) -> None:
    labeled = _objs([([X], [0], [1.0])])
    assert similarity_to_set(_objs([item]), labeled)[0] == pytest.approx(expected)


def test_distance_between_items_compares_objects_of_the_same_class() -> None:
    objs = _objs([([X], [0], [1.0]), ([X], [0], [1.0]), ([X], [1], [1.0]), ([], [], [])])
    d = distance_to_item(objs, 0)
    assert d.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])  # itself and its twin; another class; an empty item


def test_object_k_center_spreads_over_classes_and_features() -> None:
    """Three near-copies of a fish and one starfish: the second pick is the starfish, not a copy."""
    items = [([X], [0], [0.9]), ([[0.99, 0.01, 0]], [0], [0.9]), ([[0.98, 0.02, 0]], [0], [0.9]), ([X], [5], [0.9])]
    order = object_k_center(_objs(items), 2, weights=np.array([1.0, 0.9, 0.8, 0.5]))
    assert order.tolist() == [0, 3]
    # with the fish already labeled, the starfish comes first
    assert object_k_center(_objs(items), 1, labeled=_objs([([X], [0], [1.0])])).tolist() == [3]


def test_typical_cover_takes_one_dense_item_per_uncovered_cluster() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal([5, 0, 0], 0.05, size=(30, 3))
    b = rng.normal([0, 5, 0], 0.05, size=(10, 3))
    outlier = np.array([[0, 0, 5.0]])
    X_ = np.vstack([a, b, outlier]).astype(np.float32)
    picked = typical_cover(X_, 2, seed=0)
    assert len(picked) == 2 and {int(p) < 30 for p in picked} == {True, False}  # one from each big cluster...
    assert 40 not in picked.tolist()  # ...and never the outlier
    covered = typical_cover(X_, 1, labeled=a[:3].astype(np.float32), seed=0)  # cluster a is labeled already
    assert len(covered) == 1 and int(covered[0]) >= 30  # the pick comes from a cluster no label is in
