#!/usr/bin/env bash
# Installs everything Strongroom and its tests need on a fresh Debian machine:
# Debian packages for the database tools, and a virtualenv in .venv with the project.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=()
command -v mariabackup >/dev/null 2>&1 || command -v mariadb-backup >/dev/null 2>&1 || want_debs+=(mariadb-backup)
command -v zstd >/dev/null 2>&1 || want_debs+=(zstd)
command -v sqlite3 >/dev/null 2>&1 || want_debs+=(sqlite3)
# The dashboard's browser tests drive Debian's chromium headless over the DevTools protocol.
command -v chromium >/dev/null 2>&1 || want_debs+=(chromium)
if [ "${1:-}" = "--with-servers" ]; then
  command -v pg_basebackup >/dev/null 2>&1 || want_debs+=(postgresql postgresql-contrib)
  command -v mariadb-install-db >/dev/null 2>&1 || want_debs+=(mariadb-server)
fi
if [ "${#want_debs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want_debs[@]}" >/dev/null
  else
    echo "missing Debian packages (run as root or install them): ${want_debs[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.strongroom-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
