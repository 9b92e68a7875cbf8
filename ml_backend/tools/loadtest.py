"""Load on a running backend: a webhook burst, and ``/predict`` clients while a run trains.

Both take the backend's URL and work over HTTP, like Label Studio: the end-to-end load test
asserts on what they return, and ``python -m ml_backend bench --only load`` reports their
figures (:func:`run_load`, against a real Label Studio).

* :func:`webhook_burst`: ``events`` label webhooks from ``clients`` threads on a fixed schedule
  over ``seconds`` (a bulk import looks like this); every ``duplicate_every``-th event is a
  re-delivery of an earlier one, which must count once.
* :func:`predict_while`: ``clients`` threads post ``/predict`` in a loop until ``done()``.

Example:
    >>> events = burst_events(project=3, events=10, duplicate_every=5)
    >>> len(events), len({e["annotation"]["id"] for e in events})
    (10, 8)
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests


def latency_summary(xs: Sequence[float]) -> dict[str, float]:
    """Count, median, 95th percentile and max of latencies in seconds, as milliseconds."""
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median_ms": 1000 * statistics.median(xs),
        "p95_ms": 1000 * xs[int(0.95 * (len(xs) - 1))],
        "max_ms": 1000 * xs[-1],
    }


def burst_events(project: int, events: int = 1000, duplicate_every: int = 10, first_id: int = 1) -> list[dict[str, Any]]:
    """``events`` ``ANNOTATION_CREATED`` payloads; every ``duplicate_every``-th repeats an earlier one."""
    out: list[dict[str, Any]] = []
    next_id = first_id
    for i in range(events):
        if duplicate_every and i % duplicate_every == duplicate_every - 1 and out:
            out.append(out[(i * 7919) % len(out)])  # an earlier event, delivered again
            continue
        out.append(
            {
                "action": "ANNOTATION_CREATED",
                "project": {"id": int(project)},
                "annotation": {"id": next_id, "updated_at": f"2026-01-01T00:00:{next_id % 60:02d}Z", "result": []},
            }
        )
        next_id += 1
    return out


def _run_clients(n: int, work: Callable[[requests.Session], None]) -> None:
    threads = []
    for _ in range(n):
        session = requests.Session()
        session.trust_env = False
        threads.append(threading.Thread(target=work, args=(session,), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def webhook_burst(
    url: str,
    events: Sequence[Mapping[str, Any]],
    clients: int = 20,
    seconds: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Send ``events`` to ``url/webhook`` from ``clients`` threads, event ``i`` at ``i * seconds / len(events)``.

    Returns:
        ``statuses`` (status code -> count; ``"error"`` for a failed connection), ``latency``
        (median, p95, max), ``wall_s`` and ``late_s`` (how far behind schedule the last send was).
    """
    lock = threading.Lock()
    todo = collections.deque(enumerate(events))
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []
    late = [0.0]
    start = time.monotonic() + 0.2
    gap = seconds / max(1, len(events))

    def work(session: requests.Session) -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, event = todo.popleft()
            wait = start + i * gap - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            t0 = time.perf_counter()
            try:
                r = session.post(f"{url.rstrip('/')}/webhook", json=event, headers=dict(headers or {}), timeout=30)
                code: int | str = r.status_code
            except requests.RequestException:
                code = "error"
            dt = time.perf_counter() - t0
            with lock:
                statuses[code] += 1
                latencies.append(dt)
                late[0] = max(late[0], -wait if wait < 0 else 0.0)

    _run_clients(clients, work)
    return {
        "events": len(events),
        "clients": clients,
        "statuses": dict(statuses),
        "latency": latency_summary(latencies),
        "wall_s": time.monotonic() - start,
        "late_s": late[0],
    }


def predict_while(
    url: str,
    payloads: Sequence[Mapping[str, Any]],
    done: Callable[[], bool],
    clients: int = 8,
    headers: Mapping[str, str] | None = None,
    timeout: float = 100.0,
    max_seconds: float = 900.0,
) -> dict[str, Any]:
    """``clients`` threads post ``payloads`` (round robin) to ``url/predict`` until ``done()`` (or ``max_seconds``).

    Returns:
        ``statuses``, ``latency`` (median, p95, max), ``requests``, ``failed_tasks`` (task
        entries with an error instead of a result) and ``wall_s``.
    """
    lock = threading.Lock()
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []
    failed = [0]
    counter = [0]
    stop = threading.Event()
    t_start = time.monotonic()

    def watch() -> None:
        while not stop.is_set():
            if done() or time.monotonic() - t_start > max_seconds:
                stop.set()
            stop.wait(0.5)

    def work(session: requests.Session) -> None:
        while not stop.is_set():
            with lock:
                payload = payloads[counter[0] % len(payloads)]
                counter[0] += 1
            t0 = time.perf_counter()
            try:
                r = session.post(f"{url.rstrip('/')}/predict", json=payload, headers=dict(headers or {}), timeout=timeout)
                code: int | str = r.status_code
                bad = sum(1 for res in r.json().get("results", []) if res.get("error")) if code == 200 else 0
            except (requests.RequestException, ValueError):
                code, bad = "error", 0
            dt = time.perf_counter() - t0
            with lock:
                statuses[code] += 1
                latencies.append(dt)
                failed[0] += bad

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _run_clients(clients, work)
    stop.set()
    return {
        "clients": clients,
        "requests": len(latencies),
        "statuses": dict(statuses),
        "failed_tasks": failed[0],
        "latency": latency_summary(latencies),
        "wall_s": time.monotonic() - t_start,
    }


def burst_outcome(url: str, project: int, settle_s: float = 60.0, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """After a burst whose distinct labels equal the retraining threshold: the labels counted,
    and how many runs it started (the project is not in Label Studio, so its run fails at once)."""
    deadline = time.monotonic() + settle_s
    while True:
        status = requests.get(f"{url}/training", params={"project": project}, headers=dict(headers or {}), timeout=5).json()
        if status["state"] not in ("queued", "training") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    counted = status["labels_since_training"]
    return {"counted": counted, "runs": status["runs"], "reason": status["reason"], "state": status["state"]}


def run_load(
    workdir: str | Path,
    repeat: int = 3,
    events: int = 1000,
    clients: int = 20,
    seconds: float = 10.0,
    predict_clients: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """The load benchmark: a real Label Studio and a real backend (gunicorn), ``repeat`` rounds of
    a webhook burst and of ``/predict`` clients during a training run; medians over the rounds."""
    import numpy as np

    from integrations.label_studio import LabelStudioClient
    from integrations.local_label_studio import LocalLabelStudio, free_port
    from ml_backend.tools.demo import DEMO_CONFIG
    from ml_backend.tools.servers import start_backend, wait_for_model
    from ml_backend.tools.starter import train_starter_model
    from ml_backend.tools.synthetic import ls_box_result, make_image

    workdir = Path(workdir).resolve()
    weights = train_starter_model(workdir / "detector", kind="detect", epochs=50, imgsz=96, n_train=128, n_val=16, batch=16)
    config = DEMO_CONFIG
    labels = {0: "Circle", 1: "Square", 2: "Triangle"}
    rounds: list[dict[str, Any]] = []
    with LocalLabelStudio(workdir / "label-studio", port=free_port()) as ls:
        token = ls.personal_access_token()
        client = LabelStudioClient(ls.url, token)
        for r in range(repeat):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            distinct = len({e["annotation"]["id"] for e in burst_events(0, events)})
            env = {
                "MODEL_PATH": str(weights),
                "MODEL_DIR": str(workdir / f"state-{time.time_ns()}"),
                "LABEL_STUDIO_URL": ls.url,
                "LABEL_STUDIO_API_KEY": token,
                "IMGSZ": "96",
                "SCORE_THRESHOLD": "0.3",
                "DEVICE": device,
                "LOG_LEVEL": "WARNING",
                "RETRAIN_MIN_NEW_LABELS": str(distinct),
                "RESCORE_MIN_NEW_LABELS": "100000",
                "TRAIN_IMGSZ": "96",
                "TRAIN_EPOCHS": "5",
                "TRAIN_BATCH": "8",
                "TRAIN_VAL_FRACTION": "0.3",
                "AL_CLUSTERS": "3",
                "BASIC_AUTH_USER": "",
                "BASIC_AUTH_PASS": "",
                "WEBHOOK_SECRET": "",
                "REDIS_URL": "",
            }
            proc = start_backend(workdir, port, env)
            try:
                wait_for_model(url, proc)
                # 1. the burst, on a project of its own (no Label Studio involved: webhooks only)
                burst = webhook_burst(url, burst_events(10_000 + r, events), clients=clients, seconds=seconds)
                burst.update(distinct=distinct, **burst_outcome(url, 10_000 + r))
                # 2. /predict clients while a real run trains on labels made in Label Studio
                rng = np.random.default_rng(r)
                paths, truth = [], []
                for i in range(16):
                    s = make_image(rng, 96, 80)
                    p = workdir / f"load-{r}-{i}.jpg"
                    s.image.save(p, quality=95)
                    paths.append(str(p))
                    truth.append(ls_box_result(s, labels))
                pid = client.create_project(f"load {r}", config)["id"]
                client.upload_files(pid, paths)
                tasks = client.list_tasks(pid)
                client.add_ml_backend(pid, url, title="load", extra_params={"retrain_min_new_labels": 8})  # this project: 8 labels
                by_name = {Path(p).name: t for p, t in zip(paths, truth)}
                for t in tasks[:8]:
                    client.create_annotation(t["id"], next(v for k, v in by_name.items() if t["data"]["image"].endswith(k)))
                deadline = time.monotonic() + 60
                while requests.get(f"{url}/training", params={"project": pid}, timeout=5).json()["state"] != "training":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no training run started in project {pid} after 8 labels")
                    time.sleep(0.2)
                payloads = [{"tasks": [t], "project": f"{pid}.0", "label_config": config} for t in tasks]

                def trained(pid: int = pid, url: str = url) -> bool:
                    return requests.get(f"{url}/training", params={"project": pid}, timeout=5).json()["state"] not in ("queued", "training")

                pred = predict_while(url, payloads, trained, clients=predict_clients)
                pred["training"] = requests.get(f"{url}/training", params={"project": pid}, timeout=5).json()["last_run"]
                rounds.append({"burst": burst, "predict_during_training": pred})
                print(
                    f"round {r + 1}/{repeat}: burst {burst['statuses']} p95 {burst['latency']['p95_ms']:.0f} ms, counted {burst['counted']}/{distinct}; "
                    f"predict during training {pred['statuses']} median {pred['latency'].get('median_ms', 0):.0f} ms "
                    f"p95 {pred['latency'].get('p95_ms', 0):.0f} ms",
                    flush=True,
                )
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    def med(get: Callable[[dict], float]) -> float:
        return statistics.median(get(x) for x in rounds)

    return {
        "rounds": rounds,
        "events": events,
        "clients": clients,
        "seconds": seconds,
        "predict_clients": predict_clients,
        "burst_p50_ms": med(lambda x: x["burst"]["latency"]["median_ms"]),
        "burst_p95_ms": med(lambda x: x["burst"]["latency"]["p95_ms"]),
        "burst_max_ms": med(lambda x: x["burst"]["latency"]["max_ms"]),
        "burst_5xx": sum(c for x in rounds for k, c in x["burst"]["statuses"].items() if k == "error" or int(k) >= 500),
        "burst_exact": all(x["burst"]["counted"] == x["burst"]["distinct"] for x in rounds),
        "predict_p50_ms": med(lambda x: x["predict_during_training"]["latency"]["median_ms"]),
        "predict_p95_ms": med(lambda x: x["predict_during_training"]["latency"]["p95_ms"]),
        "predict_max_ms": med(lambda x: x["predict_during_training"]["latency"]["max_ms"]),
        "training_s": med(lambda x: (x["predict_during_training"]["training"] or {}).get("seconds") or 0.0),
        "predict_requests": med(lambda x: x["predict_during_training"]["requests"]),
        "predict_non_200": sum(c for x in rounds for k, c in x["predict_during_training"]["statuses"].items() if k != 200),
    }
