"""The /predict latency and pool re-scoring benchmarks, run at tiny sizes (a real backend process)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from ml_backend.tools.bench import DEFAULT_TODO, bench_predict, bench_rescoring, device_info, markdown_table, write_upload_images

# The tiny detector (1 epoch) scores every box of these images near 0.004 or near 0.001: at 0.002
# it finds some, so the regions the benchmark counts are not all zero.
CONF = 0.002


def _check_summary(s: dict, runs: list[float], n: int) -> None:
    """``s`` summarises exactly the ``n`` measured ``runs`` (seconds) in milliseconds: their median,
    their nearest-rank 95th percentile below (sorted index ``int(0.95 * (n - 1))``: at n=2 the
    smaller run, at n=3 the median) and their max."""
    xs = sorted(runs)
    assert len(xs) == n and all(t > 0 for t in xs)
    expected = {"n": n, "median_ms": 1000 * statistics.median(xs), "p95_ms": 1000 * xs[int(0.95 * (n - 1))], "max_ms": 1000 * xs[-1]}
    assert s == pytest.approx(expected)


def _regions_found(root: Path, weights: Path, n: int, size: tuple[int, int]) -> list[int]:
    """Boxes plain Ultralytics finds at ``CONF`` on each of the ``n`` images the benchmark served."""
    from ml_backend.inference.images import decode_image
    from ml_backend.inference.model import load_weights

    uris, _ = write_upload_images(root, n, *size)  # the benchmark's own files (kept as they are)
    images = [np.ascontiguousarray(decode_image((root / u.lstrip("/")).read_bytes())[:, :, ::-1]) for u in uris]
    return [len(r.boxes) for r in load_weights(str(weights)).yolo.predict(images, conf=CONF, imgsz=64, verbose=False)]


def test_predict_bench_measures_a_real_backend_against_plain_ultralytics(tmp_path, tiny_weights) -> None:
    weights = tiny_weights("detect")
    r = bench_predict(tmp_path, sizes=(1, 2), counts=(3, 2), imgsz=64, image_size=(64, 48), conf=CONF, warmup=1, weights=weights)
    assert r["server"].startswith("gunicorn") and "prediction_cache" in r
    assert (r["device"], r["imgsz"], r["image_size"], r["conf"]) == ("cpu", 64, [64, 48], CONF)
    # regions per task of the cached runs: tasks 3 to 12 (1 + 3 requests of 1 task, 1 + 2 of 2; tasks 1
    # and 2 filled the cache), which alternate between the 2 images: 5 tasks each, so the mean of the
    # boxes the backend returns on each image, which are the boxes the same model finds on it at CONF
    found = _regions_found(tmp_path / "predict-images", weights, 2, (64, 48))
    assert sum(found) > 0, found
    assert r["regions_per_task"] == pytest.approx(sum(found) / 2)
    assert [row["tasks"] for row in r["by_tasks"]] == [1, 2]
    for row, count in zip(r["by_tasks"], (3, 2)):
        assert row["requests"] == count
        plain = row["plain_ultralytics"]
        _check_summary(plain, row["runs_plain_s"], count)
        for mode in ("cached", "download"):
            ours = row[f"ours_{mode}"]
            _check_summary(ours, row[f"runs_ours_{mode}_s"], count)
            assert row[f"ratio_{mode}"] == pytest.approx(ours["median_ms"] / plain["median_ms"])
    # images really fetched: the 2 images once (cached runs), then each task of the download runs
    # (1 warm-up request per size, then the measured ones) under a URL of its own
    cached = [
        p for p in (tmp_path / "predict-state" / "cache" / "images").rglob("*") if p.is_file() and p.parent.name != "images"
    ]  # not the prune lock
    assert len(cached) == 2 + (1 * 1 + 1 * 2) + (3 * 1 + 2 * 2)

    rows = markdown_table({"predict": r})
    assert rows[:2] == ["| benchmark | median | goal |", "|---|---|---|"]
    assert sum("`/predict`" in x for x in rows) == 4 and sum("plain Ultralytics" in x for x in rows) == 2


def test_rescoring_bench_scores_every_task_from_the_disk_cache(tmp_path, tiny_weights) -> None:
    r = bench_rescoring(tmp_path, repeat=1, n_tasks=4, image_size=(64, 48), imgsz=64, weights=tiny_weights("detect"))
    assert (r["tasks"], r["labeled"], r["scored"], r["errors"]) == (4, 1, 4, 0)
    for key in ("first_scoring", "rescoring", "rescoring_after_labels"):
        f = r[key]
        assert f["seconds"] > 0
        assert f["per_1000_tasks_s"] == pytest.approx(f["seconds"] * 250)
        assert f["images_per_s"] == pytest.approx(4 / f["seconds"])
    assert len(r["rescoring"]["runs_s"]) == 1 and r["rescoring"]["seconds"] == r["rescoring"]["runs_s"][0]
    rows = markdown_table({"rescoring": r})
    assert any(x.startswith("| first scoring, 4 tasks") for x in rows) and any(x.startswith("| re-scoring, 4 tasks") for x in rows)
    assert any(x.startswith("| re-scoring after labels alone, 4 tasks") for x in rows)


def test_defaults_include_the_new_benchmarks_and_the_device_is_recorded() -> None:
    assert {"predict", "rescoring"} <= set(DEFAULT_TODO) and "push-each" not in DEFAULT_TODO
    assert device_info("cpu") == {"device": "cpu"}
