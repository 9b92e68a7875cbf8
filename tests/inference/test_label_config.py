import re

import pytest

from ml_backend.inference.label_config import (
    Coverage,
    LabelConfigError,
    Target,
    build_label_map,
    coverage,
    plan_targets,
    proposal_label,
    select_target,
)

IMG = '<Image name="image" value="$img"/>'


def cfg(body: str, image: str = IMG) -> str:
    return f"<View>{image}{body}</View>"


RECT = '<RectangleLabels name="box" toName="image"><Label value="Car"/><Label value="person"/></RectangleLabels>'
POLY = '<PolygonLabels name="poly" toName="image"><Label value="Car"/></PolygonLabels>'
CHOICES = '<Choices name="cls" toName="image"><Choice value="Cat"/><Choice value="Dog"/></Choices>'


@pytest.mark.parametrize(
    ("config", "task", "expected"),
    [
        (cfg(RECT), "detect", ("box", "rectangle", "rectanglelabels")),
        (cfg(POLY), "segment", ("poly", "polygon", "polygonlabels")),
        (cfg(RECT), "segment", ("box", "rectangle", "rectanglelabels")),
        (cfg(RECT + POLY), "segment", ("poly", "polygon", "polygonlabels")),
        (cfg(CHOICES), "classify", ("cls", "choices", "choices")),
        (cfg(RECT), "obb", ("box", "obb", "rectanglelabels")),
    ],
)
def test_select_target(config: str, task: str, expected: tuple) -> None:
    t = select_target(config, task)
    assert (t.from_name, t.kind, t.result_type) == expected
    assert t.to_name == "image"
    assert t.value_key == "img"


@pytest.mark.parametrize(
    ("config", "task", "fragment"),
    [
        ("", "detect", "no labeling config"),
        ("<View><Image", "detect", "could not be parsed"),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
            "classify",
            "needs an <Image>",
        ),
        (cfg(CHOICES), "detect", "needs <RectangleLabels>"),
        (cfg(RECT), "classify", "needs <Choices>"),
        (cfg(POLY), "detect", "needs <RectangleLabels>"),
        (cfg('<RectangleLabels name="b" toName="image" canRotate="false"><Label value="a"/></RectangleLabels>'), "obb", "canRotate"),
    ],
)
def test_unservable_configs_say_what_to_change(config: str, task: str, fragment: str) -> None:
    with pytest.raises(LabelConfigError, match=fragment):
        select_target(config, task)


def _target(labels: tuple[str, ...], predicted: dict | None = None) -> Target:
    return Target("box", "image", "image", "rectangle", labels, predicted or {})


@pytest.mark.parametrize(
    ("names", "labels", "predicted", "expected"),
    [
        ({0: "car", 1: "person"}, ("car", "person"), {}, {0: "car", 1: "person"}),  # exact
        ({0: "car", 1: "person"}, ("Car", "PERSON"), {}, {0: "Car", 1: "PERSON"}),  # case-insensitive
        ({0: "car", 1: "truck", 2: "dog"}, ("Vehicle",), {"Vehicle": ("car", "truck")}, {0: "Vehicle", 1: "Vehicle"}),
        ({0: "car", 1: "Car"}, ("Car",), {}, {0: "Car", 1: "Car"}),  # exact wins, fold also maps
        ({0: "car"}, ("Auto", "car"), {"Auto": ("car",)}, {0: "Auto"}),  # explicit beats exact
        ({0: "cat"}, ("dog",), {}, {}),  # unmapped dropped
    ],
)
def test_build_label_map(names: dict, labels: tuple, predicted: dict, expected: dict) -> None:
    assert build_label_map(names, _target(labels, predicted)) == expected


def test_predicted_values_attribute_is_read_from_config() -> None:
    config = cfg(
        '<RectangleLabels name="b" toName="image"><Label value="Vehicle" predicted_values="car, truck"/><Label value="Person"/></RectangleLabels>'
    )
    t = select_target(config, "detect")
    assert t.predicted_values == {"Vehicle": ("car", "truck")}
    assert build_label_map({0: "person", 2: "car", 7: "truck", 9: "boat"}, t) == {0: "Person", 2: "Vehicle", 7: "Vehicle"}


@pytest.mark.parametrize(
    ("names", "labels", "predicted", "known", "missing"),
    [
        ({0: "cat"}, ("dog",), {}, (), ("dog",)),  # nothing known: a new project's classes
        ({0: "person", 1: "car"}, ("person", "widget"), {}, ("person",), ("widget",)),  # mixed
        ({0: "car", 1: "truck"}, ("Vehicle", "fish"), {"Vehicle": ("car", "truck")}, ("Vehicle",), ("fish",)),  # predicted_values
        ({0: "a", 1: "b"}, ("B", "a"), {}, ("B", "a"), ()),  # every label known, in the config's order
    ],
)
def test_coverage_says_which_labels_the_model_predicts(names: dict, labels: tuple, predicted: dict, known: tuple, missing: tuple) -> None:
    c = coverage(names, _target(labels, predicted))
    assert (c.known, c.missing, c.complete) == (known, missing, not missing)


@pytest.mark.parametrize(
    ("cov", "threshold", "own", "order", "expected"),
    [
        (
            Coverage(("fish", "starfish", "jellyfish"), ()),
            50,
            False,
            "random",
            "no model for fish, starfish, jellyfish yet: the first one trains after 50 labeled tasks; until then tasks come in random order",
        ),
        (
            Coverage(("person", "widget"), ("person",)),
            20,
            False,
            "typical",
            "no model for widget yet: the first one trains after 20 labeled tasks; until then tasks are ordered for coverage (typical) "
            "(person is pre-annotated now)",
        ),
        (
            Coverage(("ring", "box", "wedge"), ("ring", "box")),
            8,
            True,
            "random",
            "no model for wedge yet: it is learned at the next retraining, after 8 labeled tasks; until then tasks come in random "
            "order (ring, box are pre-annotated now)",
        ),
        (
            Coverage(("fish",), ()),
            0,
            False,
            "diversity",
            "no model for fish yet: the first one trains when Label Studio's train button is pressed (automatic retraining is off); "
            "until then tasks are ordered for coverage (diversity)",
        ),
        (Coverage(("a", "b"), ("a", "b")), 50, True, "random", "the served model predicts every label (a, b)"),
    ],
)
def test_the_plan_says_what_happens_to_labels_the_model_does_not_know(
    cov: Coverage, threshold: int, own: bool, order: str, expected: str
) -> None:
    assert cov.plan(threshold, own, order=order) == expected


def test_the_plan_says_when_every_object_is_shown_as_the_one_label() -> None:
    assert Coverage(("raccoon",), ()).plan(50, False, proposals=True) == (
        "no model for raccoon yet: the first one trains after 50 labeled tasks; until then tasks come in random order, "
        "and every object the pretrained model finds is shown as raccoon to correct"
    )


@pytest.mark.parametrize(
    ("names", "labels", "predicted", "task", "expected"),
    [
        ({0: "dog", 1: "cat"}, ("raccoon",), {}, "detect", "raccoon"),  # one label, unknown: every box, as raccoon
        ({0: "dog", 1: "cat"}, ("raccoon",), {}, "segment", "raccoon"),
        ({0: "dog", 1: "cat"}, ("Dog",), {}, "detect", None),  # known: its own boxes only
        ({0: "dog", 1: "cat"}, ("pet",), {"pet": ("dog",)}, "detect", None),  # known through predicted_values
        ({0: "dog", 1: "cat"}, ("fish", "shark"), {}, "detect", None),  # several labels: a proposal would carry a wrong one
        ({0: "dog", 1: "cat"}, ("raccoon",), {}, "classify", None),  # a classifier has no boxes to propose
    ],
)
def test_proposal_label(names: dict, labels: tuple, predicted: dict, task: str, expected: str | None) -> None:
    assert proposal_label(names, _target(labels, predicted), task) == expected


def test_odd_label_characters_survive() -> None:
    config = cfg('<RectangleLabels name="b" toName="image"><Label value="Ünïcødé &amp; &lt;x&gt; &quot;q&quot;"/></RectangleLabels>')
    t = select_target(config, "detect")
    assert t.labels == ('Ünïcødé & <x> "q"',)
    assert build_label_map({0: 'ünïcødé & <x> "q"'}, t) == {0: 'Ünïcødé & <x> "q"'}


def _two_boxes(first: str = "", second: str = "") -> str:
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="a" toName="image" {first}><Label value="Car"/></RectangleLabels>'
        f'<RectangleLabels name="b" toName="image" {second}><Label value="Car"/></RectangleLabels></View>'
    )


@pytest.mark.parametrize(
    ("config", "from_name", "threshold", "warned"),
    [
        (_two_boxes(), "a", None, ()),
        (_two_boxes('model_score_threshold="0.6"'), "a", 0.6, ()),
        (_two_boxes('model_skip="true"', 'model_score_threshold="0.3"'), "b", 0.3, ()),  # the official backend's spelling
        (_two_boxes('model_skip="True"'), "b", None, ()),
        (_two_boxes('model_skip="false"'), "a", None, ()),
        (_two_boxes('model_score_threshold=""'), "a", None, ()),
        (_two_boxes('model_path="other.pt"'), "b", None, ()),  # "a" has a model of its own: the project's model fills "b"
        (_two_boxes("", 'model_obb="true"'), "a", None, ('<RectangleLabels name="b"> model_obb: not applied',)),
        (_two_boxes('model_treshold="0.5"'), "a", None, ('<RectangleLabels name="a"> model_treshold: unknown, ignored',)),
    ],
)
def test_per_control_attributes_as_the_official_backend_spells_them(config, from_name, threshold, warned) -> None:
    target = select_target(config, "detect")
    assert (target.from_name, target.score_threshold) == (from_name, threshold)
    said = [w for w in target.warnings if ": not filled;" not in w]  # the other control: test_controls_not_filled_are_said
    assert len(said) == len(warned) and all(w.startswith(p) for w, p in zip(said, warned, strict=True))


@pytest.mark.parametrize(
    ("config", "task", "unfilled"),
    [
        (_two_boxes(), "detect", []),  # both filled by the project's model
        (_two_boxes("", 'model_skip="true"'), "detect", []),
        (
            '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="person"/>'
            '</RectangleLabels><KeyPointLabels name="kp" toName="image"><Label value="nose"/></KeyPointLabels>'
            '<BrushLabels name="mask" toName="image"><Label value="person"/></BrushLabels></View>',
            "detect",
            [
                '<KeyPointLabels name="kp">: not filled; the project\'s model is a detect model; a pose model fills it: name one in its model_path',
                '<BrushLabels name="mask">: not filled; the project\'s model is a detect model; a segment model fills it',
            ],
        ),
        (
            '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="cat"/>'
            '</RectangleLabels><Choices name="kind" toName="image"><Choice value="cat"/></Choices></View>',
            "classify",
            ['<RectangleLabels name="box">: not filled; the project\'s model is a classify model; a detect or obb or segment model'],
        ),
    ],
)
def test_controls_not_filled_are_said(config, task, unfilled) -> None:
    said = [w for w in select_target(config, task).warnings if ": not filled;" in w]
    assert len(said) == len(unfilled) and all(w.startswith(p) for w, p in zip(said, unfilled, strict=True))


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (_two_boxes('model_skip="true"', 'model_skip="true"'), 'Every control a YOLO detect model can fill has model_skip="true" (a, b)'),
        (_two_boxes('model_score_threshold="high"'), '<RectangleLabels name="a"> has model_score_threshold="high"'),
        (_two_boxes('model_score_threshold="1.5"'), "between 0 and 1"),
    ],
)
def test_per_control_attributes_that_cannot_be_served_say_what_to_change(config, fragment) -> None:
    with pytest.raises(LabelConfigError, match=re.escape(fragment)):
        select_target(config, "detect")


BOXES_AND_SCENE = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="cat"/></RectangleLabels>'
    '<Choices name="scene" toName="image" model_path="{path}" model_score_threshold="0.4"><Choice value="indoor"/></Choices></View>'
)
POSE = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="person"/></RectangleLabels>'
    '<KeyPointLabels name="kp" toName="image" model_point_threshold="0.3"><Label value="nose" model_index="0"/>'
    '<Label value="tail"/></KeyPointLabels></View>'
)


@pytest.mark.parametrize(
    ("config", "task", "tasks", "expected"),
    [
        # boxes from the project's model, image-level choices from the control's own classifier
        (
            BOXES_AND_SCENE.format(path="scenes.pt"),
            "detect",
            {"scenes.pt": "classify"},
            [("box", "rectangle", None), ("scene", "choices", "scenes.pt")],
        ),
        # two images, two RectangleLabels: both filled by the project's model, each at its own threshold
        (
            '<View><Image name="i1" value="$i1"/><Image name="i2" value="$i2"/>'
            '<RectangleLabels name="a" toName="i1" model_score_threshold="0.3"><Label value="cat"/></RectangleLabels>'
            '<RectangleLabels name="b" toName="i2" model_score_threshold="0.9"><Label value="cat"/></RectangleLabels></View>',
            "detect",
            {},
            [("a", "rectangle", None), ("b", "rectangle", None)],
        ),
        # a pose model fills the keypoints, their boxes go to the RectangleLabels of the same image (their parent)
        (POSE, "pose", {}, [("kp", "keypoints", None)]),
        # a segment model fills a BrushLabels as masks
        (cfg('<BrushLabels name="m" toName="image"><Label value="a"/></BrushLabels>'), "segment", {}, [("m", "brush", None)]),
    ],
)
def test_every_control_a_model_fits_is_planned(config, task, tasks, expected) -> None:
    plan = plan_targets(config, task, task_of=tasks.__getitem__)
    assert [(t.from_name, t.kind, t.model_path) for t in plan.targets] == expected
    assert not [w for w in plan.primary.warnings if "not filled" in w]


def test_keypoints_know_their_parent_box_and_indexes() -> None:
    kp = plan_targets(POSE, "pose").primary
    assert kp.parent is not None and (kp.parent.from_name, kp.parent.kind) == ("box", "rectangle")
    assert (dict(kp.label_indexes), kp.point_threshold) == ({"nose": 0}, 0.3)


def test_thresholds_are_per_control() -> None:
    plan = plan_targets(BOXES_AND_SCENE.format(path="scenes.pt"), "detect", task_of=lambda _: "classify")
    assert [t.score_threshold for t in plan.targets] == [None, 0.4]


@pytest.mark.parametrize(
    ("config", "tasks", "fragment"),
    [
        (
            BOXES_AND_SCENE.format(path="boxes.pt"),
            {"boxes.pt": "detect"},
            '<Choices name="scene"> has model_path="boxes.pt", a YOLO detect model',
        ),
        (POSE.replace('model_index="0"', 'model_index="first"'), {}, 'model_index="first"'),
        (POSE.replace('model_point_threshold="0.3"', 'model_point_threshold="2"'), {}, 'model_point_threshold="2": use a confidence'),
    ],
)
def test_controls_with_a_model_that_cannot_fill_them_say_what_to_change(config, tasks, fragment) -> None:
    with pytest.raises(LabelConfigError, match=re.escape(fragment)):
        plan_targets(config, "pose" if "KeyPoint" in config else "detect", task_of=tasks.__getitem__)


def test_a_control_whose_model_cannot_be_read_is_named_not_planned() -> None:
    plan = plan_targets(BOXES_AND_SCENE.format(path="gone.pt"), "detect", task_of=lambda path: None)
    assert plan.others == () and plan.unavailable == (("scene", "gone.pt"),)


def test_without_task_of_model_path_controls_are_neither_planned_nor_said_unfilled() -> None:
    plan = plan_targets(BOXES_AND_SCENE.format(path="scenes.pt"), "detect")
    assert plan.others == () and not [w for w in plan.primary.warnings if "not filled" in w]
