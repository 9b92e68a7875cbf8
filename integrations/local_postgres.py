"""A throwaway PostgreSQL cluster on a loopback port, for Label Studio as production runs it.

Production deployments of Label Studio keep their data in PostgreSQL, not SQLite; the
end-to-end tests run the predictions, queue and retraining paths against both. This starts
Debian's ``postgresql`` binaries (``initdb``, ``pg_ctl``) on a temporary cluster: its own folder,
a free port on 127.0.0.1, password (SCRAM) authentication for one role and one database; stopping
it removes everything. As root, the server runs as the ``postgres`` system user (PostgreSQL
refuses to run as root).

Example:
    >>> with LocalPostgres() as pg:  # doctest: +SKIP
    ...     pg.label_studio_env()["POSTGRE_PORT"]
    '54213'
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from integrations.local_label_studio import free_port

log = logging.getLogger(__name__)


class LocalPostgresError(RuntimeError):
    """PostgreSQL could not be found or started; the message says what to do."""


def postgres_bindir() -> Path:
    """The folder with ``initdb`` and ``pg_ctl`` (Debian keeps them out of ``PATH``)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    raise LocalPostgresError("PostgreSQL is not installed: apt-get install postgresql (or run `make system-deps` as root)")


class LocalPostgres:
    """One PostgreSQL server with one database for Label Studio.

    Args:
        port: loopback port (default: a free one).
        database: the database to create.
        user: its owner (a superuser of this throwaway cluster).
    """

    def __init__(self, port: int | None = None, database: str = "labelstudio", user: str = "labelstudio"):
        self.port = port or free_port()
        self.database = database
        self.user = user
        self.password = secrets.token_urlsafe(16)
        self.root: Path | None = None
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _cmd(self, *args: str | Path) -> list[str]:
        cmd = [str(a) for a in args]
        if not self._run_as:
            return cmd
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux; sbin may not be on PATH
        return [runuser, "-u", self._run_as, "--", *cmd]

    def _run(self, *args: str | Path, env: dict[str, str] | None = None) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd="/")
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise LocalPostgresError(f"`{' '.join(str(a) for a in args)}` failed:\n{tail}")

    def start(self, timeout: float = 120.0) -> LocalPostgres:
        bindir = postgres_bindir()
        # Outside pytest's private temporary folder: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="al-postgres-"))
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._run(
                bindir / "initdb", "-D", self.data_dir, "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            pwfile.unlink()
            # A test cluster: durability off for speed (the tests are about behaviour, not power cuts).
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(bindir / "pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-o", options, "-w", "-t", str(int(timeout)), "start")
            self._run(
                bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database,
                env={"PGPASSWORD": self.password},
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        log.info("PostgreSQL up on 127.0.0.1:%d (database %s)", self.port, self.database)
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run(postgres_bindir() / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")
            except LocalPostgresError as exc:
                log.warning("could not stop PostgreSQL cleanly: %s", exc)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def label_studio_env(self) -> dict[str, str]:
        """The environment that points Label Studio at this database."""
        return {
            "DJANGO_DB": "default",
            "POSTGRE_HOST": "127.0.0.1",
            "POSTGRE_PORT": str(self.port),
            "POSTGRE_NAME": self.database,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
        }

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
