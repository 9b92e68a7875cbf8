"""The retraining loop with a fake runner (fixed outcomes): trigger, coalescing, promotion, failure, restart."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from integrations.connection import threshold_from_extra_params
from ml_backend.inference.model import ModelHolder
from ml_backend.inference.served_models import ServedModels
from ml_backend.jobs.label_events import LabelEventStore
from ml_backend.jobs.training_jobs import TrainingJobs, TrainingState
from ml_backend.settings import Settings
from ml_backend.training.run import TrainingError, TrainOutcome


class FakeHandle:
    job_id = None

    def __init__(self, runner: FakeRunner, req):
        self.runner, self.req = runner, req

    def progress(self):
        return {"stage": "training", "epoch": 2, "epochs": 5}

    def done(self):
        return self.runner.gate.is_set()

    def outcome(self):
        result = self.runner.results.pop(0) if self.runner.results else "better"
        if isinstance(result, tuple):  # (outcome, fields of the TrainOutcome to replace)
            result, fields = result
            return dataclasses.replace(self._outcome(result), **fields)
        return self._outcome(result)

    def _outcome(self, result):
        if isinstance(result, Exception):
            raise result
        if result == "skipped":
            return TrainOutcome(self.req.project_id, "skipped", self.req.base_version, "no held-out labels yet")
        Path(self.req.workdir).mkdir(parents=True, exist_ok=True)
        weights = Path(self.req.workdir) / f"project{self.req.project_id}.pt"
        shutil.copyfile(self.req.base_weights, weights)
        if result == "broken":
            weights.write_bytes(b"not a checkpoint")
        new = 0.6 if result in ("better", "broken") else 0.2
        return TrainOutcome(
            self.req.project_id,
            "trained",
            self.req.base_version,
            f"{result}",
            promote=result in ("better", "broken"),
            weights=str(weights),
            metrics_new={"metric": "mAP50-95", "primary": new},
            metrics_old={"metric": "mAP50-95", "primary": 0.4},
            dataset={"train": 8, "val": 2},
            epochs=5,
        )

    def cancel(self):
        self.runner.cancelled += 1


class FakeRunner:
    def __init__(self, results=None, open_gate=True):
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.results = list(results or [])
        self.requests = []
        self.cancelled = 0

    def start(self, req):
        self.requests.append(req)
        return FakeHandle(self, req)

    def attach(self, job_id, req):
        return None


def wait_until(check, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def label(aid: int, project: int = 5, stamp: str = "t") -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project}, "annotation": {"id": aid, "updated_at": stamp}}


@pytest.fixture()
def make_jobs(tmp_path, tiny_weights):
    made = []

    def make(runner: FakeRunner, **env) -> tuple[TrainingJobs, list]:
        settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "state"), "RETRAIN_MIN_NEW_LABELS": "3", "DEVICE": "cpu", **env})
        models = ServedModels(ModelHolder(str(tiny_weights("detect")), "cpu"), settings.model_dir)
        events = LabelEventStore(settings.model_dir / "state.db")
        promoted = []
        jobs = TrainingJobs(settings, models, events, on_promoted=lambda *a: promoted.append(a), runner=runner, poll_s=0.02)
        made.append(jobs)
        return jobs, promoted

    yield make
    for jobs in made:
        jobs.close()


def feed(jobs: TrainingJobs, ids, project: int = 5, stamp: str = "t") -> dict:
    out = {}
    for i in ids:
        jobs.events.record(label(i, project, stamp))
        out = jobs.on_label_event(project)
    return out


def test_enough_new_labels_train_once_and_promote_a_better_model(make_jobs) -> None:
    runner = FakeRunner(["better"])
    jobs, promoted = make_jobs(runner)
    base = jobs.models.base.get().version
    assert feed(jobs, [1, 2]) == {"training": "idle", "labels_since_training": 2}
    jobs.events.record(label(2))  # the same event delivered again counts once
    assert jobs.on_label_event(5)["labels_since_training"] == 2
    assert jobs.idle(1) and runner.requests == []
    assert feed(jobs, [3])["labels_since_training"] == 3
    assert jobs.idle(60)
    assert len(runner.requests) == 1 and runner.requests[0].base_version == base
    assert "3 new or changed labels" in runner.requests[0].reason

    status = jobs.status(5)
    current = jobs.models.current(5)
    assert current is not None and current.parent == base
    assert status["state"] == "idle" and status["labels_since_training"] == 0
    assert status["model_version"] == current.version != base
    assert status["last_run"]["promoted"] is True and status["last_run"]["version"] == current.version
    assert current.metrics["new"]["primary"] == 0.6 and current.metrics["previous"]["primary"] == 0.4
    assert promoted == [(5, current.version, base)]
    assert jobs.models.get(5).version == current.version  # served, already loaded
    assert jobs.models.get(6).version == base  # other projects keep the base model


def test_a_worse_model_is_kept_but_not_served(make_jobs) -> None:
    jobs, promoted = make_jobs(FakeRunner(["worse"]))
    assert jobs.request(5, "START_TRAINING") == "queued"
    assert jobs.idle(60)
    assert jobs.models.current(5) is None and promoted == []
    stored = jobs.models.registry(5).list()
    assert len(stored) == 1 and stored[0].metrics["new"]["primary"] == 0.2
    status = jobs.status(5)
    assert status["state"] == "idle" and status["last_run"]["promoted"] is False and status["last_run"]["version"] == stored[0].version


@pytest.mark.parametrize(("keep", "with_weights"), [("1", [0, 3]), ("0", [0]), ("", [0, 1, 2, 3])])
def test_after_each_run_only_the_newest_never_served_versions_keep_their_weights(make_jobs, tmp_path, keep: str, with_weights) -> None:
    kept_back = []
    for i in range(3):  # three runs kept back by promotion, each with its own weights
        w = tmp_path / f"kept-back-{i}.pt"
        w.write_bytes(b"weights %d" % i)
        kept_back.append(("worse", {"weights": str(w)}))
    jobs, _ = make_jobs(FakeRunner(["better", *kept_back]), VERSIONS_KEEP=keep)
    for _ in range(4):
        jobs.request(5, "START_TRAINING")
        assert jobs.idle(60)
    stored = jobs.models.registry(5).list()
    assert len(stored) == 4  # every run stays in the history (/versions)
    assert stored[0].version == jobs.models.current(5).version  # the served one, always kept
    assert [i for i, v in enumerate(stored) if v.pruned is None and v.weights.is_file()] == with_weights
    assert jobs.models.get(5).version == stored[0].version and jobs.status(5)["last_run"]["version"] == stored[3].version


@pytest.mark.parametrize(
    ("rule", "judged", "shown"),
    [
        ("bootstrap", (0.35, 0.31), {"new": 0.31, "previous": 0.35, "images": 40}),
        ("too_few_heldout", (0.5, 0.5), {"new": 0.5, "previous": 0.5, "images": 40}),
        ("labeled_floor", (0.0, 0.6), {"new": 0.0, "previous": 0.0, "images": 40}),  # 0.6 on every labeled image, 0 held out
        (None, None, None),  # not a detector: no judgement, Ultralytics' figures are the only ones
    ],
)
def test_training_shows_one_heldout_map50_per_model_the_one_promotion_judged(make_jobs, rule, judged, shown) -> None:
    judgement = {} if rule is None else {"promote": False, "reason": "r", "rule": rule, "heldout": 40, "old": judged[0], "new": judged[1]}
    ultralytics_new = {"metric": "mAP50-95", "primary": 0.2, "map50_95": 0.2, "map50": 0.52}
    ultralytics_old = {"metric": "mAP50-95", "primary": 0.4, "map50_95": 0.4, "map50": 0.47}
    fields = {"judgement": judgement, "metrics_new": ultralytics_new, "metrics_old": ultralytics_old}
    jobs, _ = make_jobs(FakeRunner([("worse", fields)]))
    jobs.request(5, "START_TRAINING")
    assert jobs.idle(60)
    last = jobs.status(5)["last_run"]
    assert last.get("heldout_map50") == shown and last["judgement"] == judgement
    if rule is None:
        assert (last["metrics_new"], last["metrics_previous"]) == (ultralytics_new, ultralytics_old)
    else:  # Ultralytics' own held-out mAP50 is not shown beside the judged one
        assert last["metrics_new"] == {k: v for k, v in ultralytics_new.items() if k != "map50"}
        assert last["metrics_previous"] == {k: v for k, v in ultralytics_old.items() if k != "map50"}
    stored = jobs.models.registry(5).list()[0].metrics  # the version keeps every figure (/versions)
    assert (stored["new"]["map50"], stored["previous"]["map50"]) == (0.52, 0.47)


def test_events_during_a_run_coalesce_into_one_follow_up(make_jobs) -> None:
    runner = FakeRunner(["better", "better"], open_gate=False)
    jobs, promoted = make_jobs(runner)
    feed(jobs, [1, 2, 3])
    deadline = time.monotonic() + 60
    while jobs.status(5)["state"] != "training" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert jobs.status(5)["state"] == "training"
    assert wait_until(lambda: (jobs.status(5)["progress"] or {}).get("epoch") == 2, 60)  # progress shows while it runs
    feed(jobs, [4, 5])
    assert jobs.status(5)["follow_up"] is False  # 2 labels during the run: below the threshold
    feed(jobs, range(6, 16))
    assert jobs.request(5, "START_TRAINING") == "training"
    assert jobs.status(5)["follow_up"] is True
    runner.gate.set()
    assert jobs.idle(60)
    assert len(runner.requests) == 2  # the run and one follow-up, not one per event
    assert "follow-up" in runner.requests[1].reason
    assert len(promoted) == 2 and promoted[1][2] == promoted[0][1]  # the follow-up fine-tuned the promoted model
    assert jobs.status(5)["labels_since_training"] == 0


def test_a_failed_run_reports_why_and_keeps_its_labels_pending(make_jobs) -> None:
    runner = FakeRunner([TrainingError("Label Studio is down"), "better"])
    jobs, promoted = make_jobs(runner)
    feed(jobs, [1, 2, 3])
    assert jobs.idle(60)
    status = jobs.status(5)
    assert status["state"] == "failed" and status["message"] == "Label Studio is down"
    assert status["labels_since_training"] == 3 and jobs.models.current(5) is None and promoted == []
    feed(jobs, [4, 5])  # no retry storm: only labels since the failed run started count
    assert jobs.idle(0.5) and jobs.status(5)["state"] == "failed" and len(runner.requests) == 1
    feed(jobs, [6])  # RETRAIN_MIN_NEW_LABELS new ones since: retried
    assert jobs.idle(60)
    assert jobs.status(5)["state"] == "idle" and len(promoted) == 1 and len(runner.requests) == 2


def test_label_studio_being_down_is_retried_later_by_itself_never_lost(make_jobs, monkeypatch) -> None:
    """A run that could not reach Label Studio is queued again after a back-off (no new labels
    needed), its labels stay counted, and it then trains and serves as usual."""
    import ml_backend.jobs.training_jobs as tj

    monkeypatch.setattr(tj, "RETRY_FIRST_S", 0.3)
    runner = FakeRunner([TrainingError("GET /api/projects/5: cannot reach Label Studio", transient=True), "better"])
    jobs, promoted = make_jobs(runner)
    feed(jobs, [1, 2, 3])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not jobs.status(5)["reason"].startswith("retry 1"):
        time.sleep(0.05)
    status = jobs.status(5)
    assert status["state"] in ("queued", "training") and "Label Studio was unavailable" in status["reason"]
    assert status["labels_since_training"] == 3
    assert jobs.idle(60)  # the retry came by itself, without new labels
    assert jobs.status(5)["state"] == "idle" and len(promoted) == 1 and len(runner.requests) == 2
    assert jobs.state.get(5)["attempt"] == 0 and jobs.status(5)["labels_since_training"] == 0


def test_a_skipped_run_says_why_and_serves_nothing_new(make_jobs) -> None:
    jobs, promoted = make_jobs(FakeRunner(["skipped"]))
    jobs.request(5, "START_TRAINING")
    assert jobs.idle(60)
    status = jobs.status(5)
    assert status["state"] == "idle" and status["message"] == "no held-out labels yet"
    assert jobs.models.registry(5).list() == [] and promoted == []


def test_automatic_retraining_can_be_turned_off(make_jobs) -> None:
    runner = FakeRunner()
    jobs, _ = make_jobs(runner, RETRAIN_MIN_NEW_LABELS="0")
    assert feed(jobs, range(1, 30))["training"] == "idle"
    assert jobs.idle(0.5) and runner.requests == []
    jobs.request(5, "START_TRAINING")  # the train button still works
    assert jobs.idle(60) and len(runner.requests) == 1


@pytest.mark.parametrize(
    ("extra_params", "expected"),
    [
        (None, None),
        ("", None),
        ({}, None),
        ({"other": 1}, None),
        ({"retrain_min_new_labels": None}, None),
        ({"retrain_min_new_labels": 20}, 20),
        ({"retrain_min_new_labels": 0}, 0),
        ({"retrain_min_new_labels": " 7 "}, 7),
        ('{"retrain_min_new_labels": 12, "other": "x"}', 12),
    ],
)
def test_a_projects_threshold_is_read_from_label_studios_extra_params(extra_params, expected) -> None:
    assert threshold_from_extra_params(extra_params) == expected


@pytest.mark.parametrize(
    ("extra_params", "fragment"),
    [
        ("not json", "must be a JSON object"),
        ([1, 2], "must be a JSON object"),
        ({"retrain_min_new_labels": -1}, "whole number from 0"),
        ({"retrain_min_new_labels": 2.5}, "whole number from 0"),
        ({"retrain_min_new_labels": True}, "whole number from 0"),
        ({"retrain_min_new_labels": "ten"}, "whole number from 0"),
        ({"retrain_min_new_labels": 10**30}, "whole number from 0"),
        ({"retrain_min_new_labels": "²"}, "whole number from 0"),
    ],
)
def test_a_bad_threshold_in_extra_params_says_what_to_fix(extra_params, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        threshold_from_extra_params(extra_params)


def test_a_projects_own_threshold_wins_survives_a_restart_and_can_be_cleared(make_jobs) -> None:
    runner = FakeRunner()
    jobs, _ = make_jobs(runner)  # RETRAIN_MIN_NEW_LABELS=3
    jobs.set_threshold(5, 6)
    assert feed(jobs, [1, 2, 3, 4, 5])["training"] == "idle"  # 3 would have started a run
    assert jobs.idle(0.3) and runner.requests == []
    assert jobs.status(5)["retrain_min_new_labels"] == 6 and "extra_params" in jobs.status(5)["retrain_threshold_from"]
    assert jobs.status(7)["retrain_min_new_labels"] == 3  # other projects keep the default
    jobs.close()

    again, _ = make_jobs(runner)  # a restart: the threshold comes from the state file
    assert again.status(5)["retrain_min_new_labels"] == 6
    feed(again, [6])
    assert again.idle(60) and len(runner.requests) == 1 and "retrain_min_new_labels=6" in runner.requests[0].reason

    again.set_threshold(5, None)  # the key removed in Label Studio: back to RETRAIN_MIN_NEW_LABELS
    assert again.status(5)["retrain_min_new_labels"] == 3 and again.status(5)["retrain_threshold_from"] == "RETRAIN_MIN_NEW_LABELS"


def test_lowering_a_threshold_below_the_labels_counted_starts_a_run(make_jobs) -> None:
    runner = FakeRunner()
    jobs, _ = make_jobs(runner, RETRAIN_MIN_NEW_LABELS="0")
    feed(jobs, [1, 2, 3, 4])
    assert jobs.idle(0.3) and runner.requests == []
    jobs.set_threshold(5, 4)
    assert jobs.idle(60) and len(runner.requests) == 1 and "4 new or changed labels" in runner.requests[0].reason


def test_a_state_file_from_before_per_project_thresholds_is_upgraded_in_place(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE training (project INTEGER PRIMARY KEY, state TEXT NOT NULL, reason TEXT, follow_up INTEGER DEFAULT 0,"
        " start_seq INTEGER DEFAULT 0, owner TEXT, queued REAL, started REAL, finished REAL, progress TEXT, message TEXT, last TEXT,"
        " runs INTEGER DEFAULT 0, heartbeat REAL)"
    )
    old.execute("INSERT INTO training (project, state, runs, last) VALUES (5, 'idle', 4, '{\"version\": \"v4\"}')")
    old.commit()
    old.close()
    state = TrainingState(path)
    row = state.get(5)
    assert (row["runs"], row["last"], row["threshold"]) == (4, '{"version": "v4"}', None)  # nothing lost
    state.update(5, threshold=9)
    assert state.get(5)["threshold"] == 9
    TrainingState(path).close()  # opening an upgraded file again is fine
    state.close()


def test_a_run_interrupted_by_a_restart_is_queued_again(make_jobs, tmp_path) -> None:
    import socket

    state = TrainingState(tmp_path / "state" / "state.db")
    state.update(5, state="training", owner=f"{socket.gethostname()}:999999999", reason="x")  # its process is gone
    runner = FakeRunner()
    jobs, promoted = make_jobs(runner)
    assert jobs.idle(60)
    assert len(runner.requests) == 1 and "stopped during the previous run" in runner.requests[0].reason
    assert jobs.status(5)["state"] == "idle" and len(promoted) == 1


class RemoteRunner(FakeRunner):
    """Runs that outlive the backend (an RQ job on a worker): they carry a job id and can be found again."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.jobs: dict[str, FakeHandle] = {}
        self.attached: list[str] = []

    def start(self, req):
        handle = super().start(req)
        handle.job_id = f"job-{len(self.requests)}"
        self.jobs[handle.job_id] = handle
        return handle

    def attach(self, job_id, req):
        self.attached.append(job_id)
        handle = self.jobs.get(job_id)
        if handle is not None:
            handle.req = req
        return handle


def test_a_backend_stopped_during_a_run_on_a_worker_leaves_it_and_reattaches(make_jobs) -> None:
    runner = RemoteRunner(open_gate=False)
    jobs, _ = make_jobs(runner)
    jobs.request(5, "START_TRAINING")
    assert wait_until(lambda: jobs.status(5)["job"] == "job-1")
    jobs.close()  # the backend stops mid-run
    assert runner.cancelled == 0  # the worker's run goes on
    left = jobs.state.get(5)
    assert left["state"] == "queued" and left["job"] == "job-1" and "reattaching" in left["reason"]

    for aid in (20, 21, 22):  # labels while no backend watches (another worker took the webhooks): not the job's
        jobs.events.record(label(aid))
    runner.gate.set()  # the run finishes while no backend watches
    again, promoted = make_jobs(runner)
    assert again.idle(60)
    assert runner.attached == ["job-1"]  # waited for the same run instead of starting it again
    # ... and the 3 labels it never saw (RETRAIN_MIN_NEW_LABELS=3) made one follow-up run
    assert len(runner.requests) == 2 and runner.requests[1].reason.startswith("follow-up"), [r.reason for r in runner.requests]
    status = again.status(5)
    assert status["state"] == "idle" and status["job"] is None and len(promoted) == 2 and status["labels_since_training"] == 0


def test_a_job_gone_from_the_queue_is_started_afresh(make_jobs, tmp_path) -> None:
    state = TrainingState(tmp_path / "state" / "state.db")
    state.update(5, state="queued", job="job-lost", reason="resumed", queued=time.time())
    state.close()
    runner = RemoteRunner()
    jobs, promoted = make_jobs(runner)
    assert jobs.idle(60)
    assert runner.attached == ["job-lost"] and len(runner.requests) == 1 and len(promoted) == 1


def test_a_run_over_the_time_limit_is_stopped(make_jobs) -> None:
    runner = FakeRunner(open_gate=False)
    jobs, promoted = make_jobs(runner, TRAIN_TIMEOUT="10")
    jobs.request(5, "START_TRAINING")
    assert jobs.idle(60)
    status = jobs.status(5)
    assert status["state"] == "failed" and "TRAIN_TIMEOUT=10" in status["message"]
    assert runner.cancelled == 1 and jobs.models.current(5) is None and promoted == []


def test_weights_that_do_not_load_are_never_served(make_jobs) -> None:
    jobs, promoted = make_jobs(FakeRunner(["broken"]))
    jobs.request(5, "START_TRAINING")
    assert jobs.idle(60)
    status = jobs.status(5)
    assert jobs.models.current(5) is None and promoted == []
    assert status["last_run"]["promoted"] is False and "could not be loaded" in status["message"]


def test_a_controls_own_model_is_stored_served_for_its_project_and_its_predictions_refreshed(make_jobs, tmp_path, tiny_weights) -> None:
    from ml_backend.inference.predictor import Predictor

    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(tiny_weights("classify"), root / "scenes.pt")
    trained = tmp_path / "trained-scene.pt"
    shutil.copy(tiny_weights("classify"), trained)
    with open(trained, "ab") as f:
        f.write(b"\0")  # other bytes, another version (a zip tolerates trailing bytes)
    runs = {
        "scene": {"status": "trained", "promote": True, "decision": "better", "weights": str(trained), "base_version": "scenes-1",
                  "model_path": "scenes.pt", "metrics_new": {"metric": "top1", "primary": 0.9}, "metrics_old": {"metric": "top1", "primary": 0.5}},
        "kind": {"status": "trained", "promote": False, "decision": "worse", "weights": str(trained), "base_version": "kinds-1",
                 "model_path": "kinds.pt", "metrics_new": {}, "metrics_old": {}},
        "gone": {"status": "failed", "promote": False, "decision": 'model_path="gone.pt": there is no such file', "model_path": "gone.pt"},
    }  # fmt: skip
    runner = FakeRunner([("skipped", {"controls": runs}), "skipped"])
    jobs, promoted = make_jobs(runner, MODEL_ROOT=str(root))
    base = jobs.models.base.get().version
    assert jobs.request(5, "START_TRAINING") == "queued" and jobs.idle(60)
    said = jobs.status(5)["last_run"]["controls"]
    assert (said["scene"]["promoted"], said["kind"]["promoted"], said["gone"]["promoted"]) == (True, False, False)
    assert said["gone"]["decision"].startswith('model_path="gone.pt"') and said["kind"]["version"] is not None
    assert jobs.models.control_registry(5, "kind").current() is None  # stored, not served
    assert promoted == [(5, base, None)]  # the project's model is unchanged: its predictions are refreshed
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image"><Label value="circle"/></RectangleLabels>'
        '<Choices name="scene" toName="image" model_path="scenes.pt"><Choice value="circle"/></Choices></View>'
    )
    predictor = Predictor(jobs.settings, jobs.models.base, object(), jobs.models)  # type: ignore[arg-type]
    version = jobs.models.control_registry(5, "scene").current().version
    assert predictor.serve(config, project=5).extras[0].model.version == version  # its project gets the retrained one
    assert predictor.serve(config, project=6).extras[0].model.version.startswith("scenes-")  # another project: the file
    other = config.replace('model_path="scenes.pt"', 'model_path="other.pt"')
    shutil.copy(root / "scenes.pt", root / "other.pt")
    assert predictor.serve(other, project=5).extras[0].model.version.startswith("other-")  # trained from another file: not served
    # The next run starts each control from its served version (sent along to an RQ worker too).
    served = jobs.models.control_versions(5)
    assert served == {
        "scene": {"weights": str(jobs.models.control_registry(5, "scene").current().weights), "version": version, "model_path": "scenes.pt"}
    }
    assert runner.requests[0].controls == {}
    assert jobs.request(5, "START_TRAINING") == "queued" and jobs.idle(60)
    assert runner.requests[1].controls == served
