# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test lint serve system-deps study bench load screenshot-deps

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

# Lint (ruff), format check and types (mypy), as configured in pyproject.toml; part of `make test`.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint system-deps
	$(VENV)/bin/python -m pytest

# Long runs, not in CI. The label-savings study as the README reports it (CPU, reduced: about
# 80 minutes on 2 cores): the multi-class digit scenes, a starting model pretrained offline on
# other digit classes, then both studies. STUDY_DIR, SEEDS, STEPS and DEVICE can be overridden
# (for example DEVICE=cuda SEEDS=5 STEPS=300 for the full study on a GPU).
STUDY_DIR ?= .cache/study
SEEDS ?= 3
STEPS ?= 60
DEVICE ?= cpu
RACCOON ?= ../shared/datasets/raccoon
SIM = $(VENV)/bin/python -m ml_backend simulate --strategies random,uncertainty,diversity,hybrid --rounds 4 --seeds $(SEEDS) --steps $(STEPS) --imgsz 320 --batch 8 --device $(DEVICE) --weights $(STUDY_DIR)/digits-source-yolov8n.pt

study: setup
	test -d $(STUDY_DIR)/digits-target || $(VENV)/bin/python -m ml_backend make-digits --variant target --images 400 --out $(STUDY_DIR)/digits-target
	test -d $(STUDY_DIR)/digits-source || $(VENV)/bin/python -m ml_backend make-digits --variant source --images 800 --out $(STUDY_DIR)/digits-source
	test -f $(STUDY_DIR)/digits-source-yolov8n.pt || $(VENV)/bin/python -m ml_backend pretrain --data $(STUDY_DIR)/digits-source --format coco --epochs 5 --imgsz 320 --batch 8 --device $(DEVICE) --out $(STUDY_DIR)/digits-source-yolov8n.pt
	$(SIM) --data $(RACCOON) --format voc --initial 10 --step 10 --out $(STUDY_DIR)/raccoon
	$(SIM) --data $(STUDY_DIR)/digits-target --format coco --initial 20 --step 20 --out $(STUDY_DIR)/digits

bench: setup
	$(VENV)/bin/python -m ml_backend bench --only scoring predict rescoring kcenter --device $(DEVICE)

# The reliability load figures of the README (about 5 minutes): a real Label Studio and backend.
load: setup
	$(VENV)/bin/python -m ml_backend bench --only load --repeat 3 --out load.json

# What the screenshot tool needs (ml_backend/tools/screenshot.py): Debian's chromium, playwright in .venv.
screenshot-deps: setup
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
	$(VENV)/bin/pip install -q --disable-pip-version-check playwright $(PIP_QUIET)
