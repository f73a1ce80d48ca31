# Shared by the benchmark scripts (sourced, not run): installing what they need, starting
# processes in the background and waiting for them, and stopping everything at the end.
#
# A script sets WORK (a fresh directory) and calls `trap stop_all_and_clean EXIT` before it
# starts anything. Every failure is loud: the script stops with a message and the process's
# output, never goes on with an empty address.

PIDS=()
SEQ=0

# Any command that fails and stops the script (set -e) says so, with its line.
set -E
trap 'echo "error: \"$BASH_COMMAND\" failed (exit $?) at ${BASH_SOURCE[0]}:$LINENO" >&2' ERR

# need COMMAND PACKAGE: installs the Debian package when COMMAND is missing.
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "installing $2" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}

die() {
  echo "error: $*" >&2
  exit 1
}

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

stop_all_and_clean() {
  stop_all
  rm -rf "$WORK"
}

# alive PID NAME [LOG]: fails loudly, with the end of LOG (its stderr), when it has exited.
alive() {
  if ! kill -0 "$1" 2>/dev/null; then
    echo "error: $2 (pid $1) is not running" >&2
    if [ -n "${3:-}" ]; then tail -20 "$3" >&2 || true; fi
    exit 1
  fi
}

# start NAME COMMAND...: runs COMMAND in the background with its output in fresh files of its
# own (OUT and ERR: created empty before the process starts, and never those of an earlier
# process of the same name), remembers its pid (in PIDS and LAST_PID), waits for its
# `listening` line (in LINE) and checks that it still runs. Not in a subshell, so that
# stop_all knows every process.
start() {
  local name=$1
  shift
  SEQ=$((SEQ + 1))
  OUT=$WORK/$name.$SEQ.out
  ERR=$WORK/$name.$SEQ.err
  : >"$OUT"
  : >"$ERR"
  "$@" >"$OUT" 2>"$ERR" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  LINE=
  for _ in $(seq 200); do
    LINE=$(grep -m1 '^listening' "$OUT" || true)
    [ -n "$LINE" ] && break
    kill -0 "$LAST_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$LINE" ]; then
    echo "error: $name did not print its address; its stderr:" >&2
    cat "$ERR" >&2
    exit 1
  fi
  alive "$LAST_PID" "$name" "$ERR"
}

# field LINE KEY: the address after KEY= in a `listening` line; fails when there is none.
field() {
  local value
  value=$(sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1")
  [ -n "$value" ] || die "no $2= address in line: $1"
  echo "$value"
}

# wait_for_line FILE PATTERN PID NAME: waits (10 s at most) until FILE holds a line matching
# PATTERN, failing loudly when it does not come or the process dies.
wait_for_line() {
  for _ in $(seq 200); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.05
  done
  echo "error: $4 never wrote \"$2\" to $1; it holds:" >&2
  tail -20 "$1" >&2 || true
  exit 1
}

# The commit measured, with +changes when tracked files differ from it.
source_version() {
  local commit
  commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo "no git")
  if ! git diff --quiet HEAD 2>/dev/null; then commit="$commit+changes"; fi
  echo "$commit"
}

# machine_note: cores and load average, for the header of a result.
machine_note() {
  echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
