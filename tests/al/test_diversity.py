import numpy as np
import pytest

from ml_backend.al.diversity import diversity_scores, k_center_greedy, kmeans_clusters, nearest_distance, normalize


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
