#!/usr/bin/env bash
# Stop the Swift servers started by start-swift.sh BASE, then the Keystone started by
# start-keystone.sh in the same BASE.
#
#   scripts/swift/stop-swift.sh [--swift-only | --keystone-only] BASE
#
# Only the pids in BASE/run/*.pid (Swift) and BASE/keystone/run/*.pid (Keystone) are
# signalled, and only while their command line still contains "BASE/" (a recycled pid is left
# alone). SIGTERM first, SIGKILL after SWIFT_STOP_TIMEOUT seconds (default 10). A zombie
# counts as stopped: its sockets are closed.
set -euo pipefail

which=all
case "${1:-}" in
  --swift-only) which=swift; shift ;;
  --keystone-only) which=keystone; shift ;;
esac
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 [--swift-only | --keystone-only] BASE" >&2
  exit 2
fi
[ -d "$1" ] || exit 0
BASE="$(cd "$1" && pwd -P)"
STOP_TIMEOUT="${SWIFT_STOP_TIMEOUT:-10}"

ours() { # pid -> true while that pid is a live process started for BASE
  local pid="$1" state
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$BASE/" || return 1
  state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ "$state" != Z ]
}

stop_pids_in() { # run directory: SIGTERM its pids, wait for them, SIGKILL at the deadline
  local f pid pids=() deadline
  for f in "$1"/*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  deadline=$((SECONDS + STOP_TIMEOUT))
  for pid in ${pids[@]+"${pids[@]}"}; do
    while ours "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        # SIGKILL is not synchronous: wait (bounded) until the process is really gone.
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 100); do ours "$pid" || break; sleep 0.05; done
        break
      fi
      sleep 0.05
    done
  done
}

# Swift first: its proxy validates tokens against Keystone until it stops.
[ "$which" = keystone ] || stop_pids_in "$BASE/run"
[ "$which" = swift ] || stop_pids_in "$BASE/keystone/run"
