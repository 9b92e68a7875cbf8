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
