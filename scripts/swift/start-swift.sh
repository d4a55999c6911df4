#!/usr/bin/env bash
# Start a single-node, one-replica OpenStack Swift with the S3 API (s3api) on 127.0.0.1.
#
#   scripts/swift/start-swift.sh BASE      ...   scripts/swift/stop-swift.sh BASE
#
# Everything lives under BASE: BASE/etc (swift.conf, server configs, rings), BASE/srv/node/d1
# (data), BASE/run/*.pid, BASE/log/*.log, and BASE/swift.env (auth URL, user/key, storage URL,
# S3 endpoint and keys, as shell assignments).
#
# Swift comes from PyPI, pinned, in its own virtualenv (SWIFT_VENV, default .swift-venv at the
# repository root), created on first use under a lock so parallel starts install it once.
# Auth is tempauth with Fernet tokens (no memcached), or Keystone (SWIFT_AUTH=keystone); servers
# run with workers = 0, so each pid file names the server process itself.
#
# Keystone mode: run scripts/swift/start-keystone.sh BASE first (with the same
# SWIFT_PROXY_PORT); this script reads BASE/keystone.env, adds keystonemiddleware to the Swift
# venv, and runs the proxy with authtoken + keystoneauth (and s3token for the S3 API). Users
# authenticate against Keystone (v3) and find Swift in its catalog; roles admin and member
# may write to their project's account. stop-swift.sh BASE stops Keystone too.
#
# Settings (environment):
#   SWIFT_VENV              virtualenv for the Swift servers (default: <repo>/.swift-venv)
#   SWIFT_PYTHON            interpreter used to create it (default: python3)
#   SWIFT_PIP_CONSTRAINTS   "none" to let pip resolve freely, or a constraints file path
#                           (default: the tested versions embedded below)
#   SWIFT_AUTH              tempauth or keystone                       default tempauth
#   SWIFT_PROXY_PORT        proxy (Swift API, /auth/v1.0, S3 API)      default 18080
#   SWIFT_OBJECT_PORT / SWIFT_CONTAINER_PORT / SWIFT_ACCOUNT_PORT      default 16010/16011/16012
#   SWIFT_DEVICES_DIR       devices directory (needs user xattrs)      default BASE/srv/node
#   SWIFT_LOG_LEVEL         DEBUG, INFO, WARNING...                    default INFO
#   SWIFT_START_TIMEOUT     seconds to wait for /healthcheck           default 30
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 BASE" >&2
  exit 2
fi
mkdir -p "$1"
BASE="$(cd "$1" && pwd -P)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"

SWIFT_VENV="${SWIFT_VENV:-$repo/.swift-venv}"
SWIFT_PYTHON="${SWIFT_PYTHON:-python3}"
SWIFT_PIP_CONSTRAINTS="${SWIFT_PIP_CONSTRAINTS:-}"
PROXY_PORT="${SWIFT_PROXY_PORT:-18080}"
OBJECT_PORT="${SWIFT_OBJECT_PORT:-16010}"
CONTAINER_PORT="${SWIFT_CONTAINER_PORT:-16011}"
ACCOUNT_PORT="${SWIFT_ACCOUNT_PORT:-16012}"
DEVICES="${SWIFT_DEVICES_DIR:-$BASE/srv/node}"
LOG_LEVEL="${SWIFT_LOG_LEVEL:-INFO}"
START_TIMEOUT="${SWIFT_START_TIMEOUT:-30}"
AUTH="${SWIFT_AUTH:-tempauth}"
RUN_USER="$(id -un)"

die() { echo "start-swift: $*" >&2; exit 1; }

case "$AUTH" in
  tempauth) ;;
  keystone)
    [ -f "$BASE/keystone.env" ] ||
      die "SWIFT_AUTH=keystone needs $BASE/keystone.env: run start-keystone.sh $BASE first"
    KEYSTONE_AUTH_URL="" KEYSTONE_URL="" KEYSTONE_REGION="" KEYSTONE_SWIFT_USER=""
    KEYSTONE_SWIFT_PASSWORD="" KEYSTONE_SERVICE_PROJECT="" KEYSTONE_SWIFT_PROXY_PORT=""
    # shellcheck disable=SC1091
    . "$BASE/keystone.env"
    [ "$KEYSTONE_SWIFT_PROXY_PORT" = "$PROXY_PORT" ] ||
      die "Keystone's catalog points at proxy port $KEYSTONE_SWIFT_PROXY_PORT, not" \
        "$PROXY_PORT: give start-keystone.sh the same SWIFT_PROXY_PORT"
    ;;
  *) die "SWIFT_AUTH must be tempauth or keystone, not '$AUTH'" ;;
esac

# The pinned set, tested together (swift 2.38.3 on CPython 3.11).
tested_constraints() {
  cat <<'PINS'
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
cryptography==50.0.2
dnspython==2.9.2
eventlet==0.41.3
greenlet==3.5.6
idna==3.20
lxml==6.1.3
PasteDeploy==3.1.0
pycparser==3.12
pyeclib==1.8.0
requests==2.34.2
swift==2.38.3
urllib3==2.8.0
xattr==1.3.0
PINS
}

# Added for SWIFT_AUTH=keystone (keystonemiddleware 13.0.1), tested with the set above.
tested_keystone_constraints() {
  cat <<'PINS'
debtcollector==3.1.0
decorator==5.3.1
dogpile.cache==1.5.0
iso8601==2.1.0
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
msgpack==1.2.4
netaddr==1.3.0
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.config==10.7.0
oslo.context==6.5.0
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.serialization==5.11.0
oslo.utils==10.2.0
packaging==26.4
pbr==7.1.3
psutil==7.2.2
pycadf==4.1.0
PyJWT==2.15.1
pyparsing==3.3.3
python-dateutil==4.0.0
python-keystoneclient==6.0.0
PyYAML==6.0.4
rfc3986==2.0.0
stevedore==5.10.0
typing_extensions==4.16.0
tzdata==2026.6
WebOb==1.8.11
wrapt==2.5.2
PINS
}

constraints_text() {
  case "$SWIFT_PIP_CONSTRAINTS" in
    "") tested_constraints ;;
    none) echo "# unconstrained" ;;
    *) cat "$SWIFT_PIP_CONSTRAINTS" ;;
  esac
}

keystone_constraints_text() {
  constraints_text
  [ -n "$SWIFT_PIP_CONSTRAINTS" ] || tested_keystone_constraints
}

venv_ready() {
  [ -x "$SWIFT_VENV/bin/swift-proxy-server" ] && [ -f "$SWIFT_VENV/.strongroom-stamp" ] &&
    [ "$(cat "$SWIFT_VENV/.strongroom-stamp")" = "$1" ]
}

keystone_ready() {
  [ -f "$SWIFT_VENV/.strongroom-keystone-stamp" ] &&
    [ "$(cat "$SWIFT_VENV/.strongroom-keystone-stamp")" = "$1" ]
}

ensure_keystonemiddleware() {
  local want
  want="$(keystone_constraints_text | sha256sum | cut -c1-16)"
  keystone_ready "$want" && return 0
  (
    flock 9
    if ! keystone_ready "$want"; then
      echo "start-swift: installing keystonemiddleware into $SWIFT_VENV" >&2
      local cfile="$SWIFT_VENV/.keystone-constraints.txt"
      keystone_constraints_text >"$cfile"
      local args=(-q install)
      [ "$SWIFT_PIP_CONSTRAINTS" = none ] || args+=(-c "$cfile")
      "$SWIFT_VENV/bin/python" -m pip "${args[@]}" keystonemiddleware \
        || die "pip install of keystonemiddleware into $SWIFT_VENV failed"
      echo "$want" >"$SWIFT_VENV/.strongroom-keystone-stamp"
    fi
  ) 9>"$SWIFT_VENV/.install.lock"
}

ensure_venv() {
  local want
  want="$(constraints_text | sha256sum | cut -c1-16)"
  venv_ready "$want" && return 0
  command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required"
  mkdir -p "$SWIFT_VENV"
  (
    flock 9
    if ! venv_ready "$want"; then
      echo "start-swift: installing Swift into $SWIFT_VENV" >&2
      [ -x "$SWIFT_VENV/bin/python" ] || "$SWIFT_PYTHON" -m venv "$SWIFT_VENV"
      local cfile="$SWIFT_VENV/.constraints.txt"
      constraints_text >"$cfile"
      local args=(-q install)
      [ "$SWIFT_PIP_CONSTRAINTS" = none ] || args+=(-c "$cfile")
      "$SWIFT_VENV/bin/python" -m pip "${args[@]}" swift pyeclib eventlet lxml xattr cryptography \
        || die "pip install into $SWIFT_VENV failed"
      echo "$want" >"$SWIFT_VENV/.strongroom-stamp"
    fi
  ) 9>"$SWIFT_VENV/.install.lock"
}

ensure_venv
[ "$AUTH" = tempauth ] || ensure_keystonemiddleware
PY="$SWIFT_VENV/bin/python"

for f in "$BASE"/run/*.pid; do
  [ -e "$f" ] || continue
  pid="$(cat "$f")"
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BASE/"; then
    die "already running in $BASE (pid $pid from $f); run stop-swift.sh first"
  fi
done

mkdir -p "$BASE/etc" "$BASE/run" "$BASE/log" "$DEVICES/d1"

# Ports free, user xattrs on the data directory.
"$PY" - "$DEVICES/d1" "$PROXY_PORT" "$OBJECT_PORT" "$CONTAINER_PORT" "$ACCOUNT_PORT" <<'PYEOF'
import os, socket, sys, tempfile
data_dir, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError as exc:
        sys.exit(f"start-swift: port {port} on 127.0.0.1 is not free ({exc.strerror})")
    finally:
        s.close()
fd, probe = tempfile.mkstemp(dir=data_dir, prefix=".xattr-probe-")
try:
    os.setxattr(probe, "user.swift.probe", b"x" * 254)
    assert os.getxattr(probe, "user.swift.probe") == b"x" * 254
except OSError as exc:
    sys.exit(
        f"start-swift: {data_dir} does not support user xattrs ({exc.strerror}); Swift keeps "
        "object metadata in them. Set SWIFT_DEVICES_DIR to a directory on ext4, xfs or "
        "tmpfs (Linux >= 6.6), e.g. under /dev/shm."
    )
finally:
    os.close(fd)
    os.unlink(probe)
PYEOF

if [ -f /etc/swift/swift.conf ] && grep -Eq '^\[storage-policy:[1-9]' /etc/swift/swift.conf; then
  echo "start-swift: warning: /etc/swift/swift.conf defines storage policies besides 0;" \
    "Swift reads policies from there, and this node has rings for policy 0 only" >&2
fi

secret() { "$PY" -c 'import secrets; print(secrets.token_hex(16))'; }
FERNET_KEY="$("$PY" -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"

cat >"$BASE/etc/swift.conf" <<CONF
[swift-hash]
swift_hash_path_suffix = $(secret)
swift_hash_path_prefix = $(secret)

[storage-policy:0]
name = Policy-0
default = yes
CONF

server_conf() { # name port app
  cat >"$BASE/etc/$1-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
workers = 0
user = $RUN_USER
swift_dir = $BASE/etc
devices = $DEVICES
mount_check = false
disable_fallocate = true
log_level = $LOG_LEVEL
log_name = $1-server

[pipeline:main]
pipeline = healthcheck $1-server

[app:$1-server]
use = egg:swift#$1

[filter:healthcheck]
use = egg:swift#healthcheck
CONF
}
server_conf account "$ACCOUNT_PORT"
server_conf container "$CONTAINER_PORT"
server_conf object "$OBJECT_PORT"

# s3api before the auth filter, slo after it (without slo, multipart upload is disabled).
# With Keystone, authtoken comes before s3api and s3token: placed after them it would strip
# the identity headers s3token sets, and keystoneauth would see S3 requests as anonymous.
if [ "$AUTH" = keystone ]; then
  auth_filters="authtoken s3api s3token keystoneauth"
else
  auth_filters="s3api tempauth"
fi
cat >"$BASE/etc/proxy-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PROXY_PORT
workers = 0
user = $RUN_USER
swift_dir = $BASE/etc
log_level = $LOG_LEVEL
log_name = proxy-server

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats bulk $auth_filters copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
fernet_key_1 = $FERNET_KEY
active_fernet_key_id = 1

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
dns_compliant_bucket_names = false

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
CONF

if [ "$AUTH" = keystone ]; then
  chmod 600 "$BASE/etc/proxy-server.conf"
  cat >>"$BASE/etc/proxy-server.conf" <<CONF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $KEYSTONE_AUTH_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $KEYSTONE_SWIFT_USER
password = $KEYSTONE_SWIFT_PASSWORD
project_name = $KEYSTONE_SERVICE_PROJECT
user_domain_name = Default
project_domain_name = Default
region_name = $KEYSTONE_REGION
delay_auth_decision = true
service_token_roles_required = true

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_admin_role = ResellerAdmin

# Keystone 30 answers 401 to an anonymous POST /v3/s3tokens: s3token needs service credentials.
[filter:s3token]
use = egg:swift#s3token
auth_uri = $KEYSTONE_AUTH_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $KEYSTONE_SWIFT_USER
password = $KEYSTONE_SWIFT_PASSWORD
project_name = $KEYSTONE_SERVICE_PROJECT
user_domain_name = Default
project_domain_name = Default
CONF
fi

# Rings: 2^8 partitions, 1 replica, one device, all three built in one call.
"$PY" - "$BASE/etc" "$OBJECT_PORT" "$CONTAINER_PORT" "$ACCOUNT_PORT" <<'PYEOF'
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for name, port in zip(("object", "container", "account"), sys.argv[2:]):
    builder = RingBuilder(8, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "d1", "weight": 100.0, "meta": ""})
    builder.rebalance()
    builder.save(f"{etc}/{name}.builder")
    builder.get_ring().save(f"{etc}/{name}.ring.gz")
PYEOF

started=()
cleanup_on_failure() {
  for name in "${started[@]}"; do
    echo "--- $BASE/log/$name.log (tail)" >&2
    tail -n 20 "$BASE/log/$name.log" >&2 || true
  done
  "$here/stop-swift.sh" --swift-only "$BASE" >&2 || true
}

for name in account container object proxy; do
  "$SWIFT_VENV/bin/swift-$name-server" "$BASE/etc/$name-server.conf" -v \
    </dev/null >"$BASE/log/$name.log" 2>&1 &
  echo $! >"$BASE/run/$name.pid"
  started+=("$name")
done

if ! "$PY" - "$START_TIMEOUT" "$BASE/run" "$PROXY_PORT" "$OBJECT_PORT" "$CONTAINER_PORT" \
  "$ACCOUNT_PORT" <<'PYEOF'
import os, sys, time, urllib.request
timeout, run_dir, ports = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
pending = {f"http://127.0.0.1:{p}/healthcheck" for p in ports}
deadline = time.monotonic() + timeout
while pending and time.monotonic() < deadline:
    for name in os.listdir(run_dir):
        pid = int(open(os.path.join(run_dir, name)).read())
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "Z"
        if state == "Z":
            sys.exit(f"start-swift: {name[:-4]} server (pid {pid}) exited during start-up")
    for url in sorted(pending):
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    pending.discard(url)
        except OSError:
            pass
    if pending:
        time.sleep(0.1)
if pending:
    sys.exit(f"start-swift: no answer within {timeout:g}s from {', '.join(sorted(pending))}")
PYEOF
then
  cleanup_on_failure
  exit 1
fi

if [ "$AUTH" = keystone ]; then
  # Credentials come from Keystone (see BASE/keystone.env); S3 keys are EC2 credentials.
  cat >"$BASE/swift.env" <<ENV
SWIFT_AUTH=keystone
SWIFT_AUTH_VERSION=3
SWIFT_AUTH_URL=$KEYSTONE_AUTH_URL
SWIFT_STORAGE_URL_PREFIX=http://127.0.0.1:$PROXY_PORT/v1/AUTH_
S3_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT
S3_REGION=us-east-1
SWIFT_PROXY_PORT=$PROXY_PORT
ENV
else
  cat >"$BASE/swift.env" <<ENV
SWIFT_AUTH=tempauth
SWIFT_AUTH_VERSION=1
SWIFT_AUTH_URL=http://127.0.0.1:$PROXY_PORT/auth/v1.0
SWIFT_USER=test:tester
SWIFT_KEY=testing
SWIFT_STORAGE_URL=http://127.0.0.1:$PROXY_PORT/v1/AUTH_test
S3_ENDPOINT_URL=http://127.0.0.1:$PROXY_PORT
S3_REGION=us-east-1
S3_ACCESS_KEY=test:tester
S3_SECRET_KEY=testing
SWIFT_PROXY_PORT=$PROXY_PORT
ENV
fi
echo "start-swift: Swift answering on http://127.0.0.1:$PROXY_PORT (config in $BASE/swift.env)" >&2
