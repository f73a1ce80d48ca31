#!/usr/bin/env bash
# This build's broker next to an earlier build's, answering the same table (by default 1,000 services with
# 10 instances each, registered at both by `makler-load populate`. `makler-load query` then asks
# both for the same names, binary queries and text queries, in alternating rounds with the same
# generator, and prints each rate as a ratio to the earlier build's.
#
#   bash bench/baseline.sh /path/to/earlier/makler-broker
#
# The earlier build comes from a worktree of your own, e.g.
#   git worktree add --detach /tmp/baseline <commit> && (cd /tmp/baseline && cargo build --release)
#
# Everything listens on 127.0.0.1 only, and every process the script starts is stopped when it
# ends. Settings (environment): DURATION seconds per target (20), ROUNDS (10), WINDOW requests in
# flight (8), THREADS (1), INSTANCES (10000) over TYPES services (1000): `INSTANCES=10000 TYPES=10`
# measures full replies (1,000 instances per service, as many as fit in one reply).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

BASELINE=${1:?usage: bench/baseline.sh /path/to/earlier/makler-broker}
[ -x "$BASELINE" ] || die "$BASELINE is not an executable"
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-10}
WINDOW=${WINDOW:-8}
THREADS=${THREADS:-1}
INSTANCES=${INSTANCES:-10000}
TYPES=${TYPES:-1000}

cargo build --release --quiet
BIN=$PWD/target/release
WORK=$(mktemp -d)
trap stop_all_and_clean EXIT
echo "makler $(source_version) against $BASELINE, $(machine_note)"

# Long TTLs: nothing heartbeats during the run; no quota, no probes, no rate limit: one
# generator registers and asks everything (as bench/nsd.sh).
flags=(--listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-instances $((INSTANCES * 2)) --max-per-source 0
  --probe-interval 0 --rate-limit 0)
# Builds older than per-network quotas do not know the flag (and have no such quota).
old_flags=("${flags[@]}")
if "$BASELINE" --help | grep -q -- --max-per-network; then old_flags+=(--max-per-network 0); fi
flags+=(--max-per-network 0)
start baseline "$BASELINE" "${old_flags[@]}"
old=${LINE#listening udp=}
old_pid=$LAST_PID
start current "$BIN/makler-broker" "${flags[@]}"
new=${LINE#listening udp=}
new_pid=$LAST_PID
for target in "$old" "$new"; do
  "$BIN/makler-load" populate --quiet --target "$target" --instances "$INSTANCES" --types "$TYPES" --prefix svc
done
seq 0 $((TYPES - 1)) | sed 's/^/svc/' >"$WORK/names"

for form in binary text; do
  "$BIN/makler-load" query --quiet --names "$WORK/names" --duration "$DURATION" --rounds "$ROUNDS" \
    --window "$WINDOW" --threads "$THREADS" \
    --target "baseline:$form=$old/$old_pid" --target "current:$form=$new/$new_pid"
  alive "$old_pid" baseline
  alive "$new_pid" current
done
