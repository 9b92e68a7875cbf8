import base64
import io
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from ml_backend.inference.images import ImageError, ImageFetcher, UrlPolicy, decode_image, is_public_address

LS = "http://label-studio:8080"

FAKE_DNS = {
    "label-studio": ["172.18.0.2"],
    "images.example.com": ["93.184.216.34"],
    "cdn.example.com": ["93.184.216.35"],
    "evil.example.com": ["10.0.0.5"],
    "rebind.example.com": ["93.184.216.36", "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "v6local.example.com": ["::1"],
    "lab-images.internal": ["192.168.1.20"],
}


def resolver(host: str) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    try:  # literal IP
        import ipaddress

        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        raise ImageError(f"cannot resolve host {host!r}") from None


def policy(allowed: tuple[str, ...] = ()) -> UrlPolicy:
    return UrlPolicy(label_studio_url=LS, allowed_hosts=allowed, resolver=resolver)


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("8.8.8.8", True),
        ("10.1.2.3", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("192.168.0.1", False),
        ("172.16.5.5", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("2606:4700::1111", True),
    ],
)
def test_is_public_address(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://images.example.com/a.jpg", (), True),
        ("http://label-studio:8080/data/upload/1/a.jpg", (), True),  # the Label Studio host is always allowed
        ("http://label-studio:9999/x.jpg", (), False),  # same host, other port: not Label Studio
        ("http://evil.example.com/a.jpg", (), False),
        ("http://rebind.example.com/a.jpg", (), False),  # any private address refuses
        ("http://metadata.example.com/latest/meta-data", (), False),
        ("http://169.254.169.254/latest/meta-data", (), False),
        ("http://127.0.0.1:22/", (), False),
        ("http://[::1]/a.jpg", (), False),
        ("http://v6local.example.com/a.jpg", (), False),
        ("http://lab-images.internal/a.jpg", ("lab-images.internal",), True),  # allow-listed name
        ("http://lab-images.internal/a.jpg", ("192.168.0.0/16",), True),  # allow-listed range
        ("http://evil.example.com/a.jpg", ("192.168.0.0/16",), False),
        ("file:///etc/passwd", (), False),
        ("ftp://images.example.com/a.jpg", (), False),
    ],
)
def test_url_policy(url: str, allowed: tuple, ok: bool) -> None:
    if ok:
        policy(allowed).check(url)
    else:
        with pytest.raises(ImageError):
            policy(allowed).check(url)


def test_refusal_says_how_to_allow() -> None:
    with pytest.raises(ImageError, match="ALLOWED_HOSTS"):
        policy().check("http://evil.example.com/a.jpg")


def fetcher(tmp_path, session=None, ls_url: str = LS, allowed=()) -> ImageFetcher:
    return ImageFetcher(
        UrlPolicy(label_studio_url=ls_url, allowed_hosts=allowed, resolver=resolver),
        cache_dir=tmp_path / "cache",
        auth_headers=lambda: {"Authorization": "Bearer SECRET"},
        session=session,
        max_bytes=10_000,
    )


@pytest.mark.parametrize(
    ("uri", "task_id", "expected"),
    [
        ("/data/upload/3/abc.jpg", 1, f"{LS}/data/upload/3/abc.jpg"),
        ("/data/local-files/?d=images/a.jpg", 1, f"{LS}/data/local-files/?d=images/a.jpg"),
        ("/storage-data/uploaded/?filepath=x.jpg", 1, f"{LS}/storage-data/uploaded/?filepath=x.jpg"),
        ("https://images.example.com/a.jpg", 1, "https://images.example.com/a.jpg"),
        ("s3://bucket/key/a.jpg", 42, f"{LS}/tasks/42/presign/?fileuri=" + base64.urlsafe_b64encode(b"s3://bucket/key/a.jpg").decode()),
        ("gs://bucket/a.jpg", 7, f"{LS}/tasks/7/presign/?fileuri=" + base64.urlsafe_b64encode(b"gs://bucket/a.jpg").decode()),
    ],
)
def test_resolve(tmp_path, uri: str, task_id: int, expected: str) -> None:
    assert fetcher(tmp_path).resolve(uri, task_id) == expected


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("", "no image URL"),
        ("images/a.jpg", "is not a URL"),
        ("javascript:alert(1)", "unsupported URL scheme"),
        ("s3://bucket/a.jpg", "without a task id"),
    ],
)
def test_resolve_rejects(tmp_path, uri: str, fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment):
        fetcher(tmp_path).resolve(uri, None)


def test_uploads_need_label_studio_url(tmp_path) -> None:
    with pytest.raises(ImageError, match="LABEL_STUDIO_URL"):
        fetcher(tmp_path, ls_url="").resolve("/data/upload/1/a.jpg")


class FakeResponse:
    def __init__(self, status: int = 200, body: bytes = b"", headers: dict | None = None):
        self.status_code = status
        self._body = body
        self.headers = headers or {}

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "Location" in self.headers

    def iter_content(self, n: int):
        for i in range(0, len(self._body), n):
            yield self._body[i : i + n]

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class FakeSession:
    """Records requests; answers from a url -> FakeResponse table."""

    def __init__(self, routes: dict[str, FakeResponse]):
        self.routes = routes
        self.calls: list[tuple[str, dict]] = []
        self.trust_env = True

    def get(self, url, headers=None, **kw):
        self.calls.append((url, dict(headers or {})))
        if url not in self.routes:
            raise requests.ConnectionError("no route")
        return self.routes[url]


def jpeg_bytes(size=(8, 6), color=(255, 0, 0), exif_orientation: int | None = None) -> bytes:
    img = Image.new("RGB", size, color)
    buf = io.BytesIO()
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, "JPEG", exif=exif)
    else:
        img.save(buf, "JPEG")
    return buf.getvalue()


def test_credentials_go_only_to_label_studio(tmp_path) -> None:
    presign = f"{LS}/tasks/5/presign/?fileuri=" + base64.urlsafe_b64encode(b"s3://b/a.jpg").decode()
    signed = "https://cdn.example.com/a.jpg?X-Amz-Signature=abc"
    s = FakeSession({presign: FakeResponse(302, headers={"Location": signed}), signed: FakeResponse(200, jpeg_bytes())})
    img = fetcher(tmp_path, s).load("s3://b/a.jpg", 5)
    assert img.shape == (6, 8, 3)
    assert s.calls[0] == (presign, {"Authorization": "Bearer SECRET"})
    assert s.calls[1] == (signed, {})  # the storage never sees the Label Studio token
    assert s.trust_env is False


def test_redirect_to_private_address_is_refused(tmp_path) -> None:
    start = "https://images.example.com/a.jpg"
    s = FakeSession({start: FakeResponse(302, headers={"Location": "http://169.254.169.254/latest"})})
    with pytest.raises(ImageError, match="169.254.169.254"):
        fetcher(tmp_path, s).fetch_bytes(start)
    assert [c[0] for c in s.calls] == [start]


def test_too_many_redirects(tmp_path) -> None:
    a, b = "https://images.example.com/a", "https://images.example.com/b"
    s = FakeSession({a: FakeResponse(302, headers={"Location": b}), b: FakeResponse(302, headers={"Location": a})})
    with pytest.raises(ImageError, match="too many redirects"):
        fetcher(tmp_path, s).fetch_bytes(a)


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (FakeResponse(404), "not found"),
        (FakeResponse(500), "HTTP 500"),
        (FakeResponse(200, b"x" * 20_000), "MAX_IMAGE_BYTES"),
        (FakeResponse(200, b"x", headers={"Content-Length": "999999"}), "MAX_IMAGE_BYTES"),
    ],
)
def test_download_failures(tmp_path, response: FakeResponse, fragment: str) -> None:
    url = "https://images.example.com/a.jpg"
    with pytest.raises(ImageError, match=fragment):
        fetcher(tmp_path, FakeSession({url: response})).fetch_bytes(url)


def test_label_studio_refusal_points_at_the_token(tmp_path) -> None:
    url = f"{LS}/data/upload/1/a.jpg"
    with pytest.raises(ImageError, match="LABEL_STUDIO_API_KEY"):
        fetcher(tmp_path, FakeSession({url: FakeResponse(401)})).fetch_bytes("/data/upload/1/a.jpg")


def test_downloads_are_cached_by_source_uri(tmp_path) -> None:
    url = "https://images.example.com/a.jpg"
    s = FakeSession({url: FakeResponse(200, jpeg_bytes())})
    f = fetcher(tmp_path, s)
    first = f.fetch_bytes(url)
    s.routes.clear()  # a second download would now fail
    assert f.fetch_bytes(url) == first
    assert len(s.calls) == 1
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_an_image_pruned_from_the_cache_is_downloaded_again(tmp_path) -> None:
    url = "https://images.example.com/a.jpg"
    s = FakeSession({url: FakeResponse(200, jpeg_bytes())})
    f = fetcher(tmp_path, s)
    first = f.fetch_bytes(url)
    for path in (tmp_path / "cache").rglob("*"):  # another process pruned it
        if path.is_file():
            path.unlink()
    assert f.fetch_bytes(url) == first and len(s.calls) == 2


@pytest.mark.parametrize(("limit", "cached"), [(0, 6), (3 * len(jpeg_bytes()), 2)])  # 0: no limit
def test_the_fetcher_keeps_its_cache_under_the_limit(tmp_path, limit: int, cached: int) -> None:
    urls = [f"https://images.example.com/{i}.jpg" for i in range(6)]
    s = FakeSession({u: FakeResponse(200, jpeg_bytes()) for u in urls})
    f = ImageFetcher(policy(), cache_dir=tmp_path / "cache", session=s, cache_max_bytes=limit)
    for u in urls:
        f.fetch_bytes(u)
    assert len([p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.startswith(".")]) == cached
    assert f.fetch_bytes(urls[-1]) and len(s.calls) == 6  # the newest stays cached


@pytest.mark.parametrize(("orientation", "shape"), [(None, (6, 8, 3)), (1, (6, 8, 3)), (6, (8, 6, 3)), (8, (8, 6, 3)), (3, (6, 8, 3))])
def test_exif_orientation_is_applied(orientation, shape) -> None:
    assert decode_image(jpeg_bytes(exif_orientation=orientation)).shape == shape


def test_decode_returns_rgb_uint8() -> None:
    arr = decode_image(jpeg_bytes(color=(250, 10, 10)))
    assert arr.dtype == np.uint8
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"not an image at all", "not an image"),
        (jpeg_bytes()[:60], "corrupt or truncated|not an image"),
        (b"", "not an image"),
    ],
)
def test_broken_images(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment):
        decode_image(data)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _png((30_000, 30_000))  # 900 M pixels in a small file
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
        decode_image(bomb, max_pixels=100_000_000)


# --- URLs that read one way and are fetched another; the Label Studio token's reach ---------------


@pytest.mark.parametrize(
    ("url", "connects_to"),
    [
        ("http://127.0.0.1\\@images.example.com/a.jpg", "127.0.0.1"),  # checked as images.example.com (public)
        (
            "http://evil.example.com\\@label-studio:8080/data/upload/1/a.jpg",
            "evil.example.com",
        ),  # reads as Label Studio: the token would leak
        ("http://10.0.0.5:8000\\@93.184.216.34/a.jpg", "10.0.0.5"),
    ],
)
def test_ambiguous_urls_are_refused(url: str, connects_to: str) -> None:
    prepared = requests.Request("GET", url).prepare().url  # where requests would really connect
    assert urlsplit(prepared).hostname == connects_to != urlsplit(url).hostname
    with pytest.raises(ImageError, match="ambiguous URL"):
        policy().check(url)


@pytest.mark.parametrize("url", ["http://images.example.com:99999/a.jpg", "http://images.example.com:port/a.jpg", "http://[::1/a.jpg"])
def test_malformed_urls_are_image_errors(tmp_path, url: str) -> None:
    with pytest.raises(ImageError, match="malformed URL"):
        policy().check(url)
    with pytest.raises(ImageError, match="malformed URL"):
        fetcher(tmp_path).resolve(url)


@pytest.mark.parametrize(
    "uri",
    [
        "/data/upload/../../api/projects",
        "data/upload/../../api/projects",
        "/data/../api/projects",
        "/tasks/1/../../api/users",
        "/data/upload/1/%2e%2e/%2e%2e/%2e%2e/api/projects",
        "/data/upload/%2E%2E%2F%2E%2E%2Fapi/projects",
        "/data/upload/%252e%252e/%252e%252e/api/projects",  # double-encoded
        "/data/upload/..\\..\\api\\projects",
        "/data/upload/..%5c..%5capi",
        "/data/local-files/?d=../../etc/passwd",
        "/data/local-files/?d=%2e%2e/%2e%2e/etc/passwd",
        "/data/local-files/?d=images/../../../etc/passwd",
        "/storage-data/uploaded/?filepath=../../secret",
        f"{LS}/data/upload/../../api/projects",
        f"{LS}/data/upload/%2e%2e/%2e%2e/api/projects",
    ],
)
def test_traversal_in_label_studio_paths_is_refused(tmp_path, uri: str) -> None:
    s = FakeSession({})
    with pytest.raises(ImageError, match=r"'\.\.' path segment.*/data/upload/"):
        fetcher(tmp_path, s).fetch_bytes(uri, 1)
    assert s.calls == []  # nothing was sent, with or without the token


@pytest.mark.parametrize(
    "uri",
    [
        f"{LS}/api/projects",
        f"{LS}/api/current-user/token",
        "/tasks/1/annotations/",
        f"{LS}/user/login/?next=/data/upload/1/a.jpg",
        f"{LS}/static/x/../../api",
    ],
)
def test_the_token_goes_only_to_label_studio_media_paths(tmp_path, uri: str) -> None:
    s = FakeSession({})
    with pytest.raises(ImageError, match=r"only its media paths|'\.\.'"):
        fetcher(tmp_path, s).fetch_bytes(uri, 1)
    assert s.calls == []


def test_a_redirect_to_the_label_studio_api_is_refused(tmp_path) -> None:
    start = "https://images.example.com/a.jpg"
    s = FakeSession({start: FakeResponse(302, headers={"Location": f"{LS}/api/projects"})})
    with pytest.raises(ImageError, match="only its media paths.*LABEL_STUDIO_API_KEY"):
        fetcher(tmp_path, s).fetch_bytes(start)
    assert s.calls == [(start, {})]


@pytest.mark.parametrize(
    "uri",
    [
        "/data/upload/1/a..b.jpg",
        "/data/upload/1/..jpg",
        "/data/local-files/?d=dir/..hidden.jpg",
        "/data/local-files?d=dir/a.jpg",
        "/storage-data/uploaded/?filepath=upload/1/a.jpg",
        f"{LS}/tasks/3/presign/?fileuri=czM6Ly9iL2EuanBn",
        f"{LS}/tasks/3/resolve/?fileuri=czM6Ly9iL2EuanBn",
        f"{LS}/projects/2/resolve/?fileuri=czM6Ly9iL2EuanBn",
    ],
)
def test_label_studio_media_paths_are_fetched_with_the_token(tmp_path, uri: str) -> None:
    f = fetcher(tmp_path)
    url = f.resolve(uri, 1)
    f.session = FakeSession({url: FakeResponse(200, jpeg_bytes())})
    assert f.fetch_bytes(uri, 1)
    assert f.session.calls == [(url, {"Authorization": "Bearer SECRET"})]


def test_label_studio_under_a_path_prefix(tmp_path) -> None:
    base = "http://label-studio:8080/ls"
    f = ImageFetcher(
        UrlPolicy(label_studio_url=base, resolver=resolver), cache_dir=tmp_path, auth_headers=lambda: {"Authorization": "Bearer SECRET"}
    )
    url = f.resolve("/data/upload/1/a.jpg")
    assert url == f"{base}/data/upload/1/a.jpg"
    f.policy.check(url)
    with pytest.raises(ImageError, match="only its media paths"):
        f.policy.check("http://label-studio:8080/data/upload/1/a.jpg")  # outside the prefix
    with pytest.raises(ImageError, match="only its media paths"):
        f.policy.check(f"{base}/api/projects")


def test_the_same_label_studio_path_from_two_label_studios_is_cached_apart(tmp_path) -> None:
    """Projects may name their own Label Studio (/setup): one's ``/data/upload/1/a.png`` is not another's."""
    fetchers = [ImageFetcher(UrlPolicy(label_studio_url=url), tmp_path) for url in ("http://ls-a:8080", "http://ls-b:8080")]
    for f in fetchers:
        f._download = lambda url: url.encode()  # type: ignore[method-assign]  # the bytes say where they came from
    assert [f.fetch_bytes("/data/upload/1/a.png") for f in fetchers] == [
        b"http://ls-a:8080/data/upload/1/a.png",
        b"http://ls-b:8080/data/upload/1/a.png",
    ]
    fetchers[0]._download = lambda url: b"downloaded again"  # type: ignore[method-assign]
    assert fetchers[0].fetch_bytes("/data/upload/1/a.png") == b"http://ls-a:8080/data/upload/1/a.png"  # a hit


@pytest.mark.parametrize(
    ("env", "verify"),
    [
        ({}, True),
        ({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, "/etc/ssl/certs/ca-certificates.crt"),
        ({"CURL_CA_BUNDLE": "/corp/ca.pem"}, "/corp/ca.pem"),
    ],
)
def test_image_downloads_trust_the_ca_bundle_the_environment_names_but_no_proxy(monkeypatch, tmp_path, env, verify) -> None:
    """trust_env is off (no proxy may hide the address connected to), yet the environment's CA bundle counts, as in
    requests: the docker image points REQUESTS_CA_BUNDLE at its store, which holds docker/ca-certificates/*.crt."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    f = ImageFetcher(UrlPolicy(), tmp_path)
    assert f.session.trust_env is False and f.session.verify == verify
