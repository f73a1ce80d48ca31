#!/usr/bin/env bash
# splice.sh: copy vs splice in makler-balancer (the same build, MAKLER_SPLICE set or not) and HAProxy,
# in front of one backend answering SIZE-byte bodies (keep-alive), driven by wrk -t2 -c10; alternating rounds.
# The build: `git apply splice-prototype.patch` on the commit named in splice.txt, `cargo build --release`,
# copy target/release/makler-balancer to /tmp/bal-splice/; the backend: `gcc -O2 -pthread -o
# /tmp/big/bigbody bigbody.c`. Loopback only; it stops what it started.
set -u
BIN=/tmp/bal-splice/makler-balancer
W=$(mktemp -d)
TICK=$(getconf CLK_TCK)
cpu() { sed 's/.*) //' /proc/$1/stat | awk '{ print $12 + $13 }'; }
echo "makler-balancer with and without MAKLER_SPLICE (patch splice-prototype.patch on $(git -C /work/wt-bal rev-parse --short HEAD)), $(haproxy -v | sed -n 1p | cut -d' ' -f1-3); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t2 -c${C:-10} -d${D:-3}s, keep-alive, one backend (a C server answering every GET with SIZE bytes); ${ROUNDS:-3} alternating rounds"
for size in ${SIZES:-65536 1048576}; do
  /tmp/big/bigbody 27001 $size & BB=$!
  sleep 0.2
  $BIN --listen 127.0.0.1:27002 --control 127.0.0.1:0 --no-broker --service bench --threads 2 --quiet --health-interval 0 --ttl 3600 >$W/c.out 2>&1 & CP=$!
  MAKLER_SPLICE=1 $BIN --listen 127.0.0.1:27003 --control 127.0.0.1:0 --no-broker --service bench --threads 2 --quiet --health-interval 0 --ttl 3600 >$W/s.out 2>&1 & SPP=$!
  sleep 0.3
  for f in c s; do u=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' $W/$f.out); printf 'register bench 127.0.0.1 27001' >/dev/udp/127.0.0.1/${u##*:}; done
  printf 'global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:27004\n  default_backend be\nbackend be\n  balance roundrobin\n  server s0 127.0.0.1:27001\n' >$W/h.cfg
  haproxy -db -f $W/h.cfg >$W/h.log 2>&1 & HP=$!
  sleep 0.5
  for r in $(seq ${ROUNDS:-3}); do
    for t in "copy 27002 $CP" "splice 27003 $SPP" "haproxy 27004 $HP"; do
      set -- $t
      c0=$(cpu $3)
      out=$(wrk -t2 -c${C:-10} -d${D:-3}s http://127.0.0.1:$2/)
      c1=$(cpu $3)
      rate=$(awk '/Requests\/sec/ { print $2 }' <<<"$out"); total=$(awk '/requests in/ { print $1 }' <<<"$out")
      awk -v s=$size -v r=$r -v n=$1 -v rate=$rate -v total=$total -v c=$((c1-c0)) -v t=$TICK 'BEGIN {
        us = c * 1e6 / t; printf "size %7d round %d %-7s %8.0f req/s %7.2f GiB/s  CPU %7.1f us/req  %6.1f us/MiB\n", s, r, n, rate, rate * s / 2^30, us / total, us / (total * s / 2^20) }'
    done
  done
  kill $BB $CP $SPP $HP; wait 2>/dev/null
done
rm -rf $W
