import numpy as np
import pytest

from ml_backend.al.uncertainty import (
    AGGREGATIONS,
    MEASURES,
    box_iou,
    calibrated_uncertainty,
    entropy,
    entropy_nms,
    existence,
    image_uncertainty,
    least_confidence,
    margin,
    tta_disagreement,
)


@pytest.mark.parametrize(
    ("P", "expected"),
    [
        ([[1.0, 0.0, 0.0]], [0.0]),
        ([[0.6, 0.3, 0.1]], [0.4]),
        ([[0.0, 0.0, 0.0]], [1.0]),
    ],
)
def test_least_confidence(P, expected) -> None:
    assert least_confidence(np.array(P)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("P", "expected"),
    [
        ([[1.0, 0.0]], [0.0]),
        ([[0.5, 0.5]], [1.0]),
        ([[0.6, 0.2, 0.2]], [1 - (0.6 - 0.2)]),
        ([[0.3, 0.1]], [1 - (0.75 - 0.25)]),  # normalized first
    ],
)
def test_margin(P, expected) -> None:
    assert margin(np.array(P)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("P", "expected"),
    [
        ([[1.0, 0.0, 0.0, 0.0]], [0.0]),
        ([[0.25, 0.25, 0.25, 0.25]], [1.0]),
        ([[0.5, 0.5, 0.0, 0.0]], [0.5]),  # log(2) / log(4)
        ([[0.5]], [1.0]),  # one class: binary entropy of p
        ([[0.99]], [pytest.approx(0.0808, abs=1e-3)]),
    ],
)
def test_entropy(P, expected) -> None:
    assert entropy(np.array(P)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_every_measure_is_in_unit_range_and_orders_confident_below_unsure(name) -> None:
    rng = np.random.default_rng(0)
    P = rng.random((200, 5))
    u = MEASURES[name](P)
    assert u.shape == (200,) and (u >= -1e-9).all() and (u <= 1 + 1e-9).all()
    sure, unsure = MEASURES[name](np.array([[0.99, 0.005, 0.005, 0, 0], [0.3, 0.3, 0.2, 0.1, 0.1]]))
    assert sure < unsure


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert box_iou(a, b)[0] == pytest.approx([1.0, 50 / 150, 0.0])


def test_entropy_nms_keeps_the_most_uncertain_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [0, 0, 9, 10]])
    u = np.array([0.2, 0.9, 0.5, 0.1])
    assert entropy_nms(boxes, u, 0.5).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [("max", 1.0), ("mean", 0.6), ("sum", 1.2)],
)
def test_image_uncertainty_aggregates_after_entropy_nms(aggregate, expected) -> None:
    P = np.array([[0.9, 0.1], [0.5, 0.5], [0.48, 0.52]])
    B = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 31]])
    assert image_uncertainty(P, B, "margin", aggregate) == pytest.approx(expected)


def test_faint_candidates_make_an_image_uncertain_and_nothing_at_all_is_certain() -> None:
    faint = image_uncertainty(np.array([[0.1, 0.02]]), None, "least_confidence", "max")
    assert faint == pytest.approx(0.9)
    assert image_uncertainty(np.zeros((0, 2)), None, "entropy", "max") == 0.0


@pytest.mark.parametrize(("measure", "aggregate"), [("nope", "max"), ("entropy", "median")])
def test_unknown_names_are_refused(measure, aggregate) -> None:
    with pytest.raises(ValueError, match="unknown"):
        image_uncertainty(np.array([[0.5, 0.5]]), None, measure, aggregate)


def test_registries_are_complete() -> None:
    assert set(MEASURES) == {"least_confidence", "margin", "entropy", "existence"}
    assert set(AGGREGATIONS) == {"max", "mean", "sum"}


@pytest.mark.parametrize(("top", "expected"), [(0.5, 1.0), (0.99, 0.0808), (0.01, 0.0808), (1.0, 0.0)])
def test_existence_is_the_binary_entropy_of_the_top_score(top: float, expected: float) -> None:
    P = np.array([[top, min(top, 1 - top) / 2]])
    assert existence(P)[0] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    ("scores", "confidence", "classes", "weights", "expected"),
    [
        # one confused box at 0.5 confidence: 0.5 x 1 x entropy 1
        ([[0.5, 0.5]], [0.5], [0], None, 0.5),
        # a faint candidate, however confused, adds little: 0.5 + 0.05 x 1
        ([[0.5, 0.5], [0.05, 0.05]], [0.5, 0.05], [0, 1], None, 0.55),
        # a hard class (weight 1) counts fully, an easy one (0.1) a tenth
        ([[0.5, 0.5], [0.5, 0.5]], [1.0, 1.0], [0, 1], [1.0, 0.1], 1.1),
        ([], [], [], None, 0.0),
    ],
)
def test_calibrated_uncertainty(scores, confidence, classes, weights, expected: float) -> None:
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(len(scores))], dtype=float).reshape(-1, 4)
    got = calibrated_uncertainty(
        np.array(scores, dtype=float).reshape(len(scores), -1) if scores else np.zeros((0, 2)),
        boxes,
        np.array(classes, dtype=int),
        np.array(confidence, dtype=float),
        None if weights is None else np.array(weights),
        "entropy",
    )
    assert got == pytest.approx(expected)


def test_calibrated_uncertainty_counts_one_object_seen_twice_once() -> None:
    P = np.array([[0.5, 0.5], [0.5, 0.5]])
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5]])
    assert calibrated_uncertainty(P, boxes, np.array([0, 0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


A, B, FAR = [0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70]


@pytest.mark.parametrize(
    ("one", "other", "expected"),
    [
        (([A, B], [0, 1], [0.9, 0.6]), ([A, B], [0, 1], [0.9, 0.6]), 0.0),  # the same boxes: no disagreement
        (([A], [0], [0.8]), ([A], [1], [0.8]), 1.0),  # another class: nothing in common
        (([A], [0], [0.8]), ([], [], []), 1.0),  # the mirror pass sees nothing
        (([], [], []), ([], [], []), 0.0),  # neither sees anything
        (([A, FAR], [0, 0], [0.5, 0.5]), ([A], [0], [0.5]), 1 - 2 * 0.5 / 1.5),  # half the boxes confirmed
    ],
)
def test_tta_disagreement(one, other, expected: float) -> None:
    def arr(b, c, p):  # noqa: ANN001, ANN202
        return np.array(b, dtype=float).reshape(-1, 4), np.array(c, dtype=int), np.array(p, dtype=float)

    assert tta_disagreement(*arr(*one), *arr(*other)) == pytest.approx(expected)
