# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test serve system-deps

$(STAMP): requirements.txt requirements-dev.txt
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt $(PIP_QUIET)
	$(VENV)/bin/python -c 'import torch, torchvision, ultralytics, faiss, flask, label_studio_sdk'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/python -m ml_backend demo

serve: setup
	$(VENV)/bin/python -m ml_backend serve

# The RQ training test starts a real redis-server (Debian's package).
system-deps:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server (apt-get) for the RQ training test ..."; \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; } > .apt-redis.log 2>&1 \
	      || { tail -20 .apt-redis.log; echo "error: could not install redis-server; install it (apt-get install redis-server) and run make test again"; exit 1; }; \
	  else echo "error: the tests need redis-server: sudo apt-get install redis-server"; exit 1; fi; }

test: setup system-deps
	$(VENV)/bin/python -m pytest
