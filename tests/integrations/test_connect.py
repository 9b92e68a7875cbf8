"""integrations.connect: the registration ``connect`` makes, and the served model's speed-up shown on it in Label Studio."""

from __future__ import annotations

from typing import Any

import pytest

import integrations.connect
from integrations.connect import Access, connect_project, show_speedup, title_with_speedup


class FakeLabelStudio:
    """The two ML backend calls ``show_speedup`` makes, over a list of registrations."""

    def __init__(self, backends: list[dict]):
        self.backends = backends
        self.updates: list[tuple[int, dict]] = []

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return [b for b in self.backends if b["project"] == project_id]

    def update_ml_backend(self, backend_id: int, fields: dict) -> dict:
        self.updates.append((backend_id, fields))
        return fields


@pytest.mark.parametrize(
    ("title", "speedup", "expected"),
    [
        ("YOLO active learning", 1.84, "YOLO active learning · pre-annotations 1.8x as fast as drawing"),
        ("Fish team · pre-annotations 1.2x as fast as drawing", 2.5, "Fish team · pre-annotations 2.5x as fast as drawing"),
        ("Mine", 0.9, "Mine · pre-annotations 0.9x as fast as drawing"),
    ],
)
def test_the_title_carries_the_latest_speed_up(title: str, speedup: float, expected: str) -> None:
    assert title_with_speedup(title, speedup) == expected


def test_only_this_backends_registration_on_the_project_is_retitled() -> None:
    ls = FakeLabelStudio(
        [
            {"id": 1, "project": 7, "url": "http://other:9090", "title": "someone else's"},
            {"id": 2, "project": 7, "url": "http://backend.internal:9090/", "title": "YOLO active learning"},
            {"id": 3, "project": 8, "url": "http://backend.internal:9090", "title": "YOLO active learning"},
        ]
    )
    speedup = {"speedup": 1.8, "previous": 1.0, "heldout_images": 12}
    assert show_speedup(ls, 7, "http://backend.internal:9090", "project7-ab12", speedup) is True  # type: ignore[arg-type]
    assert ls.updates == [
        (
            2,
            {
                "project": 7,
                "url": "http://backend.internal:9090/",
                "title": "YOLO active learning · pre-annotations 1.8x as fast as drawing",
                "description": "correcting the pre-annotations of project7-ab12 is 1.8x as fast as drawing every box "
                "(on its 12 held-out tasks; the model before it: 1.0x)",
            },
        )
    ]
    assert show_speedup(ls, 9, "http://backend.internal:9090", "project9-cd34", speedup) is False  # type: ignore[arg-type]


class FakeProjectAPI:
    """The Label Studio API calls ``connect_project`` makes, over one project held in memory."""

    url = "http://label-studio:8080"

    def __init__(self, backends: list[dict]):
        self.project = {"id": 7, "title": "fish", "sampling": "Sequential sampling"}
        self.tables: dict[str, list[dict]] = {"/api/ml": backends, "/api/webhooks": [], "/api/dm/views": []}
        self.calls: list[tuple[str, str, Any]] = []

    def get_project(self, project_id: int) -> dict:
        return self.project

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return self.get("/api/ml")

    def get(self, path: str, **kw: Any) -> Any:
        return [dict(row) for row in self.tables[path]]

    def post(self, path: str, json: dict) -> dict:
        self.calls.append(("POST", path, json))
        table = self.tables.get(path, [])
        table.append({**json, "id": len(table) + 1})
        return dict(table[-1])

    def patch(self, path: str, json: dict) -> dict:
        self.calls.append(("PATCH", path, json))
        table, _, rid = path.rpartition("/")
        if table not in self.tables:
            self.project.update(json)
            return self.project
        row = next(r for r in self.tables[table] if str(r["id"]) == rid)
        row.update(json)
        return dict(row)

    def ensure_view(self, project_id: int, title: str, ordering: list[str], **kw: Any) -> dict:
        return self.post("/api/dm/views", json={"project": project_id, "data": {"title": title, "ordering": ordering}})


@pytest.mark.parametrize(
    ("registered", "action"),
    [
        ([], "registered the ML backend http://backend.internal:9090 on project 7 (fish) (backend id 1)"),
        (  # an earlier connect turned it on
            [{"id": 1, "project": 7, "url": "http://backend.internal:9090", "is_interactive": True}],
            "the ML backend http://backend.internal:9090 was already registered (backend id 1); "
            "turned Label Studio's interactive pre-annotation off: this backend does not use it",
        ),
        (
            [{"id": 1, "project": 7, "url": "http://backend.internal:9090/", "is_interactive": False}],
            "the ML backend http://backend.internal:9090 is already registered on project 7 (fish) (backend id 1)",
        ),
    ],
)
def test_connect_leaves_interactive_pre_annotation_off(monkeypatch, registered: list[dict], action: str) -> None:
    monkeypatch.setattr(integrations.connect, "_backend_training_status", lambda *a: None)  # no backend to ask here
    ls = FakeProjectAPI(registered)
    report = connect_project(ls, 7, "http://backend.internal:9090", Access())  # type: ignore[arg-type]
    assert [b["is_interactive"] for b in ls.tables["/api/ml"]] == [False]
    assert report.actions[0] == action
    assert not any("interactive" in line for line in report.actions[1:])


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://backend:9090", True),  # a docker compose service name: Label Studio would make no webhook
        ("http://ml_backend.internal:9090", True),  # an underscore is not allowed in a host name
        ("http://backend.1:9090", True),  # the last label must be letters
        ("http://-backend.internal:9090", True),
        ("http://backend.internal:9090", False),
        ("http://my-backend.example.com/ml/", False),
        ("http://localhost:9090", False),
        ("http://127.0.0.1:9090", False),
        ("http://[::1]:9090", False),
        ("http://10.0.3.7", False),
    ],
)
def test_webhook_url_refusal_follows_label_studios_url_check(url: str, refused: bool) -> None:
    from integrations.connect import webhook_url_refusal

    reason = webhook_url_refusal(url)
    assert (reason is not None) is refused
    if refused:
        assert "backend.internal" in reason and "labels would never reach the backend" in reason


def test_connect_refuses_a_backend_url_label_studio_makes_no_webhook_for_before_changing_anything() -> None:
    ls = FakeProjectAPI([])
    with pytest.raises(ValueError, match="http://backend.internal:9090"):
        connect_project(ls, 7, "http://backend:9090", Access())  # type: ignore[arg-type]
    assert ls.calls == [] and ls.tables["/api/ml"] == []


def test_connect_moves_a_registration_made_at_the_bare_service_name(monkeypatch) -> None:
    """Connected as http://backend:9090 before (Label Studio made no webhook): moved, not registered twice."""
    monkeypatch.setattr(integrations.connect, "_backend_training_status", lambda *a: None)
    ls = FakeProjectAPI([{"id": 4, "project": 7, "url": "http://backend:9090", "is_interactive": False}])
    report = connect_project(ls, 7, "http://backend.internal:9090", Access())  # type: ignore[arg-type]
    assert [(b["id"], b["url"]) for b in ls.tables["/api/ml"]] == [(4, "http://backend.internal:9090")]
    assert report.actions[0].startswith("moved the ML backend http://backend:9090 to http://backend.internal:9090 (backend id 4)")
    assert [h["url"] for h in ls.tables["/api/webhooks"]] == ["http://backend.internal:9090/webhook"]  # the webhook it never had


@pytest.mark.parametrize(
    "other",
    ["http://backend:9091", "http://other:9090", "https://backend:9090", "http://backend:9090/ml"],
)
def test_connect_moves_only_the_dotless_form_of_its_own_url(monkeypatch, other) -> None:
    monkeypatch.setattr(integrations.connect, "_backend_training_status", lambda *a: None)
    ls = FakeProjectAPI([{"id": 4, "project": 7, "url": other, "is_interactive": False}])
    connect_project(ls, 7, "http://backend.internal:9090", Access())  # type: ignore[arg-type]
    assert sorted(b["url"] for b in ls.tables["/api/ml"]) == sorted([other, "http://backend.internal:9090"])
