"""Re-scoring in place: a fake Label Studio that checks, after every call, that each task has
exactly one prediction of the project's current model version (what orders the queue)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from integrations.label_studio import LabelStudioError
from ml_backend.scoring import publish
from ml_backend.scoring.pool import ScoredPool, TaskScore
from ml_backend.scoring.publish import replace_predictions, score_project, staging_name, write_score_columns
from ml_backend.settings import Settings

TASKS = [1, 2, 3]


class Crash(Exception):
    pass


class FakeLabelStudio:
    """Predictions, the project's ``model_version`` and task data, as Label Studio 1.23.2 keeps
    them; ``calls`` records every call in order; ``check`` runs after each state change."""

    def __init__(self, tasks=TASKS, version: str | None = None, crash_after: str | None = None):
        self.ids = itertools.count(1)
        self.model_version = version
        self.predictions: list[dict] = [{"id": next(self.ids), "task": t, "model_version": version} for t in tasks] if version else []
        self.data = {t: {"image": f"s3://bucket/{t}.jpg"} for t in tasks}
        self.calls: list[tuple] = []
        self.crash_after = crash_after
        self.guard = version is not None  # check the invariant from the start (a project already scored)
        self.before_write = None  # called between our read of a task and our write of its data

    def _done(self, *call) -> None:
        self.calls.append(call)
        if self.guard:
            self.check()
        if self.crash_after == call[0]:
            self.crash_after = None
            raise Crash(call)

    def check(self) -> None:
        for t in self.data:
            ours = [p for p in self.predictions if p["task"] == t and p["model_version"] == self.model_version]
            assert len(ours) == 1, (t, self.model_version, self.predictions, self.calls)

    def versions(self, task: int) -> list[str]:
        return sorted(p["model_version"] for p in self.predictions if p["task"] == task)

    # the LabelStudioAPI calls
    def get_project(self, project_id):
        return {"id": project_id, "label_config": "<View/>", "model_version": self.model_version}

    @staticmethod
    def resolved(task: int, data: dict) -> dict:
        """What Label Studio hands out by default: storage URIs resolved through itself."""
        return {k: f"/tasks/{task}/resolve/?fileuri={v}" if str(v).startswith("s3://") else v for k, v in data.items()}

    def list_tasks(self, project_id, fields="all"):
        held = {t: [{**p, "result": [{"kept": p["id"]}], "score": 0.25} for p in self.predictions if p["task"] == t] for t in self.data}
        return [{"id": t, "data": self.resolved(t, d), "annotations": [], "predictions": held[t]} for t, d in self.data.items()]

    def get_task(self, task_id):
        if task_id not in self.data:
            raise LabelStudioError("not found", 404)
        return {"id": task_id, "data": self.resolved(task_id, self.data[task_id])}

    def tasks_as_stored(self, project_id, task_ids):
        out = {t: {"id": t, "data": dict(self.data[t]), "annotations": []} for t in task_ids if t in self.data}
        self._done("read", sorted(out))
        if self.before_write:
            for t in out:
                self.before_write(t)
        return out

    def delete_model_version(self, project_id, model_version):
        n = len(self.predictions)
        self.predictions = [p for p in self.predictions if p["model_version"] != model_version]
        if model_version == self.model_version:  # Label Studio forgets the project's version
            self.model_version = None
        self._done("delete", model_version)
        return n - len(self.predictions)

    def _add(self, kind, predictions):
        for p in predictions:
            self.predictions.append({"id": next(self.ids), "task": p["task"], "model_version": p["model_version"]})
        self._done(kind, sorted({p["model_version"] for p in predictions}))
        return len(predictions)

    def import_predictions(self, project_id, predictions, chunk=1000):
        return self._add("import", predictions)

    def create_predictions(self, predictions, workers=4):
        return self._add("create", predictions)

    def use_uncertainty_sampling(self, project_id, model_version):
        self.model_version = model_version
        self.guard = True
        self._done("switch", model_version)
        return {}

    def update_task_data(self, updates, workers=4):
        for t, d in updates.items():
            self.data[t] = dict(d)
        self._done("data", sorted(updates))
        return len(updates)

    def ensure_view(self, *a, **k):
        return {}

    def list_ml_backends(self, project_id):
        return []


def preds(version: str, tasks=TASKS) -> list[dict]:
    return [{"task": t, "result": [], "score": 0.5, "model_version": version, "cluster": 0} for t in tasks]


SETTINGS = Settings.from_env({"AL_CLUSTERS": "1"})


def test_a_rescore_in_place_never_leaves_a_task_without_a_current_prediction() -> None:
    ls = FakeLabelStudio(version="v1")
    pushed = replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, "v1")  # type: ignore[arg-type]
    stage = staging_name("v1")
    assert pushed == [stage, "v1"]
    assert [c[0] for c in ls.calls] == ["delete", "import", "switch", "delete", "import", "switch", "delete"]
    assert ls.model_version == "v1" and all(ls.versions(t) == ["v1"] for t in TASKS)
    assert len(ls.predictions) == 3 and {p["id"] for p in ls.predictions}.isdisjoint({1, 2, 3})  # all new


def test_deleting_first_would_empty_the_queue() -> None:
    """What the fake checks: the old order (delete, then push) fails at its first call."""
    ls = FakeLabelStudio(version="v1")
    with pytest.raises(AssertionError):
        ls.delete_model_version(1, "v1")


def test_a_new_version_needs_no_staging_and_retires_the_old_one() -> None:
    ls = FakeLabelStudio(version="v0")
    assert replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, "v0", retire=["v0"]) == ["v1"]  # type: ignore[arg-type]
    assert [c[0] for c in ls.calls] == ["delete", "import", "switch", "delete", "delete"]  # v0, and v0's staged copy
    assert ls.model_version == "v1" and all(ls.versions(t) == ["v1"] for t in TASKS)
    assert ls.calls[-2:] == [("delete", "v0"), ("delete", "v0~staged")]


def test_a_staged_copy_left_by_a_crash_goes_with_its_version() -> None:
    """A crash after a re-score in place switched back, before it deleted the staged copy; then a new version is served."""
    ls = FakeLabelStudio(version="v0")
    ls._add("import", preds("v0~staged"))
    replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, "v0", retire=["v0"])  # type: ignore[arg-type]
    assert sorted({p["model_version"] for p in ls.predictions}) == ["v1"]


@pytest.mark.parametrize("published", ["v1", "v0"])
@pytest.mark.parametrize("crash_after", ["import", "switch", "delete"])
def test_a_crash_anywhere_leaves_every_task_a_prediction_and_the_next_scoring_cleans_up(published, crash_after) -> None:
    ls = FakeLabelStudio(version=published, crash_after=crash_after)  # crash right after the first call of that kind
    with pytest.raises(Crash):
        replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, ls.model_version, retire=["v0"])  # type: ignore[arg-type]
    ls.check()  # (checked after every call too)
    replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, ls.model_version, retire=["v0"])  # type: ignore[arg-type]
    assert ls.model_version == "v1" and all(ls.versions(t) == ["v1"] for t in TASKS), ls.predictions


def test_every_crash_point_of_a_rescore_in_place_is_recovered() -> None:
    n_calls = 7
    for k in range(1, n_calls + 1):
        ls = FakeLabelStudio(version="v1")
        real = ls._done
        seen = itertools.count(1)

        def done(*call, real=real, seen=seen, k=k):  # noqa: ANN001, ANN202
            real(*call)
            if next(seen) == k:
                raise Crash(call)

        ls._done = done  # type: ignore[method-assign]
        with pytest.raises(Crash):
            replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, "v1")  # type: ignore[arg-type]
        ls._done = real  # type: ignore[method-assign]
        replace_predictions(ls, 1, preds("v1"), "v1", SETTINGS, ls.model_version)  # type: ignore[arg-type]
        assert ls.model_version == "v1" and all(ls.versions(t) == ["v1"] for t in TASKS), (k, ls.predictions)


def test_score_project_rescores_in_place_and_new_tasks_follow_the_published_name(tmp_path, monkeypatch) -> None:
    ls = FakeLabelStudio(version="v1")
    served = SimpleNamespace(model=SimpleNamespace(version="v1"))
    predictor = SimpleNamespace(serve=lambda cfg, project=None: served, models=SimpleNamespace(current=lambda pid: None))
    scores = [TaskScore(t, 0.5, 0.5, 0.5, 0, "medium", False, "v1") for t in TASKS]
    monkeypatch.setattr(publish, "score_tasks", lambda tasks, *a, **k: ScoredPool(scores, preds("v1"), {}))
    s = Settings.from_env({"AL_CLUSTERS": "1", "MODEL_DIR": str(tmp_path)})
    score_project(ls, 1, predictor, s, progress=False)  # type: ignore[arg-type]
    assert ls.model_version == "v1" and all(ls.versions(t) == ["v1"] for t in TASKS)
    assert all(ls.data[t]["al_priority"] == 0.5 and ls.data[t]["image"] == f"s3://bucket/{t}.jpg" for t in TASKS)

    # an interrupted re-score left the project on the staging name: new tasks go under it
    ls.model_version = staging_name("v1")
    for p in ls.predictions:
        p["model_version"] = ls.model_version
    ls.data[4] = {"image": "4.jpg"}
    ls.guard = False
    monkeypatch.setattr(publish, "score_stream", lambda *a, **k: ScoredPool(scores[:1], preds("v1", [4]), {}))
    monkeypatch.setattr(publish.ScoreStore, "load_state", lambda self, pid: {"x": 1})
    monkeypatch.setattr(publish.ScoreStore, "append", lambda self, pid, pooled: None)
    publish.score_new_tasks(ls, 1, [{"id": 4, "data": {"image": "4.jpg"}}], predictor, s, publish.ScoreStore(s.paths))  # type: ignore[arg-type]
    assert ls.versions(4) == [staging_name("v1")]


def test_a_task_that_fails_a_rescore_in_place_keeps_its_earlier_prediction(tmp_path, monkeypatch) -> None:
    """A broken image fails its own task: it keeps its place in the queue (its earlier prediction of
    the version in use), and every other task gets its new one; the invariant holds at every step."""
    ls = FakeLabelStudio(version="v1")
    earlier = {p["task"]: p["id"] for p in ls.predictions}
    served = SimpleNamespace(model=SimpleNamespace(version="v1"))
    predictor = SimpleNamespace(serve=lambda cfg, project=None: served, models=SimpleNamespace(current=lambda pid: None))
    scores = [TaskScore(t, 0.5, 0.5, 0.5, 0, "medium", False, "v1") for t in TASKS[:2]]
    monkeypatch.setattr(publish, "score_tasks", lambda tasks, *a, **k: ScoredPool(scores, preds("v1", TASKS[:2]), {3: "broken image"}))
    s = Settings.from_env({"AL_CLUSTERS": "1", "MODEL_DIR": str(tmp_path)})
    pushed: list[list[dict]] = []
    real = ls.import_predictions
    monkeypatch.setattr(ls, "import_predictions", lambda pid, p, chunk=1000: pushed.append(p) or real(pid, p))
    score_project(ls, 1, predictor, s, progress=False)  # type: ignore[arg-type]
    assert ls.model_version == "v1" and all(ls.versions(t) == ["v1"] for t in TASKS)
    again = [p for p in pushed[-1] if p["task"] == 3]
    assert again == [{"task": 3, "result": [{"kept": earlier[3]}], "score": 0.25, "model_version": "v1"}]
    assert sorted(p["task"] for p in pushed[-1]) == TASKS


def test_score_columns_keep_an_edit_made_after_the_scoring_read_the_tasks() -> None:
    ls = FakeLabelStudio()
    tasks = ls.list_tasks(1)  # what the scoring read, minutes ago
    ls.data[1] = {"image": "1-fixed.jpg", "note": "edited by a person"}  # edited during the scoring
    columns = publish.score_columns(tasks, [TaskScore(1, 0.2, 0.3, 0.4, 0, "easy", False, "v1")])
    assert write_score_columns(ls, 1, columns) == 1  # type: ignore[arg-type]
    assert ls.data[1] == {
        "image": "1-fixed.jpg",
        "note": "edited by a person",
        "al_priority": 0.4,
        "al_uncertainty": 0.2,
        "al_diversity": 0.3,
        "al_difficulty": "easy",
    }
    assert write_score_columns(ls, 1, columns) == 0  # already up to date: not written again


def test_score_columns_write_the_data_as_stored_a_chunk_at_a_time() -> None:
    """Label Studio hands out a cloud task's URI resolved; what is written back is the stored one."""
    ls = FakeLabelStudio(tasks=[1, 2, 3, 4, 5])
    tasks = ls.list_tasks(1)
    assert tasks[0]["data"]["image"] == "/tasks/1/resolve/?fileuri=s3://bucket/1.jpg"
    columns = publish.score_columns(tasks, [TaskScore(t["id"], 0.2, 0.3, 0.4, 0, "easy", False, "v1") for t in tasks])
    assert write_score_columns(ls, 1, columns, chunk=2) == 5  # type: ignore[arg-type]
    assert [c for c in ls.calls if c[0] == "read"] == [("read", [1, 2]), ("read", [3, 4]), ("read", [5])]
    assert {t: d["image"] for t, d in ls.data.items()} == {t: f"s3://bucket/{t}.jpg" for t in range(1, 6)}
    assert all(d["al_priority"] == 0.4 for d in ls.data.values())


def test_score_columns_skip_a_task_deleted_meanwhile() -> None:
    ls = FakeLabelStudio()
    columns = publish.score_columns(ls.list_tasks(1), [TaskScore(t, 0.2, 0.3, 0.4, 0, "easy", False, "v1") for t in TASKS])
    del ls.data[2]
    assert write_score_columns(ls, 1, columns) == 2 and 2 not in ls.data


def test_the_remaining_window_is_between_the_read_and_the_write() -> None:
    """An edit landing between our read of a task and our write (milliseconds) is still lost:
    Label Studio's task PATCH replaces ``data`` whole and has no conditional write."""
    ls = FakeLabelStudio()
    columns = publish.score_columns(ls.list_tasks(1), [TaskScore(1, 0.2, 0.3, 0.4, 0, "easy", False, "v1")])
    ls.before_write = lambda t: ls.data[t].update(note="too late")
    write_score_columns(ls, 1, columns)  # type: ignore[arg-type]
    assert "note" not in ls.data[1] and ls.data[1]["al_priority"] == 0.4
