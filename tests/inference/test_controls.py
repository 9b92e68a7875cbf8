"""Several controls in one labeling config, each filled by its model in one prediction; keypoints
from pose models; brush masks from segment models (tiny weights trained in the session)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from ml_backend.inference.label_config import LabelConfigError
from ml_backend.inference.ls_results import brush_rle
from ml_backend.inference.model import ModelHolder, load_weights
from ml_backend.inference.predictor import Predictor
from ml_backend.settings import Settings
from ml_backend.tools.synthetic import make_image

SHAPES = '<Label value="circle"/><Label value="square"/><Label value="triangle"/>'
CHOICES = '<Choice value="circle"/><Choice value="square"/><Choice value="triangle"/>'


class Images:
    """Images by URI; a URI it does not hold is a broken image."""

    def __init__(self, images: dict[str, np.ndarray]):
        self.images = images

    def load(self, uri: str, task_id: object = None) -> np.ndarray:
        from ml_backend.inference.images import ImageError

        if uri not in self.images:
            raise ImageError(f"image not found: {uri}")
        return self.images[uri]


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {f"/u/{i}.jpg": np.asarray(make_image(rng, 64, 56).image) for i in range(3)}


def predictor(tmp_path, weights, images, **env: str) -> Predictor:
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state"), "MODEL_PATH": str(weights), "DEVICE": "cpu", "IMGSZ": "64", **env})
    return Predictor(settings, ModelHolder(str(weights), "cpu"), Images(images))


def _by_control(result: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for region in result:
        out.setdefault(region["from_name"], []).append(region)
    return out


def test_boxes_and_choices_of_their_own_classifier_in_one_prediction(tmp_path, tiny_weights, images) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_weights("classify"), root / "scenes.pt")
    config = (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="box" toName="image" model_score_threshold="0.0">{SHAPES}</RectangleLabels>'
        f'<Choices name="scene" toName="image" model_path="scenes.pt" model_score_threshold="0">{CHOICES}</Choices></View>'
    )
    p = predictor(tmp_path, tiny_weights("detect"), images, MODEL_ROOT=str(root))
    tasks = [{"id": i, "data": {"image": f"/u/{i}.jpg"}} for i in range(2)]
    out = p.predict(tasks, config)
    classifier = load_weights(str(root / "scenes.pt"))
    for task, pred in zip(tasks, out, strict=True):
        regions = _by_control(pred["result"])
        assert set(regions) <= {"box", "scene"} and len(regions["scene"]) == 1
        assert all(r["type"] == "rectanglelabels" and r["to_name"] == "image" for r in regions.get("box", []))
        probs = classifier.predict([images[task["data"]["image"]]], conf=0.0, imgsz=64, device="cpu")[0].probs
        top = classifier.names[int(np.argmax(probs))]
        assert regions["scene"][0]["value"] == {"choices": [top]}
        assert regions["scene"][0]["score"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert pred["score"] == pytest.approx(np.mean([r["score"] for r in pred["result"]]))
    check = p.check(config)
    assert not [w for w in check.warnings if "not filled" in w or "model_path" in w]


def test_a_second_image_that_cannot_be_had_fails_its_task_only(tmp_path, tiny_weights, images) -> None:
    config = (
        '<View><Image name="front" value="$front"/><Image name="back" value="$back"/>'
        f'<RectangleLabels name="a" toName="front" model_score_threshold="0.0">{SHAPES}</RectangleLabels>'
        f'<RectangleLabels name="b" toName="back" model_score_threshold="0.0">{SHAPES}</RectangleLabels></View>'
    )
    p = predictor(tmp_path, tiny_weights("detect"), images)
    tasks = [
        {"id": 1, "data": {"front": "/u/0.jpg", "back": "/u/1.jpg"}},
        {"id": 2, "data": {"front": "/u/0.jpg", "back": "/u/missing.jpg"}},
    ]
    ok, failed = p.predict(tasks, config)
    assert ok["result"] and {r["to_name"] for r in ok["result"]} <= {"front", "back"} and "error" not in ok
    assert failed["task"] == 2 and failed["error"] == "back: image not found: /u/missing.jpg"


@pytest.mark.parametrize(
    ("model_path", "fragment"),
    [
        ("../outside.pt", "is outside MODEL_ROOT"),
        ("/etc/passwd", "is outside MODEL_ROOT"),
        ("missing.pt", "there is no such file in MODEL_ROOT"),
        ("not-weights.pt", "could not be loaded as YOLO weights"),
    ],
)
def test_a_model_path_that_cannot_be_served_says_what_to_change(tmp_path, tiny_weights, images, model_path, fragment) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "not-weights.pt").write_text("hello")
    (tmp_path / "outside.pt").write_bytes(tiny_weights("classify").read_bytes())
    config = (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{SHAPES}</RectangleLabels>'
        f'<Choices name="scene" toName="image" model_path="{model_path}">{CHOICES}</Choices></View>'
    )
    p = predictor(tmp_path, tiny_weights("detect"), images, MODEL_ROOT=str(root))
    with pytest.raises(LabelConfigError, match=fragment):
        p.serve(config)


POSE_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{shapes}</RectangleLabels>'
    '<KeyPointLabels name="kp" toName="image" model_point_threshold="0">'
    '<Label value="apex" model_index="0"/><Label value="Left"/><Label value="right"/><Label value="tail"/></KeyPointLabels></View>'
)


def test_keypoints_are_grouped_under_their_objects_box(tmp_path, tiny_weights, images) -> None:
    weights = tiny_weights("pose")
    p = predictor(tmp_path, weights, images, SCORE_THRESHOLD="0.0")
    served = p.serve(POSE_CONFIG.format(shapes=SHAPES))
    assert served.keypoint_labels == {0: "apex", 1: "Left", 2: "right"}  # model_index, then the model's names; "tail" it lacks
    assert (served.coverage.known, served.coverage.missing) == (("apex", "Left", "right"), ("tail",))
    said = p.check(POSE_CONFIG.format(shapes=SHAPES)).plan(50, "random")  # what /setup and /health say
    assert said.startswith("keypoints tail match none of the keypoints of the model: not predicted nor learned")
    [pred] = p.predict([{"id": 1, "data": {"image": "/u/0.jpg"}}], POSE_CONFIG.format(shapes=SHAPES))
    raw = load_weights(str(weights)).predict([images["/u/0.jpg"]], conf=0.0, imgsz=64, device="cpu")[0]
    boxes = [r for r in pred["result"] if r["type"] == "rectanglelabels"]
    points = [r for r in pred["result"] if r["type"] == "keypointlabels"]
    assert len(boxes) == len(raw.scores) > 0 and len(points) == 3 * len(boxes)
    for i, box in enumerate(boxes):
        assert box["from_name"] == "box"
        mine = [r for r in points if r["parentID"] == box["id"]]
        assert [r["value"]["keypointlabels"] for r in mine] == [["apex"], ["Left"], ["right"]]
        for k, r in enumerate(mine):
            x, y = raw.keypoints[i, k]
            assert (r["value"]["x"], r["value"]["y"]) == pytest.approx((x / raw.width * 100, y / raw.height * 100))
            assert r["score"] == pytest.approx(raw.keypoint_conf[i, k]) and r["from_name"] == "kp"


def test_keypoints_without_a_parent_box_and_a_point_threshold(tmp_path, tiny_weights, images) -> None:
    config = (
        '<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image" model_point_threshold="0.5">'
        '<Label value="top"/><Label value="left"/><Label value="right"/></KeyPointLabels></View>'
    )
    p = predictor(tmp_path, tiny_weights("pose"), images, SCORE_THRESHOLD="0.0")
    [pred] = p.predict([{"id": 1, "data": {"image": "/u/1.jpg"}}], config)
    raw = load_weights(str(tiny_weights("pose"))).predict([images["/u/1.jpg"]], conf=0.0, imgsz=64, device="cpu")[0]
    assert all(r["type"] == "keypointlabels" and "parentID" not in r for r in pred["result"])
    assert len(pred["result"]) == int((raw.keypoint_conf >= 0.5).sum()) > 0


def test_brush_masks_from_a_segment_model(tmp_path, tiny_weights, images) -> None:
    config = f'<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">{SHAPES}</BrushLabels></View>'
    weights = tiny_weights("segment")
    p = predictor(tmp_path, weights, images, SCORE_THRESHOLD="0.0")
    [pred] = p.predict([{"id": 1, "data": {"image": "/u/2.jpg"}}], config)
    raw = load_weights(str(weights)).predict([images["/u/2.jpg"]], conf=0.0, imgsz=64, device="cpu")[0]
    outlines = [poly for poly in raw.polygons if len(poly) >= 3]
    assert len(pred["result"]) == len(outlines) > 0
    for region, poly in zip(pred["result"], outlines, strict=True):
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert region["value"]["rle"] == brush_rle(poly, raw.width, raw.height)
        mask = decode_rle(region["value"]["rle"]).reshape(raw.height, raw.width, 4)[:, :, 3]
        assert mask.any() and region["value"]["brushlabels"][0] in ("circle", "square", "triangle")


def test_setup_reads_a_controls_task_from_its_checkpoint_without_loading_it(tmp_path, tiny_weights, images) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_weights("classify"), root / "scenes.pt")
    config = (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{SHAPES}</RectangleLabels>'
        f'<Choices name="scene" toName="image" model_path="scenes.pt">{CHOICES}</Choices></View>'
    )
    p = predictor(tmp_path, tiny_weights("detect"), images, MODEL_ROOT=str(root))
    assert p.check(config).warnings == () and p.control_models == {}  # nothing of scenes.pt loaded for /setup
    assert p.serve(config).extras[0].model.task == "classify" and list(p.control_models) == [root / "scenes.pt"]


def test_a_retrained_control_model_that_does_not_load_falls_back_to_its_file(tmp_path, tiny_weights, images) -> None:
    from ml_backend.inference.versions import ModelRegistry

    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_weights("classify"), root / "scenes.pt")
    p = predictor(tmp_path, tiny_weights("detect"), images, MODEL_ROOT=str(root))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    registry = ModelRegistry(p.settings.paths.control_models(5, "scene"))
    registry.promote(registry.add(broken, parent="scenes-1", metrics={"model_path": "scenes.pt", "control": "scene"}).version)
    config = (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{SHAPES}</RectangleLabels>'
        f'<Choices name="scene" toName="image" model_path="scenes.pt">{CHOICES}</Choices></View>'
    )
    assert p.serve(config, project=5).extras[0].model.version.startswith("scenes-")
