"""A real Label Studio (own virtual environment, loopback; SQLite, and PostgreSQL for the tests
that take ``on_db``) and a real backend process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from integrations.label_studio import LabelStudioClient
from integrations.local_label_studio import LocalLabelStudio, free_port
from integrations.local_postgres import LocalPostgres
from ml_backend.tools.synthetic import make_image

ROOT = Path(__file__).resolve().parents[2]


DATABASES = ("sqlite", "postgresql")


@dataclass
class LabelStudioOn:
    """A running Label Studio on one database, its admin's token and a client."""

    database: str
    server: LocalLabelStudio
    pat: str
    client: LabelStudioClient
    postgres: LocalPostgres | None = None


class LabelStudios:
    """One Label Studio per database, started when a test first needs it (or ahead, by :meth:`warm`), stopped at the end."""

    def __init__(self, base: Path):
        self.base = base
        self.running: dict[str, LabelStudioOn] = {}
        self.failed: dict[str, BaseException] = {}
        self.locks = {database: threading.Lock() for database in DATABASES}
        self.warming: list[threading.Thread] = []

    def get(self, database: str) -> LabelStudioOn:
        with self.locks[database]:
            if database in self.failed:
                raise self.failed[database]
            if database not in self.running:
                try:
                    self.running[database] = self._start(database)
                except BaseException as e:
                    self.failed[database] = e
                    raise
            return self.running[database]

    def _start(self, database: str) -> LabelStudioOn:
        postgres = LocalPostgres().start() if database == "postgresql" else None
        try:
            server = LocalLabelStudio(
                data_dir=self.base / f"label-studio-{database}",
                database_env=postgres.label_studio_env() if postgres else None,
            ).start()
        except BaseException:
            if postgres:
                postgres.stop()
            raise
        pat = server.personal_access_token()
        return LabelStudioOn(database, server, pat, LabelStudioClient(server.url, pat), postgres)

    def warm(self, databases: tuple[str, ...]) -> None:
        """Start these in the background while the tests before the end-to-end ones run (a failure is raised to the first test that needs it)."""

        def start(database: str) -> None:
            try:
                self.get(database)
            except BaseException:  # kept in self.failed for the test that asks
                pass

        for database in databases:
            thread = threading.Thread(target=start, args=(database,), name=f"label-studio-{database}", daemon=True)
            thread.start()
            self.warming.append(thread)

    def stop(self) -> None:
        for thread in self.warming:
            thread.join(timeout=600)
        for on in self.running.values():
            on.server.stop()
            if on.postgres:
                on.postgres.stop()
        self.running.clear()


_STUDIOS: LabelStudios | None = None


def _studios(config: pytest.Config) -> LabelStudios:
    global _STUDIOS
    if _STUDIOS is None:
        _STUDIOS = LabelStudios(Path(config._tmp_path_factory.mktemp("label-studios", numbered=True)))  # type: ignore[attr-defined]
    return _STUDIOS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The end-to-end tests run last, and the session's Label Studio servers start in the background
    meanwhile (on 2 cores a migration and the unit tests share the machine well)."""
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    items[:] = [item for item in items if not item.get_closest_marker("e2e")] + e2e
    if not e2e or config.option.collectonly:
        return
    wanted = (
        {"sqlite"}
        if any({"label_studio", "ls_client", "pat", "on_db", "backends", "backend"} & set(i.fixturenames) for i in e2e)
        else set()
    )
    if any("on_db" in i.fixturenames for i in e2e):
        wanted.add("postgresql")
    _studios(config).warm(tuple(d for d in DATABASES if d in wanted))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _STUDIOS is not None:
        _STUDIOS.stop()


@pytest.fixture(scope="session")
def label_studios(pytestconfig: pytest.Config) -> LabelStudios:
    return _studios(pytestconfig)


@pytest.fixture(params=DATABASES)
def on_db(request: pytest.FixtureRequest, label_studios: LabelStudios) -> LabelStudioOn:
    """The test runs twice: against Label Studio on SQLite and on PostgreSQL (as production runs it)."""
    return label_studios.get(request.param)


@pytest.fixture(scope="session")
def label_studio(label_studios: LabelStudios) -> LocalLabelStudio:
    return label_studios.get("sqlite").server


@pytest.fixture(scope="session")
def pat(label_studios: LabelStudios) -> str:
    return label_studios.get("sqlite").pat


@pytest.fixture(scope="session")
def ls_client(label_studios: LabelStudios) -> LabelStudioClient:
    return label_studios.get("sqlite").client


class BackendProcess:
    def __init__(self, port: int, proc: subprocess.Popen, log_path: Path):
        self.port, self.proc, self.log_path = port, proc, log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_backend(
    tmp_path: Path, env_extra: dict[str, str], timeout: float = 90.0, new_session: bool = False, port: int | None = None, workers: int = 1
) -> BackendProcess:
    """A real backend (``python -m ml_backend serve``: gunicorn) on ``port`` (default: a free one),
    with its state in ``tmp_path/state``; ``new_session``: in its own process group, which a crash
    test can kill whole."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "BASIC_AUTH_"))}
    env.update({"PYTHONPATH": str(ROOT), "MODEL_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"})
    env.update(env_extra)
    log_path = tmp_path / f"backend-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=new_session,
    )
    backend = BackendProcess(port, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited:\n{backend.log()}")
        try:
            health = requests.get(f"{backend.url}/health", timeout=1).json()
            if health.get("model_loaded") or health.get("model_error"):
                return backend
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"backend did not start:\n{backend.log()}")


def stop_backend(backend: BackendProcess) -> None:
    backend.proc.terminate()
    try:
        backend.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        backend.proc.kill()


@pytest.fixture(scope="session")
def backends(tmp_path_factory, label_studios: LabelStudios, detect_weights):
    """One shared backend per Label Studio database, started when first needed."""
    running: dict[str, tuple[BackendProcess, str]] = {}

    def get(database: str) -> BackendProcess:
        if database not in running:
            on = label_studios.get(database)
            env = {
                "MODEL_PATH": str(detect_weights), "LABEL_STUDIO_URL": on.server.url, "LABEL_STUDIO_API_KEY": on.pat,
                "IMGSZ": "96", "SCORE_THRESHOLD": "0.3",
            }  # fmt: skip
            running[database] = (start_backend(tmp_path_factory.mktemp(f"backend-{database}"), env), on.pat)
        return running[database][0]

    yield get
    for b, pat in running.values():
        stop_backend(b)
        assert pat not in b.log(), "the Label Studio token must never appear in the backend log"


@pytest.fixture(scope="session")
def backend(backends) -> BackendProcess:
    return backends("sqlite")


@pytest.fixture(scope="session")
def shape_files(tmp_path_factory) -> list[tuple[Path, object]]:
    """Synthetic images (path, SyntheticImage) to upload."""
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(7)
    out = []
    for i in range(5):
        s = make_image(rng, 96, 80)
        p = root / f"shapes_{i}.jpg"
        s.image.save(p, quality=95)
        out.append((p, s))
    return out
