#!/bin/sh
# docker/.env for the compose stack: made from .env.example when there is none, and given a
# LABEL_STUDIO_SECRET_KEY (the key Label Studio signs its tokens with) when it has none, an .env of
# an earlier version included. A key already set is never changed: a new one invalidates every
# Label Studio token, LABEL_STUDIO_API_KEY too. Run it from anywhere: sh docker/init-env.sh
set -eu
cd "$(dirname "$0")"
if [ ! -f .env ]; then
    cp .env.example .env
    echo "made docker/.env from docker/.env.example"
fi
chmod 600 .env
if grep -q '^LABEL_STUDIO_SECRET_KEY=..*' .env; then
    echo "docker/.env already has a LABEL_STUDIO_SECRET_KEY: kept"
    exit 0
fi
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
{ grep -v '^LABEL_STUDIO_SECRET_KEY=$' .env || true; echo "LABEL_STUDIO_SECRET_KEY=$key"; } > .env.new
chmod 600 .env.new
mv .env.new .env
echo "set LABEL_STUDIO_SECRET_KEY in docker/.env (keep it: a new one invalidates every Label Studio token)"
