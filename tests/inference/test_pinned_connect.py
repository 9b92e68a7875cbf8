"""DNS rebinding: an image host is resolved once, checked, and connected to at that address.

Real HTTP and HTTPS servers on 127.0.0.1 answer for ``rebind.test``, a name no system resolver
knows: a download that resolved the host a second time (instead of connecting to the checked
address) could not connect at all. The test resolver answers ``127.0.0.1`` (allowed here, the
stand-in for a checked public address) and a metadata address on any later lookup.
"""

from __future__ import annotations

import http.server
import io
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import requests
import trustme
from PIL import Image

from ml_backend.inference.images import ImageError, ImageFetcher, UrlPolicy
from ml_backend.inference.pinned_connect import mount_pinned, pinned

HOST = "rebind.test"


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), (0, 128, 0)).save(buf, "PNG")
    return buf.getvalue()


class Server:
    """A local image server that records each request's Host header and TLS server name."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []
        body = png()
        seen = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.hosts.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: seen.server_names.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture()
def http_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


@pytest.fixture()
def https_server(ca: trustme.CA) -> Iterator[Server]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(ctx)
    server = Server(tls=ctx)
    yield server
    server.close()


class RebindingResolver:
    """Answers the checked address first, then a metadata address (a rebinding name server)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        return ["127.0.0.1"] if len(self.calls) == 1 else ["169.254.169.254"]


def fetcher(tmp_path, resolver, session: requests.Session | None = None) -> ImageFetcher:
    policy = UrlPolicy(allowed_hosts=("127.0.0.1/32",), resolver=resolver)
    return ImageFetcher(policy, cache_dir=tmp_path / "cache", session=session)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_download_connects_to_the_address_that_was_checked(tmp_path, ca, http_server, https_server, scheme) -> None:
    server = http_server if scheme == "http" else https_server
    session = requests.Session()
    resolver = RebindingResolver()
    with ca.cert_pem.tempfile() as ca_file:
        session.verify = ca_file
        image = fetcher(tmp_path, resolver, session).load(f"{scheme}://{HOST}:{server.port}/a.png")
    assert image.shape == (4, 5, 3)
    assert resolver.calls == [HOST]  # resolved once, for the check; never again to connect
    assert server.hosts == [f"{HOST}:{server.port}"]  # the Host header names the host, not the address
    if scheme == "https":
        assert server.server_names == [HOST]  # TLS asked for the host's certificate, and checked it


def test_a_certificate_for_another_name_is_refused_at_the_checked_address(tmp_path, ca) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.test").configure_cert(ctx)
    server = Server(tls=ctx)
    session = requests.Session()
    try:
        with ca.cert_pem.tempfile() as ca_file:
            session.verify = ca_file
            with pytest.raises(ImageError, match="could not download .*: SSLError"):
                fetcher(tmp_path, RebindingResolver(), session).load(f"https://{HOST}:{server.port}/a.png")
    finally:
        server.close()
    assert server.hosts == []  # the name check happened on the pinned connection, before any request


def test_a_host_that_rebinds_later_is_refused_at_its_next_check(tmp_path, http_server) -> None:
    resolver = RebindingResolver()
    f = fetcher(tmp_path, resolver)
    f.load(f"http://{HOST}:{http_server.port}/a.png")
    with pytest.raises(ImageError, match="169.254.169.254"):
        f.load(f"http://{HOST}:{http_server.port}/b.png")  # each download is checked (and pinned) afresh
    assert resolver.calls == [HOST, HOST]
    assert len(http_server.hosts) == 1  # the refused one was never sent, not even over the open connection


@pytest.mark.parametrize(
    "host",
    ["bücher.test", "REBIND.test.", "rebind.test"],  # an internationalised name (punycode on the wire), case and a trailing dot
)
def test_the_pin_follows_the_host_as_the_connection_spells_it(tmp_path, http_server, host) -> None:
    resolver = RebindingResolver()
    image = fetcher(tmp_path, resolver).load(f"http://{host}:{http_server.port}/a.png")
    assert image.shape == (4, 5, 3) and len(resolver.calls) == 1 and len(http_server.hosts) == 1


def test_while_a_pin_is_set_other_hosts_are_refused_not_resolved(http_server) -> None:
    session = requests.Session()
    mount_pinned(session)
    with pinned("http://elsewhere.test/", ("10.0.0.1",)), pytest.raises(requests.ConnectionError, match="not the checked host"):
        session.get(f"http://127.0.0.1:{http_server.port}/a.png", timeout=5)
    assert http_server.hosts == []
    r = session.get(f"http://127.0.0.1:{http_server.port}/a.png", timeout=5)  # no pin set: as usual
    assert r.status_code == 200 and http_server.hosts == [f"127.0.0.1:{http_server.port}"]


def test_a_pinned_address_that_refuses_says_which_it_tried() -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        session = requests.Session()
        mount_pinned(session)
        with (
            pinned(f"http://{HOST}:{port}/", ("127.0.0.1",)),
            pytest.raises(requests.ConnectionError, match=r"rebind\.test at 127\.0\.0\.1"),
        ):
            session.get(f"http://{HOST}:{port}/", timeout=5)
