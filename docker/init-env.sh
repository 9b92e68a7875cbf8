#!/bin/sh
# docker/.env for the compose stack: made from .env.example when there is none, and given a
# LABEL_STUDIO_SECRET_KEY (the key Label Studio signs its tokens with) when it has none, an .env of
# an earlier version included. A key already set is never changed: a new one invalidates every
# Label Studio token, LABEL_STUDIO_API_KEY too.
#   sh docker/init-env.sh            docker/.env (from anywhere)
#   sh docker/init-env.sh FILE       another settings file (a second stack's; make docker-check's)
set -eu
example="$(cd "$(dirname "$0")" && pwd)/.env.example"
env_file=${1:-$(dirname "$example")/.env}
if [ ! -f "$env_file" ]; then
    cp "$example" "$env_file"
    echo "made $env_file from .env.example"
fi
chmod 600 "$env_file"
if grep -q '^LABEL_STUDIO_SECRET_KEY=..*' "$env_file"; then
    echo "$env_file already has a LABEL_STUDIO_SECRET_KEY: kept"
    exit 0
fi
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
{ grep -v '^LABEL_STUDIO_SECRET_KEY=$' "$env_file" || true; echo "LABEL_STUDIO_SECRET_KEY=$key"; } >"$env_file.new"
chmod 600 "$env_file.new"
mv "$env_file.new" "$env_file"
echo "set LABEL_STUDIO_SECRET_KEY in $env_file (keep it: a new one invalidates every Label Studio token)"
