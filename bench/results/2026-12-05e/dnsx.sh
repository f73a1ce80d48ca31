#!/bin/bash
# usage: dnsx.sh ROUNDS DURATION INFLIGHT label=BIN...  brokers with --dns, 10,000 instances over 1,000 services; dnsperf SRV in alternating rounds
X=${X:-$(mktemp -d)}
ROUNDS=$1; DUR=$2; Q=$3; shift 3
for ((s = 0; s < 1000; s++)); do echo "_type$s._tcp.makler. SRV"; done > $X/queries
declare -A DNS; i=0; PIDS=""
for t in "$@"; do
  label=${t%%=*}; bin=${t#*=}; port=$((17200 + i)); dport=$((17300 + i)); i=$((i+1))
  $bin --listen 127.0.0.1:$port --dns 127.0.0.1:$dport --quiet --no-multicast --ttl 3600 --max-instances 1000000 --max-per-source 0 --max-per-network 0 --probe-interval 0 --rate-limit 0 > /dev/null 2>&1 < /dev/null &
  PIDS="$PIDS $!"; sleep 0.3
  ${LOAD:-target/release/makler-load} populate --target 127.0.0.1:$port --instances 10000 --types 1000 --prefix type >/dev/null
  DNS[$label]=$dport; echo "$label: $bin"
done
for ((r = 1; r <= ROUNDS; r++)); do
  for t in "$@"; do label=${t%%=*}
    dnsperf -s 127.0.0.1 -p ${DNS[$label]} -d $X/queries -l $DUR -c 1 -T 1 -e -q $Q 2>&1 | awk -v m=$label '/Queries per second/ {print "round", m, $4} /Queries lost/ {print "lost", m, $3}'
  done
done | awk '{print} $1=="round" {s[$2]+=$3; n[$2]++} END {for (k in s) printf "mean %s %.0f queries/s\n", k, s[k]/n[k]}'
kill $PIDS
