"""Connect to the addresses a host was checked at, not to a second DNS answer (no DNS rebinding).

An image URL's host is resolved once, its addresses are checked (public, or allowed), and the
download must reach one of *those* addresses: a name server that answers a public address to the
check and ``127.0.0.1`` to the connection (DNS rebinding) must not steer the request. This module
gives ``requests`` a transport adapter whose connections take their addresses from
:func:`pinned`, while the URL, the ``Host`` header, TLS's server name (SNI) and certificate
checking stay with the host name.

Example:
    >>> import requests
    >>> session = requests.Session()
    >>> mount_pinned(session)
    >>> with pinned("images.example.com", ("93.184.216.34",)):
    ...     pass  # session.get("https://images.example.com/a.jpg") would connect to 93.184.216.34
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
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as u3connection

# host (lower case) -> the checked addresses to connect to, in order; for the request being sent.
_PINS: ContextVar[Mapping[str, tuple[str, ...]]] = ContextVar("pinned_addresses", default=MappingProxyType({}))


@contextmanager
def pinned(host: str, addresses: tuple[str, ...]) -> Iterator[None]:
    """Within the block, new connections to ``host`` go to ``addresses`` (tried in order) only.

    An empty ``addresses`` pins nothing: the host is connected to as usual (Label Studio's host,
    or a name on ``ALLOWED_HOSTS``).
    """
    token = _PINS.set({host.lower().rstrip("."): tuple(addresses)} if addresses else {})
    try:
        yield
    finally:
        _PINS.reset(token)


def _connect_pinned(conn: HTTPConnection) -> socket.socket | None:
    """A socket to one of the host's pinned addresses; None when the host is not pinned."""
    addresses = _PINS.get().get(conn.host.lower().rstrip("."))
    if not addresses:
        return None
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
