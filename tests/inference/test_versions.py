import os

import pytest

from ml_backend.inference.versions import ModelRegistry


def weights(tmp_path, name: str, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_add_promote_current_and_list(tmp_path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    assert reg.current() is None and reg.list() == []
    a = reg.add(weights(tmp_path, "best.pt", b"aaaa"), metrics={"map50_95": 0.3}, note="starter")
    b = reg.add(weights(tmp_path, "best.pt", b"bbbb"), parent=a.version, metrics={"map50_95": 0.4})
    assert a.version.startswith("best-") and a.version != b.version
    assert reg.add(weights(tmp_path, "best.pt", b"aaaa")).version == a.version  # same content, same version
    assert [v.version for v in reg.list()] == [a.version, b.version]
    assert reg.promote(a.version).version == a.version
    assert reg.current().version == a.version
    reg.promote(b.version)
    cur = reg.current()
    assert (cur.version, cur.parent, cur.metrics) == (b.version, a.version, {"map50_95": 0.4})
    assert cur.weights.read_bytes() == b"bbbb"


def test_stored_weights_do_not_follow_the_source_file(tmp_path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    src = weights(tmp_path, "last.pt", b"v1")
    v = reg.add(src)
    src.write_bytes(b"v2 overwritten by the next training run")
    assert reg.get(v.version).weights.read_bytes() == b"v1"


def test_a_crash_mid_write_leaves_nothing_servable_behind(tmp_path, monkeypatch) -> None:
    reg = ModelRegistry(tmp_path / "models")
    good = reg.add(weights(tmp_path, "good.pt", b"good"))
    reg.promote(good.version)

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        reg.add(weights(tmp_path, "new.pt", b"new"))
    monkeypatch.undo()
    assert [v.version for v in reg.list()] == [good.version]
    assert not list((tmp_path / "models" / "versions").glob(".tmp-*"))
    assert reg.current().version == good.version


def test_leftovers_and_damage_are_ignored(tmp_path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    v = reg.add(weights(tmp_path, "a.pt", b"a"))
    (tmp_path / "models" / "versions" / ".tmp-crashed").mkdir()  # a kill -9 during add
    broken = tmp_path / "models" / "versions" / "broken-123"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    assert [x.version for x in reg.list()] == [v.version]
    with pytest.raises(KeyError, match="missing or damaged"):
        reg.promote("broken-123")
    (tmp_path / "models" / "current").write_text("no-such-version")
    assert reg.current() is None


def registry_with_history(tmp_path, served: list[int], count: int = 6) -> tuple[ModelRegistry, list[str]]:
    """``count`` versions, v0 the oldest, each trained from the base model, and those in ``served``
    promoted in that order."""
    reg = ModelRegistry(tmp_path / "models")
    names = [reg.add(weights(tmp_path, "best.pt", bytes([i]) * 8), parent="base", metrics={"map50": i / 10}).version for i in range(count)]
    for i in served:
        reg.promote(names[i])
    return reg, names


@pytest.mark.parametrize(
    ("keep", "pruned"),
    [
        (None, []),  # empty VERSIONS_KEEP: every version keeps its weights
        (0, [0, 2, 4, 5]),  # every never-served version, oldest first
        (1, [0, 2, 4]),  # the newest never-served one stays
        (3, [0]),
        (10, []),
    ],
)
def test_prune_drops_the_oldest_never_served_weights_and_keeps_every_record(tmp_path, keep, pruned: list[int]) -> None:
    reg, names = registry_with_history(tmp_path, served=[1, 3])  # v3 served, v1 before it (what a rollback goes to)
    assert reg.prune(keep) == [names[i] for i in pruned]
    assert [v.version for v in reg.list()] == names  # every record stays: /versions keeps its history and metrics
    for i, name in enumerate(names):
        info = reg.get(name)
        assert (info.pruned is not None) is (i in pruned)
        assert info.weights.is_file() is (i not in pruned)
        if i in pruned:
            assert [p.name for p in info.weights.parent.iterdir()] == ["meta.json"]
            assert (info.parent, info.metrics) == ("base", {"map50": i / 10})  # lineage and metrics kept
    assert reg.current().version == names[3] and reg.previous() == names[1]
    assert reg.prune(keep) == []  # pruning again changes nothing


@pytest.mark.parametrize(
    ("served", "previous"),
    [
        ([], None),
        ([0], "base"),  # the first promoted version: a rollback goes to the base model it was trained from
        ([0, 1], 0),
        ([0, 2, 0], 2),  # rolled back to v0: v2 is the one before
        ([0, 2, 2], 0),  # promoted twice in a row: still v0 before it
    ],
)
def test_previous_is_the_version_served_before_the_current_one(tmp_path, served: list[int], previous) -> None:
    reg, names = registry_with_history(tmp_path, served=served, count=3)
    assert reg.previous() == (names[previous] if isinstance(previous, int) else previous)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_the_served_and_the_previous_version_are_kept_whatever_the_setting(tmp_path, keep: int) -> None:
    reg, names = registry_with_history(tmp_path, served=[4, 5])
    reg.prune(keep)
    assert reg.get(names[5]).weights.is_file() and reg.get(names[4]).weights.is_file()
    assert reg.current().version == names[5]


def test_a_registry_from_before_the_served_log_keeps_what_was_served(tmp_path) -> None:
    """Versions promoted before the served log existed: the pointer and the lineage (each version
    was trained from the model served then) say which were served."""
    reg = ModelRegistry(tmp_path / "models")
    a = reg.add(weights(tmp_path, "best.pt", b"a"), parent="base")
    b = reg.add(weights(tmp_path, "best.pt", b"b"), parent=a.version)
    lost = reg.add(weights(tmp_path, "best.pt", b"c"), parent=b.version)  # kept back by promotion
    d = reg.add(weights(tmp_path, "best.pt", b"d"), parent=b.version)
    (tmp_path / "models" / "current").write_text(d.version)  # no served log
    assert reg.previous() == b.version
    assert reg.prune(0) == [lost.version]
    assert all(reg.get(v.version).weights.is_file() for v in (a, b, d))


def test_a_pruned_version_cannot_be_served_until_trained_again(tmp_path) -> None:
    reg, names = registry_with_history(tmp_path, served=[2], count=3)
    reg.prune(0)
    with pytest.raises(KeyError, match="pruned"):
        reg.promote(names[0])
    again = reg.add(weights(tmp_path, "best.pt", bytes([0]) * 8))  # the same weights, trained again
    assert again.version == names[0] and again.pruned is None and again.weights.read_bytes() == bytes([0]) * 8
    assert reg.promote(names[0]).version == names[0]
    (tmp_path / "models" / "current").write_text(names[1])  # a pointer to a pruned version (by hand): the base model serves
    assert reg.current() is None


def test_weights_left_behind_by_a_crash_during_a_prune_go_at_the_next(tmp_path) -> None:
    reg, names = registry_with_history(tmp_path, served=[2], count=3)
    reg.prune(0)
    leftover = reg.get(names[0]).weights
    leftover.write_bytes(b"the delete never happened")  # marked pruned, weights still there
    assert reg.prune(0) == [] and not leftover.exists()
