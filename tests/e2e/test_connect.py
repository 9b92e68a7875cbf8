"""`python -m ml_backend connect` against a real Label Studio 1.23: one command, idempotent."""

from __future__ import annotations

import pytest

from ml_backend.cli import main
from ml_backend.scoring import QUEUE_VIEW_TITLE

from .test_label_studio import CONFIG

pytestmark = pytest.mark.e2e


def _state(client, pid: int) -> tuple[list[dict], dict, list[dict]]:
    views = [v for v in client.get("/api/dm/views", params={"project": pid}) if (v.get("data") or {}).get("title") == QUEUE_VIEW_TITLE]
    return client.list_ml_backends(pid), client.get_project(pid), views


def test_connect_sets_up_a_project_once_and_a_second_run_changes_nothing(ls_client, label_studio, pat, backend, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)
    monkeypatch.setenv("RETRAIN_MIN_NEW_LABELS", "25")
    pid = ls_client.create_project("e2e connect", CONFIG)["id"]

    assert main(["connect", "--project", str(pid), "--backend-url", backend.url + "/"]) == 0
    first = capsys.readouterr().out
    assert "registered the ML backend" in first and f"created the \"{QUEUE_VIEW_TITLE}\" tab" in first and "connected." in first
    backends, project, views = _state(ls_client, pid)
    assert [(b["url"].rstrip("/"), b["is_interactive"]) for b in backends] == [(backend.url, True)]
    assert project["sampling"] == "Uncertainty sampling"
    assert project["show_collab_predictions"] is True and project["evaluate_predictions_automatically"] is True
    assert project["min_annotations_to_start_training"] == 0  # Label Studio's own trigger off: the backend counts
    assert "after every 25 label changes" in first
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
