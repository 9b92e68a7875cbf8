"""The real Flask app with real (tiny) YOLO weights trained in this test session."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from ml_backend.inference.model import ModelHolder, ModelUnavailableError, load_weights
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.tools.synthetic import CLASS_NAMES, make_image

RECT_CFG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Circle"/><Label value="square"/><Label value="Tri" predicted_values="triangle"/>'
    "</RectangleLabels></View>"
)
POLY_CFG = RECT_CFG.replace("RectangleLabels", "PolygonLabels")
CHOICES_CFG = (
    '<View><Image name="image" value="$image"/><Choices name="shape" toName="image">'
    + "".join(f'<Choice value="{n}"/>' for n in CLASS_NAMES)
    + "</Choices></View>"
)


def make_settings(tmp_path, model_path, **extra) -> Settings:
    env = {
        "MODEL_PATH": str(model_path),
        "MODEL_DIR": str(tmp_path / "state"),
        "ALLOWED_HOSTS": "127.0.0.1",
        "IMGSZ": "96",
        "SCORE_THRESHOLD": "0.05",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return Settings.from_env(env)


@pytest.fixture(scope="module")
def shapes(image_server):
    """Synthetic images with known shapes, served over HTTP: list of (url, SyntheticImage)."""
    root, base = image_server
    rng = np.random.default_rng(123)
    out = []
    for i in range(6):
        s = make_image(rng, 96, 80)
        s.image.save(root / f"shape_{i}.jpg", quality=95)
        out.append((f"{base}/shape_{i}.jpg", s))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed as 80 x 96
    shapes_img = make_image(np.random.default_rng(5), 96, 80).image
    shapes_img.save(buf, "JPEG", exif=exif)
    (root / "exif6.jpg").write_bytes(buf.getvalue())
    return base, out


def new_app(settings: Settings):
    return create_app(settings, warm_up=False)


def tasks_for(urls: list[str]) -> list[dict]:
    return [{"id": 100 + i, "data": {"image": u}} for i, u in enumerate(urls)]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_health_is_instant_and_loads_nothing(tmp_path, detect_weights) -> None:
    app = new_app(make_settings(tmp_path, detect_weights))
    client = app.test_client()
    for path in ("/health", "/"):
        body = client.get(path).get_json()
        assert body["status"] == "UP"
        assert body["model_loaded"] is False
    assert app.extensions["ml_backend"].holder.version is None


def test_detect_predictions_match_the_shapes(tmp_path, detect_weights, shapes) -> None:
    base, items = shapes
    app = new_app(make_settings(tmp_path, detect_weights, SCORE_THRESHOLD=0.3))
    app.extensions["ml_backend"].holder.get()  # the process's first model load can outlast /setup's 2 s wait on a busy machine
    client = app.test_client()
    version = client.post("/setup", json={"project": "3.1700000000", "schema": RECT_CFG}).get_json()["model_version"]
    assert version.startswith("detect-")
    resp = client.post("/predict", json={"tasks": tasks_for([u for u, _ in items]), "project": "3.1700000000", "label_config": RECT_CFG})
    assert resp.status_code == 200
    results = resp.get_json()["results"]
    assert len(results) == len(items)
    label_of = {"circle": "Circle", "square": "square", "triangle": "Tri"}
    matched = total = 0
    for entry, (_, synth) in zip(results, items):
        assert entry["model_version"] == version
        for r in entry["result"]:
            v = r["value"]
            assert r["type"] == "rectanglelabels" and r["from_name"] == "label" and r["to_name"] == "image"
            assert (r["original_width"], r["original_height"]) == synth.image.size
            assert 0 <= v["x"] <= 100 and 0 <= v["y"] <= 100 and 0 < v["width"] <= 100 and 0 < v["height"] <= 100
            assert v["rectanglelabels"][0] in {"Circle", "square", "Tri"}
            assert r["score"] >= 0.3
        w, h = synth.image.size
        for shape in synth.shapes:
            total += 1
            gt = shape.xyxy
            for r in entry["result"]:
                v = r["value"]
                box = (v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100)
                if iou(box, gt) > 0.5 and v["rectanglelabels"][0] == label_of[CLASS_NAMES[shape.cls]]:
                    matched += 1
                    break
        if entry["result"]:
            assert entry["score"] == pytest.approx(np.mean([r["score"] for r in entry["result"]]))
    assert matched >= total // 2, f"only {matched} of {total} shapes found with the right label"


def test_one_batched_forward_pass(tmp_path, detect_weights, shapes) -> None:
    base, items = shapes
    app = new_app(make_settings(tmp_path, detect_weights, PREDICT_BATCH=16))
    holder = app.extensions["ml_backend"].holder
    model = holder.get()
    calls = []
    original = model.yolo.predict

    def spy(source, **kw):
        calls.append(len(source))
        return original(source, **kw)

    model.yolo.predict = spy
    client = app.test_client()
    resp = client.post("/predict", json={"tasks": tasks_for([u for u, _ in items]), "label_config": RECT_CFG})
    assert resp.status_code == 200
    assert calls == [len(items)]


def test_large_requests_go_through_in_chunks(tmp_path, detect_weights, shapes) -> None:
    _, items = shapes
    app = new_app(make_settings(tmp_path, detect_weights, PREDICT_BATCH=4))
    model = app.extensions["ml_backend"].holder.get()
    calls = []
    original = model.yolo.predict
    model.yolo.predict = lambda source, **kw: calls.append(len(source)) or original(source, **kw)
    urls = [u for u, _ in items] * 2  # 12 tasks
    results = app.test_client().post("/predict", json={"tasks": tasks_for(urls), "label_config": RECT_CFG}).get_json()["results"]
    assert calls == [4, 4, 4]
    assert len(results) == 12 and all("result" in r for r in results)
    assert [len(r["result"]) for r in results[:6]] == [len(r["result"]) for r in results[6:]]  # same images, same answers, same order


def test_a_broken_task_fails_alone(tmp_path, detect_weights, shapes) -> None:
    base, items = shapes
    client = new_app(make_settings(tmp_path, detect_weights)).test_client()
    tasks = [
        {"id": 1, "data": {"image": items[0][0]}},
        {"id": 2, "data": {"image": f"{base}/broken.jpg"}},
        {"id": 3, "data": {"image": f"{base}/missing.jpg"}},
        {"id": 4, "data": {"text": "no image here"}},
        {"id": 5, "data": {"image": "http://169.254.169.254/latest/meta-data/"}},
        {"id": 6, "data": {"image": "http://127.0.0.1:1/unreachable.jpg"}},
        {"id": 7, "data": {"image": items[1][0]}},
    ]
    results = client.post("/predict", json={"tasks": tasks, "label_config": RECT_CFG}).get_json()["results"]
    assert len(results) == 7
    assert "result" in results[0] and "result" in results[6]
    errors = {r["task"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {2, 3, 4, 5, 6}
    assert "corrupt" in errors[2]
    assert "not found" in errors[3]
    assert "no image under data.image" in errors[4]
    assert "ALLOWED_HOSTS" in errors[5]
    assert "could not download" in errors[6]
    assert all("result" not in r for r in results if "error" in r)  # Label Studio skips these and asks again later
    assert client.get("/health").get_json()["status"] == "UP"


def test_exif_orientation_sets_displayed_size(tmp_path, detect_weights, shapes) -> None:
    base, _ = shapes
    client = new_app(make_settings(tmp_path, detect_weights, SCORE_THRESHOLD=0.0)).test_client()
    entry = client.post("/predict", json={"tasks": tasks_for([f"{base}/exif6.jpg"]), "label_config": RECT_CFG}).get_json()["results"][0]
    assert entry["result"], "expected at least one box at threshold 0"
    assert {(r["original_width"], r["original_height"]) for r in entry["result"]} == {(80, 96)}


@pytest.mark.parametrize(
    ("kind", "config", "rtype"),
    [
        ("segment", POLY_CFG, "polygonlabels"),
        ("segment", RECT_CFG, "rectanglelabels"),
        ("obb", RECT_CFG, "rectanglelabels"),
        ("classify", CHOICES_CFG, "choices"),
    ],
)
def test_other_model_tasks(tmp_path, tiny_weights, shapes, kind, config, rtype) -> None:
    base, items = shapes
    client = new_app(make_settings(tmp_path, tiny_weights(kind), SCORE_THRESHOLD=0.0, IMGSZ=64)).test_client()
    assert client.post("/setup", json={"project": "1.1", "schema": config}).status_code == 200
    results = client.post("/predict", json={"tasks": tasks_for([u for u, _ in items[:3]]), "label_config": config}).get_json()["results"]
    assert len(results) == 3
    regions = [r for e in results for r in e["result"]]
    assert regions, f"a {kind} model at threshold 0 should say something"
    assert {r["type"] for r in regions} == {rtype}
    for r in regions:
        v = r["value"]
        if rtype == "polygonlabels":
            assert len(v["points"]) >= 3 and all(0 <= c <= 100 for p in v["points"] for c in p)
        elif rtype == "choices":
            assert v["choices"][0] in CLASS_NAMES
        else:
            assert "rotation" in v
    if kind == "classify":
        assert all(len(e["result"]) == 1 for e in results)


def test_onnx_weights(tmp_path, tiny_weights, shapes) -> None:
    from ml_backend.inference.model import import_yolo

    onnx_path = import_yolo()(str(tiny_weights("detect"))).export(format="onnx", imgsz=64, verbose=False)
    served = tmp_path / "model.onnx"
    shutil.copyfile(onnx_path, served)
    client = new_app(make_settings(tmp_path, served, IMGSZ=64, SCORE_THRESHOLD=0.0)).test_client()
    version = client.post("/setup", json={"project": "1.1", "schema": RECT_CFG}).get_json()["model_version"]
    assert version.startswith("model-")
    results = client.post("/predict", json={"tasks": tasks_for([u for u, _ in shapes[1][:2]]), "label_config": RECT_CFG}).get_json()[
        "results"
    ]
    assert [r["model_version"] for r in results] == [version, version]
    assert all(r["result"] and r["result"][0]["type"] == "rectanglelabels" for r in results)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("{not json", 400, "JSON object"),
        ("[1, 2]", 400, "JSON object"),
        ('{"tasks": [], "label_config": "<View/>"}', 400, "non-empty list"),
        ('{"tasks": "abc", "label_config": "<View/>"}', 400, "non-empty list"),
        ('{"tasks": [{"id": 1}]}', 400, "label_config"),
    ],
)
def test_bad_predict_requests(tmp_path, detect_weights, body, status, fragment) -> None:
    client = new_app(make_settings(tmp_path, detect_weights)).test_client()
    resp = client.post("/predict", data=body, content_type="application/json")
    assert resp.status_code == status
    assert fragment in resp.get_json()["error"]


def test_unservable_config_is_a_4xx_whose_reason_label_studio_shows(tmp_path, detect_weights) -> None:
    client = new_app(make_settings(tmp_path, detect_weights)).test_client()
    text_cfg = '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    resp = client.post("/setup", json={"project": "1.2", "schema": text_cfg})
    assert resp.status_code == 422
    assert "needs an <Image> tag" in resp.get_json()["error"]
    assert "needs an <Image> tag" in resp.status  # the reason phrase, which Label Studio displays
    resp = client.post("/predict", json={"tasks": [{"id": 1, "data": {"t": "x"}}], "label_config": text_cfg})
    assert resp.status_code == 422


NEW_CLASSES_CFG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="fish"/><Label value="Square"/><Label value="starfish"/></RectangleLabels></View>'
)


def test_a_project_with_classes_the_model_does_not_know_is_accepted_and_told_what_happens(tmp_path, detect_weights, shapes) -> None:
    _, items = shapes
    client = new_app(make_settings(tmp_path, detect_weights, RETRAIN_MIN_NEW_LABELS="25")).test_client()
    resp = client.post("/setup", json={"project": "4.17", "schema": NEW_CLASSES_CFG})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["classes"] == {"known": ["Square"], "learning": ["fish", "starfish"]}
    assert body["pre_annotations"] == (
        "no model for fish, starfish yet: the first one trains after 25 labeled tasks; until then tasks come in random order "
        "(Square is pre-annotated now)"
    )
    labels = {
        r["value"]["rectanglelabels"][0]
        for res in client.post("/predict", json={"tasks": tasks_for([u for u, _ in items]), "project": "4.17"}).get_json()["results"]
        for r in res["result"]
    }
    assert labels == {"Square"}  # what the model knows is pre-annotated; nothing is shown for the rest
    status = client.get("/training?project=4").get_json()
    assert status["classes"] == body["classes"] and status["pre_annotations"] == body["pre_annotations"]
    assert client.get("/health").get_json()["projects"] == {"4": body["pre_annotations"]}
    nothing = NEW_CLASSES_CFG.replace('<Label value="Square"/>', "")
    resp = client.post("/setup", json={"project": "5.1", "schema": nothing})
    assert resp.status_code == 200 and resp.get_json()["classes"] == {"known": [], "learning": ["fish", "starfish"]}
    results = client.post("/predict", json={"tasks": tasks_for([items[0][0]]), "project": "5.1"}).get_json()["results"]
    assert results[0]["result"] == []


def test_a_one_label_project_the_model_does_not_know_is_shown_every_object_as_its_label(tmp_path, detect_weights, shapes) -> None:
    _, items = shapes
    client = new_app(make_settings(tmp_path, detect_weights, SCORE_THRESHOLD="0.3")).test_client()
    one = NEW_CLASSES_CFG.replace('<Label value="Square"/><Label value="starfish"/>', "")
    body = client.post("/setup", json={"project": "6.1", "schema": one}).get_json()
    assert body["classes"] == {"known": [], "learning": ["fish"]} and body["pre_annotations"].endswith("shown as fish to correct")
    results = client.post("/predict", json={"tasks": tasks_for([u for u, _ in items]), "project": "6.1"}).get_json()["results"]
    regions = [r for res in results for r in res["result"]]
    assert regions and {r["value"]["rectanglelabels"][0] for r in regions} == {"fish"}
    # one box per object, whatever class the model took it for: as many as the true shapes, give or take a miss
    shapes_total = sum(len(s.shapes) for _, s in items)
    assert shapes_total - 2 <= len(regions) <= shapes_total + 1, (len(regions), shapes_total)


def test_a_label_removed_from_the_config_leaves_the_model_serving_the_others(tmp_path, detect_weights, shapes) -> None:
    """The model has circle, square and triangle; the project now labels only circles and squares."""
    _, items = shapes
    client = new_app(make_settings(tmp_path, detect_weights, SCORE_THRESHOLD="0.3")).test_client()
    two = RECT_CFG.replace('<Label value="Tri" predicted_values="triangle"/>', "")
    body = client.post("/setup", json={"project": "11.1", "schema": two}).get_json()
    assert body["classes"] == {"known": ["Circle", "square"], "learning": []}
    results = client.post("/predict", json={"tasks": tasks_for([u for u, _ in items]), "project": "11.1"}).get_json()["results"]
    labels = {r["value"]["rectanglelabels"][0] for res in results for r in res["result"]}
    assert labels == {"Circle", "square"}  # triangles are not shown; the rest is, as before


def test_predict_uses_config_from_setup(tmp_path, detect_weights, shapes) -> None:
    _, items = shapes
    client = new_app(make_settings(tmp_path, detect_weights)).test_client()
    client.post("/setup", json={"project": "9.123", "schema": RECT_CFG})
    resp = client.post("/predict", json={"tasks": tasks_for([items[0][0]]), "project": "9.123"})
    assert resp.status_code == 200 and "result" in resp.get_json()["results"][0]


@pytest.mark.parametrize(
    ("exposure", "used"),
    [
        ({}, True),  # loopback (the default HOST)
        ({"HOST": "0.0.0.0", "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw"}, True),  # beyond loopback, behind basic auth
        ({"HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "on"}, False),  # open: anyone could point the images elsewhere
    ],
)
def test_without_label_studio_url_setup_hostname_and_token_serve_that_project_only(
    tmp_path, detect_weights, shapes, image_server, exposure, used
) -> None:
    root, base = image_server
    (root / "data" / "upload" / "7").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "shape_0.jpg", root / "data" / "upload" / "7" / "a.jpg")
    shutil.copy(root / "shape_1.jpg", root / "data" / "upload" / "7" / "b.jpg")
    settings = Settings.from_env({"MODEL_PATH": str(detect_weights), "MODEL_DIR": str(tmp_path), "IMGSZ": "96", **exposure})
    app = new_app(settings)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Basic bHM6cHc="  # ls:pw

    def predict(project: str, name: str = "a.jpg") -> dict:
        task = {"id": 1, "data": {"image": f"/data/upload/7/{name}"}}  # not in the image cache yet for b.jpg
        return client.post("/predict", json={"tasks": [task], "label_config": RECT_CFG, "project": project}).get_json()["results"][0]

    assert "LABEL_STUDIO_URL" in predict("1.1")["error"]
    setup = {"project": "1.1", "schema": RECT_CFG, "hostname": base, "access_token": "0123abcd"}
    assert client.post("/setup", json=setup).status_code == 200
    predictor = app.extensions["ml_backend"].predictor
    assert ("result" in predict("1.1")) is used
    assert "LABEL_STUDIO_URL" in predict("2.1", "b.jpg")["error"]  # another project's images do not go to project 1's Label Studio
    assert predictor.fetcher.policy.label_studio_url == ""  # the server-wide fetcher is untouched
    if used:
        fetcher = predictor.fetcher_for(1)
        assert fetcher.policy.label_studio_url == base and fetcher.auth_headers() == {"Authorization": "Token 0123abcd"}
    else:
        assert predictor.project_fetchers == {}


def test_configured_label_studio_url_is_not_overridden_by_setup(tmp_path, detect_weights) -> None:
    app = new_app(make_settings(tmp_path, detect_weights, LABEL_STUDIO_URL="http://ls.example:8080"))
    app.test_client().post(
        "/setup", json={"project": "1.1", "schema": RECT_CFG, "hostname": "http://attacker.example", "access_token": "x"}
    )
    assert app.extensions["ml_backend"].predictor.fetcher.policy.label_studio_url == "http://ls.example:8080"


def test_the_url_label_studio_reaches_the_backend_at_is_kept_per_project(tmp_path, detect_weights, caplog) -> None:
    settings = make_settings(tmp_path, detect_weights)
    client = new_app(settings).test_client()
    client.post("/setup", json={"project": "7.1", "schema": RECT_CFG}, base_url="http://backend:9090")
    assert settings.paths.backend_url(7).read_text() == "http://backend:9090"  # where its speed-up is shown (ML backend title)
    # a host without a dot (a compose service name typed into Label Studio's UI): Label Studio makes no webhook for it
    (warned,) = [r.getMessage() for r in caplog.records if "makes no webhook" in r.getMessage()]
    assert "project 7" in warned and "http://backend:9090" in warned and "backend.internal" in warned
    caplog.clear()
    client.post("/setup", json={"project": "7.1", "schema": RECT_CFG}, base_url="http://127.0.0.1:9091")
    assert settings.paths.backend_url(7).read_text() == "http://127.0.0.1:9091"  # the latest one
    assert not [r for r in caplog.records if "makes no webhook" in r.getMessage()]
    client.post("/setup", json={"schema": RECT_CFG}, base_url="http://elsewhere:1")  # no project: nothing kept
    assert sorted(p.name for p in settings.paths.projects_dir.iterdir()) == ["7"]


def test_missing_weights_keep_the_server_up_and_say_which(tmp_path) -> None:
    client = new_app(make_settings(tmp_path, tmp_path / "nowhere" / "best.pt")).test_client()
    resp = client.post("/setup", json={"project": "1.1", "schema": RECT_CFG})
    assert resp.status_code == 503
    assert "nowhere/best.pt does not exist" in resp.get_json()["error"]
    health = client.get("/health").get_json()
    assert health["status"] == "UP" and "best.pt" in health["model_error"]
    assert client.get("/versions").status_code == 503


def test_unknown_hub_weights_fail_clearly(tmp_path) -> None:
    with pytest.raises(ModelUnavailableError, match="yolo-no-such-model-xyz.pt"):
        load_weights("yolo-no-such-model-xyz.pt", cache_dir=tmp_path)


def test_corrupt_weights_file(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="could not be loaded"):
        load_weights(str(bad))


def test_model_version_follows_the_weights(tmp_path, detect_weights, tiny_weights) -> None:
    served = tmp_path / "served.pt"
    shutil.copyfile(detect_weights, served)
    client = new_app(make_settings(tmp_path, served)).test_client()
    v1 = client.post("/setup", json={"project": "1.1", "schema": RECT_CFG}).get_json()["model_version"]
    assert client.get("/versions").get_json() == {"versions": [v1], "model_version": v1}
    tmp = tmp_path / "next.pt"
    shutil.copyfile(tiny_weights("detect"), tmp)
    tmp.replace(served)  # atomic swap, as retraining will do
    v2 = client.post("/setup", json={"project": "1.1", "schema": RECT_CFG}).get_json()["model_version"]
    assert v2 != v1 and v2.startswith("served-")
    assert client.get("/health").get_json()["model_version"] == v2


def test_a_failed_reload_keeps_serving_the_old_model(tmp_path, detect_weights) -> None:
    served = tmp_path / "served.pt"
    shutil.copyfile(detect_weights, served)
    holder = ModelHolder(str(served))
    v1 = holder.get().version
    served.write_bytes(b"half-written")
    assert holder.get().version == v1
    assert "could not be loaded" in holder.status()["model_error"]


def test_setup_answers_while_the_model_loads(tmp_path, detect_weights, monkeypatch) -> None:
    """The load is held until /setup has answered: /setup must not wait for it (Label Studio waits 3 s)."""
    import threading

    import ml_backend.inference.model as model_mod

    real, release = model_mod.load_weights, threading.Event()

    def held(path, cache_dir=None):
        release.wait(120)
        return real(path, cache_dir)

    monkeypatch.setattr(model_mod, "load_weights", held)
    app = new_app(make_settings(tmp_path, detect_weights))
    client = app.test_client()
    answers: list = []
    asking = threading.Thread(target=lambda: answers.append(client.post("/setup", json={"project": "1.1", "schema": RECT_CFG})))
    asking.start()
    asking.join(60)
    try:
        # answered from the checkpoint itself while the model still loads
        assert answers and answers[0].status_code == 200, "/setup waited for the model load"
        assert client.get("/health").get_json()["model_loaded"] is False
    finally:
        release.set()
    app.extensions["ml_backend"].holder.warm_up_in_background().join(120)
    again = client.post("/setup", json={"project": "1.1", "schema": RECT_CFG})
    assert again.status_code == 200 and again.get_json()["model_version"] == answers[0].get_json()["model_version"]


def test_setup_reports_a_load_that_failed_instead_of_the_checkpoints_word(tmp_path, detect_weights, monkeypatch) -> None:
    import ml_backend.inference.model as model_mod

    def broken(path, cache_dir=None):
        raise ModelUnavailableError(f"could not load {path}: CUDA kernels missing (a stand-in)")

    monkeypatch.setattr(model_mod, "load_weights", broken)
    app = new_app(make_settings(tmp_path, detect_weights))
    app.extensions["ml_backend"].holder.warm_up_in_background().join(120)  # the load failed
    client = app.test_client()
    resp = client.post("/setup", json={"project": "1.1", "schema": RECT_CFG})
    assert resp.status_code == 503 and "CUDA kernels missing" in resp.get_json()["error"]


def test_basic_auth(tmp_path, detect_weights) -> None:
    client = new_app(make_settings(tmp_path, detect_weights, BASIC_AUTH_USER="ann", BASIC_AUTH_PASS="s3cret")).test_client()
    assert client.get("/health").status_code == 200  # liveness stays open
    assert client.post("/setup", json={"schema": RECT_CFG}).status_code == 401
    assert client.post("/setup", json={"schema": RECT_CFG}, auth=("ann", "wrong")).status_code == 401
    assert client.post("/setup", json={"schema": RECT_CFG}, auth=("ann", "s3cret")).status_code == 200
    assert client.get("/versions", auth=("ann", "s3cret")).status_code == 200


LABEL = {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": 1, "updated_at": "t"}}


@pytest.mark.parametrize(
    ("env", "headers", "auth", "status"),
    [
        ({"WEBHOOK_SECRET": "hook-s3cret"}, {"X-Webhook-Secret": "hook-s3cret"}, None, 200),
        ({"WEBHOOK_SECRET": "hook-s3cret"}, {}, None, 401),
        ({"WEBHOOK_SECRET": "hook-s3cret"}, {"X-Webhook-Secret": "hook-s3cre"}, None, 401),
        ({"WEBHOOK_SECRET": "hook-s3cret"}, {"X-Webhook-Secret": ""}, None, 401),
        # both set: Label Studio's webhook brings the secret, its train button brings basic auth
        (
            {"WEBHOOK_SECRET": "hook-s3cret", "BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "pw"},
            {"X-Webhook-Secret": "hook-s3cret"},
            None,
            200,
        ),
        ({"WEBHOOK_SECRET": "hook-s3cret", "BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "pw"}, {}, ("ann", "pw"), 200),
        ({"WEBHOOK_SECRET": "hook-s3cret", "BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "pw"}, {}, ("ann", "nope"), 401),
        ({"BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "pw"}, {}, None, 401),
        ({"BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "pw"}, {}, ("ann", "pw"), 200),
        ({}, {}, None, 200),
    ],
)
def test_webhooks_are_checked_against_the_shared_secret(tmp_path, detect_weights, caplog, env, headers, auth, status) -> None:
    app = new_app(make_settings(tmp_path, detect_weights, **env))
    client = app.test_client()
    resp = client.post("/webhook", json=LABEL, headers=headers, auth=auth)
    assert resp.status_code == status
    counted = app.extensions["ml_backend"].training.status(3)["labels_since_training"]
    assert counted == (1 if status == 200 else 0)  # a refused webhook counts nothing
    if status == 401:
        assert ("X-Webhook-Secret" if "WEBHOOK_SECRET" in env else "basic auth") in resp.get_json()["error"]
    assert "hook-s3cret" not in resp.get_data(as_text=True) and "hook-s3cret" not in caplog.text
    if env.get("WEBHOOK_SECRET") and not env.get("BASIC_AUTH_USER"):
        assert client.post("/setup", json={"schema": RECT_CFG}).status_code == 200  # the secret guards /webhook only


@pytest.mark.parametrize(
    ("body", "status"),
    [({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, 200), ({"action": "SOMETHING_NEW"}, 200), ({"project": 1}, 400)],
)
def test_webhook_accepts_events(tmp_path, detect_weights, body, status) -> None:
    client = new_app(make_settings(tmp_path, detect_weights)).test_client()
    assert client.post("/webhook", json=body).status_code == status


def test_webhook_counts_label_events_and_queues_new_tasks(tmp_path, detect_weights) -> None:
    app = new_app(make_settings(tmp_path, detect_weights, RESCORE_MIN_NEW_LABELS=50))
    client = app.test_client()
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 4}, "annotation": {"id": 1}}).get_json()
    assert r["labels_since_scoring"] == 1
    r = client.post(
        "/webhook", json={"action": "ANNOTATIONS_CREATED", "project": {"id": 4}, "annotations": [{"id": 2}, {"id": 3}]}
    ).get_json()
    assert r["labels_since_scoring"] == 3
    r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 4}, "tasks": [{"id": 10}, {"id": 11}]}).get_json()
    assert r["queued_for_scoring"] in (1, 2)  # the worker may already have taken some
    assert app.extensions["ml_backend"].scoring.idle(10)  # no Label Studio configured: skipped, worker alive


def test_huge_payload_is_refused(tmp_path, detect_weights) -> None:
    client = new_app(make_settings(tmp_path, detect_weights)).test_client()
    resp = client.post("/predict", data=b"{" + b" " * (33 * 1024 * 1024) + b"}", content_type="application/json")
    assert resp.status_code == 413


def test_a_controls_model_score_threshold_decides_what_is_shown_and_setup_warns_of_the_rest(tmp_path, detect_weights, shapes) -> None:
    """model_score_threshold overrides SCORE_THRESHOLD for its control; model_* attributes not applied are said in /setup."""
    _, items = shapes
    client = new_app(make_settings(tmp_path, detect_weights, SCORE_THRESHOLD=0.05)).test_client()
    tasks = tasks_for([u for u, _ in items])
    confidences = {}
    for threshold in ("", "0.9"):
        cfg = RECT_CFG.replace('toName="image">', f'toName="image" model_score_threshold="{threshold}" model_obb="true">')
        body = client.post("/setup", json={"project": f"5{len(threshold)}.1", "schema": cfg}).get_json()
        assert body["warnings"] == [f'<RectangleLabels name="label"> model_obb: not applied; {_NOT_APPLIED_MODEL_OBB}']
        results = client.post("/predict", json={"tasks": tasks, "project": f"5{len(threshold)}.1"}).get_json()["results"]
        confidences[threshold] = [r["score"] for res in results for r in res["result"]]
    assert confidences[""] and min(confidences[""]) < 0.9  # SCORE_THRESHOLD=0.05 shows low ones
    assert all(c >= 0.9 for c in confidences["0.9"]) and len(confidences["0.9"]) < len(confidences[""])
    assert "warnings" not in client.post("/setup", json={"project": "53.1", "schema": RECT_CFG}).get_json()


_NOT_APPLIED_MODEL_OBB = "the model's own task decides oriented boxes (an OBB model fills <RectangleLabels> with rotation)"
