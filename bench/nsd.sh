#!/usr/bin/env bash
# The broker next to NSD, an authoritative DNS server, answering for the same table: 1,000
# services with 10 instances each (10,000 in all, as `makler-load udp` registers them). NSD gets
# a zone with one SRV record `_svcK._tcp.makler.test.` per instance and an A record per address
# (`makler-load zone`); the broker gets the same instances registered (`makler-load populate`).
# One process each on the machine: NSD with `server-count: 1` and rate limiting off
# (`rrl-ratelimit: 0`; Debian's NSD limits answers per source by default), the broker with its
# one loop. `makler-load query` then asks both for the same 1,000 services in turn, alternating
# NSD, broker binary and broker text in rounds, with the same generator; a DNS reply counts when
# it parses (hickory-proto) as a response with the query's id, NOERROR and at least one answer.
#
# Everything listens on 127.0.0.1 only, and every process the script starts is stopped when it
# ends (trap). It fails loudly on any error (a server that does not start, a bad config or zone).
#
# Settings (environment): DURATION seconds per target and shape (6), ROUNDS (3), SHAPES (client
# threads x requests in flight per thread, "1x1 1x8 1x64 4x8"), RUNS (how many times the whole
# comparison is repeated, 1).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
SHAPES=${SHAPES:-"1x1 1x8 1x64 4x8"}
RUNS=${RUNS:-1}
INSTANCES=10000
TYPES=1000
ZONE=makler.test

need nsd nsd
cargo build --release --quiet
BIN=$PWD/target/release
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap stop_all_and_clean EXIT

echo "makler $(source_version), $(nsd -v 2>&1 | sed -n 1p), $(machine_note)"

# The zone and the names, from the same code that registers the broker's table.
"$BIN/makler-load" zone --zone "$ZONE" --instances "$INSTANCES" --types "$TYPES" --prefix svc >"$WORK/$ZONE.zone"
nsd-checkzone "$ZONE" "$WORK/$ZONE.zone" >"$WORK/checkzone.out" 2>&1 || {
  cat "$WORK/checkzone.out" >&2
  die "nsd-checkzone refused the zone"
}
for k in $(seq 0 $((TYPES - 1))); do echo "svc$k"; done >"$WORK/names"

# Below the ephemeral range (32768 and up), where the load's own sockets take ports.
port=$((20000 + RANDOM % 10000))
cat >"$WORK/nsd.conf" <<EOF
server:
    server-count: 1
    ip-address: 127.0.0.1
    port: $port
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$WORK"
    zonelistfile: "$WORK/zone.list"
    database: ""
    pidfile: "$WORK/nsd.pid"
    xfrdfile: "$WORK/xfrd.state"
    xfrdir: "$WORK"
    logfile: "$WORK/nsd.log"
    verbosity: 1
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "$ZONE"
    zonefile: "$WORK/$ZONE.zone"
EOF
nsd-checkconf "$WORK/nsd.conf" || die "nsd-checkconf refused $WORK/nsd.conf"
: >"$WORK/nsd.log"
: >"$WORK/nsd.err"
# -d: stay in the foreground (its server process is still a child of its own).
nsd -d -c "$WORK/nsd.conf" >"$WORK/nsd.err" 2>&1 &
nsd_pid=$!
PIDS+=("$nsd_pid")
wait_for_line "$WORK/nsd.log" "nsd started" "$nsd_pid" nsd
alive "$nsd_pid" nsd "$WORK/nsd.log"
if grep -Ei "error|failed|cannot" "$WORK/nsd.log" "$WORK/nsd.err"; then die "NSD reported errors (above)"; fi
# NSD's processes (the one started, xfrd and the server process below them), for their CPU
# time per reply: every descendant of the process started.
nsd_pids=$nsd_pid
level=$nsd_pid
while [ -n "$level" ]; do
  level=$(for pid in $level; do ps -o pid= --ppid "$pid" || true; done | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
  for pid in $level; do nsd_pids="$nsd_pids,$pid"; done
done
echo "NSD processes: $nsd_pids"

start broker "$BIN/makler-broker" --listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-instances 20000 \
  --max-per-source 0 --max-per-network 0 --probe-interval 0 --rate-limit 0
broker=$(field "$LINE" udp)
broker_pid=$LAST_PID
"$BIN/makler-load" populate --target "$broker" --instances "$INSTANCES" --types "$TYPES" --prefix svc

RESULTS=$WORK/results.txt
: >"$RESULTS"
for run in $(seq "$RUNS"); do
  for shape in $SHAPES; do
    threads=${shape%x*}
    window=${shape#*x}
    echo >&2
    echo "run $run, $threads client thread(s) x $window in flight" >&2
    "$BIN/makler-load" query --names "$WORK/names" --zone "$ZONE" \
      --target "nsd:dns=127.0.0.1:$port/$nsd_pids" --target "broker-binary:binary=$broker/$broker_pid" \
      --target "broker-text:text=$broker/$broker_pid" \
      --duration "$DURATION" --rounds "$ROUNDS" --threads "$threads" --window "$window" | tee "$WORK/query.out" >&2
    alive "$nsd_pid" nsd "$WORK/nsd.log"
    alive "$broker_pid" broker
    awk -v shape="${threads}x$window" -v run="$run" '
      $1 == "nsd" || $1 == "broker-binary" || $1 == "broker-text" { print run, shape, $0 }' "$WORK/query.out" >>"$RESULTS"
  done
done
[ -s "$RESULTS" ] || die "no results"

echo
echo "broker vs NSD $(nsd -v 2>&1 | sed -n 1p | cut -d' ' -f3), one process each, $INSTANCES instances over $TYPES services," \
  "${DURATION}s per target in $ROUNDS alternating rounds, makler-load query;" \
  "requests/s (p99 µs) reply bytes, server CPU µs per reply"
echo "ratios: median of the per-round ratios (lowest-highest)"
awk '
  # Fields: run shape label rate p50 p90 p99 lost bad bytes cli srv ratio (range)
  {
    key = $1 " " $2
    if (!(key in seen)) { seen[key] = 1; order[++count] = key }
    rate[key, $3] = $4; p99[key, $3] = $7; bytes[key, $3] = $10; srv[key, $3] = $12; ratio[key, $3] = $13 " " $14
    lost += $8; bad += $9
  }
  END {
    printf "%-3s %-6s | %-31s | %-31s | %-31s | %-17s | %-17s\n", "run", "shape", "NSD", "broker binary", "broker text", "binary/NSD", "text/NSD"
    split("nsd broker-binary broker-text", who, " ")
    for (i = 1; i <= count; i++) {
      k = order[i]; split(k, p, " ")
      printf "%-3s %-6s", p[1], p[2]
      for (w = 1; w <= 3; w++)
        printf " | %7.0f (%6.1f) %3d B %5s µs", rate[k, who[w]], p99[k, who[w]], bytes[k, who[w]], srv[k, who[w]]
      printf " | %-17s | %-17s\n", ratio[k, "broker-binary"], ratio[k, "broker-text"]
    }
    printf "lost: %d, wrong replies: %d\n", lost, bad
  }' "$RESULTS"
echo "$(machine_note) at the end"
