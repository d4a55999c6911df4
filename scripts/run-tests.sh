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
# Two workers (the tests mostly wait on servers); tests that must not overlap share an
# xdist_group and run one after another on one worker.
.venv/bin/python -m pytest -q --durations=25 -n "${STRONGROOM_TEST_WORKERS:-2}" --dist loadgroup "$@"
