"""`python -m ml_backend connect` against a real Label Studio 1.23: one command, idempotent."""

from __future__ import annotations

import pytest
import requests

from integrations.connect import webhook_url_refusal
from integrations.label_studio import LabelStudioError
from integrations.queue_view import QUEUE_VIEW_TITLE
from ml_backend.__main__ import main

from .conftest import start_backend, stop_backend
from .test_label_studio import CONFIG
from .test_retraining import TRAIN_ENV, make_project, training_status, wait_for

pytestmark = pytest.mark.e2e


def _state(client, pid: int) -> tuple[list[dict], dict, list[dict]]:
    views = [v for v in client.get("/api/dm/views", params={"project": pid}) if (v.get("data") or {}).get("title") == QUEUE_VIEW_TITLE]
    return client.list_ml_backends(pid), client.get_project(pid), views


def test_connect_sets_up_a_project_once_and_a_second_run_changes_nothing(
    ls_client, label_studio, pat, backend, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)
    monkeypatch.setenv("RETRAIN_MIN_NEW_LABELS", "25")
    pid = ls_client.create_project("e2e connect", CONFIG)["id"]

    assert main(["connect", "--project", str(pid), "--backend-url", backend.url + "/"]) == 0
    first = capsys.readouterr().out
    assert "registered the ML backend" in first and f'created the "{QUEUE_VIEW_TITLE}" tab' in first and "connected." in first
    backends, project, views = _state(ls_client, pid)
    # interactive pre-annotation off: the backend does not use an interactive request's context
    assert [(b["url"].rstrip("/"), b["is_interactive"]) for b in backends] == [(backend.url, False)]
    assert project["sampling"] == "Uncertainty sampling"
    assert project["show_collab_predictions"] is True and project["evaluate_predictions_automatically"] is True
    assert project["min_annotations_to_start_training"] == 0  # Label Studio's own trigger off: the backend counts
    served = requests.get(f"{backend.url}/training", params={"project": pid}, timeout=30).json()["retrain_min_new_labels"]
    assert served != 25  # this shell's setting is not the backend's: connect reports the backend's own word
    assert f"after every {served} label changes (RETRAIN_MIN_NEW_LABELS, confirmed by the backend" in first
    assert len(views) == 1 and views[0]["data"]["ordering"] == ["tasks:predictions_score"]

    assert main(["connect", "--project", str(pid), "--backend-url", backend.url]) == 0
    second = capsys.readouterr().out
    assert "already connected, nothing changed" in second and "registered the ML backend" not in second and "created" not in second
    again = _state(ls_client, pid)
    assert [b["id"] for b in again[0]] == [b["id"] for b in backends]  # nothing doubled
    assert [v["id"] for v in again[2]] == [v["id"] for v in views]
    assert again[1]["min_annotations_to_start_training"] == 0


@pytest.mark.parametrize(
    ("project", "url", "message"),
    [
        (999_999, None, "does not exist"),
        (None, "http://127.0.0.1:9", "could not connect http://127.0.0.1:9"),  # nothing listens there
    ],
)
def test_connect_errors_say_what_to_fix(ls_client, label_studio, pat, backend, monkeypatch, capsys, project, url, message) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)
    pid = project or ls_client.create_project("e2e connect error", CONFIG)["id"]
    assert main(["connect", "--project", str(pid), "--backend-url", url or backend.url]) == 1
    err = capsys.readouterr().err
    assert message in err and pat not in err
    if project is None:
        assert ls_client.list_ml_backends(pid) == []  # a failed connection leaves nothing behind


@pytest.mark.parametrize(("host", "accepted"), [("backend", False), ("ml_backend", False), ("127.0.0.1", True), ("localhost", True)])
def test_label_studio_refuses_the_webhook_hosts_connect_refuses(ls_client, host, accepted) -> None:
    """Label Studio's webhook URL check (Django's) refuses a host without a dot, such as a docker compose service
    name, and Label Studio then silently makes no webhook for such an ML backend: connect refuses those URLs first."""
    pid = ls_client.create_project(f"e2e webhook host {host}", CONFIG)["id"]
    url = f"http://{host}:9090"
    try:
        hook = ls_client.post("/api/webhooks", json={"project": pid, "url": f"{url}/webhook", "send_payload": True})
    except LabelStudioError as exc:
        assert exc.status == 400 and "Enter a valid URL" in str(exc), exc
        made = False
    else:
        ls_client.request("DELETE", f"/api/webhooks/{hook['id']}")
        made = True
    assert made is accepted
    assert (webhook_url_refusal(url) is None) is accepted


def test_connect_sets_the_projects_retraining_threshold_and_the_nth_label_starts_a_run(
    ls_client, label_studio, pat, detect_weights, tmp_path, monkeypatch, capsys
) -> None:
    backend = start_backend(
        tmp_path,
        {
            "MODEL_PATH": str(detect_weights),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "RETRAIN_MIN_NEW_LABELS": "100",
            **TRAIN_ENV,
        },
    )
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)
    monkeypatch.setenv("RETRAIN_MIN_NEW_LABELS", "100")
    try:
        pid, truth = make_project(ls_client, tmp_path, "e2e connect threshold", 4, seed=5)
        assert main(["connect", "--project", str(pid), "--backend-url", backend.url, "--retrain-threshold", "3"]) == 0
        out = capsys.readouterr().out
        assert "after every 3 label changes" in out and "confirmed by the backend" in out, out
        [ml] = ls_client.list_ml_backends(pid)
        assert ml["extra_params"] == {"retrain_min_new_labels": 3}  # stored in Label Studio, editable there
        status = training_status(backend, pid)
        assert status["retrain_min_new_labels"] == 3 and "extra_params" in status["retrain_threshold_from"]

        assert main(["connect", "--project", str(pid), "--backend-url", backend.url, "--retrain-threshold", "3"]) == 0
        assert "already connected, nothing changed" in capsys.readouterr().out
        assert main(["connect", "--project", str(pid), "--backend-url", backend.url]) == 0  # no flag: the threshold is kept
        out = capsys.readouterr().out
        assert "nothing changed" in out and "after every 3 label changes" in out

        tasks = sorted(truth)
        for tid in tasks[:2]:
            ls_client.create_annotation(tid, truth[tid])
        wait_for(lambda: training_status(backend, pid)["labels_since_training"] == 2, 120, "2 label webhooks")
        assert training_status(backend, pid)["state"] == "idle"
        ls_client.create_annotation(tasks[2], truth[tasks[2]])  # the 3rd: a run starts (the backend's own default is 100)
        started = wait_for(lambda: ((s := training_status(backend, pid))["state"] != "idle" or s["runs"]) and s, 120, "a training run")
        assert "3 new or changed labels (retrain_min_new_labels=3)" in started["reason"], started

        assert main(["connect", "--project", str(pid), "--backend-url", backend.url, "--retrain-threshold", "0"]) == 0
        out = capsys.readouterr().out
        assert "updated retrain_min_new_labels=0" in out and "only on Label Studio's train button" in out, out
        assert training_status(backend, pid)["retrain_min_new_labels"] == 0
        assert [b["id"] for b in ls_client.list_ml_backends(pid)] == [ml["id"]]  # updated in place, nothing doubled
    finally:
        stop_backend(backend)
    assert pat not in backend.log()


def test_with_basic_auth_and_a_webhook_secret_label_studios_webhooks_and_train_button_get_in(
    ls_client, label_studio, pat, detect_weights, tmp_path, monkeypatch, capsys
) -> None:
    secrets = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pass-9f2c", "WEBHOOK_SECRET": "hook-77a1"}
    backend = start_backend(
        tmp_path,
        {
            "MODEL_PATH": str(detect_weights),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "RETRAIN_MIN_NEW_LABELS": "100",
            **TRAIN_ENV,
            **secrets,
        },
    )
    for k, v in {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat, **secrets}.items():
        monkeypatch.setenv(k, v)
    auth = (secrets["BASIC_AUTH_USER"], secrets["BASIC_AUTH_PASS"])

    def status(pid: int) -> dict:
        return requests.get(f"{backend.url}/training", params={"project": pid}, auth=auth, timeout=30).json()

    try:
        pid, truth = make_project(ls_client, tmp_path, "e2e connect secrets", 3, seed=9)
        assert main(["connect", "--project", str(pid), "--backend-url", backend.url]) == 0
        out = capsys.readouterr().out
        assert "X-Webhook-Secret header and the Authorization header" in out
        assert secrets["BASIC_AUTH_PASS"] not in out and secrets["WEBHOOK_SECRET"] not in out  # credentials are never printed
        assert main(["connect", "--project", str(pid), "--backend-url", backend.url]) == 0
        assert "already sends" in capsys.readouterr().out

        tid = sorted(truth)[0]
        ls_client.create_annotation(tid, truth[tid])  # Label Studio's own webhook, with the headers connect set
        wait_for(lambda: status(pid)["labels_since_training"] == 1, 120, "the label webhook to get in")
        forged = requests.post(
            f"{backend.url}/webhook",
            json={"action": "ANNOTATION_CREATED", "project": {"id": pid}, "annotation": {"id": 999_999, "updated_at": "x"}},
            timeout=5,
        )
        assert forged.status_code == 401 and "X-Webhook-Secret" in forged.json()["error"]
        assert status(pid)["labels_since_training"] == 1  # the forged event counted nothing

        [ml] = ls_client.list_ml_backends(pid)
        ls_client.post(f"/api/ml/{ml['id']}/train", json={"use_ground_truth": False})  # the train button: basic auth, no secret header
        started = wait_for(lambda: ((s := status(pid))["state"] != "idle" or s["runs"]) and s, 120, "the train button's run")
        assert "START_TRAINING" in started["reason"], started
    finally:
        stop_backend(backend)
    log = backend.log()
    assert all(v not in log for v in [pat, secrets["BASIC_AUTH_PASS"], secrets["WEBHOOK_SECRET"]]), (
        "no credential may reach the backend log"
    )
