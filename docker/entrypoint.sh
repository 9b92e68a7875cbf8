#!/bin/sh
# Entrypoint of the backend image (docker/Dockerfile); also runs outside docker:
#   PYTHON=.venv/bin/python MODEL_DIR=/tmp/state sh docker/entrypoint.sh serve
#
#   serve (default)   the HTTP backend on 0.0.0.0:${PORT:-9090}
#   worker [--burst]  an RQ training worker (needs REDIS_URL)
#   connect|score|train|bench|simulate|... ARGS
#                     python -m ml_backend <command> ARGS
#   anything else     run as given (e.g. `python -c ...`, `sh`)
#
# `python -m ml_backend serve` runs gunicorn with ONE worker process (the model is loaded once
# per worker, so more workers would only multiply memory) and gthread threads for concurrent
# requests. Training never runs in that web worker: it runs in a child process of the server
# (LocalRunner) or, with REDIS_URL, as an RQ job in a `worker` container, so /health and /predict
# keep answering during a run. Scale by running more containers, not more gunicorn workers.
set -eu

PYTHON="${PYTHON:-python}"

# MODEL_DIR holds all state (image cache, model versions, SQLite): it must be a folder this user
# can write, normally the volume mounted at /data. Create it when possible (a sub-folder of the
# volume), then prove it is writable with a real file (catches read-only mounts and volumes owned
# by another uid, even where `test -w` would say yes).
check_model_dir() {
    dir="${MODEL_DIR:-./ml_state}"
    probe="$dir/.entrypoint-write-test.$$"
    if mkdir -p "$dir" 2>/dev/null && [ -d "$dir" ] && (: >"$probe") 2>/dev/null; then
        rm -f "$probe"
        # where your own weights go: `docker compose cp best.pt backend:/data/weights/best.pt` needs the folder
        mkdir -p "$dir/weights" 2>/dev/null || echo "warning: could not make $dir/weights (a file of that name?): copy your weights elsewhere in $dir" >&2
        return 0
    fi
    {
        echo "error: MODEL_DIR=$dir does not exist or is not writable by uid $(id -u)."
        echo "  MODEL_DIR is where the backend keeps its state (image cache, model versions, databases)."
        echo "  Mount a writable volume there (docker compose: the 'models' volume at /data;"
        echo "  docker run: -v models:/data), or give the mounted folder to uid $(id -u):"
        echo "  chown -R $(id -u):$(id -g) <host folder>."
    } >&2
    exit 1
}

# Label Studio's address and token are needed for images stored in Label Studio, for scoring and
# for training; the server still starts without them (predictions of public image URLs work).
warn_label_studio() {
    if [ -z "${LABEL_STUDIO_URL:-}" ]; then
        echo "warning: LABEL_STUDIO_URL is empty: images uploaded to Label Studio, scoring and retraining will not work (set it, e.g. http://label-studio:8080)." >&2
    fi
    if [ -z "${LABEL_STUDIO_API_KEY:-}" ]; then
        echo "warning: LABEL_STUDIO_API_KEY is empty: set it to a Label Studio personal access token (Account & Settings -> Personal Access Token) in .env." >&2
    fi
}

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve)
        shift
        check_model_dir
        warn_label_studio
        exec "$PYTHON" -m ml_backend serve --host "${HOST:-0.0.0.0}" --port "${PORT:-9090}" "$@"
        ;;
    worker)
        shift
        check_model_dir
        warn_label_studio
        exec "$PYTHON" -m ml_backend worker "$@"
        ;;
    connect | score | train | bench | simulate | demo | pretrain | make-digits)
        exec "$PYTHON" -m ml_backend "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
