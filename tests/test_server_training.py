"""The retraining routes of the real Flask app: webhooks, the train button, status, versions."""

from __future__ import annotations

import pytest

from ml_backend.server import create_app

from .jobs.test_training_jobs import FakeRunner
from .test_server import RECT_CFG, make_settings


@pytest.fixture()
def app_and_runner(tmp_path, detect_weights):
    def make(results=None, open_gate=True, **env):
        runner = FakeRunner(results, open_gate=open_gate)
        app = create_app(make_settings(tmp_path, detect_weights, RETRAIN_MIN_NEW_LABELS=3, **env), warm_up=False, training_runner=runner)
        return app, runner

    return make


def label(aid: int, project: int = 4) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project, "title": "p"}, "annotation": {"id": aid, "updated_at": "t"}}


def test_label_webhooks_count_towards_training_and_start_it(app_and_runner) -> None:
    app, runner = app_and_runner(open_gate=False)
    client = app.test_client()
    bodies = [client.post("/webhook", json=label(i)).get_json() for i in (1, 2, 2)]
    assert [b["labels_since_training"] for b in bodies] == [1, 2, 2]  # a repeated delivery counts once
    assert all(b["training"] == "idle" for b in bodies)
    third = client.post("/webhook", json=label(3)).get_json()
    assert third["labels_since_training"] == 3 and third["training"] in ("queued", "training")
    status = client.get("/training?project=4").get_json()
    assert status["state"] in ("queued", "training") and "3 new or changed labels" in status["reason"]
    assert status["retrain_min_new_labels"] == 3
    runner.gate.set()
    training = app.extensions["ml_backend"].training
    assert training.idle(60)
    assert [r.project_id for r in runner.requests] == [4]
    assert client.get("/training").get_json()["projects"][0]["project"] == 4


def test_setup_takes_the_projects_threshold_from_extra_params(app_and_runner) -> None:
    app, runner = app_and_runner(open_gate=False)
    client = app.test_client()
    r = client.post("/setup", json={"project": "4.1700000000", "schema": RECT_CFG, "extra_params": {"retrain_min_new_labels": 5}})
    assert r.status_code == 200
    status = client.get("/training?project=4").get_json()
    assert status["retrain_min_new_labels"] == 5 and "extra_params" in status["retrain_threshold_from"]
    assert [client.post("/webhook", json=label(i)).get_json()["training"] for i in range(1, 5)] == ["idle"] * 4  # 3 is the default
    assert client.post("/webhook", json=label(5)).get_json()["training"] in ("queued", "training")
    runner.gate.set()
    assert app.extensions["ml_backend"].training.idle(60)

    client.post("/setup", json={"project": "4.1700000000", "schema": RECT_CFG, "extra_params": None})  # removed in Label Studio
    assert client.get("/training?project=4").get_json()["retrain_min_new_labels"] == 3


@pytest.mark.parametrize(
    ("extra_params", "fragment"),
    [({"retrain_min_new_labels": -2}, "whole number from 0"), ("{oops", "must be a JSON object")],
)
def test_setup_refuses_bad_extra_params_and_keeps_the_threshold(app_and_runner, extra_params, fragment) -> None:
    app, _ = app_and_runner()
    client = app.test_client()
    client.post("/setup", json={"project": "4.1", "schema": RECT_CFG, "extra_params": {"retrain_min_new_labels": 7}})
    r = client.post("/setup", json={"project": "4.1", "schema": RECT_CFG, "extra_params": extra_params})
    assert r.status_code == 400 and fragment in r.get_json()["error"] and fragment in r.status  # Label Studio shows the reason phrase
    assert client.get("/training?project=4").get_json()["retrain_min_new_labels"] == 7


def test_the_train_button_and_post_train_start_a_run(app_and_runner) -> None:
    app, runner = app_and_runner()
    client = app.test_client()
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 9}})
    assert r.status_code == 200 and r.get_json()["training"] in ("queued", "training", "idle")
    assert app.extensions["ml_backend"].training.idle(60)
    r = client.post("/train", json={"project": "9.1700000000", "annotations": []})
    assert r.status_code == 200
    assert app.extensions["ml_backend"].training.idle(60)
    assert [req.project_id for req in runner.requests] == [9, 9]
    assert "START_TRAINING" in runner.requests[0].reason and "POST /train" in runner.requests[1].reason


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("post", "/webhook", {"action": "START_TRAINING"}, "START_TRAINING needs 'project'"),
        ("post", "/train", {"annotations": []}, "'project'"),
        ("post", "/train", {"project": 1.5}, "'project'"),  # not project 1
        ("get", "/training?project=abc", None, "/training?project=ID"),
        ("get", "/versions?project=", None, "/versions?project=ID"),
    ],
)
def test_bad_training_requests_say_what_to_send(app_and_runner, method, path, body, fragment) -> None:
    app, _ = app_and_runner()
    resp = getattr(app.test_client(), method)(path, json=body)
    assert resp.status_code == 400 and fragment in resp.get_json()["error"]


def test_after_a_promotion_the_project_is_served_and_reported_its_new_version(app_and_runner) -> None:
    app, runner = app_and_runner(["better"])
    client = app.test_client()
    base = client.post("/setup", json={"project": "4.1", "schema": RECT_CFG}).get_json()["model_version"]
    rescored = []
    app.extensions["ml_backend"].scoring.request_full = lambda pid, retire=(): rescored.append((pid, list(retire)))
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 4}})
    assert app.extensions["ml_backend"].training.idle(60)
    status = client.get("/training?project=4").get_json()
    new = status["model_version"]
    assert new != base and status["last_run"]["promoted"] is True
    assert client.post("/setup", json={"project": "4.1", "schema": RECT_CFG}).get_json()["model_version"] == new
    assert client.post("/setup", json={"project": "5.1", "schema": RECT_CFG}).get_json()["model_version"] == base
    versions = client.get("/versions?project=4").get_json()
    assert versions["versions"] == [base, new] and versions["model_version"] == new and versions["base_version"] == base
    assert versions["details"][0]["parent"] == base and versions["details"][0]["served"] is True
    assert "weights" not in versions["details"][0]  # no server paths in the answer
    assert client.get("/versions").get_json()["model_version"] == base
    assert rescored == [(4, [base])]  # the pool is re-scored; the old version's predictions retire
