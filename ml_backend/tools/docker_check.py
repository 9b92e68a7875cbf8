"""The docker deployment checked for real: our image and compose stack, and the whole loop inside them.

``make docker-check`` (``docker/check.sh``) readies a docker engine and the base images, then runs
this: it follows the README's deployment section on a compose project of its own
(``al-docker-check``: own volumes, settings file and ports, so a stack of the user's is never
touched) and checks, against the containerised Label Studio:

1. ``docker/Dockerfile`` builds (timed, sized); ``up -d`` starts Label Studio and the backend, which
   answers ``/health`` without weights and says it could not get them; Docker's health check says
   ``healthy``.
2. A Label Studio account signed up through its web form, a personal access token put in the
   settings file, starter weights copied onto the ``models`` volume with ``docker compose cp`` (as
   docker/README.md says), ``up -d`` again: the backend serves them.
3. A project with its own classes and uploaded images; ``connect`` and ``score`` run with
   ``docker compose exec backend``; every task gets pre-annotations and a queue position.
4. Labels made through Label Studio's API reach ``/webhook`` (with basic auth and a webhook secret
   set); the threshold starts a retraining run in a child process of the backend; ``kill -9`` of the
   backend container mid-run: Docker restarts it, the project still serves its model, the run is
   done again; the new model is promoted and the queue re-scored.
5. ``REDIS_URL`` set and the ``rq`` profile started: the next run is an RQ job on the ``worker``
   service, promoted, re-scored.
6. ``docker compose restart backend``, ``kill -9`` of the backend container's main process, and
   ``down`` then ``up -d``: the labels counted, the served version, the scores and Label Studio's
   data are the same afterwards.
7. Every process of the backend and worker runs as uid 1000; no service's log holds the token,
   the basic auth password or the webhook secret.

It writes ``report.json`` in ``--workdir`` (times, image size, versions, what is a stand-in) and
exits non-zero at the first check that fails, saying which. Run it through ``make docker-check``
(docker/README.md); ``--keep`` leaves the stack running.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import requests

from integrations.label_studio import LabelStudioClient
from integrations.local_label_studio import free_port
from integrations.queue_view import serving_order
from ml_backend.tools.synthetic import ls_box_result, make_image

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
PROJECT = "al-docker-check"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Circle"/><Label value="Square"/><Label value="Triangle"/>
  </RectangleLabels>
</View>"""
LABELS = {0: "Circle", 1: "Square", 2: "Triangle"}
THRESHOLD = 5  # labels per retraining run (connect --retrain-threshold)
# The loop's settings on top of docker/.env.example: small images and short runs on a CPU, and every
# run served (PROMOTION=always): the check is about the loop around a promotion inside the
# containers; the promotion rule itself is tested in tests/training/test_promotion.py.
SETTINGS = {
    "MODEL_PATH": "/data/weights/starter.pt",
    "DEVICE": "cpu",
    "IMGSZ": "128",
    "SCORE_THRESHOLD": "0.35",
    "TRAIN_IMGSZ": "128",
    "TRAIN_EPOCHS": "10",
    "TRAIN_VAL_FRACTION": "0.3",
    "AL_CLUSTERS": "3",
    "PROMOTION": "always",
    "LOG_LEVEL": "INFO",
}

T = TypeVar("T")
# Run inside the backend container: SIGKILL to the children of its init (docker-init -> the server).
KILL_MAIN_PROCESS = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    if stat.rpartition(")")[2].split()[1] == "1":
        os.kill(int(pid), 9)
"""


class CheckFailed(AssertionError):
    """A check of the deployment failed; the message says which and what was seen."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, step: float = 1.0) -> T:
    """``probe()``'s first truthy value, polled every ``step`` s; CheckFailed after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (requests.RequestException, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(step)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what} (last seen: {last!r})")


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def write_settings(path: Path, values: dict[str, str]) -> None:
    """docker/.env.example with ``values`` set (lines replaced in place, new keys appended): a user's ``cp`` and edit."""
    lines = (path.read_text() if path.exists() else ENV_EXAMPLE.read_text()).splitlines()
    todo = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0]
        if "=" in line and not line.startswith("#") and key in todo:
            lines[i] = f"{key}={todo.pop(key)}"
    lines += [f"{k}={v}" for k, v in todo.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


@dataclass
class Stack:
    """Our compose file, as a project of its own with its own settings file."""

    workdir: Path
    env: dict[str, str]
    settings_file: Path
    image: str
    log: list[str] = field(default_factory=list)

    def compose(self, *args: str, rq: bool = False, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
        profile = ["--profile", "rq"] if rq else []
        cmd = ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), "--env-file", str(self.settings_file), *profile, *args]
        self.log.append(" ".join(cmd))
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CheckFailed(
                f"`docker compose {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def container(self, service: str) -> str:
        out = self.compose("ps", "-q", service).stdout.split()
        expect(len(out) == 1, f"expected one {service} container, got {out}")
        return out[0]

    def inspect(self, service: str, fmt: str) -> str:
        return subprocess.run(
            ["docker", "inspect", "-f", fmt, self.container(service)], capture_output=True, text=True, check=True
        ).stdout.strip()

    def health_status(self, service: str) -> str:
        return self.inspect(service, "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}")


@dataclass
class Check:
    workdir: Path
    stack: Stack
    ls_url: str
    backend_url: str
    auth: tuple[str, str]
    secret_values: dict[str, str]
    report: dict[str, Any] = field(default_factory=dict)
    client: LabelStudioClient | None = None
    project: int = 0
    truth: dict[int, list[dict]] = field(default_factory=dict)
    labeled: list[int] = field(default_factory=list)
    earlier_logs: list[str] = field(default_factory=list)  # the services' logs before a `down` removed them

    # -- small helpers ---------------------------------------------------------------------------
    def step(self, text: str) -> None:
        print(f"-- {text}", flush=True)

    def backend(self, path: str, **params: Any) -> dict:
        r = requests.get(f"{self.backend_url}{path}", params=params, auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def health(self) -> dict:
        return requests.get(f"{self.backend_url}/health", timeout=5).json()

    def training(self) -> dict:
        return self.backend("/training", project=self.project)

    def exec_backend(self, *cmd: str) -> str:
        out = self.stack.compose("exec", "-T", "backend", *cmd, timeout=900)
        return out.stdout + out.stderr

    # -- 1. build and start ----------------------------------------------------------------------
    def build_and_start(self) -> None:
        self.step("building the backend image from docker/Dockerfile")
        t0 = time.monotonic()
        self.stack.compose("build", "backend", timeout=3600)
        self.report["build_seconds"] = round(time.monotonic() - t0)
        image = self.stack.image
        size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True, check=True).stdout
        self.report["image"] = {"name": image, "bytes": int(size), "gb": round(int(size) / 1e9, 2)}
        torch = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.report["image"]["torch"] = torch
        print(f"   built in {self.report['build_seconds']} s: {image}, {self.report['image']['gb']} GB, torch {torch}", flush=True)

        self.step("docker compose up -d (Label Studio and the backend, no token, no weights yet)")
        t0 = time.monotonic()
        self.stack.compose("up", "-d", "--no-build")
        wait_for("the backend's /health", self.health, 180)
        self.report["up_to_health_seconds"] = round(time.monotonic() - t0, 1)
        # it answers while it tries the weights, then says why it has none
        health = wait_for("/health to say the weights could not be had", lambda: (h := self.health()).get("model_error") and h, 120)
        expect(not health["model_loaded"] and "starter.pt" in health["model_error"], f"/health should name the missing weights: {health}")
        wait_for("Label Studio's /health", lambda: requests.get(f"{self.ls_url}/health", timeout=5).ok, 300)
        self.report["up_to_label_studio_seconds"] = round(time.monotonic() - t0, 1)
        wait_for(
            "Docker's health check of the backend to say healthy", lambda: self.stack.health_status("backend") == "healthy", 240, step=2
        )
        self.report["up_to_healthy_seconds"] = round(time.monotonic() - t0, 1)
        print(
            f"   /health after {self.report['up_to_health_seconds']} s (without weights: {health.get('model_error', '')[:120]}), "
            f"healthy after {self.report['up_to_healthy_seconds']} s, Label Studio after {self.report['up_to_label_studio_seconds']} s",
            flush=True,
        )

    # -- 2. account, token, weights --------------------------------------------------------------
    def sign_up_and_serve_weights(self, weights: Path) -> None:
        self.step("signing up in Label Studio, a personal access token into the settings file")
        email, password = "checker@example.com", secrets.token_urlsafe(12)
        s = requests.Session()
        s.get(f"{self.ls_url}/user/signup/", timeout=30)
        r = s.post(
            f"{self.ls_url}/user/signup/",
            data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
            headers={"Referer": f"{self.ls_url}/user/signup/"},
            allow_redirects=False,
            timeout=60,
        )
        expect(r.status_code in (301, 302), f"Label Studio's sign-up form answered {r.status_code}: {r.text[:300]}")
        r = s.post(
            f"{self.ls_url}/api/token/", headers={"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": self.ls_url + "/"}, timeout=30
        )
        expect(r.status_code == 201, f"could not create a personal access token ({r.status_code}): {r.text[:300]}")
        token = r.json()["token"]
        self.secret_values["token"] = token
        login = self.workdir / "label-studio-login"  # to look at it in a browser (--keep)
        login.write_text(f"{email}\n{password}\n")
        login.chmod(0o600)
        write_settings(self.stack.settings_file, {"LABEL_STUDIO_API_KEY": token})
        self.client = LabelStudioClient(self.ls_url, token)

        self.step("the weights onto the models volume (docker compose cp, as docker/README.md says), up -d again")
        self.stack.compose("cp", str(weights), "backend:/data/weights/starter.pt")
        t0 = time.monotonic()
        self.stack.compose("up", "-d", "--no-build")
        health = wait_for("the backend to serve the weights", lambda: (h := self.health()).get("model_loaded") and h, 240)
        self.report["recreate_to_model_seconds"] = round(time.monotonic() - t0, 1)
        self.report["base_version"] = health["model_version"]
        print(f"   serving {health['model_version']} after {self.report['recreate_to_model_seconds']} s", flush=True)

    # -- 3. project, connect, score --------------------------------------------------------------
    def project_connected_and_scored(self, n_images: int) -> None:
        assert self.client is not None
        self.step(f"a project with its own classes and {n_images} uploaded images; connect and score inside the backend container")
        rng = np.random.default_rng(7)
        img_dir = self.workdir / "images"
        img_dir.mkdir(exist_ok=True)
        truth, paths = {}, []
        for i in range(n_images):
            scene = make_image(rng, 320, int(320 * rng.uniform(0.7, 1.0)))
            p = img_dir / f"shapes_{i:03d}.jpg"
            scene.image.save(p, quality=92)
            paths.append(str(p))
            truth[p.name] = ls_box_result(scene, LABELS)
        self.project = int(self.client.create_project("docker check", CONFIG)["id"])
        self.client.upload_files(self.project, paths)
        for t in self.client.list_tasks(self.project):
            self.truth[int(t["id"])] = next(v for k, v in truth.items() if str(t["data"]["image"]).endswith(k))
        expect(len(self.truth) == n_images, f"{len(self.truth)} tasks for {n_images} images")

        out = self.exec_backend(
            "python", "-m", "ml_backend", "connect", "--project", str(self.project), "--retrain-threshold", str(THRESHOLD)
        )
        print("   " + out.strip().replace("\n", "\n   "), flush=True)
        ml = self.client.list_ml_backends(self.project)
        expect(len(ml) == 1 and ml[0]["url"].rstrip("/") == "http://backend.internal:9090", f"Label Studio's ML backends: {ml}")
        hooks = self.client.get("/api/webhooks/", params={"project": self.project})
        expect(any(h["url"].startswith("http://backend.internal:9090/webhook") for h in hooks), f"webhooks: {hooks}")
        out = self.exec_backend("python", "-m", "ml_backend", "score", "--project", str(self.project))
        print("   " + out.strip().splitlines()[-1], flush=True)
        self.report["pre_annotations"] = self.queue_checked(self.report["base_version"])

    def queue_checked(self, version: str) -> dict:
        """Every task has one prediction of ``version``; the scores are that version's; Label Studio serves the queue's head."""
        assert self.client is not None
        tasks = self.client.list_tasks(self.project)
        ours = {int(t["id"]): [p for p in t.get("predictions", []) if p.get("model_version") == version] for t in tasks}
        missing = [tid for tid, p in ours.items() if len(p) != 1]
        expect(not missing, f"tasks without exactly one prediction of {version}: {missing}")
        regions = sum(len(p[0]["result"]) for p in ours.values())
        expect(regions > 0, f"no pre-annotated region at all from {version}")
        scores = self.backend("/scores", project=self.project)["scores"]
        expect(
            {s["model_version"] for s in scores} == {version},
            f"scores of versions { ({s['model_version'] for s in scores}) }, not {version}",
        )
        expect(len(scores) == len(tasks), f"{len(scores)} scores for {len(tasks)} tasks")
        columns = [k for k in tasks[0]["data"] if k != "image"]
        expect(bool(columns), f"no score columns in the task data: {tasks[0]['data']}")
        # Label Studio serves, from the cluster this annotator labeled least, the highest priority (docs/queue.md)
        head = self.client.next_task(self.project)["id"]
        queue = serving_order(
            [(s["task"], s["cluster"], s["priority"]) for s in scores if not s["labeled"]],
            solved=Counter(s["cluster"] for s in scores if s["labeled"]),
        )
        expect(bool(queue) and head == queue[0], f"Label Studio serves task {head}, the scores' order starts {queue[:5]}")
        print(
            f"   {len(tasks)} tasks, {regions} pre-annotated boxes of {version}; columns {columns}; Label Studio serves task {head}",
            flush=True,
        )
        return {"version": version, "tasks": len(tasks), "regions": regions, "columns": columns, "next_task": head}

    # -- 4/5. labels -> webhook -> training -> promotion -> re-score ----------------------------
    def label(self, n: int) -> None:
        """``n`` tasks labeled in the order Label Studio serves them (its ``/next``), each with its true boxes."""
        assert self.client is not None
        for _ in range(n):
            tid = int(self.client.next_task(self.project)["id"])
            self.client.create_annotation(tid, self.truth[tid])
            self.labeled.append(tid)

    def kill_backend(self) -> None:
        """``kill -9`` of the backend container's main process, then Docker's restart policy brings it back.

        Sent from inside the container (as its user), to the process the init runs (the server): a pid
        seen from the host may belong to another namespace (Docker Desktop, a rootless engine), and
        ``docker kill`` counts as a stop by hand, which the restart policy leaves stopped.
        """
        restarts = int(self.stack.inspect("backend", "{{.RestartCount}}"))
        self.stack.compose("exec", "-T", "backend", "python", "-c", KILL_MAIN_PROCESS, rq=True, check=False)
        wait_for("Docker to restart the killed backend", lambda: int(self.stack.inspect("backend", "{{.RestartCount}}")) > restarts, 120)

    def retrain(self, where: str, rq: bool = False, kill_mid_run: bool = False) -> dict:
        before = self.training()
        runs, version = before["runs"], before["model_version"]
        self.step(f"{THRESHOLD} labels through Label Studio's API -> webhooks -> a run ({where}) -> promotion -> re-scored queue")
        t0 = time.monotonic()
        self.label(THRESHOLD)
        wait_for("the run to start", lambda: (s := self.training())["state"] in ("queued", "training") or s["runs"] > runs, 120)
        if kill_mid_run:  # a crash mid-training: the served model stays, the run is done again after the restart
            wait_for("the run to be training", lambda: self.training()["state"] == "training", 120, step=0.2)
            self.kill_backend()
            wait_for("the backend to serve again", lambda: self.health().get("model_loaded"), 300)
            now = self.training()
            expect(now["model_version"] == version, f"after kill -9 mid-run the project serves {now['model_version']}, not {version}")
            print(f"   kill -9 of the backend mid-run: restarted, still serving {version}, the run is {now['state']}", flush=True)
        done = wait_for(
            "the run to end", lambda: (s := self.training())["state"] in ("idle", "failed") and s["runs"] > runs and s, 900, step=2
        )
        expect(done["state"] == "idle", f"the run failed: {done.get('message')}")
        last = done["last_run"]
        expect(bool(last.get("promoted")) and done["model_version"] == last["version"] != version, f"not promoted: {last.get('decision')}")
        wait_for(
            "predictions of the new version on every task and its scores",
            lambda: (
                self.client is not None
                and self.client.get_project(self.project)["model_version"] == last["version"]
                and {s["model_version"] for s in self.backend("/scores", project=self.project)["scores"]} == {last["version"]}
            ),
            300,
            step=2,
        )
        queue = self.queue_checked(last["version"])
        if rq:  # the run was the worker's: its log shows the job done
            worker = self.stack.compose("logs", "--no-color", "worker", rq=True).stdout
            expect("Job OK" in worker, f"the worker's log shows no finished job:\n{worker[-1500:]}")
        seconds = round(time.monotonic() - t0, 1)
        print(f"   {where}: {last['version']} served ({last.get('decision', '')[:100]}); labels to re-scored queue {seconds} s", flush=True)
        return {
            "version": last["version"],
            "decision": last.get("decision"),
            "seconds": seconds,
            "queue": queue,
            "reason": done.get("reason"),
        }

    def use_rq(self) -> None:
        self.step("REDIS_URL in the settings file, docker compose --profile rq up -d (Redis and the worker)")
        write_settings(self.stack.settings_file, {"REDIS_URL": "redis://redis:6379/0"})
        self.stack.compose("up", "-d", "--no-build", rq=True)
        wait_for("the backend to serve again", lambda: self.health().get("model_loaded"), 240)
        wait_for("the worker to listen", lambda: "Listening on" in self.stack.compose("logs", "worker", rq=True).stdout, 120, step=2)

    # -- 6. nothing lost -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        assert self.client is not None
        t = self.training()
        scores = sorted(
            (s["task"], s["model_version"], round(float(s["priority"]), 6), s["labeled"])
            for s in self.backend("/scores", project=self.project)["scores"]
        )
        tasks = self.client.list_tasks(self.project)
        return {
            "labels_since_training": t["labels_since_training"],
            "runs": t["runs"],
            "model_version": t["model_version"],
            "versions": self.backend("/versions", project=self.project)["versions"],
            "scores": scores,
            "annotations": sorted((int(x["id"]), len(x.get("annotations") or [])) for x in tasks),
        }

    def scores_settled(self) -> bool:
        """The scores mark as labeled exactly the tasks labeled here (a label's refresh of them runs after its webhook)."""
        scores = self.backend("/scores", project=self.project)["scores"]
        return {s["task"] for s in scores if s["labeled"]} == set(self.labeled)

    def same_after(self, what: str, action: Callable[[], None]) -> float:
        before = self.snapshot()
        t0 = time.monotonic()
        action()
        wait_for("the backend to serve again", lambda: self.health().get("model_loaded"), 300)
        seconds = round(time.monotonic() - t0, 1)
        after = wait_for("the training state to be read back", self.snapshot, 60)
        diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        expect(not diff, f"after {what}, changed: {json.dumps(diff)[:1500]}")
        print(
            f"   after {what}: the same ({after['labels_since_training']} labels counted, {after['model_version']} served, {len(after['scores'])} scores); serving again after {seconds} s",
            flush=True,
        )
        return seconds

    def nothing_lost(self) -> None:
        self.step("two more labels (below the threshold), then restart, kill -9 and down/up: nothing lost")
        pending = self.training()["labels_since_training"]
        self.label(2)
        wait_for("2 more labels counted", lambda: self.training()["labels_since_training"] == pending + 2, 120)
        wait_for("the scores to mark every labeled task", self.scores_settled, 120)
        times = {}

        def restart() -> None:
            self.stack.compose("restart", "backend", rq=True)

        times["restart"] = self.same_after("docker compose restart backend", restart)

        times["kill_9"] = self.same_after("kill -9 of the backend container's main process", self.kill_backend)

        def down_up() -> None:
            self.earlier_logs.append(self.stack.compose("logs", "--no-color", rq=True).stdout)
            self.stack.compose("down", rq=True)
            self.stack.compose("up", "-d", "--no-build", rq=True)
            wait_for("Label Studio after up", lambda: requests.get(f"{self.ls_url}/health", timeout=5).ok, 300)

        times["down_up"] = self.same_after("docker compose down and up -d (volumes kept)", down_up)
        wait_for("Docker's health check to say healthy again", lambda: self.stack.health_status("backend") == "healthy", 240, step=2)
        self.report["recovery_seconds"] = times

    # -- 7. users and logs -----------------------------------------------------------------------
    def users_and_logs(self) -> None:
        self.step("every backend and worker process runs as uid 1000; the logs hold no secret")
        uids = {}
        for service in ("backend", "worker"):
            out = self.stack.compose(
                "exec",
                "-T",
                service,
                "sh",
                "-c",
                "for p in /proc/[0-9]*; do awk '/^Uid:/{print $2}' \"$p/status\"; done 2>/dev/null | sort -u",
                rq=True,
            ).stdout.split()
            uids[service] = sorted(set(out))
            expect(out and set(out) == {"1000"}, f"{service}'s processes run as uids {out}, not only 1000")
        logs = "".join(self.earlier_logs) + self.stack.compose("logs", "--no-color", rq=True).stdout
        leaked = [name for name, value in self.secret_values.items() if value in logs]
        expect(not leaked, f"the logs hold the {', '.join(leaked)}")
        self.report["uids"] = uids
        self.report["log_lines"] = logs.count("\n")
        print(f"   uids {uids}; {self.report['log_lines']} log lines without the token, password or secret", flush=True)


def _stack_env(settings_file: Path) -> dict[str, str]:
    """The environment compose runs in: this process's (PYTHON_IMAGE, LABEL_STUDIO_IMAGE, REDIS_IMAGE from
    docker/check.sh), without backend settings that would override the settings file's."""
    # the shell's values would win over the settings file's (compose's order): only the image names pass
    names = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#")}
    passed = {"PYTHON_IMAGE", "LABEL_STUDIO_IMAGE", "REDIS_IMAGE"}
    env = {k: v for k, v in os.environ.items() if (k not in names or k in passed) and not k.startswith("COMPOSE_")}
    env.update(BACKEND_ENV_FILE=str(settings_file), COMPOSE_PROJECT_NAME=PROJECT)
    return env


def torch_variant(asked: str) -> str:
    """``cpu`` or ``cuda``; ``auto``: cpu when PyTorch's CPU wheel index answers, else cuda (PyPI's torch, which runs on a CPU too)."""
    if asked != "auto":
        return asked
    try:
        requests.head("https://download.pytorch.org/whl/cpu/", timeout=10)
        return "cpu"
    except requests.RequestException:
        print("   download.pytorch.org is out of reach: building TORCH_VARIANT=cuda (PyPI's torch; runs on this CPU)", flush=True)
        return "cuda"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ml_backend.tools.docker_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "docker-check")
    p.add_argument("--images", type=int, default=16, help="images in the check's project")
    p.add_argument("--torch-variant", default=os.environ.get("TORCH_VARIANT", "auto"), choices=("auto", "cpu", "cuda"))
    p.add_argument("--engine-seconds", type=float, default=None, help="(from docker/check.sh) seconds it took to ready the engine")
    p.add_argument("--keep", action="store_true", help="leave the stack running (docker compose -p al-docker-check ... down -v removes it)")
    args = p.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    from ml_backend.tools.starter import train_starter_model

    print("-- a starter model of the check's classes (trained on this machine on the first run, as `make demo` does)", flush=True)
    weights = train_starter_model(workdir / "starter", kind="detect", epochs=60, imgsz=128, n_train=160, n_val=40)

    settings_file = workdir / "settings.env"
    settings_file.unlink(missing_ok=True)
    ls_port, backend_port = free_port(), free_port()
    user, password, secret = "checker", secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    variant = torch_variant(args.torch_variant)
    write_settings(
        settings_file,
        {
            **SETTINGS,
            "LABEL_STUDIO_PORT": str(ls_port),
            "BACKEND_PORT": str(backend_port),
            "TORCH_VARIANT": variant,
            "BASIC_AUTH_USER": user,
            "BASIC_AUTH_PASS": password,
            "WEBHOOK_SECRET": secret,
        },
    )
    # Label Studio's SECRET_KEY as the docs make it: docker/init-env.sh
    subprocess.run(["sh", str(ROOT / "docker" / "init-env.sh"), str(settings_file)], check=True, capture_output=True)
    ls_key = next(line.split("=", 1)[1] for line in settings_file.read_text().splitlines() if line.startswith("LABEL_STUDIO_SECRET_KEY="))
    env = _stack_env(settings_file)
    stack = Stack(workdir, env, settings_file, image=f"label-studio-al-backend:{variant}")
    check = Check(
        workdir,
        stack,
        f"http://127.0.0.1:{ls_port}",
        f"http://127.0.0.1:{backend_port}",
        (user, password),
        {"basic auth password": password, "webhook secret": secret, "Label Studio's SECRET_KEY": ls_key},
    )
    report = check.report
    report.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        engine=subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True).stdout.strip(),
        compose=subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True).stdout.strip(),
        engine_seconds=args.engine_seconds,
        images={k: env.get(k, "(default)") for k in ("PYTHON_IMAGE", "LABEL_STUDIO_IMAGE", "REDIS_IMAGE")},
        torch_variant=variant,
        cpus=os.cpu_count(),
    )
    ok = False
    try:
        stack.compose("down", "-v", rq=True, check=False)  # a previous run's leftovers
        check.build_and_start()
        check.sign_up_and_serve_weights(Path(weights))
        check.project_connected_and_scored(args.images)
        report["child_process_run"] = check.retrain("a child process of the backend, killed mid-run", kill_mid_run=True)
        check.use_rq()
        report["rq_run"] = check.retrain("an RQ job on the worker service", rq=True)
        check.nothing_lost()
        check.users_and_logs()
        ok = True
    except Exception as exc:  # a failed check, or anything else on the way: said, with the services' logs
        report["failed"] = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
        print(f"\nFAILED: {report['failed']}", file=sys.stderr, flush=True)
        logs = stack.compose("logs", "--no-color", "--tail", "60", rq=True, check=False).stdout
        (workdir / "compose-logs.txt").write_text(logs)
        print(f"(the services' last log lines: {workdir / 'compose-logs.txt'})", file=sys.stderr)
    finally:
        report["total_seconds"] = round(time.monotonic() - started)
        report["passed"] = ok
        (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        if not args.keep:
            stack.compose("down", "-v", rq=True, check=False)
        shutil.rmtree(workdir / "images", ignore_errors=True)
    print(f"\n{'PASSED' if ok else 'FAILED'} in {report['total_seconds']} s; report: {workdir / 'report.json'}", flush=True)
    if args.keep:
        print(
            f"The stack is up (--keep): Label Studio {check.ls_url}/projects/{check.project}/data, log in with "
            f"{workdir / 'label-studio-login'}; remove it with: BACKEND_ENV_FILE={settings_file} docker compose -p {PROJECT} "
            f"-f {COMPOSE_FILE} --env-file {settings_file} --profile rq down -v",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
