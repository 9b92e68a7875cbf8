"""The disk cache of downloaded images, kept under ``IMAGE_CACHE_MAX_MB``: least recently used out first.

Files live under ``MODEL_DIR/cache/images/<2 hex>/<sha256 of the source URI>``. Several threads and
several processes (gunicorn workers, a training run) share the folder, so nothing here assumes it
is alone:

* a file is written whole (:func:`ml_backend.state.atomic_write`: a temporary file renamed over the
  target), so a reader sees the old file, the new one or none; a reader that finds its file gone
  (pruned meanwhile) downloads it again, and one that has it open keeps reading it after a delete;
* a hit refreshes the file's modification time (at most once a minute per file): that is the
  recency pruning goes by (access times are not, ``noatime`` mounts never update them);
* each process keeps a running count of the folder's bytes (one per folder, shared by its
  fetchers): learned by listing the folder at its first write, raised by its own writes, and
  listed again when the count passes the limit or the process has written ``1 - PRUNE_TO`` (10%)
  of the limit since its last listing. A listing that finds the folder over ``PRUNE_TO`` (90%) of
  the limit deletes the least recently used files until it holds at most that. So a process lists
  the folder once per 10% of the limit it writes, never per write, and the folder holds at most
  the limit plus 10% of it per other process writing (their writes since their last listing);
* one process prunes at a time (an ``flock`` on ``.prune.lock``; another waits for its turn, one
  thread of a process prunes while the others go on); a file used again between the listing and
  its delete is kept.

Example:
    >>> import tempfile
    >>> cache = ImageCache(tempfile.mkdtemp(), max_bytes=10 * 2**20)
    >>> cache.put("ab12", b"jpeg bytes")
    >>> cache.get("ab12"), cache.get("cd34")
    (b'jpeg bytes', None)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ml_backend.state import atomic_write

log = logging.getLogger(__name__)

PRUNE_TO = 0.9  # a prune leaves at most this share of the limit; a process lists again after writing the rest
TOUCH_AFTER_S = 60.0  # a hit refreshes a file's time only when it is older than this (one metadata write a minute at most)
MAX_PASSES = 4  # listings one prune makes at most while other threads keep writing
STALE_TMP_S = 3600.0  # a temporary file this old is a crashed write's leftover, and pruned
LOCK_NAME = ".prune.lock"


@dataclass(frozen=True)
class CacheEntry:
    """One cached file as a listing saw it."""

    path: Path
    size: int
    mtime: float


def scan(root: Path, now: float | None = None) -> list[CacheEntry]:
    """Every cached file under ``root`` (its two-letter sub-folders), least recently used first.

    Temporary files of writes under way are left out; those older than ``STALE_TMP_S`` (a crashed
    write's) are listed, so pruning removes them. A file deleted during the listing is skipped.
    """
    now = time.time() if now is None else now
    out: list[CacheEntry] = []
    try:
        folders = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return out
    for folder in folders:
        try:
            files = list(os.scandir(folder.path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for f in files:
            try:
                st = f.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not f.is_file(follow_symlinks=False) or (f.name.startswith(".") and now - st.st_mtime < STALE_TMP_S):
                continue
            out.append(CacheEntry(Path(f.path), st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: (e.mtime, str(e.path)))


def plan_prune(entries: Sequence[CacheEntry], target: int) -> list[CacheEntry]:
    """The least recently used entries whose removal leaves at most ``target`` bytes.

    Example:
        >>> a, b, c = (CacheEntry(Path(n), 40, t) for n, t in (("a", 1.0), ("b", 2.0), ("c", 3.0)))
        >>> [e.path.name for e in plan_prune([c, a, b], target=80)]
        ['a']
    """
    total = sum(e.size for e in entries)
    doomed: list[CacheEntry] = []
    for e in sorted(entries, key=lambda e: (e.mtime, str(e.path))):
        if total <= target:
            break
        doomed.append(e)
        total -= e.size
    return doomed


@dataclass
class _Ledger:
    """A process's running count of one cache folder's bytes (shared by its fetchers)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pruning: threading.Lock = field(default_factory=threading.Lock)
    bytes: int | None = None  # None: not listed yet
    unlisted: int = 0  # bytes this process wrote since its last listing


_LEDGERS: dict[Path, _Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def _ledger(root: Path) -> _Ledger:
    with _LEDGERS_LOCK:
        return _LEDGERS.setdefault(root.absolute(), _Ledger())


def _forget_ledgers() -> None:
    """In a forked child: fresh counts and locks (a lock a thread of the parent held would stay held)."""
    global _LEDGERS_LOCK
    _LEDGERS_LOCK = threading.Lock()
    _LEDGERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_ledgers)


@contextlib.contextmanager
def _across_processes(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``: one process prunes at a time, the next waits its turn."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the per-process lock only
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class ImageCache:
    """A folder of downloaded files by key, kept under ``max_bytes`` (see the module docstring).

    Args:
        root: the folder (``MODEL_DIR/cache/images``), created when needed.
        max_bytes: the most bytes the folder may hold (``IMAGE_CACHE_MAX_MB``); 0: no limit, never pruned.
        clock: wall-clock time (file times), injectable for tests.
    """

    def __init__(
        self,
        root: str | Path,
        max_bytes: int = 0,
        clock: Callable[[], float] = time.time,
    ):
        self.root = Path(root)
        self.max_bytes = max(0, int(max_bytes))
        self.clock = clock
        self._ledger = _ledger(self.root)

    def path(self, key: str) -> Path:
        """Where ``key``'s file is kept."""
        return self.root / key[:2] / key

    def get(self, key: str) -> bytes | None:
        """The cached bytes of ``key`` (None: not cached, or pruned meanwhile), marked as just used."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        if self.max_bytes and self.clock() - mtime > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):  # gone or replaced meanwhile: nothing to mark
                os.utime(path)
        return data

    @property
    def margin(self) -> int:
        """Bytes a process writes between two listings at most (10% of the limit)."""
        return max(1, self.max_bytes - int(self.max_bytes * PRUNE_TO))

    def put(self, key: str, data: bytes) -> None:
        """Keep ``data`` as ``key``'s file; list (and prune) the folder when the running count says so."""
        atomic_write(self.path(key), data, fsync=False)  # a cache: a lost file is downloaded again
        if not self.max_bytes:
            return
        ledger = self._ledger
        with ledger.lock:
            ledger.unlisted += len(data)
            if ledger.bytes is not None:
                ledger.bytes += len(data)
            due = ledger.bytes is None or ledger.bytes > self.max_bytes or ledger.unlisted >= self.margin
        if due:
            self.prune()

    def prune(self) -> int:
        """List the folder and, if it holds more than ``PRUNE_TO`` (90%) of the limit, delete the least
        recently used files until it holds at most that. Safe beside readers, writers and other pruners.

        Other threads of the process skip pruning while one prunes; what they wrote meanwhile is
        looked at by another pass (``MAX_PASSES`` at most, then left to the next write). Another
        process waits until this one is done, then lists the folder itself (its count learns what
        this one left).

        Returns:
            How many files were deleted (0 also when another thread of the process is pruning).
        """
        ledger = self._ledger
        if not self.max_bytes or not ledger.pruning.acquire(blocking=False):
            return 0
        try:
            with _across_processes(self.root / LOCK_NAME):
                removed = 0
                for _ in range(MAX_PASSES):
                    gone, again = self._prune_pass(ledger)
                    removed += gone
                    if not again:
                        break
                return removed
        finally:
            ledger.pruning.release()

    def _prune_pass(self, ledger: _Ledger) -> tuple[int, bool]:
        """One listing and its deletes. Returns how many files went, and whether what was written
        during it calls for another pass."""
        with ledger.lock:
            before = ledger.unlisted
        entries = scan(self.root, self.clock())
        total = sum(e.size for e in entries)
        removed, target = 0, int(self.max_bytes * PRUNE_TO)
        if total > target:
            for entry in plan_prune(entries, target):
                gone = self._remove(entry)
                removed += gone
                total -= entry.size if gone else 0
            log.info("image cache: deleted %d least recently used files; %.1f MiB left", removed, total / 2**20)
        with ledger.lock:  # writes during the listing may be missing from it: they stay counted
            during = ledger.unlisted - before
            ledger.bytes, ledger.unlisted = total + during, during
            return removed, ledger.bytes > self.max_bytes or during >= self.margin

    @staticmethod
    def _remove(entry: CacheEntry) -> bool:
        """Delete one listed file unless it was used (or replaced) since the listing. True: it is gone."""
        try:
            if os.stat(entry.path).st_mtime != entry.mtime:
                return False  # read or written again since: keep it
            os.unlink(entry.path)
        except FileNotFoundError:
            return True  # another process pruned it
        except OSError as exc:
            log.warning("image cache: could not delete %s: %s", entry.path, exc)
            return False
        return True
