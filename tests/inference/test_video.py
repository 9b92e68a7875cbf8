"""Video tasks: tracked boxes into <VideoRectangle>, frame classes into <TimelineLabels> (short synthetic videos)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ml_backend.inference.images import ImageError
from ml_backend.inference.label_config import LabelConfigError, plan_targets
from ml_backend.inference.model import ModelHolder, load_weights
from ml_backend.inference.predictor import Predictor
from ml_backend.inference.video import frame_labels, run_classifier, run_tracker, timeline_regions, track_regions, video_file
from ml_backend.settings import Settings
from ml_backend.tools.synthetic import _polygon_for

LABELS = '<Labels name="kind" toName="video"><Label value="circle"/><Label value="square"/><Label value="triangle"/></Labels>'
TRACK = f'<View>{LABELS}<Video name="video" value="$video" framerate="10"/><VideoRectangle name="box" toName="video" model_tracker="bytetrack"/></View>'
TIMELINE = (
    '<View><Video name="video" value="$video" frameRate="10"/><TimelineLabels name="tl" toName="video">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></TimelineLabels></View>'
)


def write_video(path, frames: int = 12, size: tuple[int, int] = (96, 80)) -> None:
    """A square moving right, then (from frame 6) a circle in its place."""
    import cv2
    from PIL import Image, ImageDraw

    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for i in range(frames):
        img = Image.new("RGB", (w, h), (20, 20, 30))
        poly = _polygon_for(1 if i < 6 else 0, 25 + 3 * i, 40, 16, 0.0)
        ImageDraw.Draw(img).polygon([tuple(p) for p in poly], fill=(220, 60, 60))
        out.write(np.asarray(img)[:, :, ::-1].copy())
    out.release()


class Videos:
    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def fetch_bytes(self, uri: str, task_id: object = None) -> bytes:
        if uri not in self.files:
            raise ImageError(f"image not found (404) at {uri}")
        return self.files[uri]

    def load(self, uri: str, task_id: object = None) -> np.ndarray:
        raise AssertionError("videos are not decoded as images")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    write_video(path)
    return path.read_bytes()


def predictor(tmp_path, weights, video: bytes, **env: str) -> Predictor:
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state"), "DEVICE": "cpu", "IMGSZ": "96", "SCORE_THRESHOLD": "0.25", **env})
    files = {"/data/upload/1/shapes.mp4": video, "/data/upload/1/broken.mp4": b"not a video"}
    return Predictor(settings, ModelHolder(str(weights), "cpu"), Videos(files))


def test_video_controls_are_planned_with_their_labels_and_tracker() -> None:
    box = plan_targets(TRACK, "detect").primary
    assert (box.kind, box.result_type, box.labels, box.tracker, box.value_key) == (
        "video_rectangle", "videorectangle", ("circle", "square", "triangle"), "bytetrack", "video"
    )  # fmt: skip
    tl = plan_targets(TIMELINE, "classify").primary
    assert (tl.kind, tl.result_type, tl.video) == ("timeline", "timelinelabels", True)


@pytest.mark.parametrize(
    ("config", "task", "fragment"),
    [
        (
            '<View><Video name="video" value="$video"/><VideoRectangle name="box" toName="video"/></View>',
            "detect",
            "takes its labels from a <Labels",
        ),
        (TRACK.replace("bytetrack", "deepsort"), "detect", 'model_tracker="deepsort": use botsort or bytetrack'),
        (TRACK, "segment", "needs <PolygonLabels> or <BrushLabels> or <RectangleLabels> on an <Image>"),
    ],
)
def test_video_configs_that_cannot_be_served_say_what_to_change(config, task, fragment) -> None:
    with pytest.raises(LabelConfigError, match=re.escape(fragment)):
        plan_targets(config, task)


def test_tracked_objects_become_one_region_each(tmp_path, detect_weights, video) -> None:
    p = predictor(tmp_path, detect_weights, video)
    out = p.predict(
        [{"id": 1, "data": {"video": "/data/upload/1/shapes.mp4"}}, {"id": 2, "data": {"video": "/data/upload/1/broken.mp4"}}], TRACK
    )
    ok, broken = out
    assert broken["task"] == 2 and "not a video" in broken["error"]
    regions = ok["result"]
    assert regions and all(r["type"] == "videorectangle" and r["from_name"] == "box" and r["to_name"] == "video" for r in regions)
    # The known answer: Ultralytics' own tracking of the same file, turned into regions.
    model = load_weights(str(detect_weights))
    with video_file(video) as (path, info):
        assert (info.width, info.height, info.frames, info.fps) == (96, 80, 12, 10.0)
        frames = run_tracker(model.on_video()[0], path, "bytetrack", 0.25, 96, "cpu", 1800)
    expected = track_regions(frames, info, p.serve(TRACK).target, {0: "circle", 1: "square", 2: "triangle"}, 0.25, iter(range(99)))
    assert [r["value"] for r in regions] == [r["value"] for r in expected]
    for r in regions:
        seq = r["value"]["sequence"]
        assert [k["frame"] for k in seq] == sorted({k["frame"] for k in seq}) and 1 <= seq[0]["frame"] <= seq[-1]["frame"] <= 12
        assert seq[-1]["enabled"] is False and r["value"]["framesCount"] == 12 and r["value"]["duration"] == pytest.approx(1.2)
        assert r["value"]["labels"][0] in ("circle", "square", "triangle") and 0.25 <= r["score"] <= 1


def test_a_classifier_labels_runs_of_frames(tmp_path, tiny_weights, video) -> None:
    weights = tiny_weights("classify")
    p = predictor(tmp_path, weights, video, SCORE_THRESHOLD="0.0")
    [pred] = p.predict([{"id": 1, "data": {"video": "/data/upload/1/shapes.mp4"}}], TIMELINE)
    with video_file(video) as (path, _):
        probs = run_classifier(load_weights(str(weights)).on_video()[0], path, 96, "cpu", 1800)
    labels = frame_labels(probs, {0: "circle", 1: "square", 2: "triangle"}, 0.0)
    assert len(labels) == 12 and None not in labels
    ranges = [(r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"], r["value"]["timelinelabels"][0]) for r in pred["result"]]
    assert ranges == [
        (r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"], r["value"]["timelinelabels"][0])
        for r in timeline_regions(labels, p.serve(TIMELINE).target, iter(range(99)))
    ]
    covered = [f for start, end, _ in ranges for f in range(start, end + 1)]
    assert covered == list(range(1, 13))  # every frame in exactly one run


def test_frames_past_video_max_frames_are_not_predicted(tmp_path, tiny_weights, video) -> None:
    p = predictor(tmp_path, tiny_weights("classify"), video, SCORE_THRESHOLD="0.0", VIDEO_MAX_FRAMES="5")
    [pred] = p.predict([{"id": 1, "data": {"video": "/data/upload/1/shapes.mp4"}}], TIMELINE)
    assert max(r["value"]["ranges"][0]["end"] for r in pred["result"]) == 5


def test_video_projects_are_predicted_not_scored(tmp_path, detect_weights, video) -> None:
    from ml_backend.scoring.pool import score_tasks

    p = predictor(tmp_path, detect_weights, video)
    pooled = score_tasks([{"id": 1, "data": {"video": "/data/upload/1/shapes.mp4"}}], p.serve(TRACK), p, p.settings)
    assert (pooled.scores, pooled.predictions, pooled.errors) == ([], [], {})


def test_the_moving_square_is_tracked_across_frames(tmp_path, detect_weights, video) -> None:
    """The good shape detector follows the square: one track whose box moves right by about 3 pixels a frame."""
    with video_file(video) as (path, info):
        frames = run_tracker(load_weights(str(detect_weights)).on_video()[0], path, "botsort", 0.25, 96, "cpu", 1800)
    assert frames, "the detector finds the shapes"
    first = {int(t): f.boxes_xyxy[i] for f in frames[:1] for i, t in enumerate(f.track_ids)}
    later = [(f.index, f.boxes_xyxy[list(f.track_ids).index(t)]) for f in frames[1:5] for t in first if t in f.track_ids]
    assert later, "the first frame's object keeps its track id"
    for index, box in later:
        t = next(iter(first))
        moved = (box[0] + box[2]) / 2 - (first[t][0] + first[t][2]) / 2
        assert math.isclose(moved, 3 * index, abs_tol=4)


def test_frames_are_numbered_at_the_videos_frame_rate_as_label_studio_numbers_them(tmp_path, tiny_weights, video) -> None:
    """A 10 fps file in a <Video> without frameRate (Label Studio's 24): frame i of the file is Label Studio's floor(i * 2.4) + 1."""
    p = predictor(tmp_path, tiny_weights("classify"), video, SCORE_THRESHOLD="0.0")
    [pred] = p.predict([{"id": 1, "data": {"video": "/data/upload/1/shapes.mp4"}}], TIMELINE.replace(' frameRate="10"', ""))
    ends = sorted(r["value"]["ranges"][0]["end"] for r in pred["result"])
    starts = sorted(r["value"]["ranges"][0]["start"] for r in pred["result"])
    assert starts[0] == 1 and ends[-1] == 28  # the video's 1.2 s at 24 frames a second: Label Studio's frames 1-28 (framesCount 29)
    assert set(starts) <= {int(i * 2.4) + 1 for i in range(12)}
    covered = sorted(f for r in pred["result"] for f in range(r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"] + 1))
    assert covered == list(range(1, 29))  # no frame left unlabeled between runs


def test_a_frame_rate_from_the_tasks_data(tmp_path, tiny_weights, video) -> None:
    """<Video frameRate="$fps">: each task's own rate (here 20: file frame i is Label Studio's 2i + 1); without it, the file's."""
    p = predictor(tmp_path, tiny_weights("classify"), video, SCORE_THRESHOLD="0.0")
    config = TIMELINE.replace('frameRate="10"', 'frameRate="$fps"')
    with_rate, without = p.predict(
        [{"id": 1, "data": {"video": "/data/upload/1/shapes.mp4", "fps": "20"}}, {"id": 2, "data": {"video": "/data/upload/1/shapes.mp4"}}],
        config,
    )
    assert max(r["value"]["ranges"][0]["end"] for r in with_rate["result"]) == 24
    assert max(r["value"]["ranges"][0]["end"] for r in without["result"]) == 12


def test_a_timeline_keeps_its_own_labels_beside_a_labels_tag() -> None:
    config = (
        '<View><Video name="video" value="$video"/><Labels name="objects" toName="video"><Label value="car"/></Labels>'
        '<TimelineLabels name="tl" toName="video"><Label value="walk"/><Label value="run"/></TimelineLabels></View>'
    )
    assert plan_targets(config, "classify").primary.labels == ("walk", "run")


def test_images_and_a_video_in_one_config_are_predicted_and_only_the_image_scored(tmp_path, detect_weights, video) -> None:
    from ml_backend.scoring.pool import score_tasks

    config = TRACK.replace("<View>", '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
                           '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels>')  # fmt: skip
    p = predictor(tmp_path, detect_weights, video)
    frame = np.asarray(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (96, 80), (20, 20, 30)))
    p.fetcher.load = lambda uri, task_id=None: frame  # type: ignore[attr-defined, method-assign]
    task = {"id": 1, "data": {"image": "/data/upload/1/a.jpg", "video": "/data/upload/1/shapes.mp4"}}
    [pred] = p.predict([task], config)
    assert {r["type"] for r in pred["result"]} == {"videorectangle"}  # an empty frame has no box; the video has tracks
    pooled = score_tasks([task], p.serve(config), p, p.settings)
    assert pooled.errors == {} and [s.task for s in pooled.scores] == [1]
    assert all(r["type"] == "rectanglelabels" for r in pooled.predictions[0]["result"])  # scoring publishes the image's
