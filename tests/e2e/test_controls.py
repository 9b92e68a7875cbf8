"""Several controls and keypoints, end to end: a real Label Studio 1.23 stores what the backend predicts."""

from __future__ import annotations

import shutil

import pytest
import requests

from .conftest import start_backend, stop_backend

pytestmark = pytest.mark.e2e

SHAPES = '<Label value="circle"/><Label value="square"/><Label value="triangle"/>'


def _predictions(ls_client, pid: int, version: str) -> list[list[dict]]:
    ls_client.retrieve_predictions(pid)
    out = []
    for task in ls_client.list_tasks(pid):
        ours = [p for p in ls_client.task_predictions(task["id"]) if p["model_version"] == version]
        assert len(ours) == 1, f"task {task['id']} has predictions {ours}"
        out.append(ours[0]["result"])
    return out


def test_boxes_and_choices_from_two_models_in_one_prediction(
    ls_client, label_studio, pat, tmp_path, detect_weights, tiny_weights, shape_files
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_weights("classify"), root / "scenes.pt")
    config = (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="box" toName="image">{SHAPES}</RectangleLabels>'
        '<Choices name="scene" toName="image" model_path="scenes.pt" model_score_threshold="0">'
        '<Choice value="circle"/><Choice value="square"/><Choice value="triangle"/></Choices></View>'
    )
    env = {
        "MODEL_PATH": str(detect_weights), "MODEL_ROOT": str(root), "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat, "IMGSZ": "96", "SCORE_THRESHOLD": "0.3",
    }  # fmt: skip
    b = start_backend(tmp_path, env)
    try:
        pid = ls_client.create_project("e2e boxes and choices", config)["id"]
        ls_client.upload_files(pid, [str(p) for p, _ in shape_files[:3]])
        ml = ls_client.add_ml_backend(pid, b.url, title="two models")
        assert ml["state"] == "CO", ml
        setup = requests.post(f"{b.url}/setup", json={"project": f"{pid}.0", "schema": config}, timeout=10).json()
        assert "warnings" not in setup, setup  # both controls are filled
        version = requests.get(f"{b.url}/health", timeout=10).json()["model_version"]
        boxes = 0
        for result in _predictions(ls_client, pid, version):
            scene = [r for r in result if r["from_name"] == "scene"]
            assert len(scene) == 1 and scene[0]["type"] == "choices" and scene[0]["value"]["choices"][0] in {"circle", "square", "triangle"}
            rects = [r for r in result if r["from_name"] == "box"]
            assert all(r["type"] == "rectanglelabels" for r in rects) and len(rects) + 1 == len(result)
            boxes += len(rects)
        assert boxes >= 3, "the detector finds the shapes"
    finally:
        stop_backend(b)


def test_keypoints_of_a_pose_model_under_their_boxes(ls_client, label_studio, pat, tmp_path, tiny_weights, shape_files) -> None:
    config = (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{SHAPES}</RectangleLabels>'
        '<KeyPointLabels name="kp" toName="image" model_point_threshold="0">'
        '<Label value="top"/><Label value="left"/><Label value="right"/></KeyPointLabels></View>'
    )
    env = {
        "MODEL_PATH": str(tiny_weights("pose")), "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat,
        "IMGSZ": "96", "SCORE_THRESHOLD": "0.001",
    }  # fmt: skip
    b = start_backend(tmp_path, env)
    try:
        pid = ls_client.create_project("e2e keypoints", config)["id"]
        ls_client.upload_files(pid, [str(p) for p, _ in shape_files[:2]])
        assert ls_client.add_ml_backend(pid, b.url, title="pose")["state"] == "CO"
        version = requests.get(f"{b.url}/health", timeout=10).json()["model_version"]
        objects = 0
        for result in _predictions(ls_client, pid, version):
            boxes = {r["id"]: r for r in result if r["type"] == "rectanglelabels"}
            points = [r for r in result if r["type"] == "keypointlabels"]
            assert all(r["from_name"] == "box" for r in boxes.values()) and all(r["from_name"] == "kp" for r in points)
            for box_id in boxes:  # each object's three keypoints, stored by Label Studio with their parent
                mine = sorted(r["value"]["keypointlabels"][0] for r in points if r.get("parentID") == box_id)
                assert mine == ["left", "right", "top"]
            assert len(points) == 3 * len(boxes)
            objects += len(boxes)
        assert objects > 0
    finally:
        stop_backend(b)


def test_a_video_gets_tracked_boxes(ls_client, label_studio, pat, tmp_path, detect_weights) -> None:
    from tests.inference.test_video import TRACK, write_video

    video = tmp_path / "shapes.mp4"
    write_video(video)
    env = {
        "MODEL_PATH": str(detect_weights), "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat,
        "IMGSZ": "96", "SCORE_THRESHOLD": "0.25",
    }  # fmt: skip
    b = start_backend(tmp_path, env)
    try:
        pid = ls_client.create_project("e2e video", TRACK)["id"]
        ls_client.upload_files(pid, [str(video)])
        assert ls_client.add_ml_backend(pid, b.url, title="tracking")["state"] == "CO"
        version = requests.get(f"{b.url}/health", timeout=10).json()["model_version"]
        [result] = _predictions(ls_client, pid, version)
        assert result and all(r["type"] == "videorectangle" and r["value"]["framesCount"] == 12 for r in result)
        assert all(r["value"]["sequence"][0]["frame"] >= 1 for r in result)
    finally:
        stop_backend(b)
