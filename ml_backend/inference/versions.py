"""Model versions kept under ``MODEL_DIR/projects/<id>/models``, with an atomically switched "current" pointer.

Layout::

    models/
      versions/<version>/weights.pt   the weights, never modified once written (deleted when pruned)
      versions/<version>/meta.json    metrics, parent version, creation time, note; when pruned, since when
      current                         the served version's name (replaced atomically)
      served                          every version ever served, one a line, oldest first (appended)

A version is written into a temporary folder, flushed to disk, then renamed into place, and the
pointer is replaced with ``os.replace``: a crash at any moment leaves either the old or the new
state, never a half-written model that gets served. Leftover temporary folders are ignored.

Every trained version is stored, served or not. :meth:`ModelRegistry.prune` (``VERSIONS_KEEP``,
after each training run) deletes the weights of the oldest versions that were never served beyond
the newest few; a version ever served, the served one and the one before it (what a rollback goes
to) are never pruned. A pruned version keeps its ``meta.json``: it stays in the history
(``/versions``, its metrics) with ``pruned`` set, and can no longer be promoted.

Example:
    >>> import tempfile, pathlib
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> reg.current() is None
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml_backend.inference.model import file_digest
from ml_backend.state import atomic_write, fsync_dir

log = logging.getLogger(__name__)

Names = list[str]  # version names (``ModelRegistry.list`` hides the builtin inside the class)


@dataclass(frozen=True)
class VersionInfo:
    """One stored model version."""

    version: str
    weights: Path
    created: float
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    pruned: float | None = None  # when its weights were deleted (:meth:`ModelRegistry.prune`); None: they are kept

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = str(self.weights)
        return d


class ModelRegistry:
    """Stored versions and the pointer to the served one.

    Args:
        root: folder (``MODEL_DIR/models``), created when needed.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.pointer = self.root / "current"
        self.served_log = self.root / "served"

    def add(self, weights: str | Path, parent: str | None = None, metrics: dict[str, Any] | None = None, note: str = "") -> VersionInfo:
        """Store a copy of ``weights`` as a new version (not served until :meth:`promote`).

        The version name is the file's stem and a hash of its content, as ``model_version`` is,
        so the same weights added twice are one version.
        """
        src = Path(weights)
        version = f"{src.stem}-{file_digest(src)[:12]}"
        final = self.versions_dir / version
        if final.exists():
            known = self.get(version)
            return self._restore(known, src) if known.pruned is not None else known
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".tmp-"))
        try:
            dst = tmp / f"weights{src.suffix or '.pt'}"
            with open(src, "rb") as fin:
                atomic_write(dst, lambda fout: shutil.copyfileobj(fin, fout, 1 << 20))
            info = VersionInfo(version, final / dst.name, time.time(), parent, dict(metrics or {}), note)
            atomic_write(tmp / "meta.json", json.dumps(info.to_json(), indent=2))
            os.rename(tmp, final)  # the whole folder appears at once
            fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return info

    def _restore(self, info: VersionInfo, src: Path) -> VersionInfo:
        """The weights of a pruned version trained again (same content): stored again, no longer pruned."""
        with open(src, "rb") as fin:
            atomic_write(info.weights, lambda fout: shutil.copyfileobj(fin, fout, 1 << 20))
        restored = dataclasses.replace(info, pruned=None)
        atomic_write(info.weights.parent / "meta.json", json.dumps(restored.to_json(), indent=2))
        return restored

    def get(self, version: str) -> VersionInfo:
        """A stored version (a pruned one too: its ``pruned`` says so and its weights are gone).

        Raises:
            KeyError: no such version (or its files are damaged).
        """
        folder = self.versions_dir / version
        try:
            meta = json.loads((folder / "meta.json").read_text())
            weights = folder / Path(meta["weights"]).name
            pruned = meta.get("pruned")
            if pruned is None and not weights.is_file():
                raise FileNotFoundError(weights)
        except (OSError, ValueError, KeyError) as exc:
            raise KeyError(f"model version {version!r} is missing or damaged: {exc}") from None
        return VersionInfo(
            meta["version"],
            weights,
            float(meta["created"]),
            meta.get("parent"),
            meta.get("metrics") or {},
            meta.get("note") or "",
            None if pruned is None else float(pruned),
        )

    def list(self) -> list[VersionInfo]:
        """All intact versions, oldest first (damaged ones are logged and left out)."""
        out: list[VersionInfo] = []
        if not self.versions_dir.exists():
            return out
        for folder in self.versions_dir.iterdir():
            if folder.name.startswith(".tmp-") or not folder.is_dir():
                continue
            try:
                out.append(self.get(folder.name))
            except KeyError as exc:
                log.warning("%s", exc)
        return sorted(out, key=lambda v: (v.created, v.version))

    def promote(self, version: str) -> VersionInfo:
        """Serve ``version`` from now on (an atomic replace of the pointer), and remember it was served.

        Raises:
            KeyError: no such version, it is damaged, or its weights were pruned.
        """
        info = self.get(version)
        if info.pruned is not None:
            raise KeyError(f"model version {version!r} cannot be served: its weights were pruned (VERSIONS_KEEP)")
        self._log_served(version)  # first: a version in the pointer is always in the log
        atomic_write(self.pointer, version)
        return info

    def _log_served(self, version: str) -> None:
        """Append ``version`` to the served log (one ``O_APPEND`` write: whole lines, whoever else appends)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.served_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{version}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _pointer(self) -> str | None:
        """The name in the pointer file (None: nothing promoted)."""
        try:
            return self.pointer.read_text().strip() or None
        except OSError:
            return None

    def _logged(self) -> Names:
        """The served log's versions, oldest first (empty without one)."""
        try:
            return self.served_log.read_text().split()
        except OSError:
            return []

    def served(self) -> Names:
        """The versions ever served: the served log's, in order, then what it may lack (versions
        served before it existed): the served one, and every version's parent (a version is
        trained from the model served then).

        Example:
            >>> import tempfile, pathlib
            >>> reg = ModelRegistry(tempfile.mkdtemp())
            >>> (reg.root / "served").write_text("a-1\\nb-2\\na-1\\n")
            12
            >>> reg.served()
            ['a-1', 'b-2']
        """
        logged, current = self._logged(), self._pointer()
        parents = [v.parent for v in self.list() if v.parent]
        return list(dict.fromkeys([*logged, *([current] if current else []), *parents]))

    def previous(self) -> str | None:
        """The version served before the current one (what a rollback goes to); None if there is none.

        From the served log; without one (a registry older than it), the current version's parent.
        """
        logged, current = self._logged(), self._pointer()
        if current in logged:
            before = [v for v in logged[: len(logged) - logged[::-1].index(current) - 1] if v != current]
            if before:
                return before[-1]
        if current is None:
            return None
        try:
            return self.get(current).parent
        except KeyError:
            return None

    def prune(self, keep: int | None) -> Names:
        """Delete the weights of the versions never served but the ``keep`` newest; return their names.

        A version ever served (:meth:`served`), the served one and the one before it
        (:meth:`previous`) are never pruned, whatever ``keep`` says. A pruned version keeps its
        ``meta.json`` (marked ``pruned``: its history and metrics stay, it can no longer be
        promoted); its folder holds nothing else. The mark is written before the weights go: a
        crash in between leaves a pruned version with leftover weights, deleted by the next prune.

        Args:
            keep: how many never-served versions to keep (``VERSIONS_KEEP``), newest first; None keeps all.

        Example:
            >>> import tempfile, pathlib
            >>> tmp = pathlib.Path(tempfile.mkdtemp())
            >>> reg = ModelRegistry(tmp / "models")
            >>> for n in range(3):
            ...     _ = (tmp / "w.pt").write_bytes(bytes([n])), reg.add(tmp / "w.pt")
            >>> oldest = reg.list()[0].version
            >>> reg.prune(keep=2) == [oldest], reg.get(oldest).pruned is not None
            (True, True)
        """
        if keep is None:
            return []
        protected = {*self.served(), self._pointer(), self.previous()}
        unserved = [v for v in self.list() if v.version not in protected]
        leftovers = [v for v in unserved if v.pruned is not None]
        candidates = [v for v in unserved if v.pruned is None]
        doomed = candidates[: max(0, len(candidates) - keep)]  # oldest first
        pruned: Names = []
        for info in doomed:
            if info.version == self._pointer():  # promoted by another process meanwhile
                continue
            atomic_write(info.weights.parent / "meta.json", json.dumps(dataclasses.replace(info, pruned=time.time()).to_json(), indent=2))
            self._delete_weights(info)
            pruned.append(info.version)
        for info in leftovers:
            self._delete_weights(info)
        return pruned

    @staticmethod
    def _delete_weights(info: VersionInfo) -> None:
        """Everything in a version's folder but its ``meta.json``."""
        for path in info.weights.parent.iterdir():
            if path.name == "meta.json":
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def current(self) -> VersionInfo | None:
        """The served version, or None when nothing was promoted (or the pointer is damaged)."""
        version = self._pointer()
        if version is None:
            return None
        try:
            info = self.get(version)
        except KeyError as exc:
            log.error("the current model pointer is unusable (%s); serving MODEL_PATH", exc)
            return None
        if info.pruned is not None:
            log.error("the current model %s has no weights (pruned); serving MODEL_PATH", version)
            return None
        return info


def speedup_of(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """How much faster correcting a version's pre-annotations is than drawing every box, on its
    held-out tasks (measured when it was trained), beside the model it was judged against; None
    when not measured (classifiers, older versions).

    Example:
        >>> m = {"new": {"annotation": {"speedup": 1.8, "counts": {"images": 12}}}, "previous": {"annotation": {"speedup": 1.0}}}
        >>> speedup_of(m)
        {'speedup': 1.8, 'previous': 1.0, 'heldout_images': 12}
    """
    new = (metrics.get("new") or {}).get("annotation")
    if not new:
        return None
    old = (metrics.get("previous") or {}).get("annotation") or {}
    return {"speedup": new.get("speedup"), "previous": old.get("speedup"), "heldout_images": (new.get("counts") or {}).get("images")}
