#!/usr/bin/env bash
# Start OpenStack Keystone (identity v3) on 127.0.0.1, for Swift in keystone mode.
#
#   scripts/swift/start-keystone.sh BASE
#   SWIFT_AUTH=keystone scripts/swift/start-swift.sh BASE
#   ...
#   scripts/swift/stop-swift.sh BASE          (stops Swift and this Keystone)
#
# Keystone comes from PyPI, pinned, in its own virtualenv (KEYSTONE_VENV, default
# .keystone-venv at the repository root), created on first use under a lock. It runs under
# gunicorn (one sync worker) with SQLite and Fernet tokens; no memcached, no Apache.
#
# Everything else lives under BASE/keystone (config, database, key repositories, pid file);
# logs go to BASE/log/keystone*.log. The script bootstraps the admin user (project "admin",
# role "admin", region RegionOne), creates the "service" project, the "swift" service user
# (roles service and admin on "service") and an object-store service whose endpoints point at
# the Swift proxy (http://127.0.0.1:SWIFT_PROXY_PORT/v1/AUTH_<project id>). It writes
# BASE/keystone.env (mode 600) with the URLs and credentials, as shell assignments.
#
# Settings (environment):
#   KEYSTONE_VENV              virtualenv for Keystone (default: <repo>/.keystone-venv)
#   KEYSTONE_PYTHON            interpreter used to create it (default: python3)
#   KEYSTONE_PIP_CONSTRAINTS   "none" to let pip resolve freely, or a constraints file path
#                              (default: the tested versions embedded below)
#   KEYSTONE_PORT              Keystone's port                              default 15000
#   SWIFT_PROXY_PORT           Swift proxy port for the object-store endpoint  default 18080
#   KEYSTONE_REGION            region of the catalog endpoints              default RegionOne
#   KEYSTONE_ADMIN_PASSWORD    admin's password                             default: random
#   KEYSTONE_CACHE_DIR         if set, a bootstrapped database, key repositories and passwords
#                              are kept there (per version, port and region) and reused, which
#                              skips keystone-manage and the catalog set-up (about 3 s instead
#                              of about 15 s)
#   KEYSTONE_START_TIMEOUT     seconds to wait for Keystone to answer       default 60
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 BASE" >&2
  exit 2
fi
mkdir -p "$1"
BASE="$(cd "$1" && pwd -P)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"

KEYSTONE_VENV="${KEYSTONE_VENV:-$repo/.keystone-venv}"
KEYSTONE_PYTHON="${KEYSTONE_PYTHON:-python3}"
KEYSTONE_PIP_CONSTRAINTS="${KEYSTONE_PIP_CONSTRAINTS:-}"
PORT="${KEYSTONE_PORT:-15000}"
SWIFT_PORT="${SWIFT_PROXY_PORT:-18080}"
REGION="${KEYSTONE_REGION:-RegionOne}"
START_TIMEOUT="${KEYSTONE_START_TIMEOUT:-60}"
CACHE_DIR="${KEYSTONE_CACHE_DIR:-}"
KS="$BASE/keystone"
RUN_USER="$(id -un)"
RUN_GROUP="$(id -gn)"

die() { echo "start-keystone: $*" >&2; exit 1; }

# The pinned set, tested together (keystone 30.0.0 on CPython 3.11).
tested_constraints() {
  cat <<'PINS'
alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.2
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
gunicorn==27.0.1
idna==3.20
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystone==30.0.0
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
Mako==1.4.3
MarkupSafe==3.0.4
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.4
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
pytz==2026.6
PyYAML==6.0.4
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
yappi==1.7.6
PINS
}

constraints_text() {
  case "$KEYSTONE_PIP_CONSTRAINTS" in
    "") tested_constraints ;;
    none) echo "# unconstrained" ;;
    *) cat "$KEYSTONE_PIP_CONSTRAINTS" ;;
  esac
}

venv_ready() {
  [ -x "$KEYSTONE_VENV/bin/keystone-manage" ] && [ -x "$KEYSTONE_VENV/bin/gunicorn" ] &&
    [ -f "$KEYSTONE_VENV/.strongroom-stamp" ] &&
    [ "$(cat "$KEYSTONE_VENV/.strongroom-stamp")" = "$1" ]
}

STAMP="$(constraints_text | sha256sum | cut -c1-16)"

ensure_venv() {
  venv_ready "$STAMP" && return 0
  command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required"
  mkdir -p "$KEYSTONE_VENV"
  (
    flock 9
    if ! venv_ready "$STAMP"; then
      echo "start-keystone: installing Keystone into $KEYSTONE_VENV" >&2
      [ -x "$KEYSTONE_VENV/bin/python" ] || "$KEYSTONE_PYTHON" -m venv "$KEYSTONE_VENV"
      local cfile="$KEYSTONE_VENV/.constraints.txt" plog="$KEYSTONE_VENV/.pip-install.log"
      constraints_text >"$cfile"
      local args=(install)
      [ "$KEYSTONE_PIP_CONSTRAINTS" = none ] || args+=(-c "$cfile")
      if ! "$KEYSTONE_VENV/bin/python" -m pip "${args[@]}" keystone gunicorn SQLAlchemy oslo.db \
        bcrypt >"$plog" 2>&1; then
        tail -n 20 "$plog" >&2
        die "pip install into $KEYSTONE_VENV failed (log: $plog)"
      fi
      echo "$STAMP" >"$KEYSTONE_VENV/.strongroom-stamp"
    fi
  ) 9>"$KEYSTONE_VENV/.install.lock"
}

ensure_venv
PY="$KEYSTONE_VENV/bin/python"

pidfile="$KS/run/keystone.pid"
if [ -f "$pidfile" ]; then
  pid="$(cat "$pidfile")"
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BASE/"; then
    die "already running in $BASE (pid $pid); run stop-swift.sh first"
  fi
fi

"$PY" - "$PORT" <<'PYEOF'
import socket, sys
port = int(sys.argv[1])
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError as exc:
        sys.exit(f"start-keystone: port {port} on 127.0.0.1 is not free ({exc.strerror})")
PYEOF

rm -rf "$KS/fernet-keys" "$KS/credential-keys" "$KS/keystone.db"
mkdir -p "$KS/run" "$KS/fernet-keys" "$KS/credential-keys" "$BASE/log"
chmod 700 "$KS/fernet-keys" "$KS/credential-keys"

URL="http://127.0.0.1:$PORT"
cat >"$KS/keystone.conf" <<CONF
[DEFAULT]
debug = false
use_stderr = true

[database]
connection = sqlite:///$KS/keystone.db

[token]
provider = fernet

[fernet_tokens]
key_repository = $KS/fernet-keys

[credential]
key_repository = $KS/credential-keys

[identity]
# bcrypt's minimum cost: a password check takes about 1 ms instead of about 250 ms.
password_hash_rounds = 4

[cache]
enabled = false
CONF

# gunicorn's own options would reach oslo.config through sys.argv; the config file is given in
# OS_KEYSTONE_CONFIG_FILES instead.
cat >"$KS/keystone_wsgi.py" <<'PYEOF'
import sys

sys.argv = sys.argv[:1]

from keystone.server.wsgi import initialize_public_application  # noqa: E402

application = initialize_public_application()
PYEOF

manage() { # keystone-manage sub-command...; output to BASE/log/keystone-manage.log
  if ! "$KEYSTONE_VENV/bin/keystone-manage" --config-file "$KS/keystone.conf" "$@" \
    >>"$BASE/log/keystone-manage.log" 2>&1; then
    tail -n 20 "$BASE/log/keystone-manage.log" >&2
    die "keystone-manage $1 failed (log: $BASE/log/keystone-manage.log)"
  fi
}

random_secret() { "$PY" -c 'import secrets; print(secrets.token_hex(16))'; }

cache_key="$( { echo "v1 $STAMP $PORT $SWIFT_PORT $REGION"; \
  [ -z "${KEYSTONE_ADMIN_PASSWORD:-}" ] || echo "admin $KEYSTONE_ADMIN_PASSWORD"; } |
  sha256sum | cut -c1-16)"
cache_entry=""
[ -z "$CACHE_DIR" ] || cache_entry="$CACHE_DIR/$cache_key"

from_cache=no
if [ -n "$cache_entry" ] && [ -f "$cache_entry/complete" ]; then
  cp "$cache_entry/keystone.db" "$KS/keystone.db"
  cp -pR "$cache_entry/fernet-keys/." "$KS/fernet-keys/"
  cp -pR "$cache_entry/credential-keys/." "$KS/credential-keys/"
  # shellcheck disable=SC1091
  . "$cache_entry/secrets.env"
  from_cache=yes
else
  ADMIN_PASSWORD="${KEYSTONE_ADMIN_PASSWORD:-$(random_secret)}"
  SWIFT_SERVICE_PASSWORD="$(random_secret)"
  manage db_sync
  manage fernet_setup --keystone-user "$RUN_USER" --keystone-group "$RUN_GROUP"
  manage credential_setup --keystone-user "$RUN_USER" --keystone-group "$RUN_GROUP"
  manage bootstrap --bootstrap-password "$ADMIN_PASSWORD" --bootstrap-username admin \
    --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id "$REGION" \
    --bootstrap-admin-url "$URL/v3" --bootstrap-internal-url "$URL/v3" \
    --bootstrap-public-url "$URL/v3"
fi

OS_KEYSTONE_CONFIG_FILES="$KS/keystone.conf" "$KEYSTONE_VENV/bin/gunicorn" \
  --no-control-socket --bind "127.0.0.1:$PORT" --workers 1 --timeout 120 \
  --graceful-timeout 5 --chdir "$KS" --pythonpath "$KS" \
  --access-logfile "$BASE/log/keystone-access.log" \
  keystone_wsgi:application </dev/null >"$BASE/log/keystone.log" 2>&1 &
echo $! >"$pidfile"

fail() {
  echo "--- $BASE/log/keystone.log (tail)" >&2
  tail -n 30 "$BASE/log/keystone.log" >&2 || true
  "$here/stop-swift.sh" --keystone-only "$BASE" >&2 || true
  die "$1"
}

if ! "$PY" - "$START_TIMEOUT" "$pidfile" "$URL/v3" <<'PYEOF'
import sys, time, urllib.request
timeout, pidfile, url = float(sys.argv[1]), sys.argv[2], sys.argv[3]
pid = int(open(pidfile).read())
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "Z"
    if state == "Z":
        sys.exit(f"start-keystone: gunicorn (pid {pid}) exited during start-up")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(f"start-keystone: no answer from {url} within {timeout:g}s")
PYEOF
then
  fail "Keystone did not start"
fi

if [ "$from_cache" = no ]; then
  # The service project, the swift service user and the object-store catalog entry.
  if ! "$PY" - "$URL/v3" "$ADMIN_PASSWORD" "$SWIFT_SERVICE_PASSWORD" "$SWIFT_PORT" "$REGION" \
    <<'PYEOF'
import json, sys, urllib.error, urllib.request

url, admin_password, swift_password, swift_port, region = sys.argv[1:]
token = None


def call(method, path, body=None, ok=(200, 201, 204)):
    req = urllib.request.Request(url + path, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(req, data, timeout=30) as resp:
            raw = resp.read()
            return resp, (json.loads(raw) if raw else {})
    except urllib.error.HTTPError as exc:
        if exc.code in ok:
            return exc, {}
        sys.exit(f"start-keystone: {method} {path} -> {exc.code}: {exc.read()[:300]!r}")


resp, _ = call("POST", "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": admin_password}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
token = resp.headers["X-Subject-Token"]

roles = {r["name"]: r["id"] for r in call("GET", "/roles")[1]["roles"]}
for name in ("service", "admin", "member"):
    if name not in roles:
        roles[name] = call("POST", "/roles", {"role": {"name": name}})[1]["role"]["id"]
project = call("POST", "/projects", {"project": {
    "name": "service", "domain_id": "default", "description": "Service users"}})[1]["project"]
user = call("POST", "/users", {"user": {
    "name": "swift", "domain_id": "default", "password": swift_password,
    "default_project_id": project["id"]}})[1]["user"]
for name in ("service", "admin"):
    call("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{roles[name]}")
service = call("POST", "/services", {"service": {
    "type": "object-store", "name": "swift", "enabled": True}})[1]["service"]
endpoint = f"http://127.0.0.1:{swift_port}/v1/AUTH_$(project_id)s"
for interface in ("public", "internal", "admin"):
    call("POST", "/endpoints", {"endpoint": {
        "service_id": service["id"], "interface": interface, "url": endpoint,
        "region_id": region, "enabled": True}})
PYEOF
  then
    fail "setting up the service project, swift user and catalog failed"
  fi

  if [ -n "$cache_entry" ]; then
    mkdir -p "$CACHE_DIR"
    tmp="$(mktemp -d "$CACHE_DIR/.tmp-XXXXXX")"
    "$PY" - "$KS/keystone.db" "$tmp/keystone.db" <<'PYEOF'
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
src.close()
dst.close()
PYEOF
    cp -pR "$KS/fernet-keys" "$KS/credential-keys" "$tmp/"
    (umask 077; printf 'ADMIN_PASSWORD=%s\nSWIFT_SERVICE_PASSWORD=%s\n' "$ADMIN_PASSWORD" \
      "$SWIFT_SERVICE_PASSWORD" >"$tmp/secrets.env")
    touch "$tmp/complete"
    chmod 700 "$tmp"
    # Another start may have filled the same entry meanwhile; either copy is good.
    mv -T "$tmp" "$cache_entry" 2>/dev/null || rm -rf "$tmp"
  fi
fi

(
  umask 077
  cat >"$BASE/keystone.env" <<ENV
KEYSTONE_URL=$URL
KEYSTONE_AUTH_URL=$URL/v3
KEYSTONE_PORT=$PORT
KEYSTONE_REGION=$REGION
KEYSTONE_ADMIN_USER=admin
KEYSTONE_ADMIN_PASSWORD=$ADMIN_PASSWORD
KEYSTONE_ADMIN_PROJECT=admin
KEYSTONE_USER_DOMAIN=Default
KEYSTONE_PROJECT_DOMAIN=Default
KEYSTONE_SERVICE_PROJECT=service
KEYSTONE_SWIFT_USER=swift
KEYSTONE_SWIFT_PASSWORD=$SWIFT_SERVICE_PASSWORD
KEYSTONE_SWIFT_PROXY_PORT=$SWIFT_PORT
ENV
)
echo "start-keystone: Keystone answering on $URL/v3 (config in $BASE/keystone.env)" >&2
