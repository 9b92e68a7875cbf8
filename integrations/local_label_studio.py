"""A real Label Studio on this machine, for the demo and the end-to-end tests.

Label Studio is installed from the package registry into its own virtual environment (its
dependencies clash with ours), runs on SQLite (or on PostgreSQL, given ``database_env``, e.g.
from :class:`integrations.local_postgres.LocalPostgres`) on a loopback port, and is started with
``USE_DEFAULT_BANNED_SUBNETS=false``: without it Label Studio refuses ML backend URLs on
loopback, private or docker networks. A personal access token (the 1.23 default; legacy tokens
are off for new organizations) is created by logging in as the admin user.

Example:
    >>> ls = LocalLabelStudio(data_dir="/tmp/ls", port=8080)  # doctest: +SKIP
    >>> ls.start(); token = ls.personal_access_token()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import requests

log = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = Path(os.environ.get("LABEL_STUDIO_VENV", Path.home() / ".cache" / "al-backend" / f"label-studio-{LABEL_STUDIO_VERSION}"))


class LocalLabelStudioError(RuntimeError):
    """Label Studio could not be installed or started; the message says what to look at."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_installed(venv: Path = DEFAULT_VENV) -> Path:
    """Install Label Studio into ``venv`` if needed; return its ``label-studio`` executable."""
    exe = venv / "bin" / "label-studio"
    marker = venv / f".installed-{LABEL_STUDIO_VERSION}"
    if exe.exists() and marker.exists():
        return exe
    log.info("installing label-studio==%s into %s (one time, about a minute)", LABEL_STUDIO_VERSION, venv)
    base_python = getattr(sys, "_base_executable", sys.executable)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for cmd in (
        [base_python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"label-studio=={LABEL_STUDIO_VERSION}"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise LocalLabelStudioError(f"`{' '.join(cmd)}` failed:\n{tail}")
    marker.touch()
    return exe


def empty_database(venv: Path = DEFAULT_VENV) -> Path:
    """An empty SQLite database with every migration of this Label Studio applied, made once per install.

    Migrating a new database takes Label Studio about 30 s on 2 cores; a new SQLite data folder
    starts from a copy of this one instead (a few seconds), and Label Studio's own start still
    checks and applies whatever migration is missing. It holds no user, project or key.

    Raises:
        LocalLabelStudioError: the migration failed (its output's tail says why).
    """
    template = venv / f"empty-{LABEL_STUDIO_VERSION}.sqlite3"
    if template.is_file():
        return template
    manage = next(iter(sorted(venv.glob("lib/python*/site-packages/label_studio/manage.py"))), None)
    if manage is None:
        raise LocalLabelStudioError(f"no label_studio/manage.py under {venv}: reinstall Label Studio (delete {venv})")
    work = Path(tempfile.mkdtemp(prefix="empty-db-", dir=venv))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRE_", "DJANGO_", "DATABASE_", "LABEL_STUDIO_"))}
        env.update(LABEL_STUDIO_BASE_DATA_DIR=str(work), SECRET_KEY=secrets.token_urlsafe(50), COLLECT_ANALYTICS="false", SENTRY_DSN="")
        proc = subprocess.run(
            [str(venv / "bin" / "python"), str(manage), "migrate", "--no-color", "-v", "0"],
            env=env, cwd=work, capture_output=True, text=True,
        )  # fmt: skip
        made = work / "label_studio.sqlite3"
        if proc.returncode != 0 or not made.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise LocalLabelStudioError(f"migrating an empty Label Studio database failed:\n{tail}")
        os.replace(made, template)  # atomic: two makers at once both leave a whole file
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return template


class LocalLabelStudio:
    """One Label Studio server process.

    Args:
        data_dir: SQLite database, media and logs.
        port: loopback port.
        username: admin e-mail (created on first start).
        password: admin password.
        files_root: folder served as local-files storage (``/data/local-files/?d=...``).
        venv: where Label Studio is installed.
        database_env: Label Studio's database settings (``DJANGO_DB``, ``POSTGRE_*``); SQLite
            in ``data_dir`` when empty.
    """

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str = "admin12345",
        files_root: str | Path | None = None,
        venv: Path = DEFAULT_VENV,
        database_env: Mapping[str, str] | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.files_root = Path(files_root).resolve() if files_root else self.data_dir / "files"
        self.venv = venv
        self.database_env = dict(database_env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "label-studio.log"

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start(self, timeout: float = 300.0) -> LocalLabelStudio:
        exe = ensure_installed(self.venv)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database = self.data_dir / "label_studio.sqlite3"
        if not self.database_env and not database.exists():
            try:
                shutil.copyfile(empty_database(self.venv), database)
            except (OSError, LocalLabelStudioError) as e:  # Label Studio migrates a new database itself, only slower
                log.warning("starting Label Studio on a new database it migrates itself (about 30 s): %s", e)
                database.unlink(missing_ok=True)
        self.files_root.mkdir(parents=True, exist_ok=True)
        key_path = self.data_dir / "secret-key"  # Label Studio 1.23 may make a new SECRET_KEY per start: tokens would die
        if not key_path.exists():
            key_path.write_text(secrets.token_urlsafe(50))
            key_path.chmod(0o600)
        env = {
            **os.environ,
            "SECRET_KEY": key_path.read_text().strip(),
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "USE_DEFAULT_BANNED_SUBNETS": "false",  # else Label Studio refuses a backend on loopback/private networks
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
        for k in [k for k in env if k.startswith("POSTGRE_")] + [
            "LABEL_STUDIO_URL",
            "LABEL_STUDIO_API_KEY",
            "VIRTUAL_ENV",
            "PYTHONPATH",
            "DJANGO_DB",
        ]:
            env.pop(k, None)
        env.update(self.database_env)
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(exe), "start", "--no-browser", "--port", str(self.port), "--internal-host", "127.0.0.1", "--data-dir", str(self.data_dir)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.data_dir,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LocalLabelStudioError(f"Label Studio exited with code {self.proc.returncode}; see {self.log_path}")
            if self.healthy():
                log.info("Label Studio %s up at %s", LABEL_STUDIO_VERSION, self.url)
                return self
            time.sleep(1.0)
        self.stop()
        raise LocalLabelStudioError(f"Label Studio did not answer /health within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> LocalLabelStudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- accounts -------------------------------------------------------------------------
    def login(self) -> requests.Session:
        """A browser-like session logged in as the admin user."""
        s = requests.Session()
        s.trust_env = False
        s.get(f"{self.url}/user/login/", timeout=30)
        r = s.post(
            f"{self.url}/user/login/",
            data={"email": self.username, "password": self.password, "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
            headers={"Referer": f"{self.url}/user/login/"},
            allow_redirects=False,
            timeout=30,
        )
        if r.status_code not in (301, 302):
            raise LocalLabelStudioError(f"could not log in to Label Studio as {self.username} (HTTP {r.status_code})")
        return s

    def personal_access_token(self) -> str:
        """The admin's personal access token (created once, kept in ``data_dir``)."""
        path = self.data_dir / "personal-access-token"
        if path.exists():
            token = path.read_text().strip()
            r = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": token}, timeout=30)
            if r.status_code == 200:
                return token
            # not accepted any more (e.g. signed with another SECRET_KEY): make a new one
        s = self.login()
        r = s.post(f"{self.url}/api/token/", headers={"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": self.url + "/"}, timeout=30)
        if r.status_code == 409:
            raise LocalLabelStudioError(
                f"the personal access token kept in {path} is no longer valid and Label Studio will not make another while it "
                f"lists one: revoke it in Account & Settings at {self.url}, or delete {self.data_dir} to start afresh"
            )
        if r.status_code != 201:
            raise LocalLabelStudioError(f"could not create a personal access token (HTTP {r.status_code}): {r.text[:200]}")
        token = r.json()["token"]
        path.write_text(token)
        path.chmod(0o600)
        return token

    def legacy_token(self, enable: bool = True) -> str:
        """The admin's legacy token, turning legacy tokens on for the organization if asked."""
        s = self.login()
        headers = {"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": self.url + "/"}
        if enable:
            current = s.get(f"{self.url}/api/jwt/settings", timeout=30).json()
            r = s.post(f"{self.url}/api/jwt/settings", json={**current, "legacy_api_tokens_enabled": True}, headers=headers, timeout=30)
            if r.status_code >= 400:
                raise LocalLabelStudioError(f"could not enable legacy tokens (HTTP {r.status_code}): {r.text[:200]}")
        return s.get(f"{self.url}/api/current-user/token", timeout=30).json()["token"]
