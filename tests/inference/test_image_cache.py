"""The image cache under a size limit: least recently used out first, cheap, safe beside other threads and processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from ml_backend.inference import image_cache
from ml_backend.inference.image_cache import STALE_TMP_S, TOUCH_AFTER_S, CacheEntry, ImageCache, plan_prune, scan


def total_bytes(root: Path) -> int:
    return sum(e.size for e in scan(root))


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last used ``seconds`` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.parametrize(
    ("entries", "target", "expected"),
    [
        ([("a", 40, 1.0), ("b", 40, 2.0), ("c", 40, 3.0)], 120, []),  # at the target: nothing goes
        ([("a", 40, 1.0), ("b", 40, 2.0), ("c", 40, 3.0)], 80, ["a"]),
        ([("c", 40, 3.0), ("a", 40, 1.0), ("b", 40, 2.0)], 79, ["a", "b"]),  # oldest first, whatever the listing order
        ([("big", 500, 5.0), ("small", 10, 1.0)], 100, ["small", "big"]),  # recency decides, not size
        ([("a", 40, 1.0)], 0, ["a"]),
        ([], 10, []),
    ],
)
def test_plan_prune_removes_the_least_recently_used_down_to_the_target(entries, target: int, expected: list[str]) -> None:
    listed = [CacheEntry(Path(name), size, mtime) for name, size, mtime in entries]
    assert [e.path.name for e in plan_prune(listed, target)] == expected


@pytest.mark.parametrize(
    ("limit", "gone"),
    [
        (1400, set()),  # 1200 bytes cached: under 90% of the limit, nothing is deleted
        (1300, {"k1"}),  # over 90% of it (1170): down to that, the oldest first
        (1000, {"k1", "k2"}),  # over the limit: down to 900 bytes
        (700, {"k1", "k2", "k3"}),  # down to 630 bytes
    ],
)
def test_the_oldest_go_the_newest_and_just_read_stay(tmp_path, limit: int, gone: set[str]) -> None:
    root = tmp_path / "images"
    filler = ImageCache(root)  # no limit: fills without pruning
    keys = [f"k{i}" for i in range(5)]
    for i, key in enumerate(keys):
        filler.put(key, bytes(200))
        age(filler.path(key), 10_000 - i * 100)  # k0 the oldest, k4 the newest
    cache = ImageCache(root, max_bytes=limit)
    assert cache.get("k0") == bytes(200)  # read: now the most recently used
    cache.put("new", bytes(200))  # 1200 bytes in all
    kept = {k for k in [*keys, "new"] if cache.path(k).exists()}
    assert kept == {*keys, "new"} - gone
    assert {"k0", "new", "k4"} <= kept
    assert total_bytes(root) < limit


@pytest.mark.parametrize(
    ("limit", "seconds_ago", "marked"),
    [
        (10_000, 2 * TOUCH_AFTER_S, True),  # read: its time is now
        (10_000, TOUCH_AFTER_S / 2, False),  # marked recently enough: no metadata write on every hit
        (0, 2 * TOUCH_AFTER_S, False),  # no limit: nothing is ever pruned, nothing to mark
    ],
)
def test_a_hit_marks_the_file_as_just_used(tmp_path, limit: int, seconds_ago: float, marked: bool) -> None:
    cache = ImageCache(tmp_path, max_bytes=limit)
    cache.put("ab", b"x")
    age(cache.path("ab"), seconds_ago)
    before = cache.path("ab").stat().st_mtime
    assert cache.get("ab") == b"x"
    assert (cache.path("ab").stat().st_mtime > before) is marked


@pytest.mark.parametrize(("writes", "size"), [(1, 100), (40, 100), (300, 100), (50, 900)])
def test_the_folder_is_listed_once_per_tenth_of_the_limit_written_not_per_write(tmp_path, monkeypatch, writes: int, size: int) -> None:
    listings = []
    real_scan = image_cache.scan
    monkeypatch.setattr(image_cache, "scan", lambda *a, **k: listings.append(1) or real_scan(*a, **k))
    cache = ImageCache(tmp_path, max_bytes=10_000)
    for i in range(writes):
        cache.put(f"a{i:03}", bytes(size))
    assert cache.margin == 1_000
    assert 1 <= len(listings) <= 1 + writes * size // cache.margin  # the first write learns the folder's size; then one per 1,000 bytes
    assert total_bytes(tmp_path) <= 10_000


def test_a_crashed_writes_leftover_is_pruned_a_write_under_way_is_not(tmp_path) -> None:
    cache = ImageCache(tmp_path, max_bytes=100)
    (tmp_path / "ab").mkdir()
    stale, fresh = tmp_path / "ab" / ".abc.1.tmp", tmp_path / "ab" / ".abd.2.tmp"
    stale.write_bytes(bytes(300))
    fresh.write_bytes(bytes(300))
    age(stale, STALE_TMP_S + 10)
    assert [e.path for e in scan(tmp_path)] == [stale]
    cache.put("ab12", bytes(10))
    assert not stale.exists() and fresh.exists() and cache.get("ab12") == bytes(10)


def test_a_file_used_again_after_the_listing_is_kept(tmp_path) -> None:
    cache = ImageCache(tmp_path, max_bytes=100)
    cache.put("ab", bytes(10))
    listed = scan(tmp_path)[0]
    os.utime(cache.path("ab"), (listed.mtime + 5, listed.mtime + 5))  # read by another process meanwhile
    assert ImageCache._remove(listed) is False and cache.path("ab").exists()
    os.unlink(cache.path("ab"))  # pruned by another process meanwhile
    assert ImageCache._remove(listed) is True


def test_threads_reading_writing_and_pruning_together_break_nothing(tmp_path) -> None:
    errors: list[BaseException] = []
    limit, size = 3_000, 100

    def work(n: int) -> None:
        cache = ImageCache(tmp_path, max_bytes=limit)  # one per fetcher: they share the process's count
        try:
            for i in range(150):
                key = f"{(n * 7 + i) % 97:02}k"
                got = cache.get(key)
                assert got is None or got == key.encode() * (size // len(key)), "a half-written or foreign file"
                if got is None:
                    cache.put(key, key.encode() * (size // len(key)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert total_bytes(tmp_path) <= limit + len(threads) * size  # writes that raced the last listing are in the next one
    ImageCache(tmp_path, max_bytes=limit).prune()
    assert total_bytes(tmp_path) <= limit


def _process_writes(root: str, n: int) -> None:
    cache = ImageCache(root, max_bytes=2_000)
    for i in range(120):
        key = f"{n}{i:03}"
        cache.put(key, bytes(100))
        cache.get(f"{1 - n}{i:03}")


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_processes_sharing_the_folder_keep_it_bounded(tmp_path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_writes, args=(str(tmp_path), n)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert total_bytes(tmp_path) <= 2_000 + 200  # the limit, plus what the other process wrote since its last listing (10%)


def _prune_in_child(root: str, out: multiprocessing.Queue) -> None:
    out.put(ImageCache(root, max_bytes=100).prune())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_process_forked_while_a_thread_prunes_still_prunes(tmp_path) -> None:
    for i in range(3):
        ImageCache(tmp_path).put(f"a{i}", bytes(60))  # 180 bytes, over the child's limit
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    with ImageCache(tmp_path, max_bytes=100)._ledger.pruning:  # a thread of this process is pruning as the training run forks
        child = ctx.Process(target=_prune_in_child, args=(str(tmp_path), out))
        child.start()
        child.join(30)
    assert child.exitcode == 0 and out.get(timeout=5) == 2
    assert total_bytes(tmp_path) <= 90
