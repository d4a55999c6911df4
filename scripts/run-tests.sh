#!/usr/bin/env bash
# The whole test suite: lint, import rules, types, unit, contract, integration and compatibility tests.
# Real services: PostgreSQL and MariaDB servers are created by the tests themselves; Swift is
# installed into its own venv and started by the test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
export STRONGROOM_TEST_MUST_RUN="${STRONGROOM_TEST_MUST_RUN:-swift,s3,mariadb,keystone}"
.venv/bin/ruff check src tests
.venv/bin/lint-imports
.venv/bin/mypy
# Two workers (the tests mostly wait on servers); a module runs on one worker, and
# tests/conftest.py keeps the users of a costly session server together (SHARED_SCOPES).
.venv/bin/python -m pytest -q --durations=25 -n "${STRONGROOM_TEST_WORKERS:-2}" --dist loadscope "$@"
