"""AP50 from per-image records, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.training.metrics import average_precision, image_record, map50

BOX = np.array([[0, 0, 10, 10]], dtype=float)
FAR = np.array([[50, 50, 60, 60]], dtype=float)


def rec(gt, gc, boxes, classes, scores, n=2):  # noqa: ANN001, ANN202
    return image_record(np.array(gt, float).reshape(-1, 4), gc, np.array(boxes, float).reshape(-1, 4), classes, scores, n)


@pytest.mark.parametrize(
    ("tp", "n_true", "expected"),
    [
        ([True], 1, 1.0),
        ([False, True], 1, 0.5),  # found at rank 2: precision 1/2 at full recall
        ([True, False, True], 2, 0.5 * 1.0 + 0.5 * (2 / 3)),
        ([], 3, 0.0),
        ([True, True], 4, 0.5),  # half the true boxes never found
    ],
)
def test_average_precision(tp, n_true: int, expected: float) -> None:
    assert average_precision(np.array(tp, dtype=bool), n_true) == pytest.approx(expected)


def test_matching_is_per_class_and_one_to_one() -> None:
    r = rec([BOX[0], FAR[0]], [0, 1], [BOX[0], BOX[0], FAR[0]], [0, 0, 0], [0.9, 0.8, 0.7])
    assert r.tp.tolist() == [True, False, False]  # a duplicate is a false positive; so is the right place with the wrong class
    assert r.gt_per_class.tolist() == [1, 1]


def test_map50_over_images_and_resamples() -> None:
    hit = rec(BOX, [0], BOX, [0], [0.9])
    miss = rec(BOX, [0], FAR, [0], [0.9])
    assert map50([hit, hit]) == 1.0 and map50([miss]) == 0.0
    # the miss's false positive outranks nothing (same score): AP of [tp, fp] or [fp, tp] at 2 true boxes
    assert map50([hit, miss]) == pytest.approx(0.5)
    assert map50([hit, miss], counts=np.array([3, 0])) == 1.0  # a resample that drew only the hit
    assert map50([]) == 0.0
