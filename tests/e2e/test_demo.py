"""The README's main job, `python -m ml_backend demo`, run for real (short training)."""

import numpy as np
import pytest

from ml_backend.al.effort import corrections
from ml_backend.tools.demo import LABELS, run_demo

pytestmark = pytest.mark.e2e


def shown_boxes(demo, task_ids: list[int], version: str) -> dict[str, int]:
    """On these tasks, the boxes of ``version``'s pre-annotations matched to a true box of the same
    label (IoU >= 0.5, one to one: ``right``) and those matched to none (``wrong``), and the true boxes."""
    right = wrong = true = 0
    for tid in task_ids:
        shown = [r for p in demo.client.task_predictions(tid) if p["model_version"] == version for r in p["result"]]
        gt, gc = _boxes(demo.truth[tid])
        pb, pc = _boxes(shown)
        c = corrections(gt, gc, pb, pc)
        right += c.accepted + c.adjusted
        wrong += c.deleted + c.class_changed
        true += c.gt_boxes
    return {"right": right, "wrong": wrong, "true": true}


def _boxes(regions: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    labels = {name: i for i, name in enumerate(LABELS.values())}
    xyxy = [
        [r["value"]["x"], r["value"]["y"], r["value"]["x"] + r["value"]["width"], r["value"]["y"] + r["value"]["height"]] for r in regions
    ]
    classes = [labels.get(r["value"]["rectanglelabels"][0], -1) for r in regions]
    return np.array(xyxy, dtype=float).reshape(-1, 4), np.array(classes, dtype=int)


def test_demo_sets_everything_up_and_is_idempotent(tmp_path) -> None:
    first = run_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=3, epochs=2, wait=False)
    assert first.tasks == 3
    assert first.predicted == 3  # Label Studio stored a prediction of our version for every task
    assert first.model_version.startswith("detect-")
    assert sorted(first.queue) == list(range(1, 4))  # every task scored and placed in the queue
    again = run_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=3, epochs=2, wait=False)
    assert (again.project_id, again.tasks, again.model_version) == (first.project_id, 3, first.model_version)
    assert again.predicted == 3


def test_the_demo_keeps_its_promise(tmp_path) -> None:
    """What the demo tells a newcomer: label five tasks and it retrains by itself, serves the new
    model when the evidence allows (or says why not in plain words), and the queue changes; the
    labeled tasks leave the queue at once."""
    import time

    import requests

    from ml_backend.tools.demo import start_demo

    with start_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=9, epochs=3) as demo:
        url, pid = demo.result.backend_url, demo.result.project_id
        before = {s["task"]: s for s in requests.get(f"{url}/scores", params={"project": pid}, timeout=30).json()["scores"]}
        chosen = demo.result.queue[:5]  # the tasks Label Studio serves first, labeled as an annotator would
        unlabeled = [t for t in demo.truth if t not in chosen]
        shown_before = shown_boxes(demo, unlabeled, demo.result.model_version)
        for tid in chosen:
            demo.client.create_annotation(tid, demo.truth[tid])

        def status() -> dict:
            return requests.get(f"{url}/training", params={"project": pid}, timeout=30).json()

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (status()["runs"] >= 1 and status()["state"] == "idle"):
            time.sleep(1)
        done = status()
        assert done["runs"] >= 1 and done["state"] == "idle", done
        last = done["last_run"]
        # served, or a reason a newcomer understands
        assert last["promoted"] or last["decision"].startswith("kept the previous model:"), last
        assert last["judgement"]["rule"] in ("too_few_heldout", "bootstrap", "no_evidence", "worse_on_labeled", "costlier_on_heldout")

        def scores() -> dict:
            return {s["task"]: s for s in requests.get(f"{url}/scores", params={"project": pid}, timeout=30).json()["scores"]}

        deadline = time.monotonic() + 180
        want = done["model_version"]
        while time.monotonic() < deadline and {s["model_version"] for s in scores().values()} != {want}:
            time.sleep(1)
        after = scores()
        assert {t for t, s in after.items() if s["labeled"]} == set(chosen)  # labeled: out of the queue
        assert all(after[t]["priority"] == 0 for t in chosen)
        # Five labels never make the pre-annotations worse: on the tasks not labeled, the served model
        # (the new one, or the old one kept back) finds at least as many objects right, with no more wrong boxes.
        shown_after = shown_boxes(demo, unlabeled, want)
        assert shown_after["right"] >= shown_before["right"] and shown_after["wrong"] <= shown_before["wrong"], (
            shown_before, shown_after, last["decision"],
        )  # fmt: skip
        if last["promoted"]:
            # the new model re-scored the pool: its version on every score, and the queue order changed
            assert {s["model_version"] for s in after.values()} == {want} != {demo.result.model_version}
            rest = [t for t in before if t not in chosen]
            assert [after[t]["priority"] for t in rest] != [before[t]["priority"] for t in rest]
    # The demo run again on its state: the project is served its own model now, pre-annotated by it.
    again = run_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=9, epochs=3, wait=False)
    assert again.project_id == pid and again.predicted == 9
    assert again.model_version == want  # the served one (the new model when it was promoted)
