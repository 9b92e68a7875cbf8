import re

import pytest

from ml_backend.inference.label_config import Coverage, LabelConfigError, Target, build_label_map, coverage, proposal_label, select_target

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
        (cfg(RECT), "pose", "not supported"),
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
        (_two_boxes('model_path="other.pt"'), "a", None, ('<RectangleLabels name="a"> model_path: not applied',)),
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
        (_two_boxes(), "detect", ['<RectangleLabels name="b">: not filled; one control is filled']),
        (_two_boxes("", 'model_skip="true"'), "detect", []),
        (
            '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="person"/>'
            '</RectangleLabels><KeyPointLabels name="kp" toName="image"><Label value="nose"/></KeyPointLabels>'
            '<BrushLabels name="mask" toName="image"><Label value="person"/></BrushLabels></View>',
            "detect",
            ['<KeyPointLabels name="kp">: not filled; keypoints', '<BrushLabels name="mask">: not filled; brush masks'],
        ),
        (
            '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="cat"/>'
            '</RectangleLabels><Choices name="kind" toName="image"><Choice value="cat"/></Choices></View>',
            "classify",
            ['<RectangleLabels name="box">: not filled; one control is filled'],
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
