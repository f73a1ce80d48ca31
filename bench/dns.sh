#!/usr/bin/env bash
# The DNS benchmark: the broker's DNS face next to NSD, the authoritative server of NLnet Labs,
# serving the same data: 1,000 services × 10 instances, as `_svcN._tcp.makler.` SRV records
# whose targets `<hex address>-<port>.addr.makler.` have A records (so both put 10 SRV and
# 10 A records in each answer). NSD runs one server process with its response rate limiting
# off (`rrl-ratelimit: 0`, Debian's default is on); the broker runs its one loop with rate
# limiting off too. dnsperf (one thread, one socket, EDNS on so the whole answer fits, 100
# queries in flight) sends SRV queries over the 1,000 services to each.
#
# Everything runs on loopback and every process it starts is stopped when it ends. The targets
# are measured in alternating rounds (makler, NSD, makler, …), so that a change in the machine's
# speed during the benchmark affects both alike; a rate is all queries of all rounds over their
# time. dnsperf reports no percentiles, so each round is followed by one of the same load with
# dnsperf's -v (a line per answer, with its latency): p99 is over all answers of those rounds.
#
# Settings (environment): DURATION seconds per round (5), ROUNDS (3), INFLIGHT (100).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
INFLIGHT=${INFLIGHT:-100}
SERVICES=1000
INSTANCES=10

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "installing $2" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
need nsd nsd
need dnsperf dnsperf
need dig bind9-dnsutils

cargo build --release --quiet --bin makler-broker
BIN=$PWD/target/release
WORK=$(mktemp -d)
PIDS=()

stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

# A loopback port free for UDP and TCP at the time of asking.
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && ! ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then
      echo "$port"
      return
    fi
  done
  echo "no free port" >&2
  exit 1
}

# The instances, one line each: service, address, port, target label.
for ((s = 0; s < SERVICES; s++)); do
  for ((i = 0; i < INSTANCES; i++)); do
    a=$((10 + i)) b=$((s / 256)) c=$((s % 256)) port=$((8000 + i))
    printf 'svc%d 127.%d.%d.%d %d %02x%02x%02x%02x-%d\n' "$s" "$a" "$b" "$c" "$port" 127 "$a" "$b" "$c" "$port"
  done
done >"$WORK/instances"

# --- makler-broker, filled through its registration protocol ---
"$BIN/makler-broker" --listen 127.0.0.1:0 --no-multicast --dns 127.0.0.1:0 --ttl 86400 --probe-interval 0 \
  --max-per-source 0 --max-per-network 0 --rate-limit 0 --quiet >"$WORK/broker.out" 2>"$WORK/broker.err" &
PIDS+=("$!")
for _ in $(seq 200); do grep -q '^listening' "$WORK/broker.out" 2>/dev/null && break; sleep 0.05; done
LINE=$(head -1 "$WORK/broker.out")
UDP=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' <<<"$LINE")
MAKLER=$(sed -n 's/.*dns=\([^ ]*\).*/\1/p' <<<"$LINE")
[ -n "$MAKLER" ] || { echo "the broker did not start:" >&2; cat "$WORK/broker.err" >&2; exit 1; }
instances() { # the broker's instance count, from `stats`
  exec 4<>"/dev/udp/${UDP%:*}/${UDP##*:}"
  printf 'stats' >&4
  # One read of the whole datagram (bash's read would take one byte of it).
  local reply
  reply=$(timeout 2 dd bs=65536 count=1 status=none <&4 || true)
  exec 4>&-
  sed -n 's/.*instances=\([0-9]*\).*/\1/p' <<<"$reply"
}
for attempt in 1 2 3 4 5; do
  # One datagram per register; a datagram lost in a burst is sent again in the next attempt
  # (the same source registering the same instance only refreshes it).
  exec 3<>"/dev/udp/${UDP%:*}/${UDP##*:}"
  while read -r service ip port _; do printf 'register %s %s %s' "$service" "$ip" "$port" >&3; done <"$WORK/instances"
  exec 3>&-
  [ "$(instances)" = $((SERVICES * INSTANCES)) ] && break
  [ "$attempt" = 5 ] && { echo "the broker holds $(instances) instances, not $((SERVICES * INSTANCES))" >&2; exit 1; }
done

# --- NSD, one server process, response rate limiting off ---
NSD_PORT=$(free_port)
{
  echo "\$ORIGIN makler."
  echo "\$TTL 0"
  echo "@ IN SOA makler. hostmaster.makler. 1 3600 600 86400 0"
  # No NS record: NSD would put it (and its address) into every answer, which makler's
  # answers do not carry.
  while read -r service ip port target; do
    echo "_$service._tcp IN SRV 1 1 $port $target.addr.makler."
    echo "$target.addr IN A $ip"
  done <"$WORK/instances"
} >"$WORK/makler.zone"
cat >"$WORK/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$WORK"
  database: ""
  zonelistfile: "$WORK/zone.list"
  xfrdfile: "$WORK/xfrd.state"
  xfrdir: "$WORK"
  pidfile: "$WORK/nsd.pid"
  logfile: "$WORK/nsd.log"
  verbosity: 0
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: makler.
  zonefile: "$WORK/makler.zone"
EOF
nsd-checkconf "$WORK/nsd.conf"
nsd -d -c "$WORK/nsd.conf" >"$WORK/nsd.out" 2>&1 &
PIDS+=("$!")
NSD=127.0.0.1:$NSD_PORT
for _ in $(seq 200); do
  dig @127.0.0.1 -p "$NSD_PORT" +short +time=1 +tries=1 _svc0._tcp.makler SRV 2>/dev/null | grep -q . && break
  sleep 0.05
done

# Both answer alike: 10 SRV and 10 A records.
for target in "$MAKLER" "$NSD"; do
  out=$(dig @"${target%:*}" -p "${target##*:}" +bufsize=1232 _svc7._tcp.makler SRV)
  answers=$(sed -n 's/.*ANSWER: \([0-9]*\), AUTHORITY: [0-9]*, ADDITIONAL: \([0-9]*\).*/\1 \2/p' <<<"$out")
  size=$(sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p' <<<"$out")
  echo "$target: answer and additional records $answers, $size bytes"
  [ "$answers" = "10 11" ] || { echo "unexpected answer from $target:" >&2; echo "$out" >&2; exit 1; }
done

for ((s = 0; s < SERVICES; s++)); do echo "_svc$s._tcp.makler. SRV"; done >"$WORK/queries"

# perf NAME ADDR ROUND: one rate round and one latency round against ADDR.
perf() {
  local name=$1 addr=$2 round=$3
  dnsperf -s "${addr%:*}" -p "${addr##*:}" -d "$WORK/queries" -l "$DURATION" -c 1 -T 1 -e -q "$INFLIGHT" \
    >"$WORK/$name.rate.$round" 2>&1
  dnsperf -s "${addr%:*}" -p "${addr##*:}" -d "$WORK/queries" -l "$DURATION" -c 1 -T 1 -e -q "$INFLIGHT" -v \
    >"$WORK/$name.latency.$round" 2>&1
}
for ((round = 1; round <= ROUNDS; round++)); do
  perf makler "$MAKLER" "$round"
  perf nsd "$NSD" "$round"
done

# summary NAME: queries/s over all rate rounds, lost queries, p99 ms over all latency rounds.
summary() {
  local name=$1
  cat "$WORK/$name".rate.* | awk '
    /Queries completed:/ { done += $3 }
    /Queries lost:/ { lost += $3 }
    /Run time \(s\):/ { time += $4 }
    END { printf "%.0f %d ", done / time, lost }'
  cat "$WORK/$name".latency.* | awk '$1 == ">" && $2 == "NOERROR" { print $NF }' | sort -g |
    awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f %d\n", v[i] * 1000, NR }'
}
read -r m_rate m_lost m_p99 m_n < <(summary makler)
read -r n_rate n_lost n_p99 n_n < <(summary nsd)

echo
echo "SRV queries, 1,000 services x 10 instances, dnsperf -c 1 -T 1 -e -q $INFLIGHT, $ROUNDS rounds of ${DURATION}s each"
printf '%-26s %12s %8s %10s\n' target queries/s lost "p99 ms"
printf '%-26s %12s %8s %10s\n' "makler-broker --dns" "$m_rate" "$m_lost" "$m_p99"
printf '%-26s %12s %8s %10s\n' "NSD $(nsd -v 2>&1 | head -1 | awk '{print $3}')" "$n_rate" "$n_lost" "$n_p99"
awk -v m="$m_rate" -v n="$n_rate" -v mp="$m_p99" -v np="$n_p99" \
  'BEGIN { printf "makler/NSD: rate %.2f, p99 %.2f (latency answers: makler '"$m_n"', NSD '"$n_n"')\n", m / n, mp / np }'
