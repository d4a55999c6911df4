# The two commands the README names: `make run` and `make test`. Each installs what it needs.
PY := .venv/bin/python
DATA_DIR ?= var/data
HOST ?= 127.0.0.1
PORT ?= 8779

.PHONY: setup run test test-unit lint fuzz bench bench-pitr

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/strongroom serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: setup
	bash scripts/run-tests.sh

test-unit: setup
	$(PY) -m pytest tests/unit -q

lint: setup
	.venv/bin/ruff check src tests
	.venv/bin/lint-imports
	.venv/bin/mypy

# A longer fuzz run than the one in `make test` (STRONGROOM_FUZZ_EXAMPLES per operation).
fuzz: setup
	STRONGROOM_FUZZ_EXAMPLES=$${STRONGROOM_FUZZ_EXAMPLES:-500} $(PY) -m pytest tests/security/test_security_fuzz.py -q

# Side by side with pg_basebackup | zstd, pgBackRest and mariabackup (BENCH_SCALE, BENCH_RUNS).
bench: setup
	bash bench/run.sh

# Point-in-time restore against pgBackRest's --type=time (BENCH_PITR_LOAD_SECONDS, default 600).
bench-pitr: setup
	bash bench/run.sh pitr
