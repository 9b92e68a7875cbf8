"""Every state write reaches the disk: the file's bytes are fsynced before it replaces the old one,
and its folder after (a power cut, unlike a crash, would otherwise lose the last write).

An fsync spy records which path each ``os.fsync`` flushed, and when each ``os.replace`` and
``os.rename`` happened, so the tests check the order, not only that fsync was called.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ml_backend.inference.versions import ModelRegistry
from ml_backend.scoring.pool import ScoredPool, TaskScore
from ml_backend.scoring.store import ScoreStore
from ml_backend.state import StatePaths, atomic_write, open_state_db, write_json_atomic


class DiskSpy:
    """Records ("fsync", path) and ("replace", target) events in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.events: list[tuple[str, str]] = []
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src, dst) -> None:
            real_replace(src, dst)
            self.events.append(("replace", str(Path(dst).resolve())))

        def rename(src, dst) -> None:
            real_rename(src, dst)
            self.events.append(("replace", str(Path(dst).resolve())))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "rename", rename)

    def durable(self, target: Path) -> bool:
        """True when ``target`` was written to a file that was fsynced before it replaced ``target``,
        and ``target``'s folder was fsynced after."""
        target = target.resolve()
        try:
            at = self.events.index(("replace", str(target)))
        except ValueError:
            return False
        before = [p for kind, p in self.events[:at] if kind == "fsync"]
        after = [p for kind, p in self.events[at:] if kind == "fsync"]
        tmp_synced = any(Path(p).parent == target.parent and Path(p).name.startswith(f".{target.name}.") for p in before)
        return tmp_synced and str(target.parent) in after

    def synced(self) -> list[str]:
        return [p for kind, p in self.events if kind == "fsync"]


@pytest.fixture()
def spy(monkeypatch) -> DiskSpy:
    return DiskSpy(monkeypatch)


@pytest.mark.parametrize("data", [b"\x00bytes", "text", lambda f: np.save(f, np.arange(3))])
def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, spy, data) -> None:
    target = atomic_write(tmp_path / "sub" / "f.bin", data)
    assert spy.durable(target)
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []  # no temporary file left


def test_a_cache_write_is_atomic_but_not_flushed(tmp_path, spy) -> None:
    atomic_write(tmp_path / "c.bin", b"x", fsync=False)
    assert (tmp_path / "c.bin").read_bytes() == b"x" and spy.synced() == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = atomic_write(tmp_path / "f.json", "old")

    def broken(f) -> None:
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_score_files_are_fsynced(tmp_path, spy) -> None:
    paths = StatePaths(tmp_path)
    store = ScoreStore(paths)
    scores = [TaskScore(t, 0.5, 0.1, 0.3, 0, "medium", False, "v1") for t in (1, 2)]
    store.save(3, scores, ScoredPool(scores, [], {}, embeddings=np.eye(2, 4, dtype=np.float32)))
    assert spy.durable(paths.score_file(3)) and spy.durable(paths.score_state(3))
    spy.events.clear()
    store.mark_labeled(3, {1: True})
    assert spy.durable(paths.score_file(3)) and spy.durable(paths.score_state(3))


def test_model_versions_and_the_served_pointer_are_fsynced(tmp_path, spy) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    registry = ModelRegistry(tmp_path / "models")
    info = registry.add(weights)
    folder = registry.versions_dir / info.version
    synced = spy.synced()
    assert any(Path(p).name.startswith(".weights.pt.") for p in synced)  # the weights' bytes
    assert any(Path(p).name.startswith(".meta.json.") for p in synced)  # their description
    assert ("replace", str(folder.resolve())) in spy.events and str(registry.versions_dir.resolve()) in synced
    spy.events.clear()
    registry.promote(info.version)
    assert spy.durable(registry.pointer)


def test_run_files_go_through_the_same_helper(tmp_path, spy) -> None:
    target = write_json_atomic(tmp_path / "progress.json", {"stage": "training"})
    assert spy.durable(target) and target.read_text() == '{"stage": "training"}'


def test_the_state_database_commits_to_disk(tmp_path) -> None:
    db = open_state_db(tmp_path / "state.db", "CREATE TABLE IF NOT EXISTS t (x)")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the WAL is fsynced at each commit
    db.close()
