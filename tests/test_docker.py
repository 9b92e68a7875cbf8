"""The docker files: compose and Dockerfile checked as data, the entrypoint run for real (no docker needed)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import yaml

from integrations.connect import webhook_url_refusal
from integrations.local_label_studio import free_port
from ml_backend.settings import SPECS, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SERVICES = {"label-studio", "backend", "redis", "worker"}
VOLUMES = {"label-studio-data", "models", "redis-data", "worker-data"}


# -- docker-compose.yml ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _container_ports(service: dict) -> set[int]:
    return {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}


def _named_mounts(service: dict) -> dict[str, str]:
    """Named volume -> mount point (bind mounts left out)."""
    out = {}
    for v in service.get("volumes", []):
        src, dst = str(v).split(":")[:2]
        if not src.startswith((".", "/", "~", "$")):
            out[src] = dst
    return out


def test_compose_has_exactly_the_four_services_and_rq_ones_only_under_the_profile(compose) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert services["redis"]["profiles"] == ["rq"] and services["worker"]["profiles"] == ["rq"]
    assert "profiles" not in services["label-studio"] and "profiles" not in services["backend"]
    for name, svc in services.items():
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"


def test_label_studio_is_pinned_and_accepts_a_backend_on_the_docker_network(compose) -> None:
    ls = compose["services"]["label-studio"]
    assert re.fullmatch(r"heartexlabs/label-studio:1\.23\.\d+", _interpolate(ls["image"], {}))
    assert _interpolate(ls["image"], {"LABEL_STUDIO_IMAGE": "mirror.example/ls:1.23.2"}) == "mirror.example/ls:1.23.2"
    env = _env(ls)
    assert env["USE_DEFAULT_BANNED_SUBNETS"].lower() == "false"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"].lower() == "true"
    assert 8080 in _container_ports(ls)
    assert _named_mounts(ls) == {"label-studio-data": "/label-studio/data"}
    # tokens stay valid across restarts only with a fixed key: required from docker/.env, no default
    assert env["SECRET_KEY"].startswith("${LABEL_STUDIO_SECRET_KEY:?") and _env_example()["LABEL_STUDIO_SECRET_KEY"] == ""


@pytest.mark.parametrize(
    ("existing", "kept"),
    [
        (None, None),  # no docker/.env yet: made from .env.example, with a key
        ("LABEL_STUDIO_API_KEY=tok\nLABEL_STUDIO_SECRET_KEY=\n", None),  # the key line empty: filled
        ("LABEL_STUDIO_API_KEY=tok\n", None),  # an .env of an earlier version, without the line: added
        ("LABEL_STUDIO_API_KEY=tok\nLABEL_STUDIO_SECRET_KEY=mine\n", "mine"),  # set: never changed
    ],
)
def test_init_env_gives_docker_env_a_secret_key_once(tmp_path, existing, kept) -> None:
    for name in ("init-env.sh", ".env.example"):
        (tmp_path / name).write_text((DOCKER / name).read_text())
    if existing is not None:
        (tmp_path / ".env").write_text(existing)
    seen = []
    for _ in range(2):  # a second run changes nothing
        subprocess.run(["sh", str(tmp_path / "init-env.sh")], check=True, capture_output=True, timeout=30)
        text = (tmp_path / ".env").read_text()
        keys = re.findall(r"^LABEL_STUDIO_SECRET_KEY=(.*)$", text, flags=re.M)
        assert len(keys) == 1 and (keys[0] == kept if kept else re.fullmatch(r"[0-9a-f]{64}", keys[0])), text
        seen.append(keys[0])
    assert seen[0] == seen[1]
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0, "it holds secrets: its owner's only"
    if existing:
        assert "LABEL_STUDIO_API_KEY=tok" in text
    else:
        assert set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M)) == set(_env_example())


def test_backend_reaches_label_studio_by_service_name_and_keeps_state_on_the_models_volume(compose) -> None:
    services = compose["services"]
    backend = services["backend"]
    env = _env(backend)
    ls_url = urlparse(env["LABEL_STUDIO_URL"])
    assert ls_url.hostname == "label-studio" and ls_url.port in _container_ports(services["label-studio"])
    assert _container_ports(backend) == {9090}
    assert backend["ports"] == ["${BACKEND_BIND:-127.0.0.1}:${BACKEND_PORT:-9090}:9090"]
    assert (env["HOST"], env["PORT"]) == ("0.0.0.0", "9090")  # inside the container: Label Studio reaches it over the network
    assert _named_mounts(backend) == {"models": env["MODEL_DIR"]} and env["MODEL_DIR"] == "/data"
    assert _interpolate(backend["env_file"], {}) == ".env" and (DOCKER / ".env.example").is_file()
    assert "label-studio" in backend["depends_on"]
    assert "REDIS_URL" not in env, "the backend gets REDIS_URL from .env, only when the rq profile is used"
    backend_url = urlparse(env["BACKEND_URL"])  # `connect`'s default: the backend as Label Studio reaches it
    assert backend_url.port in _container_ports(backend)
    # Label Studio refuses a webhook URL whose host has no dot (Django's URL check), so Label Studio reaches the
    # backend by a network alias with one; the service name alone would get no webhook
    assert backend_url.hostname in backend["networks"]["default"]["aliases"] and "." in backend_url.hostname
    assert webhook_url_refusal(env["BACKEND_URL"]) is None and webhook_url_refusal("http://backend:9090") is not None
    build = backend["build"]
    assert ((DOCKER / build["context"]) / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with ``env`` (what ``docker compose config`` does)."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


@pytest.mark.parametrize(
    ("env", "published"),
    [
        ({}, {"label-studio": {("127.0.0.1", "8080", "8080")}, "backend": {("127.0.0.1", "9090", "9090")}}),
        (
            {"LABEL_STUDIO_BIND": "0.0.0.0", "BACKEND_PORT": "9191"},
            {"label-studio": {("0.0.0.0", "8080", "8080")}, "backend": {("127.0.0.1", "9191", "9090")}},
        ),
    ],
)
def test_ports_are_published_on_loopback_unless_the_operator_chooses_otherwise(compose, env, published) -> None:
    seen = {}
    for name, svc in compose["services"].items():
        ports = {tuple(_interpolate(str(p), env).split(":")) for p in svc.get("ports", [])}
        if ports:
            seen[name] = ports
    assert seen == published


def test_the_backend_in_compose_may_listen_on_the_network_without_auth_only_because_it_says_so(compose) -> None:
    """HOST=0.0.0.0 inside the container is refused without basic auth unless ALLOW_UNAUTHENTICATED=on (ml_backend.access)."""
    from ml_backend.access import Exposure

    backend = compose["services"]["backend"]
    settings = Settings.from_env({k: _interpolate(v, {}) for k, v in _env(backend).items()})
    assert Exposure.of(settings).refusal() is None and Exposure.of(settings).warnings()
    closed = {k: _interpolate(v, {"BACKEND_ALLOW_UNAUTHENTICATED": "off"}) for k, v in _env(backend).items()}
    assert Exposure.of(Settings.from_env(closed)).refusal() is not None  # the operator's choice in docker/.env reaches it


def test_rq_worker_runs_the_same_image_with_its_own_volume(compose) -> None:
    services = compose["services"]
    worker, backend = services["worker"], services["backend"]
    assert worker["image"] == backend["image"] and worker["build"] == backend["build"]
    assert worker["command"] in (["worker"], "worker")
    env = _env(worker)
    assert env["REDIS_URL"] == "redis://redis:6379/0" and urlparse(env["LABEL_STUDIO_URL"]).hostname == "label-studio"
    assert _named_mounts(worker) == {"worker-data": env["MODEL_DIR"]}
    assert worker["healthcheck"] == {"disable": True}, "the image's /health check cannot pass in a worker"
    assert "redis" in worker["depends_on"]
    assert _interpolate(services["redis"]["image"], {}) == "redis:7-alpine" and _named_mounts(services["redis"]) == {"redis-data": "/data"}
    assert worker["env_file"] == backend["env_file"], "the worker reads the same settings file as the backend"


def test_every_named_volume_is_declared_and_used(compose) -> None:
    assert set(compose["volumes"]) == VOLUMES
    used = {name for svc in compose["services"].values() for name in _named_mounts(svc)}
    assert used == VOLUMES
    assert "networks" not in compose, "one default network: Label Studio reaches the backend as http://backend.internal:9090"


def test_compose_variables_are_all_in_env_example() -> None:
    # BACKEND_ENV_FILE names the settings file itself: it comes from the shell (a second stack's own file)
    names = set(re.findall(r"\$\{(\w+)", (DOCKER / "docker-compose.yml").read_text())) - {"BACKEND_ENV_FILE"}
    assert names and names <= set(_env_example())


# -- .env.example ------------------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line)
        if m:
            assert m[1] not in out, f"{m[1]} is set twice"
            out[m[1]] = m[2]
    return out


def test_env_example_lists_every_setting_with_its_default_and_meaning() -> None:
    env = _env_example()
    lines = (DOCKER / ".env.example").read_text().splitlines()
    for spec in SPECS:
        assert env.get(spec.name) == spec.default, spec.name
        comment = lines[lines.index(f"{spec.name}={spec.default}") - 1]
        assert comment.startswith("# ") and spec.help in comment, spec.name
    assert env["BACKEND_PORT"] == "9090" and env["LABEL_STUDIO_API_KEY"] == ""
    assert "cp .env.example .env" in "\n".join(lines[:5])
    Settings.from_env(env)  # the file as shipped is a valid configuration


# -- Dockerfile --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _one(instructions: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in instructions if w == word]
    assert len(found) == 1, f"expected one {word}, found {found}"
    return found[0]


def test_dockerfile_base_user_volume_ports_and_env(dockerfile) -> None:
    args = dict(a.split("=", 1) for w, a in dockerfile if w == "ARG" and "=" in a)
    assert _one(dockerfile, "FROM") == "${PYTHON_IMAGE}" and args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert args["TORCH_VARIANT"] == "cpu"
    user = _one(dockerfile, "USER").split(":")[0]
    assert user not in ("root", "0") and user == "1000"
    env = " ".join(a for w, a in dockerfile if w == "ENV")
    assert "MODEL_DIR=/data" in env and "PYTHONUNBUFFERED=1" in env and "YOLO_CONFIG_DIR=" in env
    assert json.loads(_one(dockerfile, "VOLUME")) == ["/data"]
    assert _one(dockerfile, "EXPOSE") == "9090"
    runs = " ".join(a for w, a in dockerfile if w == "RUN")
    assert "chown -R 1000:1000 /data" in runs
    yolo_dir = re.search(r"YOLO_CONFIG_DIR=(\S+)", env)[1]
    assert yolo_dir.startswith("/home/app") and "/home/app" in runs.split("chown -R 1000:1000", 1)[1]


def test_dockerfile_trusts_extra_ca_certificates_before_it_downloads_anything(dockerfile) -> None:
    """docker/ca-certificates/*.crt join the system store before the first HTTPS download (pip), and every client uses that store."""
    copy = next(i for i, (w, a) in enumerate(dockerfile) if w == "COPY" and a.startswith("docker/ca-certificates/ "))
    first_pip = next(i for i, (w, a) in enumerate(dockerfile) if w == "RUN" and "pip install" in a)
    update = next(i for i, (w, a) in enumerate(dockerfile) if w == "RUN" and "update-ca-certificates" in a)
    assert copy < update < first_pip
    env = " ".join(a for w, a in dockerfile if w == "ENV")
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        assert f"{name}=/etc/ssl/certs/ca-certificates.crt" in env, name
    assert (DOCKER / "ca-certificates" / "README.md").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/ca-certificates/corp.crt"], cwd=ROOT)
    assert ignored.returncode == 0, "certificates dropped there must not be committed by accident"
    dockerignore = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert not any(line.strip("/*") in ("docker", "docker/ca-certificates") or line.endswith(".crt") for line in dockerignore)


def test_dockerfile_healthcheck_uses_python_on_health(dockerfile) -> None:
    check = _one(dockerfile, "HEALTHCHECK")
    cmd = json.loads(check[check.index("CMD") + 3 :])
    assert cmd[0] == "python" and "/health" in cmd[-1]
    compile(cmd[-1], "healthcheck", "exec")


def test_dockerfile_entrypoint_is_the_script(dockerfile) -> None:
    entry = json.loads(_one(dockerfile, "ENTRYPOINT"))
    copies = [a.split() for w, a in dockerfile if w == "COPY"]
    assert ["docker/entrypoint.sh", entry[-1]] in copies
    assert json.loads(_one(dockerfile, "CMD")) == ["serve"]
    assert stat.S_IXUSR & ENTRYPOINT.stat().st_mode, "entrypoint.sh must be executable"


def _torch_install_step(dockerfile) -> str:
    (step,) = [a for w, a in dockerfile if w == "RUN" and "TORCH_VARIANT" in a]
    return step


@pytest.mark.parametrize(
    ("variant", "index_url", "expected_index"),
    [
        ("cpu", "", "https://download.pytorch.org/whl/cpu"),
        ("cuda", "", None),
        ("cuda", "https://example.org/cu126", "https://example.org/cu126"),
    ],
)
def test_dockerfile_torch_step_picks_the_wheel_index_from_the_build_arg(dockerfile, tmp_path, variant, index_url, expected_index) -> None:
    """The install step's shell, run with stand-in pip and python that record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pip", "python"):
        script = bin_dir / tool
        script.write_text(
            f'#!/bin/sh\necho "{tool} $*" >> "$CALLS"\n[ "$1" = install ] && [ "$2" = --index-url ] && cp "$5" "$CALLS.torch"\nexit 0\n'
        )
        script.chmod(0o755)
    (tmp_path / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    calls = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "TORCH_VARIANT": variant, "TORCH_INDEX_URL": index_url}
    proc = subprocess.run(["sh", "-c", _torch_install_step(dockerfile)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    pip_calls = [c for c in calls.read_text().splitlines() if c.startswith("pip ")]
    assert pip_calls[-1] == "pip install -r requirements.txt"
    if expected_index is None:
        assert len(pip_calls) == 1
    else:
        assert pip_calls[0].startswith(f"pip install --index-url {expected_index} -r ")
        pins = Path(f"{calls}.torch").read_text().split()
        assert pins == [r for r in (ROOT / "requirements.txt").read_text().split() if r.startswith(("torch>", "torchvision>"))]


def test_dockerfile_torch_step_refuses_an_unknown_variant(dockerfile, tmp_path) -> None:
    (tmp_path / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    env = {"PATH": "/usr/bin:/bin", "TORCH_VARIANT": "rocm", "TORCH_INDEX_URL": ""}
    proc = subprocess.run(["sh", "-c", _torch_install_step(dockerfile)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "TORCH_VARIANT must be cpu or cuda" in proc.stderr


# -- entrypoint.sh, outside docker ------------------------------------------------------------


def _entry_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "BASIC_AUTH_", "REDIS_URL", "MODEL_"))}
    env.update(
        {"PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"}
    )
    env.update(extra)
    return env


def test_entrypoint_serve_starts_the_real_server_and_health_answers(tmp_path) -> None:
    port = free_port()
    state = tmp_path / "state"  # not there yet: the entrypoint creates it
    log_path = tmp_path / "serve.log"
    env = _entry_env(PORT=str(port), HOST="127.0.0.1", MODEL_DIR=str(state), MODEL_PATH="/nonexistent/weights/best.pt")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        health = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if resp.status_code == 200 and resp.json().get("model_error"):
                    health = resp.json()
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        log_text = log_path.read_text(errors="replace")
        assert health is not None, f"no /health answer within 60 s (exit {proc.poll()}):\n{log_text}"
        assert health["status"] == "UP" and health["model_loaded"] is False
        assert "/nonexistent/weights/best.pt" in health["model_error"]
        assert state.is_dir() and (state / "weights").is_dir()  # `docker compose cp best.pt backend:/data/weights/` needs it
        assert "warning: LABEL_STUDIO_URL is empty" in log_text and "warning: LABEL_STUDIO_API_KEY is empty" in log_text
        # `exec`: the shell became the server, so SIGTERM reaches gunicorn, which stops cleanly (0).
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text(errors="replace")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.mark.parametrize("command", [["serve"], ["worker"], []])
@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_entrypoint_refuses_a_model_dir_it_cannot_write(tmp_path, command, where) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model_dir = blocker / "state" if where == "under-a-file" else blocker
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), *command],
        cwd=ROOT,
        env=_entry_env(MODEL_DIR=str(model_dir), PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"error: MODEL_DIR={model_dir} does not exist or is not writable" in proc.stderr
    assert "volume" in proc.stderr
    assert blocker.read_text() == "not a folder"


def test_entrypoint_passes_other_commands_through() -> None:
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "python", "-c", "print(42)"], cwd=ROOT, env=_entry_env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and proc.stdout == "42\n", proc.stderr
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "sh", "-c", "exit 7"], cwd=ROOT, env=_entry_env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 7


@pytest.mark.parametrize("command", ["connect", "train"])
def test_entrypoint_runs_ml_backend_subcommands(command) -> None:
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), command, "--help"], cwd=ROOT, env=_entry_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m ml_backend {command}") and "--project" in proc.stdout


def test_what_the_readme_promises_about_the_stack_is_in_the_compose_file(compose) -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Deploying next to Label Studio with docker")
    section = readme[start : readme.index("\n## ", start)]
    services, volumes = compose["services"], compose["volumes"]
    for name in ("label-studio-data", "models", "redis-data", "worker-data"):
        assert f"`{name}`" in section and name in volumes
    assert "`http://backend.internal:9090`" in section and "`http://label-studio:8080`" in section
    assert _env(services["backend"])["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert ":8080" in section and 8080 in _container_ports(services["label-studio"])
    assert ":9090" in section and 9090 in _container_ports(services["backend"])
    assert "`/data`" in section and _named_mounts(services["backend"]).get("models") == "/data"
    assert "USE_DEFAULT_BANNED_SUBNETS=false" in section
    assert "--profile rq" in section and services["worker"]["profiles"] == ["rq"]
    for cmd in re.findall(r"^docker compose .*$", section, flags=re.M):
        assert "-f docker/docker-compose.yml" in cmd
    assert all(s.get("restart") == "unless-stopped" for s in services.values())


def test_init_env_also_makes_another_settings_file(tmp_path) -> None:
    """`sh docker/init-env.sh FILE`: a second stack's settings (make docker-check's), docker/.env untouched."""
    target = tmp_path / "second.env"
    before = (DOCKER / ".env").read_text() if (DOCKER / ".env").exists() else None
    subprocess.run(["sh", str(DOCKER / "init-env.sh"), str(target)], check=True, capture_output=True, timeout=30)
    keys = re.findall(r"^LABEL_STUDIO_SECRET_KEY=([0-9a-f]{64})$", target.read_text(), flags=re.M)
    assert len(keys) == 1
    assert ((DOCKER / ".env").read_text() if (DOCKER / ".env").exists() else None) == before
