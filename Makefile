# Lexia — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
EXTRAS ?= dev
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.DEFAULT_GOAL := help
.PHONY: help install models start daemon stop restart status logs serve worker migrate create-key test lint bench bench-llm bench-stt bench-jobs bench-diarization reliability env services

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(findstring gpu,$(EXTRAS)),-c constraints/gpu.txt) -e '.[$(EXTRAS)]'
	@touch $@

install: $(STAMP) ## create .venv and install Lexia (EXTRAS=dev by default; EXTRAS=dev,gpu for real engines)

services: ## start the local PostgreSQL and Redis if they are not answering
	@bin/local-services

env: ## write .env with a generated key pepper if there is none
	@bin/ensure-env

start: env services ## serve the API and the worker with real engines where they run (PROFILE=auto|gpu|cpu|fake; see bin/profile)
	@bin/start-profile "$(or $(PROFILE),auto)"

daemon: env services ## like start, in the background under supervisord (restarts what dies; logs under LEXIA_DATA_DIR/logs)
	@bin/start-profile "$(or $(PROFILE),auto)" --daemon

stop: ## stop the daemon: in-flight requests answered, running jobs finished or handed back, nothing left
	@bin/lexia-supervise stop

restart: env services ## stop, then install, migrate and start again (`git pull && make restart` loses no job)
	@bin/lexia-supervise stop
	@bin/start-profile "$(or $(PROFILE),auto)" --daemon

status: ## the daemon's programs
	@bin/lexia-supervise status

logs: ## follow the daemon's API and worker logs
	@bin/lexia-supervise logs

models: ## fetch the configured engines' models that are missing (bin/lexia-models pull|list|verify)
	@bin/lexia-models pull --missing

serve: install env ## serve the API only (no worker, no migrations)
	@$(PY) -m lexia.serve

worker: install env ## run the Dramatiq worker alone (ARGS='--queues webhooks' for a deliveries-only worker); Ctrl-C stops it cleanly
	@$(PY) -m lexia.launcher --worker-only $(ARGS)

migrate: install env ## create the database if missing and apply sql/ migrations
	@bin/migrate

create-key: install env ## create a key: make create-key NAME=me SCOPES='*' [TENANT=default]
	@bin/lexia-key create --name "$(or $(NAME),default)" --scopes "$(or $(SCOPES),*)" --tenant "$(or $(TENANT),default)"

test: install ## run the test suite (real PostgreSQL and Redis, fake engines)
	@bin/local-services
	$(PY) -m pytest -q $(ARGS)

lint: install ## ruff, mypy and the import contracts
	$(VENV)/bin/ruff check lexia tests benchmarks
	$(VENV)/bin/mypy lexia
	$(VENV)/bin/lint-imports

bench: install env migrate ## gateway benchmark (wrk): Lexia vs a bare Litestar app
	$(PY) benchmarks/gateway.py

bench-llm: install env ## LLM streaming through Lexia vs the engine direct (FakeLLM)
	$(PY) benchmarks/llm.py

bench-jobs: install env migrate ## 1,000 async jobs through the API and workers (fake engines)
	$(PY) benchmarks/jobs.py

bench-stt: env ## sync route vs faster-whisper direct, PyAV vs ffmpeg, upload RSS (needs bin/install-cpu-engines)
	.venv-engines/bin/python benchmarks/stt.py

bench-diarization: ## diarization DER, speaker count, word attribution, RTF and merge cost (bin/install-cpu-engines, espeak-ng)
	bin/install-cpu-engines
	.venv-engines/bin/python benchmarks/diarization_data.py
	HF_HUB_OFFLINE=1 .venv-engines/bin/python benchmarks/diarization.py $(ARGS)

reliability: install ## faults, fuzz, bad input, access matrices, soak on its own PostgreSQL/Redis (~25 min); writes docs/reliability.md
	$(PY) -m tests.reliability.run --write docs/reliability.md $(ARGS)
