"""The background scoring worker: enqueue-only webhooks, coalescing, label counting."""

import threading
import time

import pytest

import ml_backend.jobs.scoring_jobs as jobs_mod
from ml_backend.jobs.scoring_jobs import ScoringJobs
from ml_backend.settings import Settings


@pytest.fixture()
def recorded(monkeypatch):
    """Fake scoring runs: ``(calls, gate, running)``. Each run sets ``running`` (it has taken its
    work from the queue and is under way), then waits at ``gate`` before it records its call."""
    calls = []
    gate = threading.Event()
    running = threading.Event()

    def fake_new(client, project_id, tasks, predictor, settings, store):
        running.set()
        gate.wait(5)
        calls.append(("new", project_id, sorted(t["id"] for t in tasks)))
        return type("P", (), {"scores": tasks})()

    def fake_full(client, project_id, predictor, settings, progress=False, retire=()):
        running.set()
        gate.wait(5)
        calls.append(("full", project_id) + ((tuple(retire),) if retire else ()))
        return type("P", (), {"scores": []})()

    def fake_labels(client, project_id, task_ids, store):
        calls.append(("labels", project_id, list(task_ids)))
        return len(task_ids)

    monkeypatch.setattr(jobs_mod, "score_new_tasks", fake_new)
    monkeypatch.setattr(jobs_mod, "score_project", fake_full)
    monkeypatch.setattr(jobs_mod, "refresh_labels", fake_labels)
    return calls, gate, running


def held_at_the_gate(jobs: ScoringJobs, running: threading.Event) -> bool:
    """Whether a run has taken its work and waits at the gate: waits (up to 5 s) for the run to
    start, then checks the worker is busy (no sleeping: the run cannot finish before the gate opens)."""
    return running.wait(5) and not jobs.idle()


def make(tmp_path, client=object(), **env) -> ScoringJobs:
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path), **env})
    return ScoringJobs(settings, predictor=None, client_factory=lambda: client)  # type: ignore[arg-type]


def test_new_tasks_coalesce_while_the_worker_is_busy(tmp_path, recorded) -> None:
    calls, gate, running = recorded
    jobs = make(tmp_path)
    jobs.add_tasks(1, [{"id": 1}])
    assert held_at_the_gate(jobs, running)  # the first run has taken task 1 and waits
    jobs.add_tasks(1, [{"id": 2}, {"id": 3}])
    jobs.add_tasks(1, [{"id": 3}, {"no": "id"}])
    gate.set()
    assert jobs.idle(60)
    assert calls == [("new", 1, [1]), ("new", 1, [2, 3])]


def label(aid: int, project: int = 7) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project}, "annotation": {"id": aid, "updated_at": "t"}}


def test_labels_trigger_one_full_rescore_every_n(tmp_path, recorded) -> None:
    calls, gate, _ = recorded
    gate.set()
    jobs = make(tmp_path, RESCORE_MIN_NEW_LABELS="3")
    assert [jobs.add_label_event(label(i)) for i in range(2)] == [1, 2]
    assert jobs.add_label_event(label(1)) == 2  # the same event again counts once
    assert jobs.idle(2) and calls == []
    assert jobs.add_label_event(label(2)) == 3
    assert jobs.idle(60)
    assert calls == [("full", 7)]
    assert jobs.events.pending(7, "scoring") == 0  # reset after the successful re-score
    bulk = {"action": "ANNOTATIONS_CREATED", "project": {"id": 7}, "annotations": [{"id": 10 + i, "updated_at": "t"} for i in range(5)]}
    assert jobs.add_label_event(bulk) == 5  # a bulk event counts all its labels
    assert jobs.idle(60) and calls == [("full", 7), ("full", 7)]


def test_a_failed_rescore_keeps_its_labels_pending(tmp_path, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("Label Studio is down")

    monkeypatch.setattr(jobs_mod, "score_project", boom)
    jobs = make(tmp_path, RESCORE_MIN_NEW_LABELS="2")
    jobs.add_label_event(label(1))
    jobs.add_label_event(label(2))
    assert jobs.idle(60) and "down" in jobs.last_error
    assert jobs.events.pending(7, "scoring") == 2


def test_without_label_studio_settings_nothing_runs_and_the_worker_survives(tmp_path, recorded) -> None:
    calls, gate, _ = recorded
    gate.set()
    jobs = make(tmp_path, client=None)
    jobs.add_tasks(1, [{"id": 1}])
    assert jobs.idle(60) and calls == []
    assert jobs.runs == 1


def test_a_failing_run_is_reported_and_the_next_one_runs(tmp_path, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("Label Studio is down")

    monkeypatch.setattr(jobs_mod, "score_new_tasks", boom)
    jobs = make(tmp_path)
    jobs.add_tasks(1, [{"id": 1}])
    assert jobs.idle(60) and "Label Studio is down" in jobs.last_error
    jobs.add_tasks(1, [{"id": 2}])
    assert jobs.idle(60) and jobs.runs == 2


def test_a_promotion_rescores_the_project_and_retires_the_old_version(tmp_path, recorded) -> None:
    calls, gate, running = recorded
    jobs = make(tmp_path)
    jobs.add_tasks(3, [{"id": 1}])
    assert held_at_the_gate(jobs, running)  # the run of task 1 waits at the gate
    jobs.request_full(3, retire=["v1"])
    jobs.request_full(3, retire=["v2", ""])  # coalesces with the first request
    gate.set()
    assert jobs.idle(60)
    assert calls == [("new", 3, [1]), ("full", 3, ("v1", "v2"))]


def test_work_left_by_a_crash_runs_at_the_next_start(tmp_path, recorded) -> None:
    from ml_backend.jobs.scoring_jobs import ScoringQueue

    calls, gate, _ = recorded
    gate.set()
    left = ScoringQueue(tmp_path / "state.db")  # what a killed process had queued
    left.add_tasks(2, [{"id": 5}, {"id": 6}])
    left.request_full(4, ["old-v"])
    left.add_tasks(4, [{"id": 9}])
    left.close()
    jobs = make(tmp_path)
    assert jobs.idle(60)
    assert sorted(calls) == [("full", 4, ("old-v",)), ("new", 2, [5, 6])]  # a full run covers the project's new tasks too
    assert jobs.queue.projects() == set()


def test_a_task_queued_again_during_its_run_is_scored_again(tmp_path, recorded) -> None:
    calls, gate, running = recorded
    jobs = make(tmp_path)
    jobs.add_tasks(1, [{"id": 1, "v": "old"}])
    assert held_at_the_gate(jobs, running)  # the run has taken it and waits at the gate
    jobs.add_tasks(1, [{"id": 1, "v": "new"}])
    gate.set()
    assert jobs.idle(60) and calls == [("new", 1, [1]), ("new", 1, [1])]


def test_a_failed_run_stays_queued_and_is_retried_after_a_back_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(jobs_mod, "RETRY_FIRST_S", 0.3)
    outcomes = ["Label Studio is down", None]
    calls = []

    def flaky(client, project_id, tasks, predictor, settings, store):
        calls.append(sorted(t["id"] for t in tasks))
        err = outcomes.pop(0)
        if err:
            raise ConnectionError(err)
        return type("P", (), {"scores": tasks})()

    monkeypatch.setattr(jobs_mod, "score_new_tasks", flaky)
    jobs = make(tmp_path)
    jobs.add_tasks(1, [{"id": 1}, {"id": 2}])
    assert jobs.idle(60) and "down" in jobs.last_error and jobs.queue.projects() == {1}  # kept, waiting to retry
    deadline = time.monotonic() + 60
    while jobs.queue.projects() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [[1, 2], [1, 2]] and jobs.queue.projects() == set() and jobs.last_error is None


def test_scores_from_an_older_model_than_the_served_one_are_redone_at_start(tmp_path, recorded) -> None:
    from ml_backend.state import StatePaths, atomic_write

    calls, gate, _ = recorded
    gate.set()
    paths = StatePaths(tmp_path)
    atomic_write(paths.score_file(3), '[{"task": 1, "model_version": "v1"}, {"task": 2, "model_version": "v1"}]')
    atomic_write(paths.score_file(4), '[{"task": 7, "model_version": "v2"}]')
    jobs = make(tmp_path)
    stale = jobs.check_served_versions(lambda pid: {3: "v2", 4: "v2"}.get(pid))
    assert stale == [3]
    assert jobs.idle(60) and calls == [("full", 3, ("v1",))]
    assert jobs.check_served_versions(lambda pid: None) == []  # no promoted model: nothing to check


def test_a_promoted_project_never_scored_is_scored_at_start(tmp_path, recorded) -> None:
    calls, gate, _ = recorded
    gate.set()
    jobs = make(tmp_path)
    assert jobs.check_served_versions(lambda pid: "v3" if pid == 8 else None, projects=[8, 9]) == [8]
    assert jobs.idle(60) and calls == [("full", 8)]


def test_a_label_event_makes_its_tasks_scores_follow_at_once(tmp_path, recorded) -> None:
    """Without waiting for RESCORE_MIN_NEW_LABELS: the labeled tasks' scores are refreshed, once per
    burst, from the work kept in state.db."""
    calls, gate, _ = recorded
    jobs = make(tmp_path, RESCORE_MIN_NEW_LABELS="100")
    ev = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {"id": 11}, "annotation": {"id": 1, "task": 11, "updated_at": "t"}}
    jobs.add_label_event(ev)
    jobs.add_label_event({**ev, "task": {"id": 12}, "annotation": {"id": 2, "task": 12, "updated_at": "t"}})
    gate.set()
    assert jobs.idle(60)
    assert [c for c in calls if c[0] == "labels"] and sorted(t for c in calls if c[0] == "labels" for t in c[2]) == [11, 12]
    assert jobs.queue.projects() == set()


def test_a_project_is_scored_by_one_process_at_a_time(tmp_path) -> None:
    """Two gunicorn workers on one MODEL_DIR: the one that takes a project's work holds it; the
    other leaves it alone until it is done, or until its holder is gone."""
    from ml_backend.jobs.scoring_jobs import ScoringQueue

    db = tmp_path / "state.db"
    a, b = ScoringQueue(db), ScoringQueue(db)
    a.owner, b.owner = "host-a:101", "host-b:202"  # two processes (on two hosts: their liveness is their claims' age)
    a.add_tasks(3, [{"id": 1}])
    work = a.take()
    assert work is not None and work.project_id == 3
    assert b.take() is None  # claimed by a live process
    b.add_tasks(4, [{"id": 9}])
    other = b.take()
    assert other is not None and other.project_id == 4  # other projects are free
    a.done(work)
    a.add_tasks(3, [{"id": 2}])
    again = b.take({4})
    assert again is not None and again.project_id == 3  # released: anyone may take it
    with a._lock:  # a holder gone quiet for longer than the heartbeat allows counts as dead
        a._db.execute("UPDATE scoring_claims SET at=at-1000 WHERE project=3")
    assert a.take({4}).project_id == 3


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path) -> None:
    import socket
    import subprocess
    import sys

    from ml_backend.jobs.scoring_jobs import ScoringQueue

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    db = tmp_path / "state.db"
    dead, alive = ScoringQueue(db), ScoringQueue(db)
    dead.owner = f"{socket.gethostname()}:{int(gone.stdout)}"  # a gunicorn worker that died holding the project
    dead.add_tasks(3, [{"id": 1}])
    assert dead.take() is not None
    work = alive.take()  # its claim is fresh, but its pid is gone: no waiting for the heartbeat to age
    assert work is not None and work.project_id == 3


def test_failed_work_waits_for_its_retry_in_every_process(tmp_path) -> None:
    from ml_backend.jobs.scoring_jobs import ScoringQueue

    db = tmp_path / "state.db"
    a, b = ScoringQueue(db), ScoringQueue(db)
    a.owner, b.owner = "host-a:101", "host-b:202"
    a.add_tasks(3, [{"id": 1}])
    work = a.take()
    a.release(work, retry_at=time.time() + 600)  # it failed (Label Studio down): back off
    assert b.take() is None and a.take() is None and a.retrying() == {3}  # no other worker retries it at once
    b.add_tasks(3, [{"id": 2}])  # new work for the project: try now
    again = b.take()
    assert again is not None and set(again.tasks) == {1, 2} and b.retrying() == set()
