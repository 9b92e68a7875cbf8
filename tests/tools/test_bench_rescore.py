"""The re-score benchmark's request counting (the benchmark itself is a command: docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import requests

from ml_backend.tools.bench_rescore import counting_requests, request_kind


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("PATCH", "http://ls:8080/api/tasks/17", "PATCH /api/tasks/<id>"),
        ("GET", "http://ls:8080/api/tasks?project=1&page=2", "GET /api/tasks"),
        ("GET", "http://ls:8080/api/tasks/17/annotations/", "GET /api/tasks/17/annotations"),
        ("get", "http://ls:8080/data/upload/1/a.jpg", "image"),
        ("GET", "http://ls:8080/data/local-files/?d=a.jpg", "image"),
        ("DELETE", "http://ls:8080/api/projects/1/model-versions/", "DELETE /api/projects/1/model-versions"),
    ],
)
def test_request_kind(method: str, url: str, expected: str) -> None:
    assert request_kind(method, url) == expected


def test_every_session_request_is_counted_and_the_patch_undone(image_server) -> None:
    root, base = image_server
    (root / "counted.txt").write_text("x")
    real = requests.Session.request
    with counting_requests() as counts:
        with requests.Session() as s:
            assert s.get(f"{base}/counted.txt").text == "x"
            s.get(f"{base}/data/missing.jpg")
        requests.get(f"{base}/counted.txt")  # the module-level call goes through a Session too
    assert counts == {"GET /counted.txt": 2, "image": 1}
    assert requests.Session.request is real
