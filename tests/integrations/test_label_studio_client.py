"""The Label Studio client against a stand-in that fails its first calls: idempotent calls ride it
out (bounded, with back-off, honouring Retry-After); creating calls are never repeated."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from integrations.label_studio import LabelStudioClient, LabelStudioError, RetryPolicy

LEGACY = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: no token exchange in the way


class Flaky:
    """A Label Studio stand-in: the first ``fail`` calls get ``how`` (an HTTP status, or ``drop`` to
    close the connection), the rest HTTP 200 with a JSON body."""

    def __init__(self, fail: int, how: int | str = 503, retry_after: str | None = None):
        self.fail, self.how, self.retry_after = fail, how, retry_after
        self.calls: list[tuple[str, str]] = []
        flaky = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                flaky.calls.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if len(flaky.calls) <= flaky.fail:
                    if flaky.how == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.send_response(int(flaky.how))
                    if flaky.retry_after:
                        self.send_header("Retry-After", flaky.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"id": 1, "ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture()
def waits():
    return []


def client(server: Flaky, waits: list, attempts: int = 5) -> LabelStudioClient:
    return LabelStudioClient(server.url, LEGACY, timeout=5, retry=RetryPolicy(attempts=attempts, first=0.5, cap=8.0), sleep=waits.append)


@pytest.mark.parametrize("how", [500, 502, 503, 504, 429, "drop"])
@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("GET", lambda c: c.get_project(1)),
        ("PATCH", lambda c: c.patch("/api/projects/1", json={})),
        ("DELETE", lambda c: c.delete_model_version(1, "v1")),
    ],
)
def test_idempotent_calls_ride_out_a_briefly_unavailable_label_studio(how, method, call, waits) -> None:
    server = Flaky(fail=3, how=how)
    try:
        call(client(server, waits))
        assert [m for m, _ in server.calls] == [method] * 4  # three failures, then the answer
        assert len(waits) == 3 and all(0.25 <= w <= 8.0 for w in waits) and waits[2] >= waits[0]  # growing, bounded back-off
    finally:
        server.close()


def test_retry_after_is_honoured_and_capped(waits) -> None:
    server = Flaky(fail=2, how=429, retry_after="5")
    try:
        client(server, waits).get_project(1)
        assert waits == [5.0, 5.0]  # at least what it asked for (the back-off alone would be under 2 s)
    finally:
        server.close()
    server = Flaky(fail=1, how=503, retry_after="3600")
    try:
        client(server, waits := []).get_project(1)
        assert waits == [8.0]  # an hour is not waited for: the cap
    finally:
        server.close()


def test_it_gives_up_after_the_last_attempt_with_a_transient_error(waits) -> None:
    server = Flaky(fail=99, how=503)
    try:
        with pytest.raises(LabelStudioError) as err:
            client(server, waits, attempts=3).get_project(1)
        assert len(server.calls) == 3 and err.value.status == 503 and err.value.transient
    finally:
        server.close()


@pytest.mark.parametrize("how", [503, "drop"])
def test_creating_calls_are_not_repeated(how, waits) -> None:
    """A POST that failed may still have created its object: it is never sent twice."""
    server = Flaky(fail=1, how=how)
    try:
        with pytest.raises(LabelStudioError) as err:
            client(server, waits).create_annotation(5, [])
        assert len(server.calls) == 1 and waits == [] and err.value.transient
    finally:
        server.close()


def test_a_refusal_is_not_transient(waits) -> None:
    server = Flaky(fail=1, how=404)
    try:
        with pytest.raises(LabelStudioError) as err:
            client(server, waits).get_project(1)
        assert len(server.calls) == 1 and err.value.status == 404 and not err.value.transient
    finally:
        server.close()
