"""The Label Studio glue: authentication and the few API calls this backend makes.

Authentication accepts both kinds of Label Studio API keys:

* personal access tokens (the 1.23 default): a JWT *refresh* token, exchanged at
  ``/api/token/refresh/`` for short-lived access tokens sent as ``Authorization: Bearer``;
* legacy tokens, sent as ``Authorization: Token``.

Credentials go to the Label Studio host and nowhere else, and the key never appears in an
error message or a ``repr``.

Example:
    >>> token_kind("0123456789abcdef0123456789abcdef01234567")
    'legacy'
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from integrations.connection import is_loopback
from integrations.secrets import scrub

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    """A Label Studio API call failed; the message says which and why (never the key).

    Attributes:
        status: the HTTP status, or None when Label Studio could not be reached.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Label Studio was down, overloaded or busy (worth trying again later), not a refusal."""
        return self.status is None or self.status in RETRY_STATUSES


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls ride out a Label Studio that is briefly down or overloaded.

    Connection errors and HTTP 429, 500, 502, 503 and 504 are retried up to ``attempts`` times in
    all, waiting ``first x 2^k`` seconds (at most ``cap``), each wait drawn between half and all of
    that (jitter, so many clients do not retry in step), and at least what ``Retry-After`` asks
    (up to ``cap``). GET, PUT, PATCH and DELETE are retried: every call of ours that uses them can
    be repeated safely. POSTs that create things are not (a retry could create twice); the jobs
    that make them repeat whole, idempotent runs instead.

    Example:
        >>> [RetryPolicy(first=0.5, cap=8.0).delay(k, jitter=1.0) for k in range(6)]
        [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    """

    attempts: int = 5
    first: float = 0.5
    cap: float = 8.0

    def delay(self, k: int, retry_after: float | None = None, jitter: float | None = None) -> float:
        base = min(self.cap, self.first * 2**k) * (random.uniform(0.5, 1.0) if jitter is None else jitter)
        return min(self.cap, max(base, retry_after or 0.0))


def retry_after(resp: requests.Response) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), or None."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def token_kind(key: str) -> str:
    """``personal`` for a JWT personal access token, ``legacy`` otherwise."""
    return "personal" if key.count(".") == 2 and "exp" in _jwt_payload(key) else "legacy"


def _jwt_payload(token: str) -> dict:
    try:
        part = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def api_session(url: str, ca_bundle: str = "") -> requests.Session:
    """A session for the Label Studio at ``url``: through the environment's proxy (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``NO_PROXY``, as any client on a corporate network) unless ``url`` is on this
    machine (a proxy cannot reach our loopback), trusting ``ca_bundle``'s certificate authorities when
    given (``LABEL_STUDIO_CA_BUNDLE``), else the system's or ``REQUESTS_CA_BUNDLE``'s.

    Example:
        >>> s = api_session("https://ls.corp.example", "/etc/ssl/private-ca.pem")
        >>> s.verify, s.trust_env, api_session("http://127.0.0.1:8080").trust_env
        ('/etc/ssl/private-ca.pem', True, False)
    """
    session = requests.Session()
    session.trust_env = not is_loopback(urlsplit(url).hostname or "")
    if ca_bundle:
        session.verify = ca_bundle
    return session


class LabelStudioAuth:
    """Produces the ``Authorization`` header for Label Studio, refreshing PAT access tokens.

    A personal access token is a long-lived JWT refresh token; it is exchanged at
    ``/api/token/refresh/`` for an access token (minutes), which is cached until shortly before
    it expires. Legacy tokens are sent as they are.

    Args:
        url: Label Studio base URL.
        api_key: personal access token or legacy token.
        timeout: seconds for the token exchange.
        session: the session the exchange goes through (default: :func:`api_session`).
    """

    REFRESH_MARGIN_S = 30.0

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ):
        self.url = url.rstrip("/")
        self.session = session or api_session(self.url)
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self._key = api_key
        self.kind = token_kind(api_key) if api_key else "none"
        self.timeout = timeout
        self._access: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioAuth(url={self.url!r}, kind={self.kind!r})"

    def scrub(self, text: str) -> str:
        """``text`` without the API key or the access token made from it."""
        return scrub(text, [self._key, self._access or ""])

    def headers(self) -> dict[str, str]:
        """Headers to send to the Label Studio host (and only there)."""
        if self.kind == "none":
            return {}
        if self.kind == "legacy":
            return {"Authorization": f"Token {self._key}"}
        with self._lock:
            if self._access is None or time.time() > self._expires_at - self.REFRESH_MARGIN_S:
                self._refresh()
        return {"Authorization": f"Bearer {self._access}"}

    def _refresh(self) -> None:
        # Exchanging the token changes nothing in Label Studio: safe to repeat while it is down.
        for k in range(self.retry.attempts):
            try:
                resp = self.session.post(
                    f"{self.url}/api/token/refresh/", json={"refresh": self._key}, timeout=self.timeout, verify=self.session.verify
                )
            except requests.RequestException as exc:
                if k + 1 < self.retry.attempts:
                    self.sleep(self.retry.delay(k))
                    continue
                raise LabelStudioError(
                    f"cannot reach Label Studio at {self.url} to refresh the access token ({type(exc).__name__})"
                ) from None
            if resp.status_code in RETRY_STATUSES and k + 1 < self.retry.attempts:
                self.sleep(self.retry.delay(k, retry_after(resp)))
                continue
            break
        if resp.status_code in RETRY_STATUSES:
            raise LabelStudioError(
                f"Label Studio at {self.url} is unavailable (HTTP {resp.status_code}) to refresh the access token", resp.status_code
            )
        access = (
            resp.json().get("access")
            if resp.status_code == 200 and resp.headers.get("content-type", "").startswith("application/json")
            else None
        )
        if not access:
            raise LabelStudioError(
                f"Label Studio at {self.url} did not accept the personal access token (HTTP {resp.status_code}): "
                "create a new one in Account & Settings and set LABEL_STUDIO_API_KEY"
            )
        self._access = access
        self._expires_at = float(_jwt_payload(access).get("exp", time.time() + 60))


class LabelStudioAPI(Protocol):
    """The Label Studio calls the backend's runtime makes (scoring and training); what a stand-in
    for Label Studio in a test must answer. :class:`LabelStudioClient` is the real one."""

    def get_project(self, project_id: int) -> dict: ...

    def list_tasks(self, project_id: int, fields: str = "all") -> list[dict]: ...

    def get_task(self, task_id: int) -> dict: ...

    def tasks_as_stored(self, project_id: int, task_ids: Iterable[int]) -> dict[int, dict]: ...

    def delete_model_version(self, project_id: int, model_version: str) -> int: ...

    def list_ml_backends(self, project_id: int) -> list[dict]: ...

    def update_ml_backend(self, backend_id: int, fields: dict) -> dict: ...

    def import_predictions(self, project_id: int, predictions: list[dict], chunk: int = 1000) -> int: ...

    def create_predictions(self, predictions: list[dict], workers: int = 4) -> int: ...

    def update_task_data(self, updates: dict[int, dict], workers: int = 4) -> int: ...

    def use_uncertainty_sampling(self, project_id: int, model_version: str) -> dict: ...

    def ensure_view(
        self,
        project_id: int,
        title: str,
        ordering: list[str],
        hidden: dict | None = None,
        display_types: dict[str, str] | None = None,
        filters: dict | None = None,
    ) -> dict: ...


class LabelStudioClient:
    """The Label Studio API calls this project makes, over one authenticated session.

    Args:
        url: Label Studio base URL, e.g. ``http://localhost:8080``.
        api_key: personal access token or legacy token.
        timeout: seconds per request.
        ca_bundle: a PEM file of the certificate authorities to trust (``LABEL_STUDIO_CA_BUNDLE``);
            empty: the system's. Proxies come from the environment (:func:`api_session`).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        ca_bundle: str = "",
    ):
        if not url:
            raise LabelStudioError("LABEL_STUDIO_URL is not set")
        self.url = url.rstrip("/")
        self.session = api_session(self.url, ca_bundle)
        self.auth = LabelStudioAuth(self.url, api_key, retry=retry, sleep=sleep, session=self.session)
        self.timeout = timeout
        self.retry = retry
        self.sleep = sleep

    # -- transport ------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``path`` (relative to the base URL) and return the decoded JSON (or None).

        Idempotent methods ride out a briefly unavailable Label Studio (:class:`RetryPolicy`).
        """
        url = f"{self.url}/{path.lstrip('/')}"
        extra = kwargs.pop("headers", {})
        timeout = kwargs.pop("timeout", self.timeout)
        retries = self.retry.attempts - 1 if method.upper() in IDEMPOTENT_METHODS else 0
        for k in range(retries + 1):
            try:
                # verify given explicitly: from the session, requests would let REQUESTS_CA_BUNDLE replace LABEL_STUDIO_CA_BUNDLE
                resp = self.session.request(
                    method, url, headers={**self.auth.headers(), **extra}, timeout=timeout, verify=self.session.verify, **kwargs
                )
            except requests.RequestException as exc:
                if k < retries:
                    log.warning("%s %s: Label Studio unreachable (%s); trying again", method, path, type(exc).__name__)
                    self.sleep(self.retry.delay(k))
                    continue
                raise LabelStudioError(f"{method} {path}: cannot reach Label Studio at {self.url} ({type(exc).__name__})") from None
            if resp.status_code in RETRY_STATUSES and k < retries:
                log.warning("%s %s: Label Studio answered HTTP %s; trying again", method, path, resp.status_code)
                self.sleep(self.retry.delay(k, retry_after(resp)))
                continue
            break
        if resp.status_code >= 400:
            body = self.auth.scrub(resp.text[:500])  # a proxy or server may echo our Authorization header
            raise LabelStudioError(f"{method} {path} -> HTTP {resp.status_code}: {body}", status=resp.status_code)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    # -- projects and tasks ---------------------------------------------------------------
    def create_project(self, title: str, label_config: str, **fields: Any) -> dict:
        return self.post("/api/projects", json={"title": title, "label_config": label_config, **fields})

    def get_project(self, project_id: int) -> dict:
        return self.get(f"/api/projects/{int(project_id)}")

    def import_tasks(self, project_id: int, tasks: Iterable[Mapping[str, Any]]) -> dict:
        return self.post(f"/api/projects/{int(project_id)}/import", json=list(tasks), params={"commit_to_project": "true"})

    def upload_files(self, project_id: int, paths: Iterable[str]) -> dict:
        """Upload image files; Label Studio makes one task per file (``/data/upload/...``)."""
        files = []
        handles = []
        try:
            for i, p in enumerate(paths):
                fh = open(p, "rb")
                handles.append(fh)
                files.append((f"file{i}", (str(p).rsplit("/", 1)[-1], fh)))  # one field per file: Label Studio keeps one file per name
            return self.post(f"/api/projects/{int(project_id)}/import", files=files, timeout=max(self.timeout, 120))
        finally:
            for fh in handles:
                fh.close()

    def list_tasks(self, project_id: int, fields: str = "all") -> list[dict]:
        """Every task of a project (paged)."""
        out: list[dict] = []
        page = 1
        while True:
            try:
                data = self.get("/api/tasks", params={"project": int(project_id), "page": page, "page_size": 500, "fields": fields})
            except LabelStudioError as exc:
                if exc.status == 404 and page > 1:  # paged past the end
                    break
                raise
            tasks = data.get("tasks", []) if isinstance(data, dict) else data
            out.extend(tasks)
            total = data.get("total") if isinstance(data, dict) else None
            if not tasks or (total is not None and len(out) >= total):
                break
            page += 1
        return out

    def get_task(self, task_id: int) -> dict:
        """One task with its annotations, its storage URIs resolved for reading (as annotators see
        them): never write this ``data`` back (see :meth:`tasks_as_stored`)."""
        return self.get(f"/api/tasks/{int(task_id)}")

    def tasks_as_stored(self, project_id: int, task_ids: Iterable[int], per_request: int = 100) -> dict[int, dict]:
        """These tasks of a project, with their annotations and their ``data`` unresolved, ``per_request``
        ids a request; ``{task id: task}``, a task deleted meanwhile (or of another project) absent.

        Label Studio resolves storage URIs in what it returns by default (``s3://bucket/a.jpg``
        becomes ``/tasks/1/resolve/?fileuri=...``): data read that way and written back would
        replace the task's own URI. ``resolve_uri=false`` returns them untouched; the Data
        Manager's ``selectedItems`` picks the tasks. (Label Studio still shows a file's
        ``$undefined$`` key under the labeling config's variable, as it always does; a write of
        this data keeps the URI, under that name.)
        """
        ids = sorted({int(t) for t in task_ids})
        out: dict[int, dict] = {}
        step = max(1, per_request)
        for at in range(0, len(ids), step):
            part = ids[at : at + step]
            query = json.dumps({"selectedItems": {"all": False, "included": part}}, separators=(",", ":"))
            params = {"project": int(project_id), "query": query, "resolve_uri": "false", "fields": "all", "page_size": len(part)}
            page = self.get("/api/tasks", params=params)
            out.update({int(t["id"]): t for t in page["tasks"]})
            if int(page.get("total") or 0) > len(page["tasks"]):  # a TASK_API_PAGE_SIZE_MAX below the page
                log.warning(
                    "Label Studio returned %d of the %d tasks asked for (TASK_API_PAGE_SIZE_MAX?)", len(page["tasks"]), page["total"]
                )
        return out

    def task_predictions(self, task_id: int) -> list[dict]:
        return self.get("/api/predictions", params={"task": int(task_id)})

    def add_local_storage(self, project_id: int, path: str, title: str = "local files", regex: str = r".*", timeout: float = 120.0) -> dict:
        """Connect a local-files storage to a project and import its files as tasks (waits for the sync)."""
        st = self.post(
            "/api/storages/localfiles",
            json={"project": int(project_id), "path": path, "use_blob_urls": True, "title": title, "regex_filter": regex},
        )
        self.post(f"/api/storages/localfiles/{st['id']}/sync")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.get(f"/api/storages/localfiles/{st['id']}")
            if st.get("status") == "completed":
                return st
            if st.get("status") == "failed":
                raise LabelStudioError(f"local storage sync failed: {st.get('traceback') or st}")
            time.sleep(0.5)
        raise LabelStudioError(f"local storage sync did not finish within {timeout:.0f}s")

    # -- predictions and the queue --------------------------------------------------------
    def delete_model_version(self, project_id: int, model_version: str) -> int:
        """Delete every prediction of ``model_version`` in a project (one request); returns the count."""
        data = self.request("DELETE", f"/api/projects/{int(project_id)}/model-versions/", json={"model_version": model_version})
        return int((data or {}).get("count", 0)) if isinstance(data, dict) else 0

    def import_predictions(self, project_id: int, predictions: list[dict], chunk: int = 1000) -> int:
        """Create predictions in bulk (``/import/predictions``, ``chunk`` per request)."""
        created = 0
        for start in range(0, len(predictions), chunk):
            part = predictions[start : start + chunk]
            self.post(f"/api/projects/{int(project_id)}/import/predictions", json=part, timeout=max(self.timeout, 300))
            created += len(part)
        return created

    def create_predictions(self, predictions: list[dict], workers: int = 4) -> int:
        """Create predictions one request each (``POST /api/predictions``), ``workers`` at a time.

        Slower than :meth:`import_predictions`, but keeps each prediction's ``cluster``: Label
        Studio 1.23's bulk import stores only task, result, score and model version.
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda p: self.post("/api/predictions", json=p), predictions))
        return len(predictions)

    def update_task_data(self, updates: dict[int, dict], workers: int = 4) -> int:
        """Set ``data`` of several tasks (``{task_id: full new data}``), ``workers`` requests at a time."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda item: self.patch(f"/api/tasks/{int(item[0])}", json={"data": item[1]}), updates.items()))
        return len(updates)

    def use_uncertainty_sampling(self, project_id: int, model_version: str) -> dict:
        """Serve annotators the task with the lowest prediction score of ``model_version`` first."""
        return self.patch(
            f"/api/projects/{int(project_id)}",
            json={"sampling": "Uncertainty sampling", "model_version": model_version, "show_collab_predictions": True},
        )

    def ensure_view(
        self,
        project_id: int,
        title: str,
        ordering: list[str],
        hidden: dict | None = None,
        display_types: dict[str, str] | None = None,
        filters: dict | None = None,
    ) -> dict:
        """A Data Manager tab with this title and ordering (created once, then updated).

        ``display_types`` maps column ids to Data Manager types (e.g. ``"Number"``), so that task
        data columns sort and filter as numbers rather than text; ``filters`` is the Data
        Manager's filter object (which tasks the tab lists).
        """
        data: dict[str, Any] = {"title": title, "ordering": ordering, "hiddenColumns": hidden or {"explore": [], "labeling": []}}
        if display_types:
            data["columnsDisplayType"] = display_types
        if filters:
            data["filters"] = filters
        for view in self.get("/api/dm/views", params={"project": int(project_id)}):
            if view.get("data", {}).get("title") == title:
                return self.patch(
                    f"/api/dm/views/{view['id']}", json={"project": int(project_id), "data": {**view.get("data", {}), **data}}
                )
        return self.post("/api/dm/views", json={"project": int(project_id), "data": data})

    def next_task(self, project_id: int) -> dict:
        """The task Label Studio hands the calling user next (its labeling queue)."""
        return self.get(f"/api/projects/{int(project_id)}/next")

    def create_annotation(self, task_id: int, result: list[dict], **fields: Any) -> dict:
        return self.post(f"/api/tasks/{int(task_id)}/annotations", json={"result": result, **fields})

    # -- ML backends ----------------------------------------------------------------------
    def list_ml_backends(self, project_id: int) -> list[dict]:
        return self.get("/api/ml", params={"project": int(project_id)})

    def update_ml_backend(self, backend_id: int, fields: dict) -> dict:
        """Change fields of an ML backend registration (title, description, ...)."""
        return self.patch(f"/api/ml/{int(backend_id)}", json=fields)

    def add_ml_backend(self, project_id: int, url: str, title: str = "YOLO active learning", **fields: Any) -> dict:
        """Connect a backend to a project; reuses an existing connection to the same URL."""
        for b in self.list_ml_backends(project_id):
            if b.get("url", "").rstrip("/") == url.rstrip("/"):
                return b
        return self.post("/api/ml", json={"project": int(project_id), "url": url, "title": title, **fields})

    def retrieve_predictions(self, project_id: int, task_ids: Iterable[int] | None = None) -> dict:
        """Ask Label Studio to fetch predictions from its connected backend (the Data Manager action)."""
        ids = list(task_ids) if task_ids is not None else None
        selected = {"all": False, "included": ids} if ids is not None else {"all": True, "excluded": []}
        return self.post(
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": int(project_id)},
            json={"selectedItems": selected},
            timeout=max(self.timeout, 300),
        )
