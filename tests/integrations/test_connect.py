"""integrations.connect: the served model's speed-up shown on this backend's registration in Label Studio."""

from __future__ import annotations

import pytest

from integrations.connect import show_speedup, title_with_speedup


class FakeLabelStudio:
    """The two ML backend calls ``show_speedup`` makes, over a list of registrations."""

    def __init__(self, backends: list[dict]):
        self.backends = backends
        self.updates: list[tuple[int, dict]] = []

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return [b for b in self.backends if b["project"] == project_id]

    def update_ml_backend(self, backend_id: int, fields: dict) -> dict:
        self.updates.append((backend_id, fields))
        return fields


@pytest.mark.parametrize(
    ("title", "speedup", "expected"),
    [
        ("YOLO active learning", 1.84, "YOLO active learning · pre-annotations 1.8x as fast as drawing"),
        ("Fish team · pre-annotations 1.2x as fast as drawing", 2.5, "Fish team · pre-annotations 2.5x as fast as drawing"),
        ("Mine", 0.9, "Mine · pre-annotations 0.9x as fast as drawing"),
    ],
)
def test_the_title_carries_the_latest_speed_up(title: str, speedup: float, expected: str) -> None:
    assert title_with_speedup(title, speedup) == expected


def test_only_this_backends_registration_on_the_project_is_retitled() -> None:
    ls = FakeLabelStudio(
        [
            {"id": 1, "project": 7, "url": "http://other:9090", "title": "someone else's"},
            {"id": 2, "project": 7, "url": "http://backend:9090/", "title": "YOLO active learning"},
            {"id": 3, "project": 8, "url": "http://backend:9090", "title": "YOLO active learning"},
        ]
    )
    speedup = {"speedup": 1.8, "previous": 1.0, "heldout_images": 12}
    assert show_speedup(ls, 7, "http://backend:9090", "project7-ab12", speedup) is True  # type: ignore[arg-type]
    assert ls.updates == [
        (
            2,
            {
                "project": 7,
                "url": "http://backend:9090/",
                "title": "YOLO active learning · pre-annotations 1.8x as fast as drawing",
                "description": "correcting the pre-annotations of project7-ab12 is 1.8x as fast as drawing every box "
                "(on its 12 held-out tasks; the model before it: 1.0x)",
            },
        )
    ]
    assert show_speedup(ls, 9, "http://backend:9090", "project9-cd34", speedup) is False  # type: ignore[arg-type]
