"""The /predict latency and pool re-scoring benchmarks, run at tiny sizes (a real backend process)."""

from __future__ import annotations

import pytest

from ml_backend.tools.bench import DEFAULT_TODO, bench_predict, bench_rescoring, device_info, markdown_table


def _check_summary(s: dict, n: int) -> None:
    assert s["n"] == n
    assert 0 < s["median_ms"] <= s["max_ms"] and 0 < s["p95_ms"] <= s["max_ms"]  # p95: nearest rank below, at n=2 the smaller run


def test_predict_bench_measures_a_real_backend_against_plain_ultralytics(tmp_path, tiny_weights) -> None:
    r = bench_predict(tmp_path, sizes=(1, 2), counts=(3, 2), imgsz=64, image_size=(64, 48), warmup=1, weights=tiny_weights("detect"))
    assert r["server"].startswith("gunicorn") and "prediction_cache" in r
    assert (r["device"], r["imgsz"], r["image_size"]) == ("cpu", 64, [64, 48])
    assert r["regions_per_task"] >= 0
    assert [row["tasks"] for row in r["by_tasks"]] == [1, 2]
    for row, count in zip(r["by_tasks"], (3, 2)):
        assert row["requests"] == count
        plain = row["plain_ultralytics"]
        _check_summary(plain, count)
        assert len(row["runs_plain_s"]) == count
        for mode in ("cached", "download"):
            ours = row[f"ours_{mode}"]
            _check_summary(ours, count)
            assert len(row[f"runs_ours_{mode}_s"]) == count and all(t > 0 for t in row[f"runs_ours_{mode}_s"])
            assert row[f"ratio_{mode}"] == pytest.approx(ours["median_ms"] / plain["median_ms"])
    # images really fetched: the 2 images once (cached runs), then each task of the download runs
    # (1 warm-up request per size, then the measured ones) under a URL of its own
    cached = [p for p in (tmp_path / "predict-state" / "cache" / "images").rglob("*") if p.is_file()]
    assert len(cached) == 2 + (1 * 1 + 1 * 2) + (3 * 1 + 2 * 2)

    rows = markdown_table({"predict": r})
    assert rows[:2] == ["| benchmark | median | goal |", "|---|---|---|"]
    assert sum("`/predict`" in x for x in rows) == 4 and sum("plain Ultralytics" in x for x in rows) == 2


def test_rescoring_bench_scores_every_task_from_the_disk_cache(tmp_path, tiny_weights) -> None:
    r = bench_rescoring(tmp_path, repeat=1, n_tasks=4, image_size=(64, 48), imgsz=64, weights=tiny_weights("detect"))
    assert (r["tasks"], r["labeled"], r["scored"], r["errors"]) == (4, 1, 4, 0)
    for key in ("first_scoring", "rescoring"):
        f = r[key]
        assert f["seconds"] > 0
        assert f["per_1000_tasks_s"] == pytest.approx(f["seconds"] * 250)
        assert f["images_per_s"] == pytest.approx(4 / f["seconds"])
    assert len(r["rescoring"]["runs_s"]) == 1 and r["rescoring"]["seconds"] == r["rescoring"]["runs_s"][0]
    rows = markdown_table({"rescoring": r})
    assert any(x.startswith("| first scoring, 4 tasks") for x in rows) and any(x.startswith("| re-scoring, 4 tasks") for x in rows)


def test_defaults_include_the_new_benchmarks_and_the_device_is_recorded() -> None:
    assert {"predict", "rescoring"} <= set(DEFAULT_TODO) and "push-each" not in DEFAULT_TODO
    assert device_info("cpu") == {"device": "cpu"}
