"""The rule for serving beyond loopback (ml_backend.access), at startup: the server, `serve` and `/health`."""

from __future__ import annotations

import pytest

from ml_backend.access import Exposure, is_loopback
from ml_backend.cli import main
from ml_backend.server import create_app
from ml_backend.settings import Settings, SettingsError

AUTH = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw"}


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True), ("LOCALHOST", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.4", False), ("backend", False), ("localhost.example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("env", "refused", "warned", "setup_names_label_studio"),
    [
        ({}, False, False, True),  # the default: loopback
        ({"HOST": "0.0.0.0"}, True, False, False),
        ({"HOST": "10.1.2.3", "WEBHOOK_SECRET": "s3cret"}, True, False, False),  # a webhook secret does not guard /setup or /predict
        ({"HOST": "0.0.0.0", **AUTH}, False, False, True),
        ({"HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "on"}, False, True, False),  # docker compose's private network
        ({"HOST": "127.0.0.1", "ALLOW_UNAUTHENTICATED": "on"}, False, False, True),
    ],
)
def test_exposure(env: dict, refused: bool, warned: bool, setup_names_label_studio: bool) -> None:
    exposure = Exposure.of(Settings.from_env(env))
    assert (exposure.refusal() is not None, bool(exposure.warnings()), exposure.setup_may_name_label_studio) == (
        refused,
        warned,
        setup_names_label_studio,
    )


def test_the_refusal_says_what_to_set() -> None:
    message = Exposure.of(Settings.from_env({"HOST": "0.0.0.0", "PORT": "9191"})).refusal() or ""
    assert "0.0.0.0:9191" in message
    for fix in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "connect", "HOST=127.0.0.1", "ALLOW_UNAUTHENTICATED=on"):
        assert fix in message


def test_the_app_refuses_to_be_built_open_beyond_loopback(tmp_path) -> None:
    with pytest.raises(SettingsError, match="refusing to serve on 0.0.0.0:9090 without basic auth"):
        create_app(Settings.from_env({"HOST": "0.0.0.0", "MODEL_DIR": str(tmp_path), "MODEL_PATH": "missing.pt"}), warm_up=False)
    assert not (tmp_path / "state.db").exists()  # refused before anything was built


def test_an_open_server_says_so_in_health(tmp_path) -> None:
    settings = Settings.from_env({"HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "on", "MODEL_DIR": str(tmp_path), "MODEL_PATH": "missing.pt"})
    app = create_app(settings, warm_up=False)
    try:
        warnings = app.test_client().get("/health").get_json()["warnings"]
        assert len(warnings) == 1 and "WITHOUT authentication" in warnings[0]
    finally:
        app.extensions["ml_backend"].close()


def test_a_loopback_server_has_no_warning(tmp_path) -> None:
    app = create_app(Settings.from_env({"MODEL_DIR": str(tmp_path), "MODEL_PATH": "missing.pt"}), warm_up=False)
    try:
        assert app.test_client().get("/health").get_json()["warnings"] == []
    finally:
        app.extensions["ml_backend"].close()


@pytest.mark.parametrize("argv", [["serve", "--host", "0.0.0.0"], ["serve"]])
def test_serve_refuses_before_starting_gunicorn(argv, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("HOST", "0.0.0.0")  # `serve` alone: from the environment (the docker image's HOST)
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "ALLOW_UNAUTHENTICATED"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 2
    assert "refusing to serve on 0.0.0.0:9090 without basic auth" in capsys.readouterr().err
