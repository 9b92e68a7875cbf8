"""Connect a Label Studio project to this backend in one command: ``python -m ml_backend connect``.

Through Label Studio's API, for one project:

1. registers this backend (``/api/ml``) with interactive pre-annotation on, and basic auth when
   ``BASIC_AUTH_USER`` is set; Label Studio checks that it can reach the URL and creates the
   webhook that sends label events to ``/webhook``;
2. sets the project's queue to uncertainty sampling (lowest prediction score first: our scores
   are written as ``1 - priority``), shows our predictions to annotators and fetches them
   automatically when a task without one is opened;
3. leaves retraining to the backend's own threshold, ``RETRAIN_MIN_NEW_LABELS`` label changes
   counted from the webhooks (creations, updates and deletions, duplicates once): Label Studio's
   own "train every N annotations" trigger (``min_annotations_to_start_training``) is set to 0,
   or every run would be asked for twice; the train button still works;
4. creates the "Active learning queue" Data Manager tab.

Idempotent: every step compares first and changes only what differs; a second run reports
"already" for each and creates nothing.

Example:
    >>> report = connect_project(client, 12, "http://backend:9090", Settings.from_env())  # doctest: +SKIP
    >>> print("\\n".join(report.actions))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from integrations.label_studio import LabelStudioClient, LabelStudioError
from ml_backend.settings import Settings

DEFAULT_TITLE = "YOLO active learning"


@dataclass
class ConnectReport:
    """What :func:`connect_project` found and did, one sentence per step."""

    project_id: int
    backend_id: int | None = None
    actions: list[str] = field(default_factory=list)
    changed: bool = False


def _same_url(a: str, b: str) -> bool:
    return str(a or "").rstrip("/") == str(b or "").rstrip("/")


def _backend_fields(settings: Settings) -> dict[str, Any]:
    fields: dict[str, Any] = {"is_interactive": True}
    if settings.basic_auth_user:
        fields.update(auth_method="BASIC_AUTH", basic_auth_user=settings.basic_auth_user, basic_auth_pass=settings.basic_auth_pass)
    return fields


def project_settings(settings: Settings) -> dict[str, Any]:
    """The project fields the active-learning loop needs."""
    return {
        "sampling": "Uncertainty sampling",
        "show_collab_predictions": True,
        "evaluate_predictions_automatically": True,
        "min_annotations_to_start_training": 0,  # the backend counts labels itself (RETRAIN_MIN_NEW_LABELS)
    }


def connect_project(client: LabelStudioClient, project_id: int, backend_url: str, settings: Settings, title: str = DEFAULT_TITLE) -> ConnectReport:
    """Register this backend on a project and set the project up for the active-learning queue.

    Raises:
        LabelStudioError: the project does not exist, the token cannot change it, or Label
            Studio cannot reach ``backend_url`` (the message says which).
    """
    from ml_backend.scoring import QUEUE_VIEW_TITLE, ensure_queue_view

    report = ConnectReport(int(project_id))
    try:
        project = client.get_project(project_id)
    except LabelStudioError as exc:
        if exc.status == 404:
            raise LabelStudioError(f"project {project_id} does not exist in Label Studio at {client.url} (or this token cannot see it)", 404) from None
        raise
    name = f"project {project_id} ({project.get('title', '')})"

    backends = client.list_ml_backends(project_id)
    wanted = _backend_fields(settings)
    mine = next((b for b in backends if _same_url(b.get("url"), backend_url)), None)
    if mine is None:
        try:
            mine = client.post("/api/ml", json={"project": int(project_id), "url": backend_url.rstrip("/"), "title": title, **wanted})
        except LabelStudioError as exc:
            raise LabelStudioError(
                f"Label Studio could not connect {backend_url} to {name}: {exc}. The URL must be reachable from Label Studio "
                f"(in docker compose: http://backend:9090), and Label Studio needs USE_DEFAULT_BANNED_SUBNETS=false for private addresses",
                exc.status,
            ) from None
        report.actions.append(f"registered the ML backend {backend_url} on {name} (backend id {mine['id']}), interactive pre-annotation on")
        report.changed = True
    else:
        differs = {k: v for k, v in wanted.items() if k != "basic_auth_pass" and mine.get(k) != v}
        if differs or settings.basic_auth_user:  # the password cannot be read back, so it is always sent
            client.patch(f"/api/ml/{mine['id']}", json={"project": int(project_id), "url": mine["url"], **wanted})
        if differs:
            report.actions.append(f"the ML backend {backend_url} was already registered (backend id {mine['id']}); updated {', '.join(sorted(differs))}")
            report.changed = True
        else:
            report.actions.append(f"the ML backend {backend_url} is already registered on {name} (backend id {mine['id']}), interactive pre-annotation on")
    report.backend_id = int(mine["id"])
    others = [b.get("url") for b in backends if not _same_url(b.get("url"), backend_url)]
    if others:
        report.actions.append(f"note: the project has other ML backends too, left as they are: {', '.join(map(str, others))}")

    want = project_settings(settings)
    differs = {k: v for k, v in want.items() if project.get(k) != v}
    if differs:
        client.patch(f"/api/projects/{int(project_id)}", json=differs)
        report.actions.append("set " + ", ".join(f"{k}={v}" for k, v in differs.items()))
        report.changed = True
    else:
        report.actions.append("the queue already uses uncertainty sampling with our predictions, fetched automatically")
    n = settings.retrain_min_new_labels
    report.actions.append(
        f"retraining: after every {n} label changes, counted by the backend (RETRAIN_MIN_NEW_LABELS), or on Label Studio's train button"
        if n > 0 else "retraining: only on Label Studio's train button (RETRAIN_MIN_NEW_LABELS=0)"
    )

    views = client.get("/api/dm/views", params={"project": int(project_id)})
    existed = any((v.get("data") or {}).get("title") == QUEUE_VIEW_TITLE for v in views)
    ensure_queue_view(client, project_id)
    if existed:
        report.actions.append(f'the "{QUEUE_VIEW_TITLE}" tab already exists (kept, its columns refreshed)')
    else:
        report.actions.append(f'created the "{QUEUE_VIEW_TITLE}" tab (tasks in the order annotators get them, score columns as numbers)')
        report.changed = True
    return report
