"""Label Studio behind a corporate proxy, or with a certificate from a private CA (``LABEL_STUDIO_CA_BUNDLE``).

Real servers on 127.0.0.1: a forward proxy that answers for ``ls.corp.test`` (a name no resolver
knows, so only the proxy can reach it) and an HTTPS Label Studio stand-in whose certificate a
throwaway CA signs. Image downloads never use the proxy: the URL policy must see the address it
connects to.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator

import pytest
import trustme

from integrations.label_studio import LabelStudioClient, LabelStudioError, RetryPolicy, api_session
from ml_backend.inference.images import ImageError, ImageFetcher, UrlPolicy

# A personal access token's shape (a JWT refresh token): the client exchanges it at /api/token/refresh/.
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln"
ACCESS = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2ln"


class Recorder:
    """An HTTP(S) server answering JSON for Label Studio's API, recording each request line and Authorization header."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.seen: list[tuple[str, str, str | None]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                body = json.dumps({"access": ACCESS} if "token/refresh" in self.path else {"id": 1, "title": "via"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def proxy() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


NO_RETRY = RetryPolicy(attempts=1)


def test_api_calls_and_the_token_exchange_go_through_the_environments_proxy(proxy, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = LabelStudioClient("http://ls.corp.test:8080", PAT, retry=NO_RETRY)
    assert client.get_project(1) == {"id": 1, "title": "via"}
    assert proxy.seen == [  # a forward proxy gets absolute URLs
        ("POST", "http://ls.corp.test:8080/api/token/refresh/", None),
        ("GET", "http://ls.corp.test:8080/api/projects/1", f"Bearer {ACCESS}"),
    ]


def test_no_proxy_sends_label_studio_past_the_proxy(proxy, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "ls.corp.test")
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):  # direct: the name resolves nowhere
        LabelStudioClient("http://ls.corp.test:8080", "legacy-token-1234", retry=NO_RETRY).get_project(1)
    assert proxy.seen == []


def test_a_label_studio_on_this_machine_is_never_reached_through_a_proxy(proxy, monkeypatch) -> None:
    ls = Recorder()
    try:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy that is not there
        assert LabelStudioClient(f"http://127.0.0.1:{ls.port}", "legacy-token-1234", retry=NO_RETRY).get_project(1)["id"] == 1
        assert ls.seen == [("GET", "/api/projects/1", "Token legacy-token-1234")]
    finally:
        ls.close()


@pytest.fixture()
def private_ca_label_studio(tmp_path) -> Iterator[tuple[Recorder, str]]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = Recorder(tls=ctx)
    yield server, str(bundle)
    server.close()


def test_a_label_studio_signed_by_a_private_ca_needs_its_bundle(private_ca_label_studio) -> None:
    ls, bundle = private_ca_label_studio
    url = f"https://127.0.0.1:{ls.port}"
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):  # SSLError: not a CA the system knows
        LabelStudioClient(url, "legacy-token-1234", retry=NO_RETRY).get_project(1)
    assert LabelStudioClient(url, "legacy-token-1234", retry=NO_RETRY, ca_bundle=bundle).get_project(1)["id"] == 1


def test_images_from_a_private_ca_label_studio_use_the_bundle_for_that_host_only(private_ca_label_studio, tmp_path) -> None:
    ls, bundle = private_ca_label_studio
    url = f"https://127.0.0.1:{ls.port}"
    policy = UrlPolicy(label_studio_url=url, allowed_hosts=("127.0.0.1",))
    without = ImageFetcher(policy, tmp_path / "a", timeout=5)
    with pytest.raises(ImageError, match="could not download"):
        without.fetch_bytes("/data/upload/1/x.png")
    with_bundle = ImageFetcher(policy, tmp_path / "b", timeout=5, ca_bundle=bundle)
    assert json.loads(with_bundle.fetch_bytes("/data/upload/1/x.png")) == {"id": 1, "title": "via"}  # reached, verified


def test_image_downloads_never_use_the_environments_proxy(proxy, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    fetcher = ImageFetcher(UrlPolicy(label_studio_url="http://ls.corp.test:8080"), tmp_path, timeout=5)
    with pytest.raises(ImageError):
        fetcher.fetch_bytes("/data/upload/1/x.png")  # direct: the name resolves nowhere, and the proxy is not asked
    assert proxy.seen == []


def test_the_session_trusts_the_bundle_and_the_environment() -> None:
    s = api_session("https://ls.corp.test", "/etc/ssl/private-ca.pem")
    assert (s.verify, s.trust_env) == ("/etc/ssl/private-ca.pem", True)
    assert api_session("http://localhost:8080").trust_env is False
