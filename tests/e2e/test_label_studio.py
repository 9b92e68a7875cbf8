"""End to end against a real Label Studio 1.23 server: no mocks."""

from __future__ import annotations

import shutil

import pytest
import requests

from integrations.label_studio import LabelStudioClient, LabelStudioError
from integrations.local_label_studio import LocalLabelStudio, LocalLabelStudioError, empty_database
from ml_backend.inference.images import ImageError, ImageFetcher, UrlPolicy
from ml_backend.inference.predictor import make_fetcher
from ml_backend.settings import Settings

from .conftest import start_backend, stop_backend

pytestmark = pytest.mark.e2e

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Circle"/><Label value="Square" predicted_values="square"/><Label value="Triangle"/>'
    "</RectangleLabels></View>"
)


def test_label_studio_stores_our_predictions_for_every_task(on_db, backends, shape_files) -> None:
    ls_client, label_studio, backend = on_db.client, on_db.server, backends(on_db.database)
    project = ls_client.create_project("e2e detection", CONFIG)
    pid = project["id"]
    # Two image sources: uploads (/data/upload/...) and local-files storage (/data/local-files/?d=...).
    ls_client.upload_files(pid, [str(p) for p, _ in shape_files[:3]])
    sub = label_studio.files_root / "shapes"
    sub.mkdir(parents=True, exist_ok=True)
    for p, _ in shape_files[3:]:
        shutil.copy(p, sub / p.name)
    storage = ls_client.add_local_storage(pid, str(sub), regex=r".*\.jpg")
    assert storage["last_sync_count"] == 2
    tasks = ls_client.list_tasks(pid)
    assert len(tasks) == 5
    urls = sorted(t["data"]["image"] for t in tasks)
    assert sum(u.startswith("/data/upload/") for u in urls) == 3
    assert sum(u.startswith("/data/local-files/?d=") for u in urls) == 2

    ml = ls_client.add_ml_backend(pid, backend.url, title="yolo e2e")
    health = requests.get(f"{backend.url}/health", timeout=10).json()
    version = health["model_version"]
    assert version and ml["model_version"] == version  # Label Studio called /setup and took our version
    assert ml["state"] == "CO", ml  # connected

    ls_client.retrieve_predictions(pid)
    by_name = {t["data"]["image"].rsplit("/", 1)[-1].split("?d=")[-1].rsplit("/", 1)[-1]: t for t in tasks}
    found = 0
    for path, synth in shape_files:
        task = next(t for n, t in by_name.items() if n.endswith(path.name))
        preds = ls_client.task_predictions(task["id"])
        ours = [p for p in preds if p["model_version"] == version]
        assert len(ours) == 1, f"task {task['id']} ({task['data']['image']}) has predictions {preds}"
        result = ours[0]["result"]
        for r in result:
            assert r["type"] == "rectanglelabels" and r["from_name"] == "label" and r["to_name"] == "image"
            assert r["value"]["rectanglelabels"][0] in {"Circle", "Square", "Triangle"}
            assert (r["original_width"], r["original_height"]) == synth.image.size
        found += len(result)
        assert ours[0]["score"] == pytest.approx(sum(r["score"] for r in result) / len(result)) if result else True
    assert found >= len(shape_files), "the detector should find most of the shapes"

    # Asking again does not duplicate: Label Studio only re-asks for a new model version.
    ls_client.retrieve_predictions(pid)
    assert all(len(ls_client.task_predictions(t["id"])) == 1 for t in tasks)


def test_connecting_an_unservable_project_shows_our_reason(ls_client, backend) -> None:
    text_cfg = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    pid = ls_client.create_project("e2e text", text_cfg)["id"]
    with pytest.raises(LabelStudioError) as err:
        ls_client.add_ml_backend(pid, backend.url)
    assert "needs an <Image> tag" in str(err.value)


def test_basic_auth_connection(ls_client, tmp_path, detect_weights, label_studio, pat) -> None:
    b = start_backend(
        tmp_path,
        {
            "MODEL_PATH": str(detect_weights),
            "BASIC_AUTH_USER": "ls",
            "BASIC_AUTH_PASS": "pw-123",
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
        },
    )
    try:
        pid = ls_client.create_project("e2e basic auth", CONFIG)["id"]
        with pytest.raises(LabelStudioError, match="basic auth required"):
            ls_client.add_ml_backend(pid, b.url)
        ml = ls_client.add_ml_backend(pid, b.url, auth_method="BASIC_AUTH", basic_auth_user="ls", basic_auth_pass="pw-123")
        assert ml["state"] == "CO"
    finally:
        stop_backend(b)


def _upload_one(ls_client: LabelStudioClient, path) -> str:
    pid = ls_client.create_project("e2e fetch", CONFIG)["id"]
    ls_client.upload_files(pid, [str(path)])
    return ls_client.list_tasks(pid)[0]["data"]["image"]


def test_image_download_with_personal_access_token(ls_client, label_studio, pat, shape_files, tmp_path) -> None:
    uri = _upload_one(ls_client, shape_files[0][0])
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    img = make_fetcher(settings, label_studio.url, pat).load(uri)
    assert img.shape == (80, 96, 3)


def test_image_download_without_token_says_to_set_it(ls_client, label_studio, shape_files, tmp_path) -> None:
    uri = _upload_one(ls_client, shape_files[1][0])
    fetcher = ImageFetcher(UrlPolicy(label_studio.url), tmp_path)
    with pytest.raises(ImageError, match="LABEL_STUDIO_API_KEY"):
        fetcher.load(uri)


def test_legacy_tokens_work_too(ls_client, label_studio, shape_files, tmp_path) -> None:
    legacy = label_studio.legacy_token(enable=True)
    client = LabelStudioClient(label_studio.url, legacy)
    assert client.auth.kind == "legacy"
    uri = _upload_one(client, shape_files[2][0])
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    assert make_fetcher(settings, label_studio.url, legacy).load(uri).shape == (80, 96, 3)


def test_bad_personal_access_token_is_a_clear_error(label_studio) -> None:
    forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJl"
    client = LabelStudioClient(label_studio.url, forged)
    with pytest.raises(LabelStudioError, match="personal access token") as err:
        client.get("/api/projects")
    assert forged not in str(err.value)


def test_a_new_sqlite_label_studio_starts_from_the_migrated_empty_database(label_studio, tmp_path) -> None:
    # The session's Label Studio made (or found) the empty database; a second one copies it instead of migrating again.
    template = empty_database(label_studio.venv)
    assert template.is_file()
    second = LocalLabelStudio(tmp_path / "second").start(timeout=120)
    try:
        assert "Initializing database" not in second.log_path.read_text(errors="replace")  # Label Studio's word when it migrates
        token = second.personal_access_token()  # its admin user was made on this start: the copy held none
        client = LabelStudioClient(second.url, token)
        assert client.get("/api/projects")["results"] == []  # a database of its own, empty
        assert client.create_project("first", CONFIG)["id"] == 1
    finally:
        second.stop()


def test_an_install_without_label_studio_says_what_to_do(tmp_path) -> None:
    with pytest.raises(LocalLabelStudioError, match="reinstall Label Studio"):
        empty_database(tmp_path / "not-a-venv")
