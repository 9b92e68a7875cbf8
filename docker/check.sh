#!/usr/bin/env bash
# `make docker-check`: the docker deployment proved on this machine, from no engine to the whole loop.
#
#   bash docker/check.sh            engine, base images, then the loop (python -m ml_backend.tools.docker_check)
#   KEEP=1 bash docker/check.sh     leave the stack and the engine running afterwards (to look around)
#
# 1. Engine: uses the docker engine that answers; otherwise installs Debian's docker.io (root,
#    apt-get) when dockerd is missing, the Compose v2 plugin when `docker compose` is missing
#    (Debian bookworm ships only Compose v1, which rejects our compose file's `name:`: the plugin
#    comes from Debian trixie's docker-compose package, a Go binary), and starts dockerd. An
#    engine it started is stopped at the end (by its pid), nothing else.
# 2. Base images: python:3.11-slim, heartexlabs/label-studio:1.23.2 and redis:7-alpine are used
#    when present or pullable; otherwise stand-ins are built from Debian's and PyPI's packages
#    (docker/standins/, on a Debian base made with debootstrap) under al-standin/* names, and the
#    stack is pointed at them with PYTHON_IMAGE, LABEL_STUDIO_IMAGE and REDIS_IMAGE.
# 3. Extra CA certificates: when docker/ca-certificates/ has no *.crt and this machine trusts local
#    CAs (/usr/local/share/ca-certificates/*.crt, e.g. a network that inspects TLS), they are copied
#    there (host-*.crt, ignored by git) so builds inside containers reach the package index.
# 4. The loop (ml_backend/tools/docker_check.py) on a compose project of its own (al-docker-check:
#    its own volumes, settings and ports; a stack of yours is not touched), then `down -v`.
#
# Needs about 12 GB of disk (the CUDA image is ~7.5 GB) and, on 2 cores, about 10 minutes the first
# time (measured: 590 s; images are kept for later runs). The image's default TORCH_VARIANT=cpu needs
# download.pytorch.org; where it does not answer the check builds TORCH_VARIANT=cuda (PyPI's torch,
# which runs on a CPU too). TORCH_VARIANT=cpu or cuda in the environment forces one.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${DOCKER_CHECK_DIR:-$PWD/.cache/docker-check}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$W"
say() { printf '== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

STARTED_DOCKERD=""
cleanup() {
    if [ -n "$STARTED_DOCKERD" ] && [ -z "${KEEP:-}" ]; then
        say "stopping the docker engine this check started (pid $STARTED_DOCKERD)"
        kill "$STARTED_DOCKERD" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
        rm -f "$W/dockerd.pid"
    fi
}
trap cleanup EXIT

apt_install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "installing $* needs root and apt-get: install them yourself and run again"
    say "installing $* (apt-get)"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@"; } \
        >"$W/apt.log" 2>&1 || { tail -20 "$W/apt.log"; die "apt-get install $* failed (log: $W/apt.log)"; }
}

# -- 1. engine -------------------------------------------------------------------------------------
T0=$(date +%s)
if docker info >/dev/null 2>&1; then
    say "docker engine: already running ($(docker version -f '{{.Server.Version}}'))"
else
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io iptables
    if [ -s "$W/dockerd.pid" ] && kill -0 "$(cat "$W/dockerd.pid")" 2>/dev/null; then
        die "a dockerd started by an earlier check (pid $(cat "$W/dockerd.pid")) runs but does not answer: kill it and run again"
    fi
    say "starting dockerd (log: $W/dockerd.log)"
    dockerd >"$W/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    echo "$STARTED_DOCKERD" >"$W/dockerd.pid"
    for i in $(seq 90); do docker info >/dev/null 2>&1 && break; kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$W/dockerd.log"; die "dockerd did not start (log: $W/dockerd.log)"; }
    say "docker engine $(docker version -f '{{.Server.Version}}') up after ${i}s"
fi
if ! docker compose version >/dev/null 2>&1; then
    say "installing the Compose v2 and buildx CLI plugins from Debian trixie's packages"
    D="$W/trixie"; mkdir -p "$D/lists/partial" "$D/debs"
    echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' >"$D/sources.list"
    O=(-o "Dir::Etc::SourceList=$D/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$D/lists")
    apt-get "${O[@]}" update -q >"$W/apt-trixie.log" 2>&1 || { tail -5 "$W/apt-trixie.log"; die "could not read Debian trixie's package lists"; }
    (cd "$D/debs" && apt-get "${O[@]}" download docker-compose docker-buildx >>"$W/apt-trixie.log" 2>&1) || die "could not download docker-compose/docker-buildx"
    for d in "$D"/debs/*.deb; do dpkg-deb -x "$d" "$D/x"; done
    mkdir -p /usr/local/lib/docker/cli-plugins
    cp "$D/x/usr/libexec/docker/cli-plugins/docker-compose" "$D/x/usr/libexec/docker/cli-plugins/docker-buildx" /usr/local/lib/docker/cli-plugins/
fi
say "compose: $(docker compose version --short); buildx: $(docker buildx version 2>/dev/null | cut -d' ' -f2 || echo none)"
ENGINE_S=$(($(date +%s) - T0))

# -- 2. extra CA certificates ---------------------------------------------------------------------
if ! ls docker/ca-certificates/*.crt >/dev/null 2>&1 && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    for c in /usr/local/share/ca-certificates/*.crt; do cp "$c" "docker/ca-certificates/host-$(basename "$c")"; done
    say "copied this machine's CA certificates into docker/ca-certificates/: $(cd docker/ca-certificates && ls -- *.crt | tr '\n' ' ')"
fi

# -- 3. base images: the real ones, else stand-ins --------------------------------------------------
T0=$(date +%s)
have() { docker image inspect "$1" >/dev/null 2>&1; }
hub_answers() {  # Docker Hub's registry answers at all (any HTTP status), within 15 s
    if command -v curl >/dev/null 2>&1; then curl -s -o /dev/null -m 15 https://registry-1.docker.io/v2/; else return 0; fi
}
pullable() {  # present, or pulled (no time limit: a big image on a slow line is still reachable)
    have "$1" && return 0
    case "${1%%/*}" in
        *.*|*:*) ;;                     # another registry (a mirror): just try it
        *) hub_answers || return 1 ;;   # Docker Hub: not even asked when it does not answer
    esac
    docker pull -q "$1" >"$W/pull.log" 2>&1
}
standin_base() {
    have al-standin/debian:bookworm && return
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    say "making the Debian base image al-standin/debian:bookworm (debootstrap, about 2 minutes)"
    rm -rf "$W/rootfs"
    debootstrap --variant=minbase bookworm "$W/rootfs" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
        || { tail -20 "$W/debootstrap.log"; die "debootstrap failed (log: $W/debootstrap.log)"; }
    tar -C "$W/rootfs" -c . | docker import - al-standin/debian:bookworm >/dev/null
    rm -rf "$W/rootfs"
}
standin() {  # name, real image, stand-in tag
    if pullable "$2"; then echo "$2"; return; fi
    if ! have "$3"; then
        standin_base >&2
        say "building the stand-in $3 for $2 (docker/standins/$1)" >&2
        docker build -q -t "$3" --build-arg PYTHON_IMAGE="${PYTHON_IMAGE:-al-standin/python:3.11-slim}" -f "docker/standins/$1/Dockerfile" docker >"$W/standin-$1.log" 2>&1 \
            || { tail -30 "$W/standin-$1.log" >&2; die "building the stand-in for $2 failed"; }
    fi
    echo "$3"
}
# PYTHON_IMAGE, LABEL_STUDIO_IMAGE, REDIS_IMAGE in the environment (a registry mirror) are tried first.
PYTHON_IMAGE=$(standin python "${PYTHON_IMAGE:-python:3.11-slim}" al-standin/python:3.11-slim)
LABEL_STUDIO_IMAGE=$(standin label-studio "${LABEL_STUDIO_IMAGE:-heartexlabs/label-studio:1.23.2}" al-standin/label-studio:1.23.2)
REDIS_IMAGE=$(standin redis "${REDIS_IMAGE:-redis:7-alpine}" al-standin/redis:7)
export PYTHON_IMAGE LABEL_STUDIO_IMAGE REDIS_IMAGE
say "images: $PYTHON_IMAGE, $LABEL_STUDIO_IMAGE, $REDIS_IMAGE (base images ready after $(($(date +%s) - T0))s)"

# -- 4. the loop -----------------------------------------------------------------------------------
[ -x "$PY" ] || die "$PY not found: run make setup first (make docker-check does)"
ARGS=(--workdir "$W" --engine-seconds "$ENGINE_S")
[ -n "${KEEP:-}" ] && ARGS+=(--keep)
"$PY" -m ml_backend.tools.docker_check "${ARGS[@]}" "$@"
