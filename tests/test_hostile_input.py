"""Hostile inputs against the real in-process app: one table, one row per case.

Every case is a request sent to one app (``create_app(settings, warm_up=False)``, temp
``MODEL_DIR``) that lives for the whole module, so damage from one case would show in the next;
the ``exposed-*`` cases go to a second one, bound beyond loopback with basic auth and a webhook
secret, without valid credentials.
The app's Label Studio is a fake served from a thread here (``LABEL_STUDIO_URL`` points at it,
``ALLOWED_HOSTS`` is empty); a second loopback server stands for an internal service an attacker
wants to reach. Both record every request they get.

After every case the module checks that nothing was lost or leaked:

* ``/health`` answers 200 ``UP``;
* project 7 still counts the one label event recorded before the cases
  (``/training?project=7`` ``labels_since_training == 1``) and still has its labeling config;
* the internal server never got a request, and the fake Label Studio never got one outside
  its image paths (nothing reached ``/api/...`` with the backend's token);
* the HTTP reason phrase is one line of ASCII;
* the process's peak memory did not grow by more than 512 MiB (no decompression bomb decoded).

``/predict`` cases whose tasks fail one by one send the hostile task between two good ones
(ids 1 and 2): the answer is HTTP 200, the hostile task's entry carries ``error`` (and no
``result``), and the two good tasks are predicted.

``docs/hostile_inputs.md`` is rendered from the same table; regenerate it with
``python -m tests.test_hostile_input``.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import re
import resource
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "hostile_inputs.md"

PROJECT = 7  # the project whose stored state every case must leave alone
GOOD = "/data/upload/1/ok.png"  # an image the fake Label Studio serves
MAX_IMAGE_PIXELS = 10_000_000
MAX_IMAGE_BYTES = 1_000_000
MAX_RSS_GROWTH_MB = 512

CFG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Shape" predicted_values="circle,square,triangle"/></RectangleLabels></View>'
)


def cfg_with_label(label_xml: str, name: str = "label", image_name: str = "image", value: str = "image") -> str:
    """A detect config whose one label (an XML-escaped ``value``) receives every model class."""
    return (
        f'<View><Image name="{image_name}" value="${value}"/><RectangleLabels name="{name}" toName="{image_name}">'
        f'<Label value="{label_xml}" predicted_values="circle,square,triangle"/></RectangleLabels></View>'
    )


ODD_LABEL_XML = "&quot;Q&apos;s &lt;b&gt;bold&lt;/b&gt; &amp; Ünïcødé 中文 🚀🐱"
ODD_LABEL = "\"Q's <b>bold</b> & Ünïcødé 中文 🚀🐱"
LONG_LABEL = "L" * 10_000
XXE_CFG = (
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="&xxe;" predicted_values="circle"/></RectangleLabels></View>'
)
LAUGHS_CFG = (
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + ']><View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="&j;" predicted_values="circle"/></RectangleLabels></View>'
)


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """An HTTP request; ``{LS}``, ``{LS_PORT}`` and ``{EVIL_PORT}`` in strings are filled in at run time."""

    method: str
    path: str
    json: Any = None
    body: bytes | Callable[[], bytes] | None = None  # raw body (sent instead of ``json``); a callable is made when sent
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    input: str  # what is sent, for the doc
    request: Req
    status: int
    fragment: str  # in the error message (per hostile task for per-task failures), else in the JSON
    kept: str = ""  # what is kept, for the doc (beyond the checks made after every case)
    label: str | None = None  # a label that must show up in the good tasks' regions
    absent: tuple[str, ...] = field(default=())  # strings the answer must not contain
    exposed: bool = False  # sent to the app bound beyond loopback (basic auth and a webhook secret set)

    @property
    def per_task(self) -> bool:
        return self.request.path == "/predict" and self.status == 200 and any(not _is_good(t) for t in _tasks(self.request))


def _tasks(req: Req) -> list:
    tasks = req.json.get("tasks") if isinstance(req.json, dict) else None
    return tasks if isinstance(tasks, list) else []


def _is_good(task: Any) -> bool:
    """Tasks with ids below 10 are expected to be predicted; the others to fail alone."""
    return isinstance(task, dict) and isinstance(task.get("id"), int) and task["id"] < 10


def batch(*bad: Any) -> list:
    """Hostile tasks between two good ones. A string is an image URL; anything else is the task."""
    tasks: list[Any] = [{"id": 1, "data": {"image": GOOD}}]
    for i, b in enumerate(bad):
        tasks.append({"id": 10 + i, "data": {"image": b}} if isinstance(b, str) else b)
    return tasks + [{"id": 2, "data": {"image": GOOD}}]


def predict(tasks: Any, label_config: Any = CFG, **extra: Any) -> Req:
    body = {"tasks": tasks, **extra}
    if label_config is not None:
        body["label_config"] = label_config
    return Req("POST", "/predict", json=body)


def post(path: str, body: Any) -> Req:
    return Req("POST", path, json=body)


def raw(path: str, body: bytes | Callable[[], bytes]) -> Req:
    return Req("POST", path, body=body)


def huge(prefix: bytes, suffix: bytes) -> Callable[[], bytes]:
    """A JSON body of 33 MiB (over MAX_REQUEST_BYTES), built only when sent."""
    return lambda: prefix + b"x" * (33 << 20) + suffix


def label_event(**extra: Any) -> Req:
    return post("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, **extra})


EXPOSED_AUTH = ("ls", "correct horse")  # the exposed app's BASIC_AUTH_USER / BASIC_AUTH_PASS
EXPOSED_SECRET = "webhook-secret"  # its WEBHOOK_SECRET
BASIC_AUTH = "basic auth required"
WEBHOOK_REFUSED = "webhook refused"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def exposed(name: str, what: str, req: Req, fragment: str = BASIC_AUTH, kept: str = "") -> Case:
    """A request without valid credentials to the app bound on 0.0.0.0: refused before it does anything."""
    return Case(name, what, req, 401, fragment, kept or "everything: nothing stored, started or run", exposed=True)


def images(name: str, what: str, urls: list[str], fragment: str, kept: str = "the other tasks of the batch") -> Case:
    return Case(name, what, predict(batch(*urls)), 200, fragment, kept)


PRIVATE = "private, loopback or link-local"
TRAVERSAL = "'..'"
NOT_IMAGE = "not an image"
TRUNCATED = "corrupt or truncated"
NO_COUNT = f"label count of project {PROJECT} unchanged"
CONFIG_KEPT = f"project {PROJECT}'s labeling config (not replaced)"


def forbidden_on_ls(path: str) -> bool:
    """A request the fake Label Studio must never get: its API, a '..' segment, /etc/passwd."""
    decoded = unquote(unquote(unquote(path))).lower()
    return "secret-target" in decoded or "passwd" in decoded or ".." in re.split(r"[/\\?=&]", decoded)


CASES: list[Case] = [
    # -- the body itself
    Case("malformed-json", "`/predict` body `{not json`", raw("/predict", b"{not json"), 400, "must be a JSON object"),
    Case(
        "malformed-json-webhook",
        '`/webhook` body `{"action": ` (cut off)',
        raw("/webhook", b'{"action": '),
        400,
        "must be a JSON object",
        NO_COUNT,
    ),
    Case(
        "invalid-utf8", "`/setup` body of invalid UTF-8 bytes", raw("/setup", b"\xff\xfe\x00{"), 400, "must be a JSON object", CONFIG_KEPT
    ),
    Case("empty-body", "`/predict` with an empty body", raw("/predict", b""), 400, "must be a JSON object"),
    Case("body-list", "`/predict` body `[1, 2]`", raw("/predict", b"[1, 2]"), 400, "must be a JSON object"),
    Case(
        "body-string",
        '`/webhook` body `"ANNOTATION_CREATED"`',
        raw("/webhook", b'"ANNOTATION_CREATED"'),
        400,
        "must be a JSON object",
        NO_COUNT,
    ),
    Case("body-null", "`/setup` body `null`", raw("/setup", b"null"), 400, "must be a JSON object", CONFIG_KEPT),
    Case("body-number", "`/train` body `42`", raw("/train", b"42"), 400, "must be a JSON object"),
    Case(
        "deeply-nested-json",
        "`/predict` body of 100,000 nested `[` (the JSON parser's recursion limit)",
        raw("/predict", b"[" * 100_000),
        400,
        "must be a JSON object",
    ),
    Case(
        "json-nan", '`/predict` with `"tasks": NaN`', raw("/predict", b'{"tasks": NaN, "label_config": "<View/>"}'), 400, "non-empty list"
    ),
    Case(
        "huge-payload",
        "`/predict` body of 33 MiB (over `MAX_REQUEST_BYTES`, 32 MiB)",
        raw("/predict", huge(b'{"tasks": "', b'"}')),
        413,
        "fewer tasks per /predict request",
    ),
    Case(
        "huge-payload-webhook",
        "`/webhook` body of 33 MiB",
        raw("/webhook", huge(b'{"action": "', b'"}')),
        413,
        "fewer tasks per /predict request",
        NO_COUNT,
    ),
    Case("wrong-method", "`GET /predict`", Req("GET", "/predict"), 405, "method is not allowed"),
    Case("unknown-route", "`POST /admin` (no such route)", post("/admin", {}), 404, "not found"),
    # -- wrong types
    Case("tasks-string", "`tasks` is a string", predict("abc"), 400, "non-empty list"),
    Case("tasks-object", "`tasks` is an object", predict({"id": 1, "data": {"image": GOOD}}), 400, "non-empty list"),
    Case("tasks-number", "`tasks` is a number", predict(5), 400, "non-empty list"),
    Case("tasks-empty", "`tasks` is `[]`", predict([]), 400, "non-empty list"),
    Case(
        "task-not-object",
        'tasks `5`, `"x"`, `null`, `[]` between good tasks',
        predict([batch()[0], 5, "x", None, [], batch()[-1]]),
        200,
        "no 'data' object",
        "the good tasks of the batch",
    ),
    Case(
        "task-data-not-object",
        "a task whose `data` is a string / a list",
        predict(batch({"id": 10, "data": "x"}, {"id": 11, "data": [GOOD]})),
        200,
        "no 'data' object",
        "the good tasks of the batch",
    ),
    Case("label-config-number", "`label_config: 123`", predict(batch(), label_config=123), 400, "'label_config' is required"),
    Case("label-config-list", '`label_config: ["<View/>"]`', predict(batch(), label_config=["<View/>"]), 400, "'label_config' is required"),
    Case(
        "setup-schema-object",
        "`/setup` with `schema: {}`",
        post("/setup", {"project": f"{PROJECT}.1", "schema": {"View": 1}}),
        400,
        "'schema'",
        CONFIG_KEPT,
    ),
    Case(
        "setup-schema-empty",
        '`/setup` with `schema: "   "`',
        post("/setup", {"project": f"{PROJECT}.1", "schema": "   "}),
        400,
        "'schema'",
        CONFIG_KEPT,
    ),
    Case(
        "setup-score-threshold-word",
        '`/setup` with `model_score_threshold="high"` on the control',
        post(
            "/setup", {"project": f"{PROJECT}.1", "schema": CFG.replace('toName="image">', 'toName="image" model_score_threshold="high">')}
        ),
        422,
        'has model_score_threshold="high": use a confidence between 0 and 1',
        CONFIG_KEPT,
    ),
    Case(
        "setup-extra-params-string",
        '`/setup` with `extra_params: "20"`',
        post("/setup", {"project": "8.1", "schema": CFG, "extra_params": "20"}),
        400,
        "must be a JSON object",
    ),
    Case(
        "setup-threshold-huge",
        "`/setup` with `extra_params.retrain_min_new_labels: 10**30`",
        post("/setup", {"project": "8.1", "schema": CFG, "extra_params": {"retrain_min_new_labels": 10**30}}),
        400,
        "retrain_min_new_labels",
    ),
    Case(
        "setup-hostname-elsewhere",
        "`/setup` for project 7 naming another Label Studio (`hostname` an internal service, `access_token`)",
        post(
            "/setup",
            {"project": f"{PROJECT}.1", "schema": CFG, "hostname": "http://127.0.0.1:{EVIL_PORT}", "access_token": "stolen-token"},
        ),
        200,
        '"model_version"',
        "where images come from: `LABEL_STUDIO_URL` is set, so `/setup` changes it for no project (the later cases' downloads "
        "reach no other server); without it, only for that project and never on an open port (docs/connecting.md)",
    ),
    # -- beyond loopback: every route but /health needs credentials (ml_backend/access.py)
    exposed(
        "exposed-setup-no-auth",
        "`/setup` without credentials to a backend on 0.0.0.0: `extra_params` lowering the retraining threshold, "
        "`hostname` an internal service",
        post(
            "/setup",
            {
                "project": f"{PROJECT}.1",
                "schema": CFG,
                "extra_params": {"retrain_min_new_labels": 1},
                "hostname": "http://127.0.0.1:{EVIL_PORT}",
                "access_token": "stolen-token",
            },
        ),
        kept=f"project {PROJECT}'s threshold, config and image source",
    ),
    exposed(
        "exposed-setup-wrong-password",
        "the same `/setup` with the right user and a wrong password",
        Req("POST", "/setup", json={"project": f"{PROJECT}.1", "schema": CFG}, headers=basic(EXPOSED_AUTH[0], "guess")),
        kept=f"project {PROJECT}'s config",
    ),
    exposed("exposed-predict-no-auth", "`/predict` without credentials", predict(batch())),
    exposed("exposed-train-no-auth", f"`/train` for project {PROJECT} without credentials", post("/train", {"project": PROJECT})),
    exposed(
        "exposed-webhook-no-secret",
        "a label event without the `X-Webhook-Secret` header",
        label_event(annotation={"id": 99, "updated_at": "t9"}),
        WEBHOOK_REFUSED,
        NO_COUNT,
    ),
    exposed(
        "exposed-webhook-wrong-secret",
        "a label event with a wrong secret",
        Req(
            "POST",
            "/webhook",
            json={"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, "annotation": {"id": 99, "updated_at": "t9"}},
            headers={"X-Webhook-Secret": "guess"},
        ),
        WEBHOOK_REFUSED,
        NO_COUNT,
    ),
    exposed(
        "exposed-train-button-wrong-password",
        "Label Studio's train button (`START_TRAINING` on `/webhook`) with a wrong basic-auth password and no secret",
        Req("POST", "/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}, headers=basic(EXPOSED_AUTH[0], "guess")),
        WEBHOOK_REFUSED,
    ),
    exposed(
        "exposed-training-no-auth", f"`GET /training?project={PROJECT}` without credentials", Req("GET", f"/training?project={PROJECT}")
    ),
    exposed("exposed-scores-no-auth", f"`GET /scores?project={PROJECT}` without credentials", Req("GET", f"/scores?project={PROJECT}")),
    exposed("exposed-versions-no-auth", "`GET /versions` without credentials", Req("GET", "/versions")),
    exposed("exposed-metrics-no-auth", "`GET /metrics` without credentials", Req("GET", "/metrics")),
    Case(
        "project-list-predict",
        "`/predict` with `project: [7]` and a config",
        predict(batch(), project=[PROJECT]),
        200,
        '"result"',
        "the project's own model is not used: the base model answers",
    ),
    Case(
        "project-list-no-config",
        "`/predict` with `project: [7]`, no config",
        predict(batch(), label_config=None, project=[PROJECT]),
        400,
        "'label_config' is required",
        f"project {PROJECT}'s config is not picked up by a list",
    ),
    Case(
        "project-list-setup",
        "`/setup` with `project: [7]`",
        post("/setup", {"project": [PROJECT], "schema": CFG}),
        200,
        "model_version",
        CONFIG_KEPT,
    ),
    Case(
        "project-list-webhook",
        "label event with `project: [7]`",
        post("/webhook", {"action": "ANNOTATION_CREATED", "project": [PROJECT], "annotation": {"id": 50}}),
        200,
        '"labels_since_scoring": 0',
        NO_COUNT,
    ),
    Case(
        "project-unicode-digit",
        'label event with `project: {"id": "²"}` (a Unicode digit `int()` rejects)',
        post("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": "²"}, "annotation": {"id": 51}}),
        200,
        '"labels_since_scoring": 0',
        NO_COUNT,
    ),
    Case(
        "project-huge-id",
        'label event with `project: {"id": 10**30}` (beyond SQLite\'s integers)',
        post("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 10**30}, "annotation": {"id": 52}}),
        200,
        '"labels_since_scoring": 0',
        NO_COUNT,
    ),
    Case(
        "setup-project-huge-id",
        '`/setup` with `project: "<30 digits>.1"`',
        post("/setup", {"project": "9" * 30 + ".1", "schema": CFG}),
        200,
        "model_version",
        CONFIG_KEPT,
    ),
    Case("training-query-huge", "`GET /training?project=<30 digits>`", Req("GET", "/training?project=" + "9" * 30), 400, "'project'"),
    Case("training-query-unicode-digit", "`GET /training?project=²`", Req("GET", "/training?project=%C2%B2"), 400, "'project'"),
    Case(
        "versions-query-long",
        "`GET /versions?project=<300 digits>` (a path component too long for the file system)",
        Req("GET", "/versions?project=" + "9" * 300),
        400,
        "'project'",
    ),
    Case(
        "action-number",
        "`/webhook` with `action: 42`",
        post("/webhook", {"action": 42, "project": {"id": PROJECT}}),
        400,
        "'action'",
        NO_COUNT,
    ),
    Case(
        "action-list",
        '`/webhook` with `action: ["ANNOTATION_CREATED"]`',
        post("/webhook", {"action": ["ANNOTATION_CREATED"], "project": {"id": PROJECT}}),
        400,
        "'action'",
        NO_COUNT,
    ),
    # -- webhooks that must count nothing
    Case(
        "webhook-unknown-event",
        "`PROJECT_UPDATED` for project 7",
        post("/webhook", {"action": "PROJECT_UPDATED", "project": {"id": PROJECT}}),
        200,
        '"status": "ok"',
        NO_COUNT,
    ),
    Case(
        "webhook-made-up-event",
        "made-up action `<script>alert(1)</script>` carrying an annotation",
        post("/webhook", {"action": "<script>alert(1)</script>", "project": {"id": PROJECT}, "annotation": {"id": 53}}),
        200,
        '"status": "ok"',
        NO_COUNT,
    ),
    Case(
        "webhook-annotation-garbage",
        "`ANNOTATION_CREATED` whose `annotation` is a string",
        label_event(annotation="garbage"),
        200,
        '"labels_since_training": 1',
        NO_COUNT,
    ),
    Case(
        "webhook-annotation-no-id",
        "`ANNOTATION_CREATED` whose annotation has no id",
        label_event(annotation={"result": []}),
        200,
        '"labels_since_training": 1',
        NO_COUNT,
    ),
    Case(
        "webhook-replayed-event",
        "the baseline label event delivered again",
        label_event(annotation={"id": 1, "updated_at": "t0"}),
        200,
        '"labels_since_training": 1',
        "counted once",
    ),
    Case(
        "webhook-annotations-number",
        "`ANNOTATIONS_CREATED` with `annotations: 5`",
        post("/webhook", {"action": "ANNOTATIONS_CREATED", "project": {"id": PROJECT}, "annotations": 5}),
        200,
        '"labels_since_training": 1',
        NO_COUNT,
    ),
    Case(
        "webhook-deleted-number",
        "`ANNOTATIONS_DELETED` with `annotations: 5`",
        post("/webhook", {"action": "ANNOTATIONS_DELETED", "project": {"id": PROJECT}, "annotations": 5}),
        200,
        '"labels_since_training": 1',
        NO_COUNT,
    ),
    Case(
        "webhook-tasks-bad-ids",
        '`TASKS_CREATED` with task ids `"abc"`, `null`, `[]`',
        post("/webhook", {"action": "TASKS_CREATED", "project": {"id": 9}, "tasks": [{"id": "abc"}, {"id": None}, {"id": []}]}),
        200,
        '"queued_for_scoring": 0',
        "nothing queued",
    ),
    Case(
        "webhook-tasks-huge-ids",
        "`TASKS_CREATED` with task ids `2**63` and `10**30` (beyond SQLite's integers)",
        post("/webhook", {"action": "TASKS_CREATED", "project": {"id": 9}, "tasks": [{"id": 2**63}, {"id": 10**30}]}),
        200,
        '"queued_for_scoring": 0',
        "nothing queued",
    ),
    Case(
        "webhook-tasks-not-list",
        '`TASKS_CREATED` with `tasks: "abc"`',
        post("/webhook", {"action": "TASKS_CREATED", "project": {"id": 9}, "tasks": "abc"}),
        200,
        '"status": "ok"',
        "nothing queued",
    ),
    # -- tasks without an image
    Case(
        "no-image",
        'tasks with `data: {}`, `data.image: ""`, `data.image: 123`, `data.image: [url]`',
        predict(
            batch(
                {"id": 10, "data": {}},
                {"id": 11, "data": {"image": ""}},
                {"id": 12, "data": {"image": 123}},
                {"id": 13, "data": {"image": [GOOD]}},
            )
        ),
        200,
        "no image under data.image",
        "the other tasks of the batch",
    ),
    images(
        "not-a-url",
        '`data.image: "images/a.jpg"` and `"//127.0.0.1:{EVIL_PORT}/x.png"`',
        ["images/a.jpg", "//127.0.0.1:{EVIL_PORT}/x.png"],
        "is not a URL",
    ),
    images(
        "bad-schemes",
        "`file:///etc/passwd`, `ftp://`, `gopher://`, `data:`, `javascript:` URLs",
        [
            "file:///etc/passwd",
            "ftp://127.0.0.1/x.png",
            "gopher://127.0.0.1:6379/_INFO",
            "data:image/png;base64,iVBORw0KGgo=",
            "javascript:alert(1)",
        ],
        "unsupported URL scheme",
    ),
    images("no-host", "`http:///x.png`", ["http:///x.png"], "no host"),
    images("bad-port", "`http://127.0.0.1:99999/x.png` (port out of range)", ["http://127.0.0.1:99999/x.png"], "malformed URL"),
    images("malformed-url", "`http://[::1/x.png` (unclosed IPv6 bracket)", ["http://[::1/x.png"], "malformed URL"),
    # -- image contents
    images(
        "corrupt-bytes",
        "random bytes, an empty file, HTML and SVG served as images",
        ["/data/upload/1/corrupt.jpg", "/data/upload/1/empty.png", "/data/upload/1/page.html", "/data/upload/1/drawing.svg"],
        NOT_IMAGE,
    ),
    images("png-signature-garbage", "a PNG signature followed by garbage", ["/data/upload/1/badsig.png"], TRUNCATED),
    images("truncated-jpeg", "a JPEG cut in half", ["/data/upload/1/truncated.jpg"], TRUNCATED),
    images("truncated-png", "a PNG cut in half", ["/data/upload/1/truncated.png"], TRUNCATED),
    images("png-bad-crc", "a PNG whose IDAT checksum is wrong", ["/data/upload/1/badcrc.png"], TRUNCATED),
    images(
        "bomb-30000",
        "a 30000x30000 PNG (900 M pixels, ~110 KB of compressed zeros)",
        ["/data/upload/1/bomb30000.png"],
        "MAX_IMAGE_PIXELS",
        "the other tasks; memory (peak RSS grows < 512 MiB)",
    ),
    images(
        "bomb-5000",
        f"a 5000x5000 PNG (25 M pixels: under Pillow's own limit, over `MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS}`)",
        ["/data/upload/1/bomb5000.png"],
        "MAX_IMAGE_PIXELS",
        "the other tasks; memory",
    ),
    images(
        "too-many-bytes", f"a 1.5 MB download (over `MAX_IMAGE_BYTES={MAX_IMAGE_BYTES}`)", ["/data/upload/1/big.bin"], "MAX_IMAGE_BYTES"
    ),
    images("long-url", "a 100,000-character image path", ["/data/upload/1/" + "a" * 100_000 + ".png"], "HTTP 414"),
    Case(
        "degenerate-images",
        "1x1, 1x3000 and 3000x1 images, 16-bit grey, CMYK JPEG, palette PNG with transparency",
        predict(
            batch()[:1]
            + [
                {"id": 3 + i, "data": {"image": f"/data/upload/1/{n}"}}
                for i, n in enumerate(["1x1.png", "1x3000.png", "3000x1.png", "grey16.png", "cmyk.jpg", "palette.png"])
            ]
            + batch()[1:]
        ),
        200,
        '"result"',
        "all predicted",
    ),
    # -- SSRF
    images(
        "ssrf-loopback",
        "`http://127.0.0.1:{EVIL_PORT}/x.png` (a live internal server)",
        ["http://127.0.0.1:{EVIL_PORT}/x.png"],
        PRIVATE,
        "the internal server gets no request",
    ),
    images(
        "ssrf-private-ranges",
        "`10.0.0.1`, `192.168.1.1`, `172.16.0.1`, `100.64.0.1`, `[fd00::1]`, `[fe80::1]`",
        [
            "http://10.0.0.1/x.png",
            "http://192.168.1.1/x.png",
            "http://172.16.0.1/x.png",
            "http://100.64.0.1/x.png",
            "http://[fd00::1]/x.png",
            "http://[fe80::1]/x.png",
        ],
        PRIVATE,
    ),
    images("ssrf-metadata", "`http://169.254.169.254/latest/meta-data/iam/`", ["http://169.254.169.254/latest/meta-data/iam/"], PRIVATE),
    images(
        "ssrf-ipv6-loopback",
        "`http://[::1]:{EVIL_PORT}/`, `http://[::ffff:127.0.0.1]:{EVIL_PORT}/`, `http://[::]:{EVIL_PORT}/`",
        ["http://[::1]:{EVIL_PORT}/x.png", "http://[::ffff:127.0.0.1]:{EVIL_PORT}/x.png", "http://[::]:{EVIL_PORT}/x.png"],
        PRIVATE,
    ),
    images(
        "ssrf-localhost-name",
        "`http://localhost:{EVIL_PORT}/x.png`, `http://LocalHost:{EVIL_PORT}/x.png`",
        ["http://localhost:{EVIL_PORT}/x.png", "http://LocalHost:{EVIL_PORT}/x.png"],
        PRIVATE,
    ),
    images(
        "ssrf-ip-encodings",
        "`http://2130706433:{EVIL_PORT}/`, `0x7f000001`, `0177.0.0.1`, `127.1`, `0x7f.1`, `0.0.0.0`, `0`",
        [f"http://{h}:{{EVIL_PORT}}/x.png" for h in ("2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "0.0.0.0", "0")],
        PRIVATE,
    ),
    images(
        "ssrf-userinfo",
        "`http://images.example.com@127.0.0.1:{EVIL_PORT}/x.png`",
        ["http://images.example.com@127.0.0.1:{EVIL_PORT}/x.png"],
        PRIVATE,
    ),
    images(
        "ssrf-parser-confusion",
        "`http://127.0.0.1:{EVIL_PORT}\\@93.184.216.34/x.png` (one parser reads the public host, requests connects to the other)",
        ["http://127.0.0.1:{EVIL_PORT}\\@93.184.216.34/x.png"],
        "ambiguous",
        "the internal server gets no request",
    ),
    images(
        "token-leak-parser-confusion",
        "`http://127.0.0.1:{EVIL_PORT}\\@127.0.0.1:{LS_PORT}/data/upload/1/ok.png` (reads as Label Studio, connects elsewhere)",
        ["http://127.0.0.1:{EVIL_PORT}\\@127.0.0.1:{LS_PORT}" + GOOD],
        "ambiguous",
        "the Label Studio token stays with Label Studio",
    ),
    images(
        "redirect-to-metadata",
        "an allowed server (Label Studio) redirects to `169.254.169.254`",
        ["/data/upload/1/redirect-metadata"],
        PRIVATE,
    ),
    images(
        "redirect-to-loopback",
        "Label Studio redirects to `http://127.0.0.1:{EVIL_PORT}/x.png`",
        ["/data/upload/1/redirect-loopback"],
        PRIVATE,
        "the internal server gets no request",
    ),
    images(
        "redirect-to-private",
        "Label Studio redirects to `http://10.0.0.1/x.png` and to `localhost`",
        ["/data/upload/1/redirect-private", "/data/upload/1/redirect-localhost"],
        PRIVATE,
    ),
    images(
        "redirect-to-file", "Label Studio redirects to `file:///etc/passwd`", ["/data/upload/1/redirect-file"], "unsupported URL scheme"
    ),
    images(
        "redirect-confusion",
        "Label Studio redirects to `http://127.0.0.1:{EVIL_PORT}\\@93.184.216.34/`",
        ["/data/upload/1/redirect-confusion"],
        "ambiguous",
    ),
    images("redirect-loop", "Label Studio redirects to itself", ["/data/upload/1/redirect-loop"], "too many redirects"),
    # -- path traversal in Label Studio paths (fetched with the backend's token)
    images(
        "traversal-upload",
        "`/data/upload/../../api/secret-target`",
        ["/data/upload/../../api/secret-target"],
        TRAVERSAL,
        "the token goes to no other Label Studio endpoint",
    ),
    images(
        "traversal-upload-encoded",
        "`/data/upload/1/%2e%2e/%2e%2e/%2e%2e/api/...`, `%2E%2E%2F`, double-encoded `%252e%252e`",
        [
            "/data/upload/1/%2e%2e/%2e%2e/%2e%2e/api/secret-target",
            "/data/upload/%2E%2E%2F%2E%2E%2Fapi/secret-target",
            "/data/upload/%252e%252e/%252e%252e/api/secret-target",
        ],
        TRAVERSAL,
        "the token goes to no other Label Studio endpoint",
    ),
    images(
        "traversal-backslash",
        "`/data/upload/..\\..\\api\\secret-target` and `..%5c..%5c`",
        ["/data/upload/..\\..\\api\\secret-target", "/data/upload/..%5c..%5capi%5csecret-target"],
        TRAVERSAL,
    ),
    images(
        "traversal-short",
        "`/data/../api/...`, `data/upload/../../api/...`, `/tasks/1/../../api/...`",
        ["/data/../api/secret-target", "data/upload/../../api/secret-target", "/tasks/1/../../api/secret-target"],
        TRAVERSAL,
    ),
    images(
        "traversal-local-files",
        "`/data/local-files/?d=../../etc/passwd`, `?d=%2e%2e/...`, `?d=images/../../../etc/passwd`",
        [
            "/data/local-files/?d=../../etc/passwd",
            "/data/local-files/?d=%2e%2e/%2e%2e/etc/passwd",
            "/data/local-files/?d=images/../../../etc/passwd",
        ],
        TRAVERSAL,
    ),
    images(
        "traversal-storage-data",
        "`/storage-data/uploaded/?filepath=../../api/secret-target`",
        ["/storage-data/uploaded/?filepath=../../api/secret-target"],
        TRAVERSAL,
    ),
    images(
        "traversal-absolute-ls",
        "`{LS}/data/upload/../../api/...` (absolute URL to Label Studio)",
        ["{LS}/data/upload/../../api/secret-target", "{LS}/data/upload/%2e%2e/%2e%2e/api/secret-target"],
        TRAVERSAL,
    ),
    images(
        "ls-api-absolute",
        "`{LS}/api/projects/secret-target` and `/tasks/1/annotations/secret-target` (Label Studio, but not a media path)",
        ["{LS}/api/projects/secret-target", "/tasks/1/annotations/secret-target"],
        "only its media paths",
        "the token goes to no other Label Studio endpoint",
    ),
    Case(
        "dots-in-file-names",
        "look-alikes that are fine: `/data/upload/1/a..b.png`, `/data/upload/1/..png`, `/data/local-files/?d=dir/ok.png`",
        predict(
            batch()[:1]
            + [
                {"id": 3 + i, "data": {"image": u}}
                for i, u in enumerate(["/data/upload/1/a..b.png", "/data/upload/1/..png", "/data/local-files/?d=dir/ok.png"])
            ]
            + batch()[1:]
        ),
        200,
        '"result"',
        "all predicted",
    ),
    # -- labeling configs and labels with odd characters
    Case(
        "setup-odd-label",
        "`/setup` with a label of quotes, `<b>`, `&`, Unicode and emoji",
        post("/setup", {"project": "8.1", "schema": cfg_with_label(ODD_LABEL_XML)}),
        200,
        "model_version",
    ),
    Case(
        "predict-odd-label",
        "`/predict` with that label",
        predict(batch(), label_config=cfg_with_label(ODD_LABEL_XML)),
        200,
        '"result"',
        label=ODD_LABEL,
    ),
    Case(
        "setup-long-label",
        "`/setup` with a 10,000-character label and 1,000-character control names",
        post("/setup", {"project": "8.1", "schema": cfg_with_label(LONG_LABEL, name="n" * 1000, image_name="i" * 1000)}),
        200,
        "model_version",
    ),
    Case(
        "predict-long-label",
        "`/predict` with that label",
        predict(batch(), label_config=cfg_with_label(LONG_LABEL, name="n" * 1000, image_name="i" * 1000)),
        200,
        '"result"',
        label=LONG_LABEL,
    ),
    Case(
        "predict-unicode-names",
        'control names and data key in Unicode (`name="框🚀"`, `value="$画像"`)',
        predict(
            [{"id": 1, "data": {"画像": GOOD}}, {"id": 2, "data": {"画像": GOOD}}],
            label_config=cfg_with_label("猫", name="框🚀", image_name="图", value="画像"),
        ),
        200,
        '"result"',
        label="猫",
    ),
    Case(
        "setup-many-labels",
        "`/setup` with 2,000 labels",
        post(
            "/setup",
            {
                "project": "8.1",
                "schema": CFG.replace("</RectangleLabels>", "".join(f'<Label value="l{i}"/>' for i in range(2000)) + "</RectangleLabels>"),
            },
        ),
        200,
        "model_version",
    ),
    Case(
        "setup-unmapped-odd-labels",
        "`/setup` of another project whose only labels are emoji and `a\\r\\nSet-Cookie: x` (no class maps: a new project's classes)",
        post(
            "/setup",
            {
                "project": f"{PROJECT + 1}.1",
                "schema": CFG.replace(
                    '<Label value="Shape" predicted_values="circle,square,triangle"/>',
                    '<Label value="🚀"/><Label value="a&#13;&#10;Set-Cookie: x"/>',
                ),
            },
        ),
        200,
        "no model for 🚀, a\\r\\nSet-Cookie: x yet",
        "the labels only inside the JSON answer; the reason phrase stays one ASCII line",
    ),
    Case(
        "setup-malformed-xml",
        '`/setup` with `<View><Image name="image"` (unclosed)',
        post("/setup", {"project": f"{PROJECT}.1", "schema": '<View><Image name="image"'}),
        422,
        "could not be parsed",
        CONFIG_KEPT,
    ),
    Case(
        "setup-xxe",
        "`/setup` with an external entity reading `/etc/passwd`",
        post("/setup", {"project": f"{PROJECT}.1", "schema": XXE_CFG}),
        422,
        "could not be parsed",
        CONFIG_KEPT + "; no file content in the answer",
        absent=("root:",),
    ),
    Case(
        "setup-billion-laughs",
        "`/setup` with nested entities expanding to 10 GB (billion laughs)",
        post("/setup", {"project": f"{PROJECT}.1", "schema": LAUGHS_CFG}),
        422,
        "could not be parsed",
        CONFIG_KEPT + "; memory",
    ),
    Case(
        "setup-no-image-tag",
        "`/setup` with a text-only config",
        post("/setup", {"project": f"{PROJECT}.1", "schema": '<View><Text name="t" value="$t"/></View>'}),
        422,
        "needs an <Image> tag",
        CONFIG_KEPT,
    ),
    Case(
        "predict-malformed-xml",
        '`/predict` with `label_config: "<View><<<"`',
        predict(batch(), label_config="<View><<<"),
        422,
        "could not be parsed",
    ),
    # -- volume
    Case(
        "absurd-task-count",
        "one `/predict` with 20,000 tasks (19,998 without an image)",
        predict(batch(*({"id": 10 + i, "data": {}} for i in range(19_998)))),
        200,
        "no image under data.image",
        "every task answered, in order; the good ones predicted",
    ),
]


# Gaps these cases found, for the doc's Notes column: each fixed, with what happened before.
S1 = "fixed in server.py (was: 500 RecursionError)"
S2 = "fixed in server.py: project ids are ASCII digits below 2**63 (was: 500, ValueError or OverflowError from SQLite)"
S3 = "fixed in training_jobs.py: capped at 1,000,000,000 (was: 500 OverflowError from SQLite)"
TRAV = "fixed in images.py (was: fetched with the Label Studio token, e.g. `GET /api/secret-target`)"
NOTES = {
    "deeply-nested-json": S1,
    "setup-threshold-huge": S3,
    "webhook-tasks-huge-ids": "fixed in scoring_jobs.py: task ids below 2**63 (was: 500 OverflowError from SQLite)",
    **dict.fromkeys(
        ["project-unicode-digit", "project-huge-id", "setup-project-huge-id", "training-query-huge", "training-query-unicode-digit"], S2
    ),
    "versions-query-long": "fixed in server.py (was: 200, a 300-digit project id looked up)",
    **dict.fromkeys(["webhook-annotations-number", "webhook-deleted-number"], "fixed in label_events.py (was: 500 TypeError)"),
    **dict.fromkeys(["bad-port", "malformed-url"], "fixed in images.py (was: 'unexpected error while loading the image: ValueError')"),
    **dict.fromkeys(
        ["ssrf-parser-confusion", "redirect-confusion"],
        "fixed in images.py (was: the guard checked the public host, requests fetched from the internal server)",
    ),
    "token-leak-parser-confusion": "fixed in images.py (was: the Label Studio token was sent to the internal server)",
    **dict.fromkeys(
        [
            "traversal-upload",
            "traversal-upload-encoded",
            "traversal-backslash",
            "traversal-short",
            "traversal-local-files",
            "traversal-storage-data",
            "traversal-absolute-ls",
            "ls-api-absolute",
        ],
        TRAV,
    ),
}

# --- fake servers --------------------------------------------------------------------------------


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` zeros, compressed row by row (never held whole)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    block = row * 256
    parts = [z.compress(block) for _ in range(height // 256)] + [z.compress(row * (height % 256)), z.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _files() -> dict[str, bytes]:
    from ml_backend.tools.synthetic import make_image

    rng = np.random.default_rng(7)
    ok = make_image(rng, 64, 48).image
    ok_png = _png(ok)
    jpeg = io.BytesIO()
    make_image(rng, 96, 80).image.save(jpeg, "JPEG", quality=95)
    big_png = _png(make_image(rng, 96, 80).image)
    badcrc = bytearray(big_png)
    idat = badcrc.index(b"IDAT")
    badcrc[idat + 8] ^= 0xFF  # a data byte: the chunk's CRC no longer matches
    cmyk = io.BytesIO()
    ok.convert("CMYK").save(cmyk, "JPEG")
    palette = ok.convert("P")
    palette.info["transparency"] = 0
    return {
        "ok.png": ok_png,
        "a..b.png": ok_png,
        "..png": ok_png,
        "corrupt.jpg": bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
        "empty.png": b"",
        "page.html": b"<!doctype html><html><body>login</body></html>",
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        "badsig.png": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 64,
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "truncated.png": big_png[: len(big_png) // 2],
        "badcrc.png": bytes(badcrc),
        "bomb30000.png": png_bomb(30_000, 30_000),
        "bomb5000.png": png_bomb(5_000, 5_000),
        "big.bin": b"\x00" * 1_500_000,
        "1x1.png": _png(Image.new("RGB", (1, 1), (200, 10, 10))),
        "1x3000.png": _png(Image.new("RGB", (1, 3000), (10, 200, 10))),
        "3000x1.png": _png(Image.new("RGB", (3000, 1), (10, 10, 200))),
        "grey16.png": _png(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20, mode="I;16")),
        "cmyk.jpg": cmyk.getvalue(),
        "palette.png": _png(palette),
    }


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes):
        self.routes = routes  # (path) -> (status, headers, body)
        self.seen: list[tuple[str, str | None]] = []  # (raw request path, Authorization header)
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self) -> list[tuple[str, str | None]]:
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        with self.server.lock:
            self.server.seen.append((self.path, self.headers.get("Authorization")))
        status, headers, body = self.server.routes(self.path)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def servers():
    files = _files()
    evil = Recorder(lambda path: (200, {"Content-Type": "image/png"}, files["ok.png"]))
    evil_port = evil.server_address[1]
    redirects = {
        "redirect-metadata": "http://169.254.169.254/latest/meta-data/iam/",
        "redirect-loopback": f"http://127.0.0.1:{evil_port}/x.png",
        "redirect-private": "http://10.0.0.1/x.png",
        "redirect-localhost": f"http://localhost:{evil_port}/x.png",
        "redirect-file": "file:///etc/passwd",
        "redirect-confusion": f"http://127.0.0.1:{evil_port}\\@93.184.216.34/x.png",
        "redirect-loop": "/data/upload/1/redirect-loop",
    }

    def label_studio(path: str):
        p = urlsplit(path)
        if p.path.startswith("/data/upload/1/"):
            name = p.path[len("/data/upload/1/") :]
            if name in redirects:
                return 302, {"Location": redirects[name]}, b""
            if name in files:
                return 200, {"Content-Type": "application/octet-stream"}, files[name]
            return 404, {}, b"not found"
        if p.path == "/data/local-files/" and parse_qs(p.query).get("d") == ["dir/ok.png"]:
            return 200, {"Content-Type": "image/png"}, files["ok.png"]
        if p.path.startswith("/api/"):
            return 200, {"Content-Type": "application/json"}, b'{"secret": "what the token can read"}'
        return 404, {}, b"not found"

    ls = Recorder(label_studio)
    for srv in (ls, evil):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield ls, evil
    for srv in (ls, evil):
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def backend(servers, tiny_weights, tmp_path_factory):
    from ml_backend.server import create_app
    from ml_backend.settings import Settings

    ls, evil = servers
    env = {
        "MODEL_PATH": str(tiny_weights("detect")),
        "MODEL_DIR": str(tmp_path_factory.mktemp("hostile-state")),
        "LABEL_STUDIO_URL": ls.base,
        "LABEL_STUDIO_API_KEY": "hostile-test-token",
        "ALLOWED_HOSTS": "",
        "IMGSZ": "64",
        "SCORE_THRESHOLD": "0.0",
        "MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
        "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "IMAGE_TIMEOUT": "5",
        "RETRAIN_MIN_NEW_LABELS": "0",
        "RESCORE_MIN_NEW_LABELS": "100000",
    }
    app = create_app(Settings.from_env(env), warm_up=False)
    client = app.test_client()
    app.extensions["ml_backend"].holder.get()  # load the model now (/setup waits only 2 s)
    assert client.post("/setup", json={"project": f"{PROJECT}.1700000000", "schema": CFG}).status_code == 200
    r = client.post(
        "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, "annotation": {"id": 1, "updated_at": "t0"}}
    )
    assert r.get_json()["labels_since_training"] == 1
    r = client.post("/predict", json={"tasks": batch(), "project": str(PROJECT)})  # loads the model
    assert r.status_code == 200 and all("result" in e for e in r.get_json()["results"])
    ls.take()
    yield app, client, ls, evil
    app.extensions["ml_backend"].scoring.idle(10)


@pytest.fixture(scope="module")
def exposed_backend(servers, tiny_weights, tmp_path_factory):
    """The app as it is bound beyond loopback: ``HOST=0.0.0.0`` with basic auth and a webhook
    secret, no ``LABEL_STUDIO_URL`` (so ``/setup``'s ``hostname`` would choose where images come
    from); project 7 set up and one label event counted, with credentials."""
    from ml_backend.server import create_app
    from ml_backend.settings import Settings

    ls, evil = servers
    env = {
        "MODEL_PATH": str(tiny_weights("detect")),
        "MODEL_DIR": str(tmp_path_factory.mktemp("hostile-exposed-state")),
        "HOST": "0.0.0.0",
        "BASIC_AUTH_USER": EXPOSED_AUTH[0],
        "BASIC_AUTH_PASS": EXPOSED_AUTH[1],
        "WEBHOOK_SECRET": EXPOSED_SECRET,
        "ALLOWED_HOSTS": "",
        "IMGSZ": "64",
        "RETRAIN_MIN_NEW_LABELS": "0",
        "RESCORE_MIN_NEW_LABELS": "100000",
    }
    app = create_app(Settings.from_env(env), warm_up=False)
    client = app.test_client()
    app.extensions["ml_backend"].holder.get()
    auth = basic(*EXPOSED_AUTH)
    assert client.post("/setup", json={"project": f"{PROJECT}.1700000000", "schema": CFG}, headers=auth).status_code == 200
    event = {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, "annotation": {"id": 1, "updated_at": "t0"}}
    r = client.post("/webhook", json=event, headers={"X-Webhook-Secret": EXPOSED_SECRET})
    assert r.get_json()["labels_since_training"] == 1
    ls.take()
    yield app, client, ls, evil
    app.extensions["ml_backend"].scoring.idle(10)


def fill(obj: Any, subs: dict[str, str]) -> Any:
    if isinstance(obj, str):
        for k, v in subs.items():
            obj = obj.replace(k, v)
        return obj
    if isinstance(obj, list):
        return [fill(x, subs) for x in obj]
    if isinstance(obj, dict):
        return {fill(k, subs): fill(v, subs) for k, v in obj.items()}
    return obj


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, request: pytest.FixtureRequest) -> None:
    app, client, ls, evil = request.getfixturevalue("exposed_backend" if case.exposed else "backend")
    creds = basic(*EXPOSED_AUTH) if case.exposed else {}  # for the checks after the case
    subs = {"{LS}": ls.base, "{LS_PORT}": str(ls.server_address[1]), "{EVIL_PORT}": str(evil.server_address[1])}
    req = case.request
    ls.take(), evil.take()
    rss_before = _peak_rss_mb()
    if req.body is not None:
        data = req.body() if callable(req.body) else req.body
        resp = client.open(req.path, method=req.method, data=data, content_type="application/json", headers=req.headers)
    elif req.json is not None:
        resp = client.open(req.path, method=req.method, json=fill(req.json, subs), headers=req.headers)
    else:
        resp = client.open(req.path, method=req.method, headers=req.headers)

    body = resp.get_json(silent=True)
    text = resp.get_data(as_text=True)

    # -- nothing leaked (checked first: a leak matters more than a wrong answer)
    leaked = evil.take()
    assert not leaked, f"requests reached the internal server: {leaked}"
    for path, auth in ls.take():
        assert not forbidden_on_ls(path), f"Label Studio got {path!r} (token {auth!r})"
    assert resp.status_code == case.status, f"{case.name}: {resp.status}: {text[:500]}"
    assert isinstance(body, dict), f"{case.name}: the answer is not a JSON object: {text[:200]}"
    reason = resp.status.split(" ", 1)[1] if " " in resp.status else ""
    assert reason.isascii() and reason.isprintable(), f"reason phrase {reason!r}"
    if case.status >= 400:
        assert case.fragment in body["error"], body["error"]
    elif case.per_task:
        tasks = fill(req.json["tasks"], subs)
        results = body["results"]
        assert len(results) == len(tasks)
        for task, entry in zip(tasks, results):
            if _is_good(task):
                assert "result" in entry and "error" not in entry, f"good task {task.get('id')} failed: {entry}"
            else:
                assert "result" not in entry, f"hostile task {str(task)[:200]} was predicted: the guard let it through"
                assert case.fragment in entry.get("error", ""), f"task {str(task)[:200]}: {entry}"
                assert entry["task"] == (task.get("id") if isinstance(task, dict) else None)
    else:
        assert case.fragment in json.dumps(body, ensure_ascii=False), text[:500]
        if req.path == "/predict":
            assert all("result" in e for e in body["results"]), body
    if case.label is not None:
        labels = {lab for e in body["results"] for r in e["result"] for lab in r["value"]["rectanglelabels"]}
        assert labels == {case.label}, f"labels came back as {sorted(labels)[:3]}"
    for s in case.absent:
        assert s not in text

    # -- nothing broken, lost or leaked
    assert client.get("/health").get_json()["status"] == "UP"
    status = client.get(f"/training?project={PROJECT}", headers=creds).get_json()
    assert status["labels_since_training"] == 1, f"project {PROJECT}'s label count changed: {status}"
    assert app.extensions["ml_backend"].project_configs.get(str(PROJECT)) == CFG
    if case.exposed:  # refused before anything happened: threshold, image source and state as they were
        assert (status["retrain_min_new_labels"], status["retrain_threshold_from"]) == (0, "RETRAIN_MIN_NEW_LABELS")
        assert status["state"] == "idle" and status["runs"] == 0, status
        assert PROJECT not in app.extensions["ml_backend"].predictor.project_fetchers
    grown = _peak_rss_mb() - rss_before
    assert grown < MAX_RSS_GROWTH_MB, f"peak memory grew by {grown:.0f} MiB"


# --- the doc --------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _answer(case: Case) -> str:
    if case.status >= 400:
        return f"**{case.status}**, error: “…{case.fragment}…”"
    if case.per_task:
        return f"**200**; each hostile task's entry: `error` “…{case.fragment}…”, no `result`; the good tasks: predictions"
    if case.label is not None:
        return "**200**, predictions labelled with the label exactly as written"
    if case.request.path == "/predict":
        return "**200**, every task predicted"
    return f"**200**, `{case.fragment}`"


def render_doc() -> str:
    lines = [
        "# Hostile inputs",
        "",
        "<!-- Generated from CASES in tests/test_hostile_input.py: edit the table there and run `python -m tests.test_hostile_input`. -->",
        "",
        "What the backend answers to malformed, oversized and malicious requests. Each row is a case of",
        "`tests/test_hostile_input.py`, sent to the in-process app (`LABEL_STUDIO_URL` a local fake,",
        f"`ALLOWED_HOSTS` empty, `MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS}`, `MAX_IMAGE_BYTES={MAX_IMAGE_BYTES}`). In the inputs,",
        "`{LS}` is that Label Studio's URL (`{LS_PORT}` its port) and `{EVIL_PORT}` the port of a live server on",
        "127.0.0.1 that stands for an internal service.",
        "",
        "After **every** case the test checks that the server still answers `/health` 200, that project",
        f"{PROJECT} still counts the label event recorded before the cases (`/training?project={PROJECT}`) and keeps",
        "its labeling config, that no request reached a loopback service or a Label Studio path other than",
        "the image's (nothing under `/api/` got the backend's token), that the HTTP reason phrase is one",
        f"line of ASCII, and that peak memory grew by less than {MAX_RSS_GROWTH_MB} MiB.",
        "",
        "In `/predict`, a task whose image cannot be had fails alone: HTTP 200, its entry is",
        '`{"task": id, "error": "..."}` (Label Studio skips it and asks again later), and the other tasks of',
        "the batch are predicted.",
        "",
        "The `exposed-*` cases go to a second app as it runs beyond loopback (`HOST=0.0.0.0`, `BASIC_AUTH_USER`/`PASS`",
        "and `WEBHOOK_SECRET` set, no `LABEL_STUDIO_URL`), without valid credentials: every route but `/health`",
        "is refused before it does anything (ml_backend/access.py), and after each the test also checks that",
        f"project {PROJECT}'s retraining threshold, image source and training state are as they were. (Serving beyond",
        "loopback with neither refuses to start; `ALLOW_UNAUTHENTICATED=on` is tested in tests/test_access.py and",
        "tests/test_server.py.)",
        "",
        "Notes name the gaps the cases found when they were written, and where each was fixed.",
        "",
        "| Case | Input | Backend answers | Kept | Notes |",
        "|---|---|---|---|---|",
    ]
    for c in CASES:
        lines.append(f"| `{c.name}` | {_md(c.input)} | {_md(_answer(c))} | {_md(c.kept or 'everything')} | {_md(NOTES.get(c.name, ''))} |")
    return "\n".join(lines) + "\n"


def test_doc_matches_the_cases() -> None:
    assert DOC_PATH.is_file() and DOC_PATH.read_text(encoding="utf-8") == render_doc(), (
        f"{DOC_PATH} is out of date: run `python -m tests.test_hostile_input`"
    )


def test_case_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert set(NOTES) <= set(names)


if __name__ == "__main__":
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(render_doc(), encoding="utf-8")
    print(f"wrote {DOC_PATH} ({len(CASES)} cases)")
