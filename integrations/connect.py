"""Connect a Label Studio project to this backend in one command: ``python -m ml_backend connect``.

Through Label Studio's API, for one project:

1. registers this backend (``/api/ml``), with basic auth when ``BASIC_AUTH_USER`` is set; Label
   Studio checks that it can reach the URL and creates the webhook that sends label events to
   ``/webhook``. Interactive pre-annotation stays off (``is_interactive`` False; a registration
   that has it on is turned off): this backend does not use the ``context`` Label Studio sends
   with interactive requests;
2. sets the project's queue to uncertainty sampling (lowest prediction score first: our scores
   are written as ``1 - priority``), shows our predictions to annotators and fetches them
   automatically when a task without one is opened;
3. sets the retraining threshold: with ``--retrain-threshold N``, the project retrains after
   every N label changes (creations, updates and deletions, counted by the backend from the
   webhooks, duplicates once). N is stored on the ML backend in Label Studio
   (``extra_params.retrain_min_new_labels``, editable in the model's settings there); Label
   Studio hands it to the backend on ``/setup``, which keeps it per project. Without the flag,
   a threshold already set is kept, otherwise the backend's ``RETRAIN_MIN_NEW_LABELS`` applies.
   Label Studio's own "train every N annotations" trigger (``min_annotations_to_start_training``)
   is set to 0, or every run would be asked for twice; the train button still works;
4. gives Label Studio's webhook to ``/webhook`` the credentials it needs: the
   ``X-Webhook-Secret`` header when ``WEBHOOK_SECRET`` is set, and an ``Authorization`` header when
   basic auth is on (Label Studio's own webhooks carry no basic auth: without it they are refused);
5. creates the "Active learning queue" Data Manager tab;
6. reports what the backend says of the project's labels: which it pre-annotates now, and when
   a model of the project's own learns the others (``/training``'s ``message``).

Idempotent: every step compares first and changes only what differs; a second run reports
"already" for each and creates nothing.

Example:
    >>> report = connect_project(client, 12, "http://backend.internal:9090", Access(webhook_secret="s3cret"))  # doctest: +SKIP
    >>> print("\\n".join(report.actions))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import requests

from integrations.connection import THRESHOLD_PARAM, WEBHOOK_SECRET_HEADER, extra_params_dict, webhook_headers
from integrations.label_studio import LabelStudioAPI, LabelStudioClient, LabelStudioError
from integrations.queue_view import QUEUE_VIEW_TITLE, ensure_queue_view

DEFAULT_TITLE = "YOLO active learning"


@dataclass(frozen=True)
class Access:
    """How the backend lets Label Studio in (its ``BASIC_AUTH_*`` and ``WEBHOOK_SECRET`` settings),
    and the retraining threshold it uses when a project sets none (``RETRAIN_MIN_NEW_LABELS``)."""

    basic_auth_user: str = ""
    basic_auth_pass: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    default_threshold: int = 50

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.basic_auth_user, self.basic_auth_pass) if self.basic_auth_user else None


@dataclass
class ConnectReport:
    """What :func:`connect_project` found and did, one sentence per step."""

    project_id: int
    backend_id: int | None = None
    actions: list[str] = field(default_factory=list)
    changed: bool = False


def _same_url(a: object, b: object) -> bool:
    return str(a or "").rstrip("/") == str(b or "").rstrip("/")


def _dotless_form(old: object, new: str) -> bool:
    """``old`` is ``new`` with its host cut at the first dot (``http://backend:9090`` for
    ``http://backend.internal:9090``): a registration Label Studio made no webhook for, to move."""
    a, b = urlsplit(str(old or "").rstrip("/")), urlsplit(new.rstrip("/"))
    host = a.hostname or ""
    return (
        bool(host)
        and webhook_url_refusal(str(old)) is not None
        and (b.hostname or "").startswith(host + ".")
        and (a.scheme, a.port, a.path) == (b.scheme, b.port, b.path)
    )


def _backend_fields(access: Access, existing: dict[str, Any] | None, retrain_threshold: int | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"is_interactive": False}  # the backend ignores interactive context
    if access.basic_auth_user:
        fields.update(auth_method="BASIC_AUTH", basic_auth_user=access.basic_auth_user, basic_auth_pass=access.basic_auth_pass)
    if retrain_threshold is not None:  # other keys a user put there are kept
        fields["extra_params"] = {**extra_params_dict((existing or {}).get("extra_params")), THRESHOLD_PARAM: int(retrain_threshold)}
    return fields


def _updated(differs: dict[str, Any]) -> str:
    """What :func:`connect_project` changed on an existing registration, in words.

    Example:
        >>> _updated({"is_interactive": False, "extra_params": {"retrain_min_new_labels": 20}})
        "updated retrain_min_new_labels=20; turned Label Studio's interactive pre-annotation off: this backend does not use it"
    """
    what = [
        f"{THRESHOLD_PARAM}={v[THRESHOLD_PARAM]}" if k == "extra_params" else k for k, v in sorted(differs.items()) if k != "is_interactive"
    ]
    parts = [f"updated {', '.join(what)}"] if what else []
    if "is_interactive" in differs:  # earlier versions of connect turned it on
        parts.append("turned Label Studio's interactive pre-annotation off: this backend does not use it")
    return "; ".join(parts)


def _backend_training_status(backend_url: str, project_id: int, access: Access) -> dict[str, Any] | None:
    """The backend's own ``/training`` answer for the project, when this machine can reach it."""
    try:
        r = requests.get(f"{backend_url.rstrip('/')}/training", params={"project": int(project_id)}, auth=access.basic_auth, timeout=3)
        return r.json() if r.ok else None
    except (requests.RequestException, ValueError):
        return None


def project_settings() -> dict[str, Any]:
    """The project fields the active-learning loop needs."""
    return {
        "sampling": "Uncertainty sampling",
        "show_collab_predictions": True,
        "evaluate_predictions_automatically": True,
        "min_annotations_to_start_training": 0,  # the backend counts labels itself (RETRAIN_MIN_NEW_LABELS)
    }


_LABEL = r"(?!-)[a-z\u00a1-\uffff0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*\.(?!-)([a-z\u00a1-\uffff-]{{2,63}}|xn--[a-z0-9]{{1,59}})(?<!-)\.?")


def webhook_url_refusal(backend_url: str) -> str | None:
    """Why Label Studio would refuse ``backend_url + "/webhook"`` as a webhook URL, or None.

    Label Studio checks a webhook's URL with Django's URL validator: the host must be ``localhost``,
    an IP address, or a domain name with a dot and a top-level label of letters. A bare host name,
    such as a docker compose service name (``http://backend:9090``), is refused, and a webhook
    Label Studio makes itself for such an ML backend is silently not made: labels would never
    reach the backend. (The ML backend's own URL is not checked that way.)

    Example:
        >>> webhook_url_refusal("http://backend.internal:9090") is None, webhook_url_refusal("http://backend:9090") is None
        (True, False)
    """
    host = (urlsplit(backend_url).hostname or "").lower()
    try:
        ip_address(host)
        return None
    except ValueError:
        pass
    if host == "localhost" or _DOMAIN.fullmatch(host):
        return None
    return (
        f"Label Studio refuses webhook URLs on the host {host!r} (its URL check wants localhost, an IP address or a name "
        f"with a dot, like backend.internal): labels would never reach the backend. Use a name with a dot for this backend "
        f"(docker/docker-compose.yml gives it backend.internal: --backend-url http://backend.internal:9090)"
    )


def connect_project(
    client: LabelStudioClient,
    project_id: int,
    backend_url: str,
    access: Access,
    title: str = DEFAULT_TITLE,
    retrain_threshold: int | None = None,
) -> ConnectReport:
    """Register this backend on a project and set the project up for the active-learning queue.

    Args:
        client: Label Studio's API.
        project_id: the project.
        backend_url: this backend's URL as Label Studio reaches it.
        access: the backend's credentials and default threshold.
        title: the ML backend's title in Label Studio, for a new registration.
        retrain_threshold: retrain after this many label changes (0: only the train button);
            None keeps the project's threshold as it is.

    Raises:
        LabelStudioError: the project does not exist, the token cannot change it, or Label
            Studio cannot reach ``backend_url`` (the message says which).
    """
    if retrain_threshold is not None and (isinstance(retrain_threshold, bool) or int(retrain_threshold) < 0):
        raise ValueError(f"--retrain-threshold must be a whole number >= 0 (0: only the train button), not {retrain_threshold!r}")
    if refusal := webhook_url_refusal(backend_url):
        raise ValueError(refusal)
    report = ConnectReport(int(project_id))
    try:
        project = client.get_project(project_id)
    except LabelStudioError as exc:
        if exc.status == 404:
            raise LabelStudioError(
                f"project {project_id} does not exist in Label Studio at {client.url} (or this token cannot see it)", 404
            ) from None
        raise
    name = f"project {project_id} ({project.get('title', '')})"

    backends = client.list_ml_backends(project_id)
    mine = next((b for b in backends if _same_url(b.get("url"), backend_url)), None)
    old = None if mine else next((b for b in backends if _dotless_form(b.get("url"), backend_url)), None)
    if old is not None:  # connected as http://backend:9090 before: no webhook was ever made for it
        client.patch(f"/api/ml/{old['id']}", json={"project": int(project_id), "url": backend_url.rstrip("/")})
        report.actions.append(
            f"moved the ML backend {old['url']} to {backend_url} (backend id {old['id']}): Label Studio makes no webhook "
            "for a host without a dot, so no label reached the backend"
        )
        report.changed = True
        old["url"] = backend_url.rstrip("/")
        mine = old
    wanted = _backend_fields(access, mine, retrain_threshold)
    if mine is None:
        try:
            mine = client.post("/api/ml", json={"project": int(project_id), "url": backend_url.rstrip("/"), "title": title, **wanted})
        except LabelStudioError as exc:
            raise LabelStudioError(
                f"Label Studio could not connect {backend_url} to {name}: {exc}. The URL must be reachable from Label Studio "
                f"(in docker compose: http://backend.internal:9090), and Label Studio needs USE_DEFAULT_BANNED_SUBNETS=false for private addresses",
                exc.status,
            ) from None
        report.actions.append(f"registered the ML backend {backend_url} on {name} (backend id {mine['id']})")
        report.changed = True
    else:
        differs = {
            k: v
            for k, v in wanted.items()
            if k != "basic_auth_pass" and (extra_params_dict(mine.get(k)) if k == "extra_params" else mine.get(k)) != v
        }
        if differs or access.basic_auth_user:  # the password cannot be read back, so it is always sent
            mine = client.patch(f"/api/ml/{mine['id']}", json={"project": int(project_id), "url": mine["url"], **wanted}) or mine
        if differs:
            report.actions.append(f"the ML backend {backend_url} was already registered (backend id {mine['id']}); {_updated(differs)}")
            report.changed = True
        else:
            report.actions.append(f"the ML backend {backend_url} is already registered on {name} (backend id {mine['id']})")
    report.backend_id = int(mine["id"])
    others = [b.get("url") for b in backends if not _same_url(b.get("url"), backend_url)]
    if others:
        report.actions.append(f"note: the project has other ML backends too, left as they are: {', '.join(map(str, others))}")

    want = project_settings()
    differs = {k: v for k, v in want.items() if project.get(k) != v}
    if differs:
        client.patch(f"/api/projects/{int(project_id)}", json=differs)
        report.actions.append("set " + ", ".join(f"{k}={v}" for k, v in differs.items()))
        report.changed = True
    else:
        report.actions.append("the queue already uses uncertainty sampling with our predictions, fetched automatically")
    status = _backend_training_status(backend_url, project_id, access)
    report.actions.append(_threshold_line(mine, access, status))
    if status is not None and isinstance(status.get("pre_annotations"), str):  # which labels are known, when the rest are learned
        report.actions.append(f"pre-annotations: {status['pre_annotations']}")
    if status is not None and isinstance(status.get("speedup"), dict) and isinstance(status["speedup"].get("speedup"), (int, float)):
        report.actions.append(speedup_line(status["model_version"], status["speedup"]))

    _webhook_headers(client, project_id, backend_url, access, report)

    views = client.get("/api/dm/views", params={"project": int(project_id)})
    existed = any((v.get("data") or {}).get("title") == QUEUE_VIEW_TITLE for v in views)
    ensure_queue_view(client, project_id)
    if existed:
        report.actions.append(f'the "{QUEUE_VIEW_TITLE}" tab already exists (kept, its columns refreshed)')
    else:
        report.actions.append(f'created the "{QUEUE_VIEW_TITLE}" tab (tasks in the order annotators get them, score columns as numbers)')
        report.changed = True
    return report


def _webhook_headers(client: LabelStudioClient, project_id: int, backend_url: str, access: Access, report: ConnectReport) -> None:
    """Make Label Studio's webhook to our ``/webhook`` carry the secret / basic auth (other headers kept)."""
    url = backend_url.rstrip("/") + "/webhook"
    hooks = [h for h in client.get("/api/webhooks", params={"project": int(project_id)}) if h.get("project") == int(project_id)]
    hook = next((h for h in hooks if _same_url(h.get("url"), url)), None)
    want = webhook_headers(access.webhook_secret, access.basic_auth)
    if hook is None:  # Label Studio makes it when the backend is registered; someone deleted it
        client.post(
            "/api/webhooks",
            json={
                "project": int(project_id),
                "url": url,
                "send_payload": True,
                "send_for_all_actions": True,
                "headers": want,
                "is_active": True,
            },
        )
        report.actions.append(f"created the webhook {url} (label events for retraining and re-scoring)")
        report.changed = True
        return
    current = hook.get("headers") if isinstance(hook.get("headers"), dict) else {}
    merged = {k: v for k, v in current.items() if k not in (WEBHOOK_SECRET_HEADER, "Authorization")} | want
    names = " and ".join(f"the {k} header" for k in want) or "no credentials (none are set)"
    if merged != current or not hook.get("is_active", True):
        client.patch(f"/api/webhooks/{hook['id']}", json={"headers": merged, "is_active": True})
        report.actions.append(f"set the webhook {url} to send {names}")
        report.changed = True
    else:
        report.actions.append(f"the webhook {url} already sends {names}")


def _threshold_line(backend: dict[str, Any], access: Access, status: dict[str, Any] | None) -> str:
    """Which retraining threshold the project now has: the backend's own word (``status``, its
    ``/training`` answer) when it can be reached from here."""
    own = extra_params_dict(backend.get("extra_params")).get(THRESHOLD_PARAM)
    n = int(own) if own is not None else access.default_threshold
    source = f"extra_params.{THRESHOLD_PARAM} on the ML backend in Label Studio" if own is not None else "RETRAIN_MIN_NEW_LABELS"
    if status is not None and isinstance(status.get("retrain_min_new_labels"), int):
        n, source = status["retrain_min_new_labels"], f"{status.get('retrain_threshold_from') or source}, confirmed by the backend"
    hint = "" if own is not None else "; set one for this project with --retrain-threshold N"
    if n > 0:
        return f"retraining: after every {n} label changes ({source}{hint}), or on Label Studio's train button"
    return f"retraining: only on Label Studio's train button (threshold 0: {source}{hint})"


SPEEDUP_SUFFIX = re.compile(r" · pre-annotations [0-9.]+x as fast as drawing$")


def title_with_speedup(title: str, speedup: float) -> str:
    """An ML backend's title with the served model's speed-up at its end (an earlier one replaced).

    Example:
        >>> title_with_speedup("YOLO active learning", 1.84)
        'YOLO active learning · pre-annotations 1.8x as fast as drawing'
        >>> title_with_speedup(_, 2.0)
        'YOLO active learning · pre-annotations 2.0x as fast as drawing'
    """
    return f"{SPEEDUP_SUFFIX.sub('', title)} · pre-annotations {speedup:.1f}x as fast as drawing"


def show_speedup(client: LabelStudioAPI, project_id: int, backend_url: str, version: str, speedup: dict[str, Any]) -> bool:
    """Show the served model's speed-up where a project's leads see it in Label Studio: the title
    and description of this backend's registration on the project (the project's Settings, Model).

    Args:
        backend_url: this backend's URL as Label Studio reaches it (the registration is found by it).
        speedup: ``/training``'s ``speedup`` of the served version.

    Returns:
        False when no registration of the project has that URL (nothing changed).
    """
    for b in client.list_ml_backends(project_id):
        if str(b.get("url") or "").rstrip("/") != backend_url.rstrip("/"):
            continue
        title = title_with_speedup(str(b.get("title") or DEFAULT_TITLE), float(speedup["speedup"]))
        # Label Studio 1.23 re-checks the backend on every change and needs its project and url (HTTP 500 without the url), as connect sends them
        client.update_ml_backend(
            int(b["id"]), {"project": int(project_id), "url": b["url"], "title": title, "description": speedup_line(version, speedup)}
        )
        return True
    return False


def speedup_line(version: str, speedup: dict[str, Any]) -> str:
    """The served model's measured speed-up, in one sentence (``speedup``: ``/training``'s).

    Example:
        >>> speedup_line("project3-ab12", {"speedup": 1.8, "previous": 1.0, "heldout_images": 12})
        'correcting the pre-annotations of project3-ab12 is 1.8x as fast as drawing every box (on its 12 held-out tasks; the model before it: 1.0x)'
    """
    before = f"; the model before it: {speedup['previous']:.1f}x" if isinstance(speedup.get("previous"), (int, float)) else ""
    return (
        f"correcting the pre-annotations of {version} is {speedup['speedup']:.1f}x as fast as drawing every box "
        f"(on its {speedup.get('heldout_images')} held-out tasks{before})"
    )
