"""Credentials never reach a log line or an error message, even when a server echoes them back."""

from __future__ import annotations

import http.server
import json
import logging
import threading

import pytest

from integrations.label_studio import LabelStudioClient, LabelStudioError
from integrations.secrets import MASK, RedactingFilter, scrub
from ml_backend.log_redaction import install, settings_secrets
from ml_backend.settings import Settings


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("token abc123 failed", ["abc123"], "token *** failed"),
        ("abc123abc123", ["abc123"], "******"),
        ("key=longsecret, prefix=long", ["long", "longsecret"], "key=***, prefix=***"),  # longest first
        ("nothing here", ["abc123"], "nothing here"),
        ("a b c", ["a", ""], "a b c"),  # too short to be a secret: never masks ordinary text
    ],
)
def test_scrub_masks_every_secret(text, secrets, expected) -> None:
    assert scrub(text, secrets) == expected


def test_the_settings_secrets_are_the_key_the_passwords_and_the_redis_password() -> None:
    s = Settings.from_env(
        {
            "LABEL_STUDIO_API_KEY": "k-123456",
            "BASIC_AUTH_USER": "u",
            "BASIC_AUTH_PASS": "p-123456",
            "WEBHOOK_SECRET": "w-123456",
            "REDIS_URL": "redis://:r-123456@redis:6379/0",
        }
    )
    assert sorted(settings_secrets(s)) == ["k-123456", "p-123456", "r-123456", "w-123456"]


def test_log_records_are_masked_in_arguments_and_tracebacks(caplog) -> None:
    log = logging.getLogger("test.redaction")
    filt = RedactingFilter(["tok-98765"])
    log.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger="test.redaction"):
            log.info("calling with %s", "Token tok-98765")
            try:
                raise RuntimeError("server said: Token tok-98765 is invalid")
            except RuntimeError:
                log.exception("failed")
    finally:
        log.removeFilter(filt)
    assert "tok-98765" not in caplog.text and f"Token {MASK}" in caplog.text
    assert "RuntimeError" in caplog.text  # the traceback is kept, masked


def test_install_puts_one_filter_on_each_root_handler() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        s = Settings.from_env({"LABEL_STUDIO_API_KEY": "k-abcdef"})
        install(s)
        install(s)
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


class _Echo(http.server.BaseHTTPRequestHandler):
    """A misbehaving server: its error page repeats the request's Authorization header."""

    def _answer(self) -> None:
        body = json.dumps({"detail": f"bad credentials: {self.headers.get('Authorization')}"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def test_an_echoed_api_key_never_reaches_the_error_message(caplog) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        key = "legacy-token-0123456789abcdef"
        client = LabelStudioClient(f"http://127.0.0.1:{httpd.server_address[1]}", key)
        with pytest.raises(LabelStudioError) as err:
            client.get_project(1)
    finally:
        httpd.shutdown()
    assert err.value.status == 403 and "bad credentials: Token ***" in str(err.value)
    assert key not in str(err.value) and key not in repr(client.auth) and key not in caplog.text
