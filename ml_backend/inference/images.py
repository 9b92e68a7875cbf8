"""Fetch task images safely: URL rules, Label Studio credentials, a disk cache, EXIF orientation.

Where an image URL comes from decides how it is fetched:

* ``/data/upload/...``, ``/data/local-files/?d=...``, ``/storage-data/...``: relative to the
  Label Studio host, fetched with its credentials;
* ``s3://``, ``gs://``, ``azure-blob://``: presigned by Label Studio
  (``/tasks/<id>/presign/?fileuri=...``), then fetched from the storage without credentials;
* ``http(s)://``: fetched directly; credentials only when the host is Label Studio's.

Any URL (and every redirect hop) whose host resolves to a private, loopback, link-local or
otherwise reserved address is refused unless it is the Label Studio host or on
``ALLOWED_HOSTS``: no server-side request forgery through task data. The host is resolved once:
the download connects to the addresses that were checked (:mod:`.pinned_connect`), so a name
server that answers differently the second time (DNS rebinding) cannot steer it. A URL whose host reads
differently to Python's URL parser and to the one ``requests`` connects with (``\\@`` tricks) is
refused, and the Label Studio token is only sent to Label Studio's media paths (uploads,
local files, storage data, presign/resolve), never with ``..`` segments: task data cannot
steer it to Label Studio's API.

Example:
    >>> is_public_address("8.8.8.8"), is_public_address("10.0.0.1"), is_public_address("169.254.169.254")
    (True, False, False)
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import os
import re
import socket
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import numpy as np
import requests
from PIL import Image, ImageOps, UnidentifiedImageError
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from ml_backend.inference.image_cache import ImageCache
from ml_backend.inference.pinned_connect import mount_pinned, pinned

log = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")
LS_RELATIVE_PREFIXES = ("/data/", "/storage-data/", "data/upload/", "/tasks/")
MAX_REDIRECTS = 5
# Paths (below LABEL_STUDIO_URL's own path) that the backend fetches from Label Studio with its token.
LS_MEDIA_PATH = re.compile(r"/(data/upload/|data/local-files/?$|storage-data/|tasks/\d+/(presign|resolve)/?$|projects/\d+/resolve/?$)")
LS_MEDIA_HINT = "/data/upload/..., /data/local-files/?d=..., /storage-data/..., /tasks/<id>/presign/?fileuri=..."


class ImageError(Exception):
    """One task's image could not be had; the message says why and what to fix."""


def is_public_address(ip: str) -> bool:
    """True when ``ip`` is a globally routable unicast address."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified)


def _split(url: str):  # noqa: ANN202
    """``urlsplit`` that also validates the port; raises :class:`ImageError` on a malformed URL."""
    try:
        p = urlsplit(url)
        p.port  # noqa: B018 (raises ValueError when out of range or not a number)
    except ValueError as exc:
        raise ImageError(f"malformed URL {url[:200]!r} ({exc}): fix the image URL in the task data") from None
    return p


def _origin(url: str) -> tuple[str, str, int]:
    p = _split(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return (p.scheme, (p.hostname or "").lower(), port)


def _host_forms(host: str) -> set[str]:
    """Spellings of one host that the two URL parsers may produce (percent-decoded, IDNA)."""
    forms = {host, unquote(host)}
    try:
        forms.add(host.encode("idna").decode("ascii").lower())
    except UnicodeError:
        pass
    return forms


def check_unambiguous(url: str) -> None:
    """Raise :class:`ImageError` unless ``requests`` (urllib3) connects to the host and port that
    :func:`urllib.parse.urlsplit` reads: ``http://10.0.0.1\\@example.com/`` is checked as
    ``example.com`` by one and fetched from ``10.0.0.1`` by the other."""
    p = _split(url)
    try:
        u = parse_url(url)
    except LocationParseError:
        raise ImageError(f"malformed URL {url[:200]!r}: fix the image URL in the task data") from None
    default = 443 if p.scheme == "https" else 80
    host = (u.host or "").strip("[]").lower()
    if host not in _host_forms((p.hostname or "").lower()) or (u.port or default) != (p.port or default):
        raise ImageError(
            f"refusing the ambiguous URL {url[:200]!r}: its host reads as {p.hostname!r} to one URL parser and {host!r} "
            "to the one that downloads (a backslash, space or '@' in the host part?). Percent-encode those characters."
        )


def _decodings(text: str, rounds: int = 3) -> list[str]:
    """``text`` and its percent-decodings (double-encoding included)."""
    out = [text]
    for _ in range(rounds):
        nxt = unquote(out[-1])
        if nxt == out[-1]:
            break
        out.append(nxt)
    return out


def _has_dot_dot(text: str) -> bool:
    return any(".." in re.split(r"[/\\]", form) for form in _decodings(text))


def check_no_traversal(url: str) -> None:
    """Raise :class:`ImageError` if ``url`` (absolute, or a Label Studio path) has a ``..`` segment
    in its path or a query value (``?d=../..``), percent-encoded or not, ``/`` or ``\\`` separated."""
    p = _split(url)
    if _has_dot_dot(p.path) or any(_has_dot_dot(v) for _, v in parse_qsl(p.query, keep_blank_values=True)):
        raise ImageError(
            f"refusing {url[:200]!r}: it has a '..' path segment, which could reach other Label Studio endpoints or files "
            f"with the backend's token. Point the task at the image itself ({LS_MEDIA_HINT})."
        )


def check_label_studio_path(url: str, base_path: str = "") -> None:
    """Raise :class:`ImageError` unless ``url`` is one of Label Studio's media paths, free of
    ``..`` segments (in the path or a query value, percent-encoded or not): the backend's token
    must not reach Label Studio's API or other files through task data.

    Args:
        url: an absolute URL on the Label Studio host.
        base_path: the path of ``LABEL_STUDIO_URL`` (Label Studio served under a prefix).
    """
    p = _split(url)
    check_no_traversal(url)
    base = base_path.rstrip("/")
    if not (p.path.startswith(base + "/") and LS_MEDIA_PATH.match(p.path[len(base) :])):
        raise ImageError(
            f"refusing to fetch {p.path[:200]!r} from Label Studio with the backend's token: only its media paths are fetched "
            f"there ({LS_MEDIA_HINT}). Point the task at the image file; if Label Studio redirected the download there "
            "(its login page), check LABEL_STUDIO_API_KEY."
        )


Resolver = Callable[[str], list[str]]


def system_resolver(host: str) -> list[str]:
    """All addresses ``host`` resolves to, in the system's order of preference."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ImageError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    return list(dict.fromkeys(str(i[4][0]).split("%")[0] for i in infos))


@dataclass(frozen=True)
class UrlPolicy:
    """Which hosts this backend may fetch from.

    Args:
        label_studio_url: the Label Studio base URL (always allowed, gets credentials).
        allowed_hosts: host names or CIDR ranges allowed even though they are not public.
        resolver: host -> addresses (injectable for tests).
    """

    label_studio_url: str = ""
    allowed_hosts: tuple[str, ...] = ()
    resolver: Resolver = system_resolver

    def is_label_studio(self, url: str) -> bool:
        return bool(self.label_studio_url) and _origin(url) == _origin(self.label_studio_url)

    def check(self, url: str) -> tuple[str, ...]:
        """Raise :class:`ImageError` if ``url`` must not be fetched.

        Returns:
            The checked addresses the download must connect to; empty for Label Studio's host and
            names on ``ALLOWED_HOSTS``, which are connected to as usual.
        """
        p = _split(url)
        if p.scheme not in ("http", "https"):
            raise ImageError(f"unsupported URL scheme {p.scheme!r} in {url[:200]!r}: use http(s), Label Studio uploads or cloud storage")
        host = (p.hostname or "").lower()
        if not host:
            raise ImageError(f"URL has no host: {url[:200]!r}")
        check_unambiguous(url)
        if self.is_label_studio(url):
            check_label_studio_path(url, urlsplit(self.label_studio_url).path)
            return ()
        if host in self.allowed_hosts:
            return ()
        addresses = self.resolver(host)
        if not addresses:
            raise ImageError(f"host {host!r} resolves to no address")
        for a in addresses:
            if is_public_address(a):
                continue
            if any(ipaddress.ip_address(a) in ipaddress.ip_network(c, strict=False) for c in self.allowed_hosts if "/" in c):
                continue
            raise ImageError(
                f"refusing to fetch {host!r}: it resolves to {a}, a private, loopback or link-local address. "
                "If this is your own image server, add it to ALLOWED_HOSTS."
            )
        return tuple(addresses)


def cache_key(uri: str) -> str:
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()


class ImageFetcher:
    """Downloads, caches and decodes task images.

    Args:
        policy: URL rules.
        cache_dir: folder for downloaded bytes (content kept by source URI).
        cache_max_bytes: the most bytes ``cache_dir`` may hold, least recently used files
            deleted first (``IMAGE_CACHE_MAX_MB``, :class:`~ml_backend.inference.image_cache.ImageCache`); 0: no limit.
        auth_headers: returns the headers that authenticate to Label Studio (called per request,
            so refreshed access tokens are used); ``None`` for no credentials.
        timeout: seconds per download.
        max_bytes: largest accepted download.
        max_pixels: largest accepted decoded image.
        session: a ``requests.Session`` (injectable).
        ca_bundle: a PEM file of certificate authorities trusted for Label Studio's own host
            (``LABEL_STUDIO_CA_BUNDLE``); other hosts are checked against ``REQUESTS_CA_BUNDLE`` (or
            ``CURL_CA_BUNDLE``) when set, else certifi's, as requests does.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        cache_dir: Path,
        auth_headers: Callable[[], Mapping[str, str]] | None = None,
        timeout: float = 15.0,
        max_bytes: int = 50 * 1024 * 1024,
        max_pixels: int = 100_000_000,
        session: requests.Session | None = None,
        ca_bundle: str = "",
        cache_max_bytes: int = 0,
    ):
        self.ca_bundle = ca_bundle
        self.policy = policy
        self.cache_dir = Path(cache_dir)
        self.cache = ImageCache(self.cache_dir, cache_max_bytes)
        self.auth_headers = auth_headers
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.session = session or requests.Session()
        # Never through a proxy from the environment: the URL policy checks the address each download
        # connects to (no private, loopback or metadata addresses), which a proxy would hide.
        self.session.trust_env = False
        # ... but the CA bundle the environment names still counts, as requests would read it (a network
        # that inspects TLS; the docker image points it at its system store, docker/ca-certificates/).
        if getattr(self.session, "verify", None) is True:
            self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        if isinstance(self.session, requests.Session):
            mount_pinned(self.session)  # connect to the addresses UrlPolicy.check checked

    # -- URL resolution -------------------------------------------------------------------
    def resolve(self, uri: str, task_id: int | None = None) -> str:
        """Absolute http(s) URL to download ``uri`` from."""
        if not isinstance(uri, str) or not uri.strip():
            raise ImageError("the task has no image URL")
        uri = uri.strip()
        scheme = _split(uri).scheme.lower()
        if scheme in CLOUD_SCHEMES:
            from label_studio_sdk._extensions.label_studio_tools.core.utils.io import encode_presign_fileuri

            if task_id is None:
                raise ImageError(f"cannot presign {uri!r} without a task id")
            return self._ls_url(f"/tasks/{int(task_id)}/presign/?fileuri={encode_presign_fileuri(uri)}", uri)
        if scheme in ("http", "https"):
            return uri
        if scheme == "" and uri.startswith(LS_RELATIVE_PREFIXES):
            return self._ls_url(uri if uri.startswith("/") else "/" + uri, uri)
        if scheme == "":
            raise ImageError(f"{uri!r} is not a URL: images must be Label Studio uploads, local-files/cloud storage or http(s) URLs")
        raise ImageError(f"unsupported URL scheme {scheme!r} in {uri!r}")

    def _ls_url(self, path: str, uri: str) -> str:
        if not self.policy.label_studio_url:
            raise ImageError(
                f"{uri!r} lives in Label Studio: set LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY) so the backend can download it"
            )
        check_no_traversal(path)  # before urljoin, which would resolve the '..' away (to another Label Studio path)
        return urljoin(self.policy.label_studio_url + "/", path.lstrip("/"))

    # -- download -------------------------------------------------------------------------
    def fetch_bytes(self, uri: str, task_id: int | None = None) -> bytes:
        """The image file's bytes, from the cache or downloaded (and then cached).

        A file pruned from the cache meanwhile (by this or another process) is downloaded again.
        """
        # A Label Studio path or cloud URI names a file of one Label Studio: keyed with it (projects may name their own).
        key = cache_key(uri if _split(uri.strip()).scheme.lower() in ("http", "https") else f"{self.policy.label_studio_url}|{uri}")
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        data = self._download(self.resolve(uri, task_id))
        self.cache.put(key, data)
        return data

    def _download(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            addresses = self.policy.check(url)
            headers = dict(self.auth_headers() or {}) if (self.auth_headers and self.policy.is_label_studio(url)) else {}
            try:
                with pinned(url, addresses):
                    # Label Studio's own host: its CA bundle when one is set (LABEL_STUDIO_CA_BUNDLE); else the session's.
                    verify: bool | str | None = self.ca_bundle if self.ca_bundle and self.policy.is_label_studio(url) else None
                    resp = self.session.get(url, headers=headers, timeout=self.timeout, stream=True, allow_redirects=False, verify=verify)
            except requests.RequestException as exc:
                raise ImageError(f"could not download {_redact(url)}: {type(exc).__name__}") from None
            with resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("Location", ""))
                    continue
                if resp.status_code in (401, 403) and self.policy.is_label_studio(url):
                    raise ImageError(
                        f"Label Studio refused the image download ({resp.status_code}): set LABEL_STUDIO_API_KEY to a valid personal access token"
                    )
                if resp.status_code == 404:
                    raise ImageError(f"image not found (404) at {_redact(url)}")
                if resp.status_code >= 400:
                    raise ImageError(f"image download failed with HTTP {resp.status_code} at {_redact(url)}")
                size = int(resp.headers.get("Content-Length") or 0)
                if size > self.max_bytes:
                    raise ImageError(f"image is {size} bytes, over MAX_IMAGE_BYTES={self.max_bytes}")
                buf = io.BytesIO()
                try:
                    for chunk in resp.iter_content(1 << 16):
                        buf.write(chunk)
                        if buf.tell() > self.max_bytes:
                            raise ImageError(f"image is over MAX_IMAGE_BYTES={self.max_bytes}")
                except requests.RequestException as exc:
                    raise ImageError(f"download of {_redact(url)} broke off: {type(exc).__name__}") from None
                return buf.getvalue()
        raise ImageError(f"too many redirects (more than {MAX_REDIRECTS})")

    # -- decode ---------------------------------------------------------------------------
    def load(self, uri: str, task_id: int | None = None) -> np.ndarray:
        """RGB image (H, W, 3) uint8, EXIF orientation applied."""
        return decode_image(self.fetch_bytes(uri, task_id), self.max_pixels)


def decode_image(data: bytes, max_pixels: int = 100_000_000) -> np.ndarray:
    """Decode bytes to an RGB array with EXIF orientation applied.

    Raises:
        ImageError: not an image, truncated, or larger than ``max_pixels``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"image is {w}x{h} pixels, over MAX_IMAGE_PIXELS={max_pixels}")
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
            arr = np.asarray(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image is too large to decode safely (over MAX_IMAGE_PIXELS={max_pixels})") from None
    except UnidentifiedImageError:
        raise ImageError("the file is not an image Pillow can read (corrupt, or not an image)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"the image is corrupt or truncated: {exc}") from None
    except Exception:  # plugins (e.g. Ultralytics' HEIF hook) can fail in their own ways
        raise ImageError("the file is not an image Pillow can read (corrupt, or not an image)") from None
    return arr


def _redact(url: str) -> str:
    """The URL without its query string (presigned URLs carry credentials there)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}" + ("?…" if p.query else "")
