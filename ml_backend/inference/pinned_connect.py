"""Connect to the addresses a host was checked at, not to a second DNS answer (no DNS rebinding).

An image URL's host is resolved once, its addresses are checked (public, or allowed), and the
download must reach one of *those* addresses: a name server that answers a public address to the
check and ``127.0.0.1`` to the connection (DNS rebinding) must not steer the request. This module
gives ``requests`` a transport adapter whose connections take their addresses from
:func:`pinned`, while the URL, the ``Host`` header, TLS's server name (SNI) and certificate
checking stay with the host name.

The pin is keyed by the host exactly as the connection will see it (``requests`` turns an
internationalised name into punycode and decodes percent-escapes), and it fails closed: while a
pin is set, a connection to any host it does not name is refused rather than resolved afresh.

Example:
    >>> import requests
    >>> session = requests.Session()
    >>> mount_pinned(session)
    >>> with pinned("https://images.example.com/a.jpg", ("93.184.216.34",)):
    ...     pass  # session.get("https://images.example.com/a.jpg") would connect to 93.184.216.34
    >>> connection_host("http://bücher.example/a.png")
    'xn--bcher-kva.example'
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as u3connection
from urllib3.util import parse_url

# host (lower case) -> the checked addresses to connect to, in order; for the request being sent.
_PINS: ContextVar[Mapping[str, tuple[str, ...]]] = ContextVar("pinned_addresses", default=MappingProxyType({}))


def _key(host: str) -> str:
    return host.lower().rstrip(".")


def connection_host(url: str) -> str:
    """The host name a ``requests`` connection to ``url`` uses (IDNA-encoded, escapes decoded)."""
    prepared = PreparedRequest()
    prepared.prepare_url(url, None)
    return _key(parse_url(str(prepared.url)).host or "")


@contextmanager
def pinned(url: str, addresses: tuple[str, ...]) -> Iterator[None]:
    """Within the block, new connections to ``url``'s host go to ``addresses`` (tried in order)
    only, and connections to any other host are refused.

    An empty ``addresses`` pins nothing: the host is connected to as usual (Label Studio's host,
    or a name on ``ALLOWED_HOSTS``).
    """
    token = _PINS.set({connection_host(url): tuple(addresses)} if addresses else {})
    try:
        yield
    finally:
        _PINS.reset(token)


def _connect_pinned(conn: HTTPConnection) -> socket.socket | None:
    """A socket to one of the host's pinned addresses; None when nothing is pinned."""
    pins = _PINS.get()
    if not pins:
        return None
    addresses = pins.get(_key(conn.host))
    if not addresses:  # fail closed: never resolve afresh while a pin is set
        raise NewConnectionError(conn, f"refusing to connect to {conn.host}: it is not the checked host ({', '.join(pins)})")
    last: OSError | None = None
    for address in addresses:
        try:
            return u3connection.create_connection(
                (address, conn.port), conn.timeout, source_address=conn.source_address, socket_options=conn.socket_options
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"Connection to {conn.host} ({address}) timed out. (connect timeout={conn.timeout})") from exc
        except OSError as exc:
            last = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection to {conn.host} at {', '.join(addresses)}: {last}")


class _PinnedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self) or super()._new_conn()


class _PinnedHTTPSConnection(HTTPSConnection):
    # TLS wraps the socket from _new_conn with server_hostname = self.host: SNI and certificate
    # checks stay with the host name.
    def _new_conn(self) -> socket.socket:
        return _connect_pinned(self) or super()._new_conn()


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` whose connections honour :func:`pinned`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def mount_pinned(session: requests.Session) -> None:
    """Make ``session``'s http(s) connections honour :func:`pinned`."""
    adapter = PinnedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
