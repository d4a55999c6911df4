#!/usr/bin/env bash
# Strongroom benchmark: sets up its own PostgreSQL and MariaDB data, runs Strongroom and its
# peers alternately, writes bench/results/<date>-scale<N>.md. See bench/README.md.
#   BENCH_SCALE (150)  BENCH_RUNS (3)  BENCH_MARIADB_SCALE (= BENCH_SCALE)
#   BENCH_ONLY (pg,memory,mariadb,api)  BENCH_WORK (bench/work)  BENCH_RESTORE_RUNS (= BENCH_RUNS)
# bash bench/run.sh pitr: point-in-time restore against pgBackRest (bench/pitr_compare.py)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh must run as root (servers run as postgres and mysql)" >&2
    exit 1
fi
missing=()
command -v pgbackrest >/dev/null || missing+=(pgbackrest)
command -v mariabackup >/dev/null || missing+=(mariadb-backup)
command -v zstd >/dev/null || missing+=(zstd)
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || missing+=(postgresql-15 postgresql-contrib)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    echo "no .venv: run 'make test' or 'make run' once first" >&2
    exit 1
fi
.venv/bin/python -c "import psutil, httpx" 2>/dev/null || .venv/bin/pip install -q psutil httpx

# The servers run as postgres and mysql: the work directory must be reachable by them (a
# checkout under a private directory, e.g. one made by mktemp, is not).
work="${BENCH_WORK:-bench/work}"
mkdir -p "$work"
if ! runuser -u postgres -- test -x "$(realpath "$work")"; then
    export BENCH_WORK=/var/tmp/strongroom-bench
    echo "bench: $work is not reachable by the postgres user; working in $BENCH_WORK" >&2
fi

if [ "${1:-}" = pitr ]; then
    shift
    exec .venv/bin/python -m bench.pitr_compare "$@"
fi
exec .venv/bin/python -m bench.main "$@"
