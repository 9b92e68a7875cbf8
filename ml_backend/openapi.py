"""OpenAPI 3.0 description of the backend's HTTP API (:mod:`ml_backend.server`).

``SPEC`` is a plain dict: dump it with ``json.dumps(SPEC)`` for Swagger UI or a client
generator. It documents what the server really accepts, loosely: Label Studio sends more
fields than the backend reads, so every request and response object allows additional
properties. Errors always have the same JSON body, ``{"status": "error", "error": "..."}``,
with the message repeated in the HTTP reason phrase. ``tests/test_fuzz.py`` checks that the
routes Flask registers and the paths here agree, and fuzzes the app against this document.

Example:
    >>> sorted(SPEC["paths"])[:3]
    ['/', '/health', '/metrics']
    >>> SPEC["components"]["schemas"]["SetupRequest"]["required"]
    ['schema']
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ml_backend.jobs.label_events import LABEL_ACTIONS, MAX_ID

_JSON = "application/json"
_ID = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_ID}  # what SQLite stores; others are not ids
_EXAMPLE_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="circle"/><Label value="square"/><Label value="triangle"/></RectangleLabels></View>'
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"required": True, "description": description, "content": {_JSON: content}}


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ERRORS: dict[str, str] = {
    "400": "The request is malformed: not a JSON object, or a required field is missing or of the wrong type. The message says what to send.",
    "401": "Basic auth is configured (`BASIC_AUTH_USER`/`BASIC_AUTH_PASS`) and the request lacks it; on `/webhook`, a `WEBHOOK_SECRET` is configured and the `X-Webhook-Secret` header (or basic auth) is missing or wrong.",
    "404": "Nothing stored for this project yet.",
    "405": "The route exists but not with this HTTP method.",
    "413": "The request body is larger than 32 MiB.",
    "422": "The labeling config cannot be served by this kind of model (no `<Image>`, or no control tag for its task).",
    "502": "Label Studio could not be reached or answered with an error.",
    "503": "The model (`MODEL_PATH`, or the project's retrained one) is missing or still loading.",
}


def _errors(*codes: str) -> dict[str, Any]:
    """Error responses: every route but ``/`` and ``/health`` may answer 401 and 405."""
    out: dict[str, Any] = {}
    for code in sorted({"401", "405", *codes}):
        out[code] = {"description": _ERRORS[code], "content": {_JSON: {"schema": _ref("Error")}}}
    out["401"]["headers"] = {
        "WWW-Authenticate": {"description": '`Basic realm="ml-backend"` when basic auth is missing.', "schema": {"type": "string"}}
    }
    return out


_SECURITY: list[dict[str, list[str]]] = [{"basicAuth": []}, {}]  # {}: no auth unless BASIC_AUTH_USER is set
_PROJECT_QUERY = {
    "name": "project",
    "in": "query",
    "required": False,
    "description": "Label Studio project id.",
    "schema": _ID,
}
_PROJECT_KEY = {
    "description": 'The project: its id, or Label Studio\'s `"<id>.<created timestamp>"`.',
    "anyOf": [_ID, {"type": "string"}],
    "example": "3.1700000000",
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["status", "error"],
        "properties": {
            "status": {"type": "string", "enum": ["error"]},
            "error": {"type": "string", "description": "What went wrong and how to fix it (also in the HTTP reason phrase)."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "model_class", "model_version", "model_loaded", "model_task", "model_error"],
        "properties": {
            "status": {"type": "string", "enum": ["UP"]},
            "model_class": {"type": "string"},
            "model_version": {"type": "string", "nullable": True, "description": "null until the model is loaded"},
            "model_loaded": {"type": "boolean"},
            "model_task": {"type": "string", "nullable": True, "description": "detect, segment, classify or obb"},
            "model_error": {"type": "string", "nullable": True, "description": "why the model could not be loaded"},
            "projects": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "per project (as of its last /setup): which labels are pre-annotated, and when the rest are learned",
            },
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "what an operator should fix: serving beyond loopback without authentication (ALLOW_UNAUTHENTICATED=on)",
            },
        },
    },
    "Task": {
        "type": "object",
        "description": "A Label Studio task; `data` holds the image URL under the key the labeling config names (`$image`).",
        "properties": {
            "id": {"type": "integer"},
            "data": {"type": "object"},
        },
    },
    "SetupRequest": {
        "type": "object",
        "required": ["schema"],
        "properties": {
            "schema": {"type": "string", "pattern": "\\S", "description": "The project's labeling config (XML)."},
            "project": _PROJECT_KEY,
            "hostname": {"type": "string", "description": "Label Studio's URL; used to fetch images when `LABEL_STUDIO_URL` is not set."},
            "access_token": {"type": "string", "description": "Token for `hostname`."},
            "extra_params": {
                "description": "The ML backend's extra params in Label Studio: a JSON object, or a string holding one; "
                "`retrain_min_new_labels` (a whole number from 0 to 1,000,000,000; 0: only the train button) is the project's "
                "retraining threshold.",
                "anyOf": [{"type": "object", "nullable": True}, {"type": "string"}],
            },
        },
    },
    "Classes": {
        "type": "object",
        "description": "The project's labels: those the served model predicts, and those a model of the project's own will learn.",
        "required": ["known", "learning"],
        "properties": {"known": {"type": "array", "items": {"type": "string"}}, "learning": {"type": "array", "items": {"type": "string"}}},
    },
    "SetupResponse": {
        "type": "object",
        "required": ["model_version", "classes", "pre_annotations"],
        "properties": {
            "model_version": {"type": "string"},
            "classes": _ref("Classes"),
            "pre_annotations": {"type": "string", "description": "what is pre-annotated now, and when the rest will be"},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "model_* attributes of the labeling config this backend does not apply, and why (absent: none)",
            },
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["tasks"],
        "description": "`label_config` is needed unless `/setup` was called for this `project` before.",
        "properties": {
            "tasks": {"type": "array", "minItems": 1, "items": _ref("Task")},
            "label_config": {"type": "string", "description": "The project's labeling config (XML)."},
            "project": _PROJECT_KEY,
        },
    },
    "Prediction": {
        "type": "object",
        "description": "One per task, in task order: either `result` (Label Studio regions) and `score`, or `error` for a task "
        "whose image could not be loaded (Label Studio skips it and asks again later).",
        "properties": {
            "result": {"type": "array", "items": {"type": "object"}},
            "score": {"type": "number"},
            "model_version": {"type": "string", "nullable": True},
            "task": {"description": "the task's id (error entries; any JSON value Label Studio sent)"},
            "error": {"type": "string"},
        },
        "anyOf": [{"required": ["result", "score"]}, {"required": ["error"]}],
    },
    "PredictResponse": {
        "type": "object",
        "required": ["results", "model_version"],
        "properties": {
            "results": {"type": "array", "items": _ref("Prediction")},
            "model_version": {"type": "string", "nullable": True},
        },
    },
    "WebhookRequest": {
        "type": "object",
        "required": ["action"],
        "description": "A Label Studio webhook event. `TASKS_CREATED` queues `tasks` for scoring; `ANNOTATION_CREATED`, "
        "`ANNOTATIONS_CREATED`, `ANNOTATION_UPDATED` and `ANNOTATIONS_DELETED` count towards re-scoring and retraining; "
        "`START_TRAINING` (the train button) queues a training run; other actions are acknowledged and ignored.",
        "properties": {
            "action": {
                "description": "The event name; these are the ones the backend acts on, any other is acknowledged.",
                "anyOf": [
                    {"type": "string", "enum": [*sorted(LABEL_ACTIONS), "TASKS_CREATED", "START_TRAINING"]},
                    {"type": "string", "minLength": 1},
                ],
            },
            "project": {
                "description": 'Label Studio sends the project object; an id or `"<id>.<timestamp>"` is also taken.',
                "anyOf": [
                    {"type": "object", "properties": {"id": _ID}},
                    _ID,
                    {"type": "string"},
                ],
            },
            "tasks": {"type": "array", "items": _ref("Task")},
            "annotation": {"type": "object"},
            "annotations": {"type": "array", "items": {"type": "object"}},
        },
    },
    "WebhookResponse": {
        "type": "object",
        "required": ["status", "action"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "action": {"type": "string"},
            "queued_for_scoring": {"type": "integer", "description": "TASKS_CREATED: tasks waiting to be scored"},
            "labels_since_scoring": {"type": "integer", "description": "label events: changes since the last full scoring"},
            "training": _ref("TrainingState"),
            "labels_since_training": {"type": "integer"},
        },
    },
    "TrainRequest": {
        "type": "object",
        "required": ["project"],
        "description": "Older Label Studio's train request; the annotations it may carry are not read (the backend reads "
        "the current labels from Label Studio's API).",
        "properties": {"project": _PROJECT_KEY},
    },
    "TrainResponse": {
        "type": "object",
        "required": ["status", "training"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "training": _ref("TrainingState")},
    },
    "TrainingState": {"type": "string", "enum": ["idle", "queued", "training", "failed"]},
    "TrainingStatus": {
        "type": "object",
        "required": ["project", "state", "labels_since_training", "retrain_min_new_labels", "retrain_threshold_from"],
        "properties": {
            "project": {"type": "integer"},
            "state": _ref("TrainingState"),
            "reason": {"type": "string", "nullable": True},
            "progress": {"type": "object", "nullable": True, "description": "during a run: epoch, metrics"},
            "message": {"type": "string", "nullable": True},
            "follow_up": {"type": "boolean"},
            "queued_at": {"type": "number", "nullable": True},
            "started_at": {"type": "number", "nullable": True},
            "finished_at": {"type": "number", "nullable": True},
            "runs": {"type": "integer", "nullable": True},
            "job": {"type": "string", "nullable": True, "description": "the RQ job of a run on a worker"},
            "labels_since_training": {"type": "integer"},
            "retrain_min_new_labels": {"type": "integer"},
            "retrain_threshold_from": {"type": "string"},
            "model_version": {"type": "string", "nullable": True},
            "speedup": _ref("Speedup"),
            "display": _ref("Display"),
            "last_run": {"type": "object", "nullable": True},
            "classes": _ref("Classes"),
            "pre_annotations": {
                "type": "string",
                "description": "what is pre-annotated now, and when the rest will be (once Label Studio has sent the labeling config)",
            },
        },
    },
    "TrainingList": {
        "type": "object",
        "required": ["projects"],
        "properties": {"projects": {"type": "array", "items": _ref("TrainingStatus")}},
    },
    "VersionDetail": {
        "type": "object",
        "required": ["version", "served"],
        "properties": {
            "version": {"type": "string"},
            "created": {"type": "number"},
            "parent": {"type": "string", "nullable": True},
            "metrics": {"type": "object"},
            "note": {"type": "string"},
            "served": {"type": "boolean"},
            "speedup": _ref("Speedup"),
        },
    },
    "Display": {
        "type": "object",
        "description": "What the served model's pre-annotations show: each class from its threshold (chosen on the held-out tasks "
        "to cost annotators the fewest seconds; SCORE_THRESHOLD for every class when set), and whether boxes of two classes on one "
        "object are merged.",
        "properties": {
            "default": {"type": "number", "description": "the threshold of classes without their own"},
            "thresholds": {"type": "object", "additionalProperties": {"type": "number"}, "description": "label -> threshold"},
            "merge_classes": {"type": "boolean"},
        },
    },
    "Speedup": {
        "type": "object",
        "nullable": True,
        "description": "Correcting a version's pre-annotations against drawing every box, in estimated annotator seconds "
        "(ANNOTATION_COSTS), on the held-out tasks it was judged on; null when not measured (non-detection models).",
        "properties": {
            "speedup": {"type": "number", "nullable": True, "description": "drawing / correcting: 1.0 saves nothing"},
            "previous": {"type": "number", "nullable": True, "description": "the same for the model it was judged against"},
            "heldout_images": {"type": "integer", "nullable": True},
        },
    },
    "Versions": {
        "type": "object",
        "required": ["versions", "model_version"],
        "description": "Without `project`: the base model's version. With it: also the project's retrained versions.",
        "properties": {
            "versions": {"type": "array", "items": {"type": "string"}},
            "model_version": {"type": "string", "nullable": True},
            "base_version": {"type": "string", "nullable": True},
            "details": {"type": "array", "items": _ref("VersionDetail")},
        },
    },
    "Scores": {
        "type": "object",
        "required": ["project", "scores"],
        "properties": {
            "project": {"type": "integer"},
            "scores": {
                "type": "array",
                "items": {"type": "object", "description": "one scored task: task id, uncertainty, cluster, rank ..."},
            },
        },
    },
}

_PATHS: dict[str, Any] = {
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness and model status (never needs auth; never loads the model)",
            "security": [],
            "responses": {
                "200": _ok(_ref("Health"), "The server is up; the model may not be loaded yet."),
                "405": {"description": _ERRORS["405"], "content": {_JSON: {"schema": _ref("Error")}}},
            },
        }
    },
    "/setup": {
        "post": {
            "operationId": "setup",
            "summary": "Label Studio connects a project: check that the model can serve its labeling config",
            "requestBody": _json_body(
                _ref("SetupRequest"),
                "Sent by Label Studio when a model is connected and before predictions.",
                {"project": "3.1700000000", "schema": _EXAMPLE_CONFIG, "extra_params": {"retrain_min_new_labels": 20}},
            ),
            "responses": {"200": _ok(_ref("SetupResponse"), "The model serves this config."), **_errors("400", "413", "422", "502", "503")},
        }
    },
    "/predict": {
        "post": {
            "operationId": "predict",
            "summary": "Pre-annotations for a batch of tasks",
            "requestBody": _json_body(
                _ref("PredictRequest"),
                "The tasks to predict and the labeling config.",
                {
                    "tasks": [{"id": 1, "data": {"image": "/data/upload/3/shapes.jpg"}}],
                    "label_config": _EXAMPLE_CONFIG,
                    "project": "3.1700000000",
                },
            ),
            "responses": {
                "200": _ok(
                    _ref("PredictResponse"), "One entry per task; a task whose image fails gets an error entry, not a failed request."
                ),
                **_errors("400", "413", "422", "502", "503"),
            },
        }
    },
    "/webhook": {
        "post": {
            "operationId": "webhook",
            "summary": "Label Studio events: new tasks, label changes, the train button",
            "security": [{"basicAuth": []}, {"webhookSecret": []}, {}],
            "requestBody": _json_body(
                _ref("WebhookRequest"),
                "A Label Studio webhook payload.",
                {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": 7, "updated_at": "2024-01-01T00:00:00Z"}},
            ),
            "responses": {
                "200": _ok(_ref("WebhookResponse"), "The event was taken (work happens in the background)."),
                **_errors("400", "413"),
            },
        }
    },
    "/train": {
        "post": {
            "operationId": "train",
            "summary": "Queue a training run for a project (older Label Studio's train button)",
            "requestBody": _json_body(_ref("TrainRequest"), "The project to train.", {"project": 3}),
            "responses": {
                "200": _ok(_ref("TrainResponse"), "The run is queued (or a follow-up is, during a run)."),
                **_errors("400", "413"),
            },
        }
    },
    "/training": {
        "get": {
            "operationId": "training",
            "summary": "Retraining status: one project, or every project that has one",
            "parameters": [_PROJECT_QUERY],
            "responses": {
                "200": _ok(
                    {"anyOf": [_ref("TrainingStatus"), _ref("TrainingList")]}, 'With `project`: its status; without: `{"projects": [...]}`.'
                ),
                **_errors("400"),
            },
        }
    },
    "/scores": {
        "get": {
            "operationId": "scores",
            "summary": "A project's stored active-learning scores",
            "parameters": [{**_PROJECT_QUERY, "required": True}],
            "responses": {"200": _ok(_ref("Scores"), "The last scoring of the project."), **_errors("400", "404")},
        }
    },
    "/versions": {
        "get": {
            "operationId": "versions",
            "summary": "Model versions: the base model's, or a project's retrained ones",
            "parameters": [_PROJECT_QUERY],
            "responses": {"200": _ok(_ref("Versions"), "Known versions and the one served."), **_errors("400", "503")},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Label Studio's metrics hook (empty)",
            "responses": {"200": _ok({"type": "object"}, "Always `{}`."), **_errors()},
        }
    },
}
_PATHS["/"] = {"get": {**copy.deepcopy(_PATHS["/health"]["get"]), "operationId": "root", "summary": "Same as `/health`"}}

# Through JSON: no schema object is shared between two places of the document.
SPEC: dict[str, Any] = json.loads(
    json.dumps(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "Label Studio active-learning ML backend",
                "version": "1.0.0",
                "description": "Label Studio's ML backend protocol (`/health`, `/setup`, `/predict`, `/webhook`, `/train`, "
                '`/versions`, `/metrics`) plus `/training` and `/scores`. Errors: `{"status": "error", "error": msg}`.',
            },
            "servers": [{"url": "http://localhost:9090"}],
            "security": _SECURITY,
            "paths": dict(sorted(_PATHS.items())),
            "components": {
                "schemas": _SCHEMAS,
                "securitySchemes": {
                    "basicAuth": {"type": "http", "scheme": "basic", "description": "When BASIC_AUTH_USER and BASIC_AUTH_PASS are set."},
                    "webhookSecret": {
                        "type": "apiKey",
                        "in": "header",
                        "name": "X-Webhook-Secret",
                        "description": "On /webhook, when WEBHOOK_SECRET is set.",
                    },
                },
            },
        }
    )
)

__all__ = ["SPEC"]
