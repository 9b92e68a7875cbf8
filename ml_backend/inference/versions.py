"""Model versions kept under ``MODEL_DIR/models``, with an atomically switched "current" pointer.

Layout::

    models/
      versions/<version>/weights.pt   the weights, never modified once written
      versions/<version>/meta.json    metrics, parent version, creation time, note
      current                         the served version's name (replaced atomically)

A version is written into a temporary folder, flushed to disk, then renamed into place, and the
pointer is replaced with ``os.replace``: a crash at any moment leaves either the old or the new
state, never a half-written model that gets served. Leftover temporary folders are ignored.

Example:
    >>> import tempfile, pathlib
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> reg.current() is None
    True
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class VersionInfo:
    """One stored model version."""

    version: str
    weights: Path
    created: float
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""

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

    def add(self, weights: str | Path, parent: str | None = None, metrics: dict[str, Any] | None = None, note: str = "") -> VersionInfo:
        """Store a copy of ``weights`` as a new version (not served until :meth:`promote`).

        The version name is the file's stem and a hash of its content, as ``model_version`` is,
        so the same weights added twice are one version.
        """
        src = Path(weights)
        version = f"{src.stem}-{file_digest(src)[:12]}"
        final = self.versions_dir / version
        if final.exists():
            return self.get(version)
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

    def get(self, version: str) -> VersionInfo:
        """A stored version.

        Raises:
            KeyError: no such version (or its files are damaged).
        """
        folder = self.versions_dir / version
        try:
            meta = json.loads((folder / "meta.json").read_text())
            weights = folder / Path(meta["weights"]).name
            if not weights.is_file():
                raise FileNotFoundError(weights)
        except (OSError, ValueError, KeyError) as exc:
            raise KeyError(f"model version {version!r} is missing or damaged: {exc}") from None
        return VersionInfo(
            meta["version"], weights, float(meta["created"]), meta.get("parent"), meta.get("metrics") or {}, meta.get("note") or ""
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
        """Serve ``version`` from now on (an atomic replace of the pointer)."""
        info = self.get(version)
        atomic_write(self.pointer, version)
        return info

    def current(self) -> VersionInfo | None:
        """The served version, or None when nothing was promoted (or the pointer is damaged)."""
        try:
            version = self.pointer.read_text().strip()
        except OSError:
            return None
        try:
            return self.get(version)
        except KeyError as exc:
            log.error("the current model pointer is unusable (%s); serving MODEL_PATH", exc)
            return None


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
