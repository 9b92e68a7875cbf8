"""The annotator's actions on a pre-annotated image, counted on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.al.effort import CLASSIC_COSTS, DEFAULT_COSTS, Corrections, CostTable, corrections

A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
A_SHIFTED = [1, 0, 11, 10]  # IoU with A: 90/110 = 0.818, matched but below 0.85
A_NUDGED = [0, 0, 10, 10.5]  # IoU with A: 100/105 = 0.952, accepted
FAR = [50, 50, 60, 60]


def C(**kw: int) -> Corrections:
    return Corrections(**{"images": 1, **kw})


@pytest.mark.parametrize(
    ("gt", "gt_cls", "pred", "pred_cls", "expected"),
    [
        # nothing on the image, nothing shown: one image looked at
        ([], [], [], [], C()),
        # an empty image with a false box: delete it
        ([], [], [A], [0], C(deleted=1)),
        # no pre-annotation: draw everything
        ([A, B], [0, 1], [], [], C(gt_boxes=2, drawn=2)),
        # right box, right class: accepted (verified), also when nudged a little
        ([A], [0], [A], [0], C(gt_boxes=1, accepted=1)),
        ([A], [0], [A_NUDGED], [0], C(gt_boxes=1, accepted=1)),
        # right class, loose box: adjusted
        ([A], [0], [A_SHIFTED], [0], C(gt_boxes=1, adjusted=1)),
        # the box is there with the wrong label: class changed; loose too: also adjusted
        ([A], [0], [A], [2], C(gt_boxes=1, class_changed=1)),
        ([A], [0], [A_SHIFTED], [2], C(gt_boxes=1, class_changed=1, adjusted=1)),
        # a box in the wrong place: delete it and draw the right one
        ([A], [0], [FAR], [0], C(gt_boxes=1, drawn=1, deleted=1)),
        # a class the model lacks (3): its boxes are drawn; the model's extra box is deleted
        ([A, B], [3, 0], [B, FAR], [0, 1], C(gt_boxes=2, accepted=1, drawn=1, deleted=1)),
        # two shown boxes on one object: one is kept, the duplicate deleted
        ([A], [0], [A_NUDGED, A], [0, 0], C(gt_boxes=1, accepted=1, deleted=1)),
    ],
)
def test_corrections(gt, gt_cls, pred, pred_cls, expected: Corrections) -> None:
    got = corrections(np.array(gt, dtype=float), np.array(gt_cls), np.array(pred, dtype=float), np.array(pred_cls))
    assert got == expected


def test_same_class_matches_come_before_cross_class_ones() -> None:
    """A shown dog box that overlaps a true dog better than a true cat keeps the dog; the cat box is relabeled."""
    gt = np.array([A, A_SHIFTED], dtype=float)  # a dog (0) and a cat (1) on nearly the same spot
    pred = np.array([A, A_SHIFTED], dtype=float)  # shown: a cat exactly at the dog's spot, a dog exactly at the cat's
    got = corrections(gt, np.array([0, 1]), pred, np.array([1, 0]))
    assert got == C(gt_boxes=2, adjusted=2)  # both same-class pairs found first (IoU 0.82), no class change


def test_ties_go_to_the_earlier_boxes() -> None:
    """Two true boxes equally close to one shown box: the first true box is matched, the second drawn."""
    twin = [0, 0, 12, 10]
    got = corrections(np.array([twin, twin], dtype=float), np.array([0, 0]), np.array([twin], dtype=float), np.array([0]))
    assert got == C(gt_boxes=2, accepted=1, drawn=1)
    # a shown box halfway between two true ones (IoU 1/3 each) matches neither
    left, right, between = [0, 0, 10, 10], [10, 0, 20, 10], [5, 0, 15, 10]
    got = corrections(np.array([left, right], dtype=float), np.array([0, 0]), np.array([between], dtype=float), np.array([0]))
    assert got == C(gt_boxes=2, drawn=2, deleted=1)


def test_every_true_box_is_accounted_for_once() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = rng.integers(0, 6, size=2)
        xy = rng.uniform(0, 80, size=(n + m, 2))
        wh = rng.uniform(5, 30, size=(n + m, 2))
        boxes = np.hstack([xy, xy + wh])
        c = corrections(boxes[:n], rng.integers(0, 3, n), boxes[n:], rng.integers(0, 3, m))
        matched = c.gt_boxes - c.drawn
        assert matched == m - c.deleted >= 0  # one-to-one
        assert c.accepted + (c.adjusted - min(c.adjusted, c.class_changed)) <= matched
        assert c.accepted + c.class_changed <= matched


def test_seconds_follow_the_table() -> None:
    c = Corrections(images=2, gt_boxes=5, accepted=1, adjusted=1, class_changed=1, drawn=2, deleted=3)
    t = CostTable(image=1, verify=2, draw=3, delete=5, change_class=7, adjust=11)
    assert t.seconds(c) == 2 * 1 + 1 * 2 + 1 * 11 + 1 * 7 + 2 * 3 + 3 * 5
    assert DEFAULT_COSTS.seconds(Corrections(images=1, gt_boxes=1, drawn=1)) == pytest.approx(9.0)
    assert CLASSIC_COSTS.draw == 35.0 and DEFAULT_COSTS.draw == 7.0


def test_sums_and_json() -> None:
    a, b = C(gt_boxes=2, drawn=2), C(gt_boxes=1, accepted=1)
    assert a + b == Corrections(images=2, gt_boxes=3, accepted=1, drawn=2)
    assert Corrections.from_json((a + b).to_json()) == a + b
    assert (a + b).edits == 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("draw=35,adjust=6", None),
        ("", None),
        ("drw=3", "name one of"),
        ("draw=fast", "not a number"),
        ("draw=-1", "between 0"),
        ("draw", "name=seconds"),
    ],
)
def test_cost_overrides(text: str, error: str | None) -> None:
    if error:
        with pytest.raises(ValueError, match=error):
            DEFAULT_COSTS.with_overrides(text)
        return
    table = DEFAULT_COSTS.with_overrides(text)
    assert CostTable(**{**DEFAULT_COSTS.__dict__}).with_overrides(table.to_text()) == table
