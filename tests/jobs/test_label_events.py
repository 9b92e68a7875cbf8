import pytest

from ml_backend.jobs.label_events import LabelEventStore, event_keys, event_project, event_tasks


def created(aid: int, stamp: str = "t1", project: int = 1) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project}, "annotation": {"id": aid, "updated_at": stamp}}


@pytest.mark.parametrize(
    ("event", "keys"),
    [
        (created(5), ["saved:5:t1"]),
        ({"action": "ANNOTATION_UPDATED", "project": {"id": 1}, "annotation": {"id": 5, "updated_at": "t2"}}, ["saved:5:t2"]),
        (
            {
                "action": "ANNOTATIONS_CREATED",
                "project": {"id": 1},
                "annotations": [{"id": 1, "updated_at": "a"}, {"id": 2, "updated_at": "b"}],
            },
            ["saved:1:a", "saved:2:b"],
        ),
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


@pytest.mark.parametrize(
    "event",
    [
        {"action": "ANNOTATIONS_CREATED", "project": {"id": 1}, "annotations": 5},
        {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": 5},
        {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": "abc"},
        {"action": "ANNOTATIONS_CREATED", "project": {"id": 1}, "annotations": {"id": 3}},
    ],
)
def test_malformed_annotation_lists_count_nothing(event) -> None:
    assert event_keys(event) == []


@pytest.mark.parametrize(
    ("project", "pid"),
    [
        ({"id": 7}, 7),
        (7, 7),
        ("7", 7),
        ({"id": "²"}, None),
        ("²", None),
        ({"id": 10**30}, None),
        ("9" * 30, None),
        (True, None),
        ({"id": 1.5}, None),
        ([7], None),
        (-1, None),
    ],
)
def test_event_project(project, pid) -> None:
    assert event_project({"project": project}) == pid


def test_odd_project_ids_are_not_stored(tmp_path) -> None:
    store = LabelEventStore(tmp_path / "state.db")
    for project in ({"id": 10**30}, {"id": "²"}):
        assert store.record({"action": "ANNOTATION_CREATED", "project": project, "annotation": {"id": 1}}) == 0


@pytest.mark.parametrize(
    ("event", "tasks"),
    [
        ({"action": "ANNOTATION_CREATED", "task": {"id": 5}, "annotation": {"id": 7, "task": 5}}, [5]),
        ({"action": "ANNOTATION_UPDATED", "annotation": {"id": 7, "task": 9}}, [9]),
        ({"action": "ANNOTATIONS_CREATED", "annotations": [{"id": 1, "task": 3}, {"id": 2, "task": {"id": 4}}]}, [3, 4]),
        ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1, "task": 3}, {"id": 2}]}, [3]),
        ({"action": "TASKS_CREATED", "tasks": [{"id": 1}]}, []),  # not a label event
        ({"action": "ANNOTATION_CREATED", "task": {"id": True}, "annotation": {"id": 1, "task": "x"}}, []),  # no usable id
    ],
)
def test_the_tasks_a_label_event_is_about(event: dict, tasks: list[int]) -> None:
    assert event_tasks(event) == tasks
