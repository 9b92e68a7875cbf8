"""The semantic cases of Label Studio's YOLO example backend's tests, rebuilt with our own fixtures: what each
of its labeling configs gets here (docs/official-yolo-backend.md says the same, case by case)."""

from __future__ import annotations

import re

import pytest

from ml_backend.inference.images import ImageError
from ml_backend.inference.label_config import LabelConfigError, build_label_map, coverage, keypoint_map, plan_targets, select_target
from ml_backend.inference.predictor import task_image_uri

COCO = {0: "person", 2: "car", 9: "traffic light", 11: "stop sign", 15: "cat", 16: "dog"}


def view(*controls: str, images: tuple[str, ...] = ("image",)) -> str:
    return "<View>" + "".join(f'<Image name="{i}" value="${i}"/>' for i in images) + "".join(controls) + "</View>"


def rect(name: str = "label", to: str = "image", attrs: str = "", labels: str = '<Label value="person"/><Label value="car"/>') -> str:
    return f'<RectangleLabels name="{name}" toName="{to}" {attrs}>{labels}</RectangleLabels>'


def test_a_wrong_data_key_fails_that_task_and_names_the_keys_it_has() -> None:
    target = select_target(view(rect()).replace('value="$image"', 'value="$img"'), "detect")
    with pytest.raises(ImageError, match=re.escape("the task has no image under data.img (its data keys: image)")):
        task_image_uri({"id": 1, "data": {"image": "http://example.com/a.jpg"}}, target.value_key)


def test_model_skip_leaves_a_control_alone() -> None:
    target = select_target(view(rect("skipped", attrs='model_skip="true"'), rect("used")), "detect")
    assert target.from_name == "used" and not target.warnings


def test_a_control_without_to_name_is_not_one_we_can_fill() -> None:
    with pytest.raises(LabelConfigError, match=re.escape("needs <RectangleLabels> on an <Image>")):
        select_target(view('<RectangleLabels name="label"><Label value="person"/></RectangleLabels>'), "detect")


def test_a_control_whose_labels_match_nothing_is_served_and_learned() -> None:
    target = select_target(view(rect(labels='<Label value="Fish"/><Label value="Starfish"/>')), "detect")
    assert build_label_map(COCO, target) == {}
    got = coverage(COCO, target)
    assert (got.known, got.missing) == ((), ("Fish", "Starfish"))  # the project's own model learns them


def test_two_images_with_two_rectangle_labels_and_their_thresholds() -> None:
    """Both are filled by the project's model, each from its own image at its own threshold."""
    config = view(
        rect("a", "image1", 'model_score_threshold="0.3"'), rect("b", "image2", 'model_score_threshold="0.9"'), images=("image1", "image2")
    )
    plan = plan_targets(config, "detect")
    got = [(t.from_name, t.to_name, t.value_key, t.score_threshold) for t in plan.targets]
    assert got == [("a", "image1", "image1", 0.3), ("b", "image2", "image2", 0.9)]
    assert plan.primary.warnings == ()


@pytest.mark.parametrize("choice", ["single", "multiple"])
def test_choices_get_the_top_class(choice) -> None:
    config = view(f'<Choices name="kind" toName="image" choice="{choice}"><Choice value="cat"/><Choice value="dog"/></Choices>')
    target = select_target(config, "classify")
    assert (target.kind, target.result_type, target.labels) == ("choices", "choices", ("cat", "dog"))
    assert build_label_map(COCO, target) == {15: "cat", 16: "dog"}


def test_predicted_values_with_spaces() -> None:
    labels = '<Label value="Signs" predicted_values="traffic light, stop sign"/><Label value="Vehicle" predicted_values=" car "/>'
    target = select_target(view(rect(labels=labels)), "detect")
    assert build_label_map(COCO, target) == {2: "Vehicle", 9: "Signs", 11: "Signs"}


@pytest.mark.parametrize(
    ("config", "parent"),
    [
        (view('<KeyPointLabels name="kp" toName="image"><Label value="nose"/></KeyPointLabels>'), None),  # without a parent box
        (
            view(rect(labels='<Label value="person"/>'), '<KeyPointLabels name="kp" toName="image"><Label value="nose"/></KeyPointLabels>'),
            "label",
        ),
    ],
)
def test_keypoints_from_a_pose_model_with_and_without_a_parent_box(config, parent) -> None:
    target = plan_targets(config, "pose").primary
    assert (target.kind, target.result_type) == ("keypoints", "keypointlabels")
    assert (target.parent.from_name if target.parent else None) == parent
    assert keypoint_map({0: ["nose", "left_eye"]}, 2, target) == {0: "nose"}


def test_a_video_tracker_override() -> None:
    """Boxes on the image and tracks on the video, from the same detector; model_tracker picks the tracker."""
    config = (
        '<View><Image name="image" value="$image"/>' + rect() + '<Video name="video" value="$video"/>'
        '<Labels name="kinds" toName="video"><Label value="person"/></Labels>'
        '<VideoRectangle name="box" toName="video" model_tracker="bytetrack"/></View>'
    )
    plan = plan_targets(config, "detect")
    assert [(t.from_name, t.kind, t.tracker, t.labels) for t in plan.targets] == [
        ("label", "rectangle", "botsort", ("person", "car")),
        ("box", "video_rectangle", "bytetrack", ("person",)),
    ]
    assert plan.primary.warnings == ()
