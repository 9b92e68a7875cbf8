"""The docker check's own pieces that need no docker: its settings file and its shell script.

The check itself (``make docker-check``) needs a docker engine, about 12 GB and 10 minutes, so it
is not part of this suite; docker/README.md reports its runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ml_backend.settings import Settings
from ml_backend.tools.docker_check import ENV_EXAMPLE, SETTINGS, write_settings

ROOT = Path(__file__).resolve().parents[2]


def _read(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "a key set twice"
    return dict(pairs)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ({"MODEL_PATH": "/data/w.pt"}, {}, {"MODEL_PATH": "/data/w.pt", "REDIS_URL": "", "TRAIN_EPOCHS": "0"}),
        ({"REDIS_URL": ""}, {"REDIS_URL": "redis://redis:6379/0"}, {"REDIS_URL": "redis://redis:6379/0"}),
        ({"LABEL_STUDIO_API_KEY": "t1"}, {"LABEL_STUDIO_API_KEY": "t2"}, {"LABEL_STUDIO_API_KEY": "t2"}),
        ({"NOT_IN_THE_EXAMPLE": "1"}, {"NOT_IN_THE_EXAMPLE": "2"}, {"NOT_IN_THE_EXAMPLE": "2"}),
    ],
)
def test_write_settings_edits_a_copy_of_env_example_in_place(tmp_path, first, second, expected) -> None:
    path = tmp_path / "settings.env"
    write_settings(path, first)
    write_settings(path, second)
    values = _read(path)
    for key, value in expected.items():
        assert values[key] == value
    assert set(_read(ENV_EXAMPLE)) <= set(values)
    assert path.stat().st_mode & 0o077 == 0, "it holds the token: readable by its owner only"


def test_the_checks_settings_are_valid_backend_settings(tmp_path) -> None:
    path = tmp_path / "settings.env"
    write_settings(path, SETTINGS)
    Settings.from_env(_read(path))


def test_check_script_is_valid_bash_and_its_stand_ins_exist() -> None:
    script = ROOT / "docker" / "check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for name in ("python", "label-studio", "redis"):
        assert f"standin {name} " in text and (ROOT / "docker" / "standins" / name / "Dockerfile").is_file()
    assert "ml_backend.tools.docker_check" in text
