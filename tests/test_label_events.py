import pytest

from ml_backend.label_events import LabelEventStore, event_keys


def created(aid: int, stamp: str = "t1", project: int = 1) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project}, "annotation": {"id": aid, "updated_at": stamp}}


@pytest.mark.parametrize(
    ("event", "keys"),
    [
        (created(5), ["saved:5:t1"]),
        ({"action": "ANNOTATION_UPDATED", "project": {"id": 1}, "annotation": {"id": 5, "updated_at": "t2"}}, ["saved:5:t2"]),
        ({"action": "ANNOTATIONS_CREATED", "project": {"id": 1}, "annotations": [{"id": 1, "updated_at": "a"}, {"id": 2, "updated_at": "b"}]}, ["saved:1:a", "saved:2:b"]),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": 3}]}, ["deleted:3"]),
        ({"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"id": 1}]}, []),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": "garbage"}, []),
    ],
)
def test_event_keys(event, keys) -> None:
    assert event_keys(event) == keys


def test_duplicates_count_once_and_deletions_count(tmp_path) -> None:
    store = LabelEventStore(tmp_path / "state.db")
    assert store.record(created(1)) == 1
    assert store.record(created(1)) == 0  # delivered twice
    assert store.record(created(1, "t2")) == 1  # an update is a change
    assert store.record({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": 1}]}) == 1
    assert store.record(created(9, project=2)) == 1
    assert store.pending(1, "scoring") == 3 and store.pending(2, "scoring") == 1


def test_marks_are_per_consumer_and_survive_a_restart(tmp_path) -> None:
    path = tmp_path / "state.db"
    store = LabelEventStore(path)
    for i in range(3):
        store.record(created(i))
    store.mark(1, "scoring")
    store.record(created(10))
    assert (store.pending(1, "scoring"), store.pending(1, "training")) == (1, 4)
    store.close()
    again = LabelEventStore(path)
    assert (again.pending(1, "scoring"), again.pending(1, "training")) == (1, 4)
    assert again.record(created(10)) == 0  # still known after the restart


def test_concurrent_records_lose_nothing(tmp_path) -> None:
    import threading

    store = LabelEventStore(tmp_path / "state.db")
    threads = [threading.Thread(target=lambda k=k: [store.record(created(k * 100 + i)) for i in range(50)]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.pending(1, "scoring") == 400
