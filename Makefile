# bertqueue — `make run` starts the platform, `make test` runs the whole test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# gunicorn threads per web process (core.config.Settings.web_threads; the web derives PREDICT_MAX_WAITERS from it)
export WEB_THREADS ?= 24

.PHONY: run test install migrate worker classify-worker reconciler web flower bench clean

# the last step installs this project editable for the `bertqueue` command (cli/); no build isolation: setuptools
# comes from requirements.txt, nothing is downloaded to build it
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

## run: web + worker + embedded Redis + SQLite on http://127.0.0.1:5000 (Ctrl-C stops all)
run: $(STAMP)
	$(PY) scripts/run_stack.py

## test: the whole suite (real Redis/PostgreSQL tests skip without servers, except under CI=true)
test: $(STAMP)
	$(PY) -m pytest

migrate: $(STAMP)
	$(PY) -m alembic upgrade head

## worker: the training worker (prefork); classify-worker: the classification worker (threads, batching);
## reconciler: re-sends the messages of jobs Redis lost (run exactly one)
worker: $(STAMP)
	$(PY) -m celery -A worker.celery_app worker -Q train -n train@%h --pool prefork --concurrency 1 --loglevel INFO

classify-worker: $(STAMP)
	$(PY) -m celery -A worker.celery_app worker -Q classify -n classify@%h --pool threads --concurrency 32 \
		--loglevel INFO

reconciler: $(STAMP)
	$(PY) -m worker.reconciler

web: $(STAMP)
	$(VENV)/bin/gunicorn --bind 127.0.0.1:5000 --workers 2 --threads $(WEB_THREADS) 'web:create_app()'

## flower: Celery's monitor on http://127.0.0.1:5555, behind FLOWER_BASIC_AUTH=user:password (required)
flower: $(STAMP)
	$(PY) scripts/flower.py

bench: $(STAMP)
	$(PY) bench/serving.py --json bench/results/serving.json

clean:
	rm -rf var .pytest_cache
