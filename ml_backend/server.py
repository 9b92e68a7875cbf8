"""The HTTP layer: Label Studio's ML backend protocol, served by Flask (gunicorn in production).

Routes and JSON match the official ``label-studio-ml`` backend, so Label Studio cannot tell the
difference: ``GET /health`` (and ``/``), ``POST /setup``, ``POST /predict``, ``POST /webhook``,
``GET /versions``, ``GET /metrics``, plus ``POST /train`` (older Label Studio's train button).
Our own additions: ``GET /training`` (retraining status) and ``GET /scores``. ``/setup`` also
reads the project's own settings from the ML backend's ``extra_params`` (the retraining
threshold, ``retrain_min_new_labels``). The handlers only
parse, delegate and answer; the object graph they delegate to is built by
:func:`ml_backend.backend.build_backend`, and scoring and training run in the background
(:mod:`ml_backend.jobs.scoring_jobs`, :mod:`ml_backend.jobs.training_jobs`).

Errors carry their message twice: in the JSON body (``{"error": ...}``) and in the HTTP reason
phrase, because Label Studio shows the reason phrase (not the body) when a connection fails.

Production::

    python -m ml_backend serve --host 0.0.0.0     # HOST: what the access rule judges (ml_backend.access)
"""

from __future__ import annotations

import atexit
import hmac
import logging
import re
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from integrations.connect import webhook_url_refusal
from integrations.connection import WEBHOOK_SECRET_HEADER, threshold_from_extra_params
from integrations.label_studio import LabelStudioError
from ml_backend.access import Exposure
from ml_backend.backend import build_backend
from ml_backend.inference.label_config import LabelConfigError
from ml_backend.inference.model import ModelHolder, ModelUnavailableError
from ml_backend.inference.predictor import BadRequest, make_fetcher
from ml_backend.inference.versions import speedup_of
from ml_backend.jobs.label_events import LABEL_ACTIONS, as_id
from ml_backend.jobs.runners import Runner
from ml_backend.scoring.pool import cold_start_order
from ml_backend.settings import Settings, SettingsError
from ml_backend.state import atomic_write

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
MODEL_CLASS = "YoloActiveLearningBackend"
SETUP_WAIT_S = 2.0  # Label Studio gives /setup 3 s


def _reason(message: str) -> str:
    """An HTTP reason phrase: one line of printable ASCII."""
    text = re.sub(r"[^\x20-\x7e]", "?", " ".join(message.split()))
    return text[:400]


def error_response(status: int, message: str) -> Response:
    resp = jsonify({"status": "error", "error": message})
    resp.status = f"{status} {_reason(message)}"
    return resp


def _json_body() -> dict[str, Any]:
    try:
        data = request.get_json(silent=True, force=True)
    except RecursionError:  # JSON nested deeper than Python's parser goes
        data = None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object (Content-Type: application/json)")
    return data


def _project_key(project: Any) -> str:
    """Label Studio sends ``"<id>.<created-timestamp>"``; we key by the id."""
    return str(project).split(".", 1)[0] if project not in (None, "") else ""


def _project_id(project: Any) -> int | None:
    """A project id from ``"<id>.<timestamp>"``, ``<id>`` or a webhook's ``{"id": <id>, ...}``
    (None for anything else: bools, floats, Unicode digits, ids SQLite cannot store)."""
    if isinstance(project, dict):
        project = project.get("id")
    if isinstance(project, int):
        return as_id(project)
    return as_id(_project_key(project)) if isinstance(project, str) else None  # not a float: 1.5 is no project


def _query_project() -> int:
    pid = as_id(request.args.get("project", ""))
    if pid is None:
        raise BadRequest(f"'project' (a Label Studio project id) is required: {request.path}?project=ID")
    return pid


def create_app(
    settings: Settings | None = None, holder: ModelHolder | None = None, warm_up: bool = True, training_runner: Runner | None = None
) -> Flask:
    """Build the Flask app (gunicorn calls this in each worker, after the fork).

    The model starts loading in a background thread (``warm_up``), so ``/health`` answers at
    once and a missing weights file is reported in the log and in ``/health`` right away.

    Args:
        settings: defaults to :meth:`Settings.from_env`.
        holder: the model holder (defaults to one for ``settings.model_path``).
        warm_up: start loading the model now, in the background; ``False`` loads on first use.
        training_runner: where training runs execute (default: from ``REDIS_URL``, see
            :func:`ml_backend.jobs.runners.make_runner`).

    Raises:
        SettingsError: ``HOST`` is beyond loopback without basic auth (:mod:`ml_backend.access`).
    """
    settings = settings or Settings.from_env()
    exposure = Exposure.of(settings)
    if (refusal := exposure.refusal()) is not None:
        raise SettingsError(refusal)
    for warning in exposure.warnings():
        log.warning("SECURITY: %s", warning)
    backend = build_backend(settings, holder, training_runner)
    holder, models, predictor, training, scoring = backend.holder, backend.models, backend.predictor, backend.training, backend.scoring
    project_configs, project_plans = backend.project_configs, backend.project_plans

    def learning(project_id: int) -> dict[str, Any]:
        """Which of the project's labels are pre-annotated and when the rest will be (empty before
        Label Studio has sent the project's labeling config, or while no model can be read)."""
        schema = project_configs.get(str(project_id))
        if not schema:
            return {}
        try:
            checked = predictor.check(schema, wait=0, project=project_id)
        except (ModelUnavailableError, LabelConfigError):
            return {}
        plan = checked.plan(training.threshold(project_id)[0], cold_start_order(settings))
        project_plans[str(project_id)] = plan
        return {"classes": checked.coverage.to_json(), "pre_annotations": plan}

    known_urls: dict[int, str] = {}

    def remember_url(project_id: int | None) -> None:
        """Keep the URL Label Studio reaches this backend at for the project (its request's host):
        where the served model's speed-up is shown (:func:`ml_backend.scoring.publish.show_served_speedup`)."""
        url = request.host_url.rstrip("/")
        if project_id is None or known_urls.get(project_id) == url:
            return
        if refusal := webhook_url_refusal(url):  # connected by hand in Label Studio's UI with, e.g., http://backend:9090
            log.warning("project %s: Label Studio reaches this backend at %s and makes no webhook for it. %s", project_id, url, refusal)
        try:
            path = settings.paths.backend_url(project_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, url)
            known_urls[project_id] = url
        except OSError as exc:
            log.warning("project %s: could not keep this backend's URL (%s)", project_id, exc)

    if warm_up:
        holder.warm_up_in_background()
    backend.resume()  # a crash between a promotion and its re-score
    atexit.register(backend.close)  # a run under way is stopped (and queued again for the next start)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions["ml_backend"] = backend

    def _basic_auth_ok() -> bool:
        auth = request.authorization
        return (
            auth is not None
            and hmac.compare_digest((auth.username or "").encode(), settings.basic_auth_user.encode())
            and hmac.compare_digest((auth.password or "").encode(), settings.basic_auth_pass.encode())
        )

    @app.before_request
    def _access() -> Response | None:
        """Basic auth on every route but ``/health``; on ``/webhook``, the shared secret when one is set.

        Label Studio's webhooks carry the ``X-Webhook-Secret`` header (``connect`` adds it), while
        its train button reaches ``/webhook`` through the model connection, with basic auth: so
        with a secret set, ``/webhook`` takes either.
        """
        if request.path in ("/health", "/"):
            return None
        if request.path == "/webhook" and settings.webhook_secret:
            given = request.headers.get(WEBHOOK_SECRET_HEADER, "")
            if hmac.compare_digest(given.encode(), settings.webhook_secret.encode()) or (settings.basic_auth_user and _basic_auth_ok()):
                return None
            log.warning(
                "refused a webhook from %s: %s", request.remote_addr, "wrong secret" if given else f"no {WEBHOOK_SECRET_HEADER} header"
            )
            return error_response(
                401,
                f"webhook refused: send the shared secret (WEBHOOK_SECRET) in the {WEBHOOK_SECRET_HEADER} header; "
                f"`python -m ml_backend connect` adds it to Label Studio's webhook",
            )
        if not settings.basic_auth_user or _basic_auth_ok():
            return None
        resp = error_response(401, "basic auth required: set the same user and password in Label Studio's model connection")
        resp.headers["WWW-Authenticate"] = 'Basic realm="ml-backend"'
        return resp

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        st = holder.status()
        return jsonify(
            {
                "status": "UP",
                "model_class": MODEL_CLASS,
                "model_version": st["model_version"],
                "model_loaded": st["loaded"],
                "model_task": st["model_task"],
                "model_error": st["model_error"],
                "projects": dict(project_plans),  # per project: what is pre-annotated, what is still to learn (as of its last /setup)
                "warnings": exposure.warnings(),  # serving beyond loopback without authentication
            }
        )

    @app.post("/setup")
    def setup() -> Response:
        data = _json_body()
        schema = data.get("schema")
        if not isinstance(schema, str) or not schema.strip():
            raise BadRequest("'schema' (the project's labeling config) is required")
        project = _project_key(data.get("project"))
        try:
            threshold = threshold_from_extra_params(data.get("extra_params"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        project_id = _project_id(project)
        hostname, token = data.get("hostname"), data.get("access_token")
        if (
            not settings.label_studio_url
            and project_id is not None
            and isinstance(hostname, str)
            and hostname.startswith(("http://", "https://"))
            and exposure.setup_may_name_label_studio
        ):
            # No LABEL_STUDIO_URL configured: this project's images come from the Label Studio that says
            # where it is (other projects keep theirs; never on an open port: ml_backend.access).
            predictor.project_fetchers[project_id] = make_fetcher(settings, hostname.rstrip("/"), token if isinstance(token, str) else "")
        remember_url(project_id)
        checked = predictor.check(schema, wait=SETUP_WAIT_S, project=project_id)
        if project:
            project_configs[project] = schema
        if project_id is not None:
            # Label Studio sends the ML backend's extra_params on every /setup: they are the
            # project's settings (absent: back to RETRAIN_MIN_NEW_LABELS).
            training.set_threshold(project_id, threshold)
        plan = checked.plan(
            training.threshold(project_id)[0] if project_id is not None else settings.retrain_min_new_labels, cold_start_order(settings)
        )
        if project:
            project_plans[project] = plan
        log.info("setup project=%s model=%s: %s", project or "?", checked.version, plan)
        for warning in checked.warnings:
            log.warning("setup project=%s: %s", project or "?", warning)
        answer = {"model_version": checked.version, "classes": checked.coverage.to_json(), "pre_annotations": plan}
        if checked.warnings:
            answer["warnings"] = list(checked.warnings)
        return jsonify(answer)

    @app.post("/predict")
    def predict() -> Response:
        data = _json_body()
        tasks: Any = data.get("tasks")  # the predictor says what is wrong with it
        project = _project_key(data.get("project"))
        label_config = data.get("label_config") or project_configs.get(project)
        if not isinstance(label_config, str) or not label_config.strip():
            raise BadRequest("'label_config' is required (or call /setup for this project first)")
        project_id = _project_id(project)
        remember_url(project_id)
        results = predictor.predict(tasks, label_config, project=project_id)
        if project_id is not None and data.get("label_config"):
            project_configs[str(project_id)] = label_config  # Label Studio sends the project's current config
        versions = {r.get("model_version") for r in results if r.get("model_version")}
        return jsonify({"results": results, "model_version": versions.pop() if len(versions) == 1 else holder.version})

    @app.post("/webhook")
    def webhook() -> Response:
        data = _json_body()
        action = data.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("'action' (the Label Studio event name) is required")
        project_id = _project_id(data.get("project"))
        if action == "TASKS_CREATED" and project_id is not None and isinstance(data.get("tasks"), list):
            pending = scoring.add_tasks(project_id, data["tasks"])
            return jsonify({"status": "ok", "action": action, "queued_for_scoring": pending})
        if action in LABEL_ACTIONS:
            count = scoring.add_label_event(data)
            out = {"status": "ok", "action": action, "labels_since_scoring": count}
            if project_id is not None:
                out.update(training.on_label_event(project_id))
            return jsonify(out)
        if action == "START_TRAINING":
            if project_id is None:
                raise BadRequest("START_TRAINING needs 'project' with the project's id")
            return jsonify(
                {"status": "ok", "action": action, "training": training.request(project_id, "START_TRAINING (Label Studio's train button)")}
            )
        log.debug("webhook %s", action)
        return jsonify({"status": "ok", "action": action})

    @app.post("/train")
    def train() -> Response:
        # Label Studio before the webhook-based train button posts the annotations here; we
        # read the current labels from its API instead, like START_TRAINING.
        project_id = _project_id(_json_body().get("project"))
        if project_id is None:
            raise BadRequest("'project' (the Label Studio project id) is required")
        return jsonify({"status": "ok", "training": training.request(project_id, "train request (POST /train)")})

    @app.get("/training")
    def training_status() -> Response:
        if "project" not in request.args:
            return jsonify({"projects": [{**s, **learning(s["project"])} for s in training.statuses()]})
        project_id = _query_project()
        return jsonify({**training.status(project_id), **learning(project_id)})

    @app.get("/versions")
    def versions() -> Response:
        if "project" not in request.args:
            try:
                current = holder.get(wait=SETUP_WAIT_S).version
            except ModelUnavailableError as exc:
                return error_response(503, str(exc))
            return jsonify({"versions": [current], "model_version": current})
        project_id = _query_project()
        stored = [v.to_json() for v in models.registry(project_id).list()]
        info = models.current(project_id)
        base = holder.version
        served_version = info.version if info else base
        for v in stored:
            v["served"] = v["version"] == served_version
            v["speedup"] = speedup_of(v.get("metrics") or {})
            v.pop("weights", None)
        names = ([base] if base else []) + [v["version"] for v in stored]
        return jsonify({"versions": names, "model_version": served_version, "base_version": base, "details": stored})

    @app.get("/scores")
    def scores() -> Response:
        project = str(_query_project())
        stored = backend.scores.load(int(project))
        if stored is None:
            return error_response(404, f"project {project} has not been scored yet: run `python -m ml_backend score --project {project}`")
        return jsonify({"project": int(project), "scores": stored})

    @app.get("/metrics")
    def metrics() -> Response:
        return jsonify({})

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> Response:
        return error_response(400, str(exc))

    @app.errorhandler(LabelConfigError)
    def _bad_config(exc: LabelConfigError) -> Response:
        return error_response(422, str(exc))

    @app.errorhandler(ModelUnavailableError)
    def _no_model(exc: ModelUnavailableError) -> Response:
        return error_response(503, str(exc))

    @app.errorhandler(LabelStudioError)
    def _ls_error(exc: LabelStudioError) -> Response:
        return error_response(502, str(exc))

    @app.errorhandler(413)
    def _too_large(exc: HTTPException) -> Response:
        return error_response(413, f"the request is over {MAX_REQUEST_BYTES // (1024 * 1024)} MiB: send fewer tasks per /predict request")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the backend log")

    return app
