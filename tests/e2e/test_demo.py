"""The README's main job, `python -m ml_backend demo`, run for real (short training)."""

import re

import numpy as np
import pytest

from ml_backend.al.effort import corrections
from ml_backend.settings import Settings
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


def _figures(pattern: str, text: str) -> tuple[float, ...]:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return tuple(float(x) for x in found.groups())


def check_decision(last: dict, settings: Settings) -> None:
    """The run's decision is the one its stored evidence calls for, under ``settings``' promotion rules
    (:mod:`ml_backend.training.promotion`), and its sentence states that evidence.

    Five labels at ``TRAIN_VAL_FRACTION=0.3`` hold out a few images, fewer than ``PROMOTION_MIN_HELDOUT``:
    the bootstrap cannot judge, so the rule is one of those for too few held-out images. Which one
    depends on how the two models do on them; whichever it is, its conditions must hold in the stored
    figures (``judgement``: each model's mAP50 on the held-out images, or on every labeled image for
    ``labeled_floor``; ``metrics_*["annotation"]["seconds"]``: correcting each model's pre-annotations
    there), and the sentence must give those figures (to its 3 decimals, hence the 0.001 below).
    """
    j, data = last["judgement"], last["dataset"]
    promoted, decision, rule = last["promoted"], last["decision"], j["rule"]
    assert last["status"] == "trained" and last["version"]
    assert j["promote"] is promoted and j["reason"] == decision
    n, labeled, margin = j["heldout"], data["train"] + data["val"], j["margin"]
    assert n == data["val"] and 0 < n < settings.promotion_min_heldout, (n, data)
    assert decision.startswith(
        "PROMOTION=always: served" if settings.promotion == "always" else "served" if promoted else "kept the previous model:"
    )
    new, old = j["new"], j["old"]
    cost_new, cost_old = last["metrics_new"]["annotation"]["seconds"], last["metrics_previous"]["annotation"]["seconds"]
    if settings.promotion == "always":
        assert (promoted, rule) == (True, "always")
        assert _figures(r"held-out mAP50 ([\d.]+), the previous model had ([\d.]+)", decision) == (round(new, 3), round(old, 3))
    elif rule == "no_evidence":  # both find nothing right on the held-out images (nor, for the old one, on every labeled image)
        assert not promoted and new == old == 0.0
    elif rule == "labeled_floor":  # nothing right on the held-out images; on every labeled image only the new model finds something
        assert promoted and old == 0.0 < new
        assert _figures(rf"on all {labeled} labeled images the new model's mAP50 is ([\d.]+)", decision) == (round(new, 3),)
    elif rule == "too_few_heldout":  # served: not worse on every labeled image, and not costlier where it is no better
        assert promoted and not (new <= old and cost_new > cost_old), (new, old, cost_new, cost_old)
        assert _figures(r"held-out mAP50 ([\d.]+) against ([\d.]+)", decision) == (round(new, 3), round(old, 3))
        b, a = _figures(rf"on all {labeled} labeled images it is not worse \(([\d.]+) against ([\d.]+)\)", decision)
        assert b >= a - margin - 0.001, decision
    elif rule == "worse_on_labeled":  # kept: on every labeled image, even those it trained on, worse by more than the margin
        assert not promoted
        b, a = _figures(
            rf"on all {labeled} labeled images, even those it was trained on, the new model's mAP50 is ([\d.]+) against the served one's ([\d.]+)",
            decision,
        )
        assert b < a - margin + 0.001, decision
    elif rule == "costlier_on_heldout":  # kept: no better on the held-out images, and slower to correct there
        assert not promoted and new <= old and cost_new > cost_old, (new, old, cost_new, cost_old)
        assert _figures(r"no better \(([\d.]+) against ([\d.]+)\)", decision) == (round(new, 3), round(old, 3))
        assert _figures(r"take an annotator ([\d.]+) s against the served model's ([\d.]+) s", decision) == (
            round(cost_new),
            round(cost_old),
        )
    else:
        pytest.fail(f"rule {rule!r} cannot decide a run with {n} held-out images: {decision}")


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
    model when the evidence allows (or says why not in plain words), and the queue follows the model
    it serves; the labeled tasks leave the queue at once."""
    import time

    import requests

    from ml_backend.tools.demo import start_demo

    with start_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=9, epochs=3) as demo:
        url, pid = demo.result.backend_url, demo.result.project_id
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
        # served or kept as the evidence calls for, and said in a sentence a newcomer understands
        check_decision(last, Settings.from_env())  # the demo's backend reads PROMOTION* from this environment

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
        assert {s["model_version"] for s in after.values()} == {want}
        if last["promoted"]:
            # the new model serves and re-scored the pool: Label Studio holds its prediction, and only
            # its, on every task (the old version's retired), and on the tasks in the queue their
            # scores are the new priorities (a prediction's score is 1 - priority: the queue's order)
            assert want == last["version"] != demo.result.model_version
            assert demo.client.get_project(pid)["model_version"] == want
            for t in demo.truth:
                preds = demo.client.task_predictions(t)
                assert [p["model_version"] for p in preds] == [want], (t, preds)
                if t not in chosen:
                    assert preds[0]["score"] == pytest.approx(1 - after[t]["priority"], abs=1e-6), (t, preds[0], after[t])
        else:
            # kept: the model the demo started with still serves; the trained one is stored beside it
            assert want == demo.result.model_version != last["version"]
    # The demo run again on its state: the project is served its own model now, pre-annotated by it.
    again = run_demo(tmp_path / "demo", ls_port=0, backend_port=0, n_images=9, epochs=3, wait=False)
    assert again.project_id == pid and again.predicted == 9
    assert again.model_version == want  # the served one (the new model when it was promoted)
