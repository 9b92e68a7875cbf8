"""Load on a real backend (gunicorn): a burst of 1,000 webhooks from 20 clients in 10 s, and 8
``/predict`` clients while a real training run goes on. Behaviour only; the figures are
``python -m ml_backend bench --only load``'s."""

from __future__ import annotations

import pytest
import requests

from ml_backend.tools.loadtest import burst_events, burst_outcome, predict_while, webhook_burst

from .conftest import start_backend, stop_backend
from .test_label_studio import CONFIG
from .test_retraining import TRAIN_ENV, make_project, training_status, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("workers", [1, 4])
def test_a_burst_of_1000_webhooks_counts_exactly_and_queues_one_run(detect_weights, tmp_path, workers: int) -> None:
    """One worker, or four gunicorn workers sharing one MODEL_DIR: every label counted once, one run."""
    events = burst_events(project=77, events=1000, duplicate_every=10)  # 900 labels, 100 re-deliveries
    distinct = len({e["annotation"]["id"] for e in events})
    secret = {"X-Webhook-Secret": "burst-secret"}
    backend = start_backend(
        tmp_path,
        {
            "MODEL_PATH": str(detect_weights),
            "IMGSZ": "96",
            "RETRAIN_MIN_NEW_LABELS": str(distinct),
            "RESCORE_MIN_NEW_LABELS": "100000",
            "WEBHOOK_SECRET": secret["X-Webhook-Secret"],
            "LOG_LEVEL": "WARNING",
        },
        timeout=240,
        workers=workers,
    )
    try:
        result = webhook_burst(backend.url, events, clients=20, seconds=10.0, headers=secret)
        assert result["statuses"] == {200: 1000}, result  # no 5xx, no refused connection
        outcome = burst_outcome(backend.url, 77)
        # Exact counting is what queues the run: one label short and none starts, one too many
        # (a duplicate counted) and it starts early with a smaller count in its reason.
        assert outcome["counted"] == distinct == 900
        assert outcome["runs"] == 1 and f"{distinct} new or changed labels" in outcome["reason"], outcome
        assert requests.get(f"{backend.url}/health", timeout=10).status_code == 200
    finally:
        stop_backend(backend)


def test_eight_predict_clients_are_all_answered_while_a_run_trains(ls_client, label_studio, pat, detect_weights, tmp_path) -> None:
    backend = start_backend(
        tmp_path,
        {
            "MODEL_PATH": str(detect_weights),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "RETRAIN_MIN_NEW_LABELS": "8",
            "PROMOTION": "always",
            **TRAIN_ENV,
        },
    )
    try:
        pid, truth = make_project(ls_client, tmp_path, "e2e load predict", 16, seed=13)
        ls_client.add_ml_backend(pid, backend.url, title="load")
        for tid in sorted(truth)[:8]:
            ls_client.create_annotation(tid, truth[tid])
        wait_for(lambda: training_status(backend, pid)["state"] == "training", 60, "the run to start")
        payloads = [{"tasks": [t], "project": f"{pid}.0", "label_config": CONFIG} for t in ls_client.list_tasks(pid)]
        result = predict_while(backend.url, payloads, lambda: training_status(backend, pid)["state"] != "training", clients=8)
        assert set(result["statuses"]) == {200} and result["failed_tasks"] == 0, result
        assert result["requests"] >= 8
        done = training_status(backend, pid)
        assert done["state"] == "idle" and done["last_run"]["status"] == "trained", done  # the run was not disturbed
        print(
            f"\n/predict during training: {result['requests']} requests, median {result['latency']['median_ms']:.0f} ms, "
            f"p95 {result['latency']['p95_ms']:.0f} ms, max {result['latency']['max_ms']:.0f} ms"
        )
    finally:
        stop_backend(backend)
