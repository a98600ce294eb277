# Two commands for a new user: `make run` (the service with a demo project) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test bench lint worker image

$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# A developer's machine: a random secret key, DEBUG on, everything embedded.
.env:
	printf 'SECRET_KEY=%s\nDEBUG=true\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" > .env

## Set everything up and start the service on embedded defaults with the demo project.
run: $(BIN)/.runtime .env
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py flywheel_demo --url http://$(HOST):$(PORT)
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

## Run the whole test suite against the local PostgreSQL, Redis, a Celery worker, S3 (moto) and Chromium.
test: $(BIN)/.dev
	bash scripts/prepare-test-services
	$(BIN)/pytest

bench: $(BIN)/.dev
	bash scripts/prepare-test-services
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/datasets.py
	$(BIN)/python bench/drift.py

lint: $(BIN)/.dev
	$(BIN)/ruff check .

## The Docker image, recording the commit it is built from (dataset manifests name it).
image:
	docker build --build-arg FLYWHEEL_CODE_VERSION=$$(git describe --always --dirty 2>/dev/null || echo unknown) -t flywheel:latest .
