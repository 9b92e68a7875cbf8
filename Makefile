# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test lint serve system-deps study bench load screenshot-deps docker-check

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

# The end-to-end tests start a real redis-server (the RQ training tests) and a throwaway
# PostgreSQL cluster (Label Studio on PostgreSQL): Debian's packages, installed when missing.
SYSTEM_PACKAGES := redis-server:redis-server postgresql:/usr/lib/postgresql
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do pkg=$${pair%%:*}; probe=$${pair#*:}; \
	  { command -v "$$probe" >/dev/null || [ -e "$$probe" ]; } || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt-get) for the end-to-end tests ..."; \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; } > .apt-system-deps.log 2>&1 \
	      || { tail -20 .apt-system-deps.log; echo "error: could not install$$missing; install them (apt-get install$$missing) and run make test again"; exit 1; }; \
	  else echo "error: the tests need$$missing: sudo apt-get install$$missing"; exit 1; fi; fi

# Lint (ruff), format check and types (mypy), as configured in pyproject.toml; part of `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint system-deps
	$(VENV)/bin/python -m pytest

# Long runs, not in CI. The label-savings study as docs/study.md reports it: from COCO-pretrained
# YOLO11n weights, 5 seeds, random against uncertainty and hybrid (as they ran before the default
# changed: max aggregation, no cost term) and the default order (objects, calibrated, cost-aware), on
# aquarium (the main real case, 7 classes), the digit scenes (4 classes) and raccoon (1 class).
# PRESET=cpu takes about an hour per dataset and arm pair on 2 cores; PRESET=gpu is the full study
# (640 px, 300 steps a round, 8 rounds, --device cuda).
STUDY_DIR ?= .cache/study
PRESET ?= cpu
ARMS ?= random,uncertainty=uncertainty:UNCERTAINTY_AGGREGATION=max:AL_COST_WEIGHT=0,hybrid=hybrid:UNCERTAINTY_AGGREGATION=max:AL_COST_WEIGHT=0,objects-cost=objects
WEIGHTS ?= ../shared/weights/yolo11n_coco_from_int8onnx.pt
AQUARIUM ?= ../shared/datasets/aquarium
RACCOON ?= ../shared/datasets/raccoon
SIM = $(VENV)/bin/python -m ml_backend simulate --preset $(PRESET) --strategies $(ARMS) --weights $(WEIGHTS)

study: setup
	$(SIM) --data $(AQUARIUM) --format yolo --out $(STUDY_DIR)/aquarium
	test -d $(STUDY_DIR)/digits-target || $(VENV)/bin/python -m ml_backend make-digits --variant target --images 400 --out $(STUDY_DIR)/digits-target
	$(SIM) --data $(STUDY_DIR)/digits-target --format coco --out $(STUDY_DIR)/digits
	$(SIM) --data $(RACCOON) --format voc --out $(STUDY_DIR)/raccoon

DEVICE ?= cpu
bench: setup
	$(VENV)/bin/python -m ml_backend bench --only scoring predict rescoring kcenter --device $(DEVICE)

# The reliability load figures of the README (about 5 minutes): a real Label Studio and backend.
load: setup
	$(VENV)/bin/python -m ml_backend bench --only load --repeat 3 --out load.json

# What the screenshot tool needs (ml_backend/tools/screenshot.py): Debian's chromium, playwright in .venv.
screenshot-deps: setup
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
	$(VENV)/bin/pip install -q --disable-pip-version-check playwright $(PIP_QUIET)

# The docker deployment proved for real (docker/README.md): a docker engine (installed and started
# when none runs), the base images (stand-ins where Docker Hub is out of reach), our image from
# docker/Dockerfile and the stack from docker/docker-compose.yml, and the whole loop inside them.
# Not part of `make test`: about 12 GB of disk and 10 minutes the first time (2 cores). KEEP=1 leaves it up.
docker-check: setup
	bash docker/check.sh
