# The commands that matter.  `make up` and `make test` set everything up first.
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen

.PHONY: help deps up down status test test-unit lint gen check-gen clean

help:
	@echo "make up        set up everything, run the local cluster (Ctrl-C stops it)"
	@echo "make test      set up everything, run lint, the generated-code check and all tests"
	@echo "make down      stop a cluster started by 'make up' in another terminal"
	@echo "make status    what runs where"
	@echo "make gen       regenerate gen/ from proto/ (buf generate, buf.gen.yaml)"
	@echo "make lint      ruff, mypy, the import boundaries (lint-imports), buf lint, buf breaking (proto/ against the previous commit)"
	@echo "make bench     set up the load tools, run every benchmark scenario (bench/BASELINE.md)"

deps:
	bash devstack/provision.sh

up: deps
	$(PY) -m devstack up

down:
	$(PY) -m devstack down

status:
	$(PY) -m devstack status

test: deps lint check-gen
	$(PY) -m pytest

test-unit:
	$(PY) -m pytest tests/unit

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports --no-logo
	.venv/bin/buf lint
	bash scripts/check_breaking.sh

gen:
	bash scripts/gen.sh

check-gen:
	bash scripts/check_gen.sh

clean:
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# The deployable stack (compose/, deploy/k8s/), checked offline: compose config, every process's
# environment against its settings class, the image's command lines against real servers,
# kustomize renders + Kubernetes schemas.  deploy_tools.sh adds a Compose CLI and kustomize.
.PHONY: deploy-check
deploy-check: deps
	bash devstack/provision/deploy_tools.sh
	$(PY) -m pytest tests/integration/test_deploy.py

# Benchmarks (bench/): its own cluster, every scenario, a table, bench/results/*.json and bench/BASELINE.md.
.PHONY: bench
bench:
	bash devstack/provision.sh bench
	$(PY) -m bench
