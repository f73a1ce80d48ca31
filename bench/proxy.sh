#!/usr/bin/env bash
# What the PROXY protocol costs the balancer, and that it costs nothing when off: the balancer
# as built here without --send-proxy ("off") and with --send-proxy v2 ("v2", in front of backends
# with --accept-proxy), beside another build of the balancer ("before", BEFORE=path, in front of
# the same plain backends as "off"), each in front of 2 `makler-server --service http` backends.
# The targets alternate in rounds (before, off, v2, before, …); each round is a makler-load http
# run, keep-alive and a new connection per request, and reads the balancer's CPU time (user +
# system) over it.
#
# Everything runs on loopback and every process it starts is stopped when it ends.
# Settings (environment): BEFORE (required), DURATION seconds per round (3), ROUNDS (5),
# CONNECTIONS (50), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

BEFORE=${BEFORE:?the path of another makler-balancer to measure beside this one}
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}

. bench/lib.sh

cargo build --release --quiet
BIN=$PWD/target/release
WORK=$(mktemp -d)
trap stop_all_and_clean EXIT
echo "makler $(source_version), before: $BEFORE, $(machine_note)"
TICK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# balancer LABEL PROGRAM BACKEND_ARGS BALANCER_ARGS...: a balancer and its 2 backends; sets
# ADDR_<LABEL> and PID_<LABEL>.
balancer() {
  local label=$1 program=$2 backend_args=$3
  shift 3
  start "$label" "$program" --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-register --service bench \
    --threads "$THREADS" --quiet "$@"
  local tcp control pid=$LAST_PID
  tcp=$(field "$LINE" tcp)
  control=$(field "$LINE" udp)
  for _ in 1 2; do
    # shellcheck disable=SC2086
    start "backend-$label" "$BIN/makler-server" --service http --register-as bench --broker "$control" \
      --threads 2 --quiet $backend_args
  done
  for _ in $(seq 200); do
    [ "$("$BIN/makler" --broker "$control" stats 2>/dev/null | grep -c '^backend .* up')" = 2 ] && break
    sleep 0.05
  done
  [ "$("$BIN/makler" --broker "$control" stats | grep -c '^backend .* up')" = 2 ] || die "$label: backends not up"
  printf -v "ADDR_$label" '%s' "$tcp"
  printf -v "PID_$label" '%s' "$pid"
}

balancer before "$BEFORE" ""
balancer off "$BIN/makler-balancer" ""
balancer v2 "$BIN/makler-balancer" "--accept-proxy" --send-proxy v2

echo "round,target,mode,requests_per_s,errors,cpu_us_per_request"
for round in $(seq "$ROUNDS"); do
  for mode in keepalive close; do
    for target in before off v2; do
      addr_var=ADDR_$target pid_var=PID_$target
      cpu0=$(cpu_ticks "${!pid_var}")
      row=$("$BIN/makler-load" http --target "${!addr_var}" --connections "$CONNECTIONS" --duration "$DURATION" \
        --mode "$mode" --threads 2 --format csv --label "$target" | tail -1)
      cpu=$((($(cpu_ticks "${!pid_var}") - cpu0) * 1000000 / TICK))
      requests=$(cut -d, -f6 <<<"$row")
      rate=$(cut -d, -f7 <<<"$row")
      errors=$(cut -d, -f11 <<<"$row")
      echo "$round,$target,$mode,$rate,$errors,$(awk -v c="$cpu" -v r="$requests" 'BEGIN { printf "%.2f", c / r }')"
    done
  done
done
