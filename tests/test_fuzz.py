"""Fuzzing the HTTP API against its OpenAPI description (:data:`ml_backend.openapi.SPEC`).

Schemathesis generates requests from the spec (its examples, boundary values of every schema,
then random valid and invalid ones) and sends them to the real Flask app in-process: the tiny
test weights, a temporary ``MODEL_DIR``, no Label Studio. Hypothesis adds raw garbage (any
bytes, any content type, any query string). Every answer must be JSON of the declared shape and
never a 5xx: a 500 is a server bug, and the failure prints the request that caused it.

A grid of edge values (ids past SQLite's integers, Unicode digits, 5000-digit strings) runs
through every route that takes an id, each combination its own test. The app runs with a
training runner that finishes at once (no child processes) and with DNS off (only IP literals
and localhost resolve), so nothing leaves the machine.

Reproducible (fixed seeds, no example database) and bounded: ``MAX_EXAMPLES`` per operation in
Schemathesis's fuzzing phase and ``RAW_EXAMPLES`` per route for the raw requests (about 4,000
requests, 25 s on 2 cores); a test that runs past its 120 s timeout fails. Nothing is skipped:
a skipped fuzz test would pass without having fuzzed.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from ml_backend.openapi import SPEC
from ml_backend.server import create_app
from ml_backend.training.run import TrainOutcome

from .test_server import make_settings

SEED = 20240611
MAX_EXAMPLES = 100  # per operation, fuzzing phase (the examples and coverage phases send what they need)
RAW_EXAMPLES = 400  # raw garbage requests
REQUEST_LIMIT_S = 30.0  # one request taking longer is a hang (generous: the machine may be busy)

pytestmark = pytest.mark.timeout(120)  # a hang fails the test rather than the CI job

_stats: dict[str, Any] = {"requests": 0, "by_status": {}}


class _NoTraining:
    """Training runner whose runs end at once, skipped: runs the fuzzer queues spawn no processes."""

    def start(self, req: Any) -> Any:
        outcome = TrainOutcome(req.project_id, "skipped", req.base_version, "no training in the fuzz test")
        return SimpleNamespace(done=lambda: True, progress=lambda: None, cancel=lambda: None, outcome=lambda: outcome)


@pytest.fixture(scope="module", autouse=True)
def _offline(monkeypatch_module: pytest.MonkeyPatch) -> None:
    """Nothing the fuzzer sends (``/setup``'s ``hostname``, image URLs) reaches DNS or the network:
    only localhost and IP literals resolve, and connections go to loopback addresses only; the
    rest fail at once, as an unreachable host would."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name != "localhost":
            try:
                ipaddress.ip_address(name.strip("[]"))
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "name resolution is off in the fuzz test") from None
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"no network in the fuzz test ({address[0]})")
        return real_connect(sock, address)

    monkeypatch_module.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch_module.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, tiny_weights):
    """The real app, shared by all fuzz tests so state built by one request meets the next."""
    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        make_settings(tmp, tiny_weights("detect"), IMAGE_TIMEOUT=2, DEVICE="cpu"), warm_up=False, training_runner=_NoTraining()
    )
    app.extensions["ml_backend"].holder.get()  # loaded now: a 503 "still loading" would be a slow CI, not a finding
    yield app
    app.extensions["ml_backend"].training.close()


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
        }
    )


schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC), config=_config())


def _count(status: int) -> None:
    _stats["requests"] += 1
    _stats["by_status"][status] = _stats["by_status"].get(status, 0) + 1


# --- the spec itself ---


def test_spec_is_valid_openapi_3() -> None:
    validate_openapi(copy.deepcopy(SPEC))
    assert SPEC["openapi"].startswith("3.0.")


def test_every_route_is_in_the_spec_and_back(tmp_path, tiny_weights) -> None:
    app = create_app(make_settings(tmp_path, tiny_weights("detect")), warm_up=False, training_runner=_NoTraining())
    try:
        routes = {
            (rule.rule, method.lower())
            for rule in app.url_map.iter_rules()
            if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}
        }
    finally:
        app.extensions["ml_backend"].training.close()
    documented = {
        (path, method) for path, item in SPEC["paths"].items() for method in item if method in {"get", "post", "put", "patch", "delete"}
    }
    assert routes == documented, f"routes not in SPEC: {sorted(routes - documented)}; in SPEC but not served: {sorted(documented - routes)}"


# --- schemathesis: every operation, generated from the spec ---


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_api_conforms_to_spec(case, fuzz_app) -> None:
    t0 = time.monotonic()
    response = case.call(app=fuzz_app)
    elapsed = time.monotonic() - t0
    _count(response.status_code)
    assert elapsed < REQUEST_LIMIT_S, f"{case.method} {case.formatted_path} took {elapsed:.1f} s"
    if case.method.upper() == "OPTIONS":  # Flask's automatic answer: 200, empty, the methods in Allow
        allowed = {m.strip().lower() for m in (response.headers.get("allow") or [""])[0].split(",")}
        assert response.status_code == 200 and set(SPEC["paths"][case.path]) <= allowed, (response.status_code, allowed)
        return
    assert (response.headers.get("content-type") or [""])[0].startswith("application/json"), (
        f"{case.method} {case.formatted_path}: not JSON: {response.status_code} {response.text[:200]!r}"
    )
    json.loads(response.text)
    case.validate_response(
        response, checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    )


# --- raw garbage: bytes, odd types and query strings no schema would produce ---

_POST = sorted(p for p, item in SPEC["paths"].items() if "post" in item)
_GET = sorted(p for p, item in SPEC["paths"].items() if "get" in item)
_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
]
_ACTIONS = [
    "TASKS_CREATED",
    "ANNOTATION_CREATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
    "PROJECT_UPDATED",
]
_CONFIG = SPEC["paths"]["/setup"]["post"]["requestBody"]["content"]["application/json"]["example"]["schema"]

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8
)
# Digit strings as ``str.isdigit`` sees them (superscripts, other scripts) and ids past 64 bits.
_digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=6)
_ids = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**80)
    | _digits
    | st.from_regex(r"\A[0-9]{1,30}(\.[0-9]+)?\Z")
    | _json_values
)
_projects = _ids | st.fixed_dictionaries({"id": _ids})
_tasks = st.lists(
    st.fixed_dictionaries({"id": _ids}, optional={"data": st.dictionaries(st.sampled_from(["image", "img"]), _json_values, max_size=2)})
    | _json_values,
    max_size=3,
)
_annotation = st.fixed_dictionaries({"id": _ids}, optional={"updated_at": _json_values, "result": _json_values})
_payloads = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(_ACTIONS) | _json_values,
        "project": _projects,
        "tasks": _tasks | _json_values,
        "annotation": _annotation | _json_values,
        "annotations": st.lists(_annotation | _json_values, max_size=3) | _json_values,
        "schema": st.just(_CONFIG) | _json_values,
        "label_config": st.just(_CONFIG) | _json_values,
        "extra_params": st.fixed_dictionaries({"retrain_min_new_labels": _ids}) | _json_values,
        "hostname": st.sampled_from(["http://127.0.0.1:9", "https://label-studio.invalid", "http://[::1"]) | _json_values,
        "access_token": _json_values,
    },
)
_bodies = st.one_of(
    _payloads.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=120),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
_query_values = (
    _digits
    | st.text(max_size=20)
    | st.integers().map(str)
    | st.integers(min_value=2**63 - 2, max_value=2**80).map(str)
    | st.just("9" * 5000)
)
_queries = st.lists(st.tuples(st.sampled_from(["project", "Project", "x"]) | st.text(max_size=5), _query_values), max_size=3)
_RAW = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


def _short(text: str) -> str:
    """``repr`` of a query key or value; a long run of one character as ``'9' * 5000``."""
    return f"{text[0]!r} * {len(text)}" if len(text) > 50 and len(set(text)) == 1 else repr(text)


def _short_json(body: Any) -> str:
    """A JSON body for a failure message, long digit runs abbreviated."""
    text = json.dumps(body, ensure_ascii=False)
    return text.replace("9" * 5000, "<'9' * 5000>").replace("9" * 300, "<'9' * 300>")


def _declared(path: str, method: str, status: int) -> dict[str, Any]:
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which SPEC does not declare"
    return responses[str(status)]["content"]["application/json"]["schema"]


def _check_raw(path: str, method: str, resp: Any, what: str) -> None:
    _count(resp.status_code)
    assert resp.status_code < 500, f"server error: {what} -> {resp.status_code} {resp.get_data(as_text=True)[:300]}"
    assert resp.is_json, f"{what} -> {resp.status_code} not JSON: {resp.get_data()[:200]!r}"
    errors = list(
        OAS30Validator({**_declared(path, method, resp.status_code), "components": SPEC["components"]}).iter_errors(resp.get_json())
    )
    assert not errors, f"{what} -> {resp.status_code}: body does not match SPEC: {errors[0].message}"


@pytest.mark.parametrize("path", _POST)
@settings(_RAW, max_examples=RAW_EXAMPLES)
@given(body=_bodies, content_type=st.sampled_from(_CONTENT_TYPES))
def test_raw_post_bodies(fuzz_app, path: str, body: bytes, content_type: str) -> None:
    resp = fuzz_app.test_client().post(path, data=body, headers={"Content-Type": content_type} if content_type else {})
    _check_raw(path, "post", resp, f"POST {path} Content-Type={content_type!r} body={body[:400]!r}")


@pytest.mark.parametrize("path", _GET)
@settings(_RAW, max_examples=RAW_EXAMPLES // 2)
@given(query=_queries)
def test_raw_query_strings(fuzz_app, path: str, query: list[tuple[str, str]]) -> None:
    resp = fuzz_app.test_client().get(path, query_string=query)
    _check_raw(path, "get", resp, f"GET {path} query={[(_short(k), _short(v)) for k, v in query]}")


# --- edge values: ids each route must refuse or take, never crash on ---

_EDGE_IDS = {
    "2**63": 2**63,  # one past SQLite's largest integer
    "10**30": 10**30,
    "'10**30'": str(10**30),
    "superscript-2": "\u00b2",  # str.isdigit() says yes, int() says no
    "5000-digits": "9" * 5000,  # past Python's int() digit limit
    "300-digits": "9" * 300,  # a file name too long
    "negative": -1,
    "float": 1.5,
    "true": True,
    "list": [7],
}
_TASK = {"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}
_EDGE_POSTS = {
    "setup": lambda v: ("/setup", {"schema": _CONFIG, "project": v}),
    "setup-threshold": lambda v: ("/setup", {"schema": _CONFIG, "project": 5, "extra_params": {"retrain_min_new_labels": v}}),
    "predict": lambda v: ("/predict", {"tasks": [_TASK], "label_config": _CONFIG, "project": v}),
    "train": lambda v: ("/train", {"project": v}),
    "start-training": lambda v: ("/webhook", {"action": "START_TRAINING", "project": v}),
    "label-event": lambda v: (
        "/webhook",
        {"action": "ANNOTATION_CREATED", "project": {"id": v}, "annotation": {"id": 1, "updated_at": "t"}},
    ),
    "tasks-created": lambda v: ("/webhook", {"action": "TASKS_CREATED", "project": v, "tasks": [_TASK]}),
    "task-id": lambda v: ("/webhook", {"action": "TASKS_CREATED", "project": 5, "tasks": [{"id": v, "data": {}}]}),
    "annotation-id": lambda v: ("/webhook", {"action": "ANNOTATION_CREATED", "project": 5, "annotation": {"id": v, "updated_at": "t"}}),
}


@pytest.mark.parametrize("value", list(_EDGE_IDS.values()), ids=list(_EDGE_IDS))
@pytest.mark.parametrize("route", list(_EDGE_POSTS))
def test_edge_ids_in_bodies(fuzz_app, route: str, value: Any) -> None:
    path, body = _EDGE_POSTS[route](value)
    resp = fuzz_app.test_client().post(path, json=body)
    _check_raw(path, "post", resp, f"POST {path} {_short_json(body)}")


@pytest.mark.parametrize(
    "value",
    [v for v in _EDGE_IDS.values() if isinstance(v, (str, int)) and not isinstance(v, bool)],
    ids=[k for k, v in _EDGE_IDS.items() if isinstance(v, (str, int)) and not isinstance(v, bool)],
)
@pytest.mark.parametrize("path", ["/training", "/scores", "/versions"])
def test_edge_ids_in_queries(fuzz_app, path: str, value: Any) -> None:
    resp = fuzz_app.test_client().get(path, query_string={"project": str(value)})
    _check_raw(path, "get", resp, f"GET {path}?project={_short(str(value))}")


def test_health_still_answers_after_fuzzing(fuzz_app) -> None:
    resp = fuzz_app.test_client().get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "UP"
    errors = list(OAS30Validator({**SPEC["components"]["schemas"]["Health"], "components": SPEC["components"]}).iter_errors(body))
    assert not errors, errors[0].message
    print(f"\nfuzz: {_stats['requests']} requests, by status {dict(sorted(_stats['by_status'].items()))}")


# --- with auth configured: 401 everywhere but /health ---


def test_auth_refusals_match_the_spec(tmp_path, tiny_weights) -> None:
    app = create_app(
        make_settings(tmp_path, tiny_weights("detect"), BASIC_AUTH_USER="u", BASIC_AUTH_PASS="p", WEBHOOK_SECRET="s"),
        warm_up=False,
        training_runner=_NoTraining(),
    )
    client = app.test_client()
    try:
        for path, item in SPEC["paths"].items():
            for method in item:
                resp = client.open(path, method=method.upper(), json={} if method == "post" else None)
                if path in ("/", "/health"):
                    assert resp.status_code == 200
                    continue
                assert resp.status_code == 401, f"{method.upper()} {path} -> {resp.status_code}"
                _check_raw(path, method, resp, f"{method.upper()} {path} without credentials")
                if path != "/webhook":
                    assert resp.headers["WWW-Authenticate"].startswith("Basic")
        # /webhook takes the shared secret or basic auth: past the auth check, an empty event is a 400
        for headers in ({"X-Webhook-Secret": "s"}, {"Authorization": "Basic dTpw"}):
            resp = client.post("/webhook", json={}, headers=headers)
            _check_raw("/webhook", "post", resp, f"POST /webhook with {sorted(headers)}")
            assert resp.status_code == 400
    finally:
        app.extensions["ml_backend"].training.close()
