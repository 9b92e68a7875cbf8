"""What a pre-annotation shows: per-class thresholds chosen on held-out labels whose best answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from ml_backend.al.effort import DEFAULT_COSTS, price
from ml_backend.inference.display import (
    DEFAULT_THRESHOLD,
    HIDDEN,
    Display,
    choose_display,
    corrections_under,
    cross_fitted_corrections,
    merge_across_classes,
)
from ml_backend.training.evaluate import Detections


def box(i: int) -> list[float]:
    """The i-th cell of a grid of 10-pixel boxes 20 pixels apart (no two overlap)."""
    x, y = 20 * (i % 50), 20 * (i // 50)
    return [x, y, x + 10, y + 10]


def levels(cls: int, right_share, per_level: int = 20, start: int = 0) -> list[Detections]:
    """One image per score level 0.05, 0.15, ..., 0.95 of class ``cls``: ``per_level`` boxes at that
    score, of which ``round(per_level * right_share(score))`` lie on a true box and the rest on nothing."""
    out = []
    for k, s in enumerate(np.arange(0.05, 1.0, 0.1)):
        right = int(round(per_level * right_share(s)))
        base = start + 100 * k
        gt = [box(base + j) for j in range(right)]
        pred = gt + [box(base + 50 + j) for j in range(per_level - right)]
        out.append(
            Detections(
                np.array(gt, dtype=float).reshape(-1, 4),
                np.full(right, cls),
                np.array(pred, dtype=float).reshape(-1, 4),
                np.full(per_level, cls),
                np.full(per_level, round(float(s), 2)),
            )  # fmt: skip
        )
    return out


def test_with_calibrated_scores_a_box_is_shown_once_it_is_worth_its_deletion() -> None:
    # A box right with probability s saves (draw - verify) * s = 5.4 s and costs delete * (1 - s) = 2 s:
    # worth showing from s > 2 / 7.4 = 0.27, so the levels from 0.35 up are shown, 0.25 is not.
    # Every threshold in (0.25, 0.35] is as good; the nearest to the default is 0.3.
    d = choose_display(levels(0, lambda s: s), DEFAULT_COSTS)
    assert d.thresholds == {0: pytest.approx(0.3)} and d.merge_classes is False


@pytest.mark.parametrize(
    ("right_share", "expected"),
    [
        (lambda s: s, 0.3),  # calibrated: break-even 0.27
        (lambda s: s / 2, 0.5),  # over-confident: half as often right as it says, break-even 0.54
        (lambda s: min(1.0, 3 * s), 0.15),  # under-confident: three times as often right, break-even 0.09 (0.1 and 0.15 tie)
        (lambda s: 0.0, HIDDEN),  # never right: not shown at all
        (lambda s: 1.0, 0.05),  # always right: everything shown
    ],
)
def test_each_class_gets_the_threshold_where_shown_boxes_stop_paying(right_share, expected: float) -> None:
    assert choose_display(levels(0, right_share), DEFAULT_COSTS).thresholds[0] == pytest.approx(expected)


def test_two_classes_are_set_apart_and_a_class_without_evidence_keeps_the_default() -> None:
    images = levels(0, lambda s: s) + levels(1, lambda s: s / 2, start=2000)
    rare = Detections(np.array([box(4000)], dtype=float), np.array([2]), np.array([box(4000)], dtype=float), np.array([2]), np.array([0.9]))
    d = choose_display([*images, rare], DEFAULT_COSTS)
    assert d.thresholds == {0: pytest.approx(0.3), 1: pytest.approx(0.5)}  # class 2: 2 boxes of evidence, under 5
    assert d.threshold(2) == DEFAULT_THRESHOLD


def test_the_chosen_rule_never_costs_more_than_the_default_on_the_images_it_was_chosen_on() -> None:
    rng = np.random.default_rng(0)
    images = []
    for i in range(30):
        n = int(rng.integers(1, 6))
        gt = np.array([box(10 * i + j) for j in range(n)], dtype=float)
        keep = rng.random(n) < 0.7
        noise = np.array([box(10 * i + 5 + j) for j in range(int(rng.integers(0, 4)))], dtype=float).reshape(-1, 4)
        boxes = np.concatenate([gt[keep], noise])
        classes = np.concatenate([rng.integers(0, 3, n)[keep], rng.integers(0, 3, len(noise))])
        images.append(Detections(gt, rng.integers(0, 3, n), boxes, classes, rng.random(len(boxes))))
    chosen = choose_display(images, DEFAULT_COSTS)
    seconds = lambda d: DEFAULT_COSTS.seconds(corrections_under(images, d))  # noqa: E731
    assert seconds(chosen) <= seconds(Display())


def test_two_labels_on_one_object_are_merged_when_that_saves_a_deletion() -> None:
    # Object A (class 0) is found as class 0 at 0.8 and as class 1 at 0.6 on the same box; object B
    # (class 1) is found at 0.6 too. No threshold on class 1 keeps B and drops A's second label.
    a, b = box(0), box(1)
    dup = [
        Detections(
            np.array([a, b], dtype=float),
            np.array([0, 1]),
            np.array([a, a, b], dtype=float),
            np.array([0, 1, 1]),
            np.array([0.8, 0.6, 0.6]),
        )
    ] * 10
    d = choose_display(dup, DEFAULT_COSTS)
    assert d.merge_classes is True
    c = corrections_under(dup, d)
    assert (c.accepted, c.deleted, c.drawn) == (20, 0, 0)
    assert corrections_under(dup, Display()).deleted == 10


def test_two_objects_of_different_classes_on_one_spot_are_not_merged() -> None:
    # Two true objects, two classes, on nearly the same box: both found; merging would lose one.
    twin = [
        Detections(
            np.array([box(i), box(i)], dtype=float),
            np.array([0, 1]),
            np.array([box(i), box(i)], dtype=float),
            np.array([0, 1]),
            np.array([0.8, 0.6]),
        )  # fmt: skip
        for i in range(10)
    ]
    assert choose_display(twin, DEFAULT_COSTS).merge_classes is False


@pytest.mark.parametrize(
    ("boxes", "scores", "expected"),
    [
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.3, 0.9], [False, True]),
        ([[0, 0, 10, 10], [0, 0, 10, 5]], [0.9, 0.3], [True, True]),  # IoU 0.5 < 0.7: two objects
        ([], [], []),
    ],
)
def test_merging_keeps_the_most_confident_of_overlapping_boxes(boxes, scores, expected) -> None:
    assert merge_across_classes(np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores)).tolist() == expected


def test_the_cross_fitted_price_judges_each_image_by_a_rule_chosen_on_the_others() -> None:
    images = levels(0, lambda s: s / 2)
    inside = price(corrections_under(images, choose_display(images, DEFAULT_COSTS)), DEFAULT_COSTS)
    honest = price(cross_fitted_corrections(images, DEFAULT_COSTS), DEFAULT_COSTS)
    default = price(corrections_under(images, Display()), DEFAULT_COSTS)
    assert honest["counts"]["gt_boxes"] == inside["counts"]["gt_boxes"] == default["counts"]["gt_boxes"]
    # Each level is one image: the rule chosen without it still shows what pays on the others.
    assert default["speedup"] < honest["speedup"] <= inside["speedup"]
    one = images[:1]
    assert cross_fitted_corrections(one, DEFAULT_COSTS) == corrections_under(one, Display())  # nothing else to choose on


def test_no_images_show_the_default() -> None:
    assert choose_display([], DEFAULT_COSTS, default=0.4) == Display(0.4)


@pytest.mark.parametrize(
    ("display", "names"),
    [
        (Display(0.25, {0: 0.1, 2: 0.6}, True), {0: "fish", 1: "shark", 2: "ray"}),
        (Display(0.3), {0: "a"}),
    ],
)
def test_a_rule_is_stored_by_class_name_and_read_back(display: Display, names: dict[int, str]) -> None:
    assert Display.from_json(display.to_json(names), names) == display
    renamed = {c + 1: n for c, n in names.items()}  # the same classes at other ids (a grown head)
    back = Display.from_json(display.to_json(names), renamed)
    assert {renamed[c]: t for c, t in back.thresholds.items()} == {names[c]: t for c, t in display.thresholds.items()}


def test_a_served_version_shows_what_was_chosen_for_it_unless_score_threshold_is_set(tmp_path, tiny_weights) -> None:
    from ml_backend.inference.model import ModelHolder
    from ml_backend.inference.predictor import Predictor
    from ml_backend.inference.served_models import ServedModels
    from ml_backend.settings import Settings

    weights = tiny_weights("detect")
    cfg = '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image"><Label value="circle"/><Label value="square"/></RectangleLabels></View>'
    chosen = {"default": 0.25, "thresholds": {"square": 0.6, "gone": 0.1}, "merge_classes": True}
    for env, project, expected in [
        ({}, 7, Display(0.25, {1: 0.6}, True)),  # its version's rule, by class name (square is class 1)
        ({}, 8, Display(0.25)),  # a project never retrained: the base model at 0.25
        ({"SCORE_THRESHOLD": "0.4"}, 7, Display(0.4)),  # set: every class from 0.4
    ]:
        settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state"), "DEVICE": "cpu", **env})
        holder = ModelHolder(str(weights), "cpu")
        models = ServedModels(holder, settings.model_dir)
        registry = models.registry(7)
        if registry.current() is None:
            registry.promote(registry.add(weights, metrics={"new": {"display": chosen}}).version)
        served = Predictor(settings, holder, object(), models).serve(cfg, project=project)  # type: ignore[arg-type]
        assert served.display == expected, (env, project)
