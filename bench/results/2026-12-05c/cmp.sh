#!/usr/bin/env bash
# cmp.sh LABEL=CMD ...: one makler-server http backend (registered by hand), each makler-balancer given and HAProxy 2.6 in front of it, alternating rounds; prints requests/s, CPU per request and context switches per request. Loopback only.
set -u
B=/work/wt-bal/target/release
W=$(mktemp -d)
TICK=$(getconf CLK_TCK)
$B/makler-server --service http --broker 127.0.0.1:9 --workers 2 --no-multicast --check none >$W/be.out 2>$W/be.err &
SP=$!
sleep 0.5
BE=$(sed -n 's/.*tcp=\([^ ]*\).*/\1/p' $W/be.out | head -1)
names=(); addrs=(); pids=()
port=24000
for spec in "$@"; do
  name=${spec%%=*}; cmd=${spec#*=}
  port=$((port+1))
  env $cmd --listen 127.0.0.1:$port --control 127.0.0.1:0 --no-broker --service bench --threads 2 --quiet --health-interval 0 --ttl 3600 >$W/$name.out 2>$W/$name.err &
  pid=$!
  sleep 0.3
  udp=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' $W/$name.out)
  printf 'register bench %s %s' ${BE%:*} ${BE##*:} >/dev/udp/127.0.0.1/${udp##*:}
  names+=($name); addrs+=(127.0.0.1:$port); pids+=($pid)
done
printf 'global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:23456\n  default_backend be\nbackend be\n  balance roundrobin\n  server s0 %s\n' $BE >$W/h.cfg
haproxy -db -f $W/h.cfg >$W/h.log 2>&1 &
HP=$!
names+=(haproxy); addrs+=(127.0.0.1:23456); pids+=($HP)
sleep 1
sw() { cat /proc/$1/task/*/status | awk -v k=$2 '$1==k":" {n+=$2} END {print n}'; }
cpu() { sed 's/.*) //' /proc/$1/stat | awk '{ print $12 + $13 }'; }
for r in $(seq ${ROUNDS:-3}); do
for MODE in ${MODES:-keepalive close}; do
for i in "${!names[@]}"; do
  n=${names[$i]}; a=${addrs[$i]}; p=${pids[$i]}
  v0=$(sw $p voluntary_ctxt_switches); n0=$(sw $p nonvoluntary_ctxt_switches); c0=$(cpu $p)
  $B/makler-load http --target $a --connections 50 --duration ${D:-3} --mode $MODE --threads 2 --format csv --label $n | tail -1 > $W/load
  req=$(cut -d, -f6 $W/load); err=$(cut -d, -f11 $W/load)
  v1=$(sw $p voluntary_ctxt_switches); n1=$(sw $p nonvoluntary_ctxt_switches); c1=$(cpu $p)
  awk -v r0=$r -v n=$n -v m=$MODE -v r=$req -v e=$err -v v=$((v1-v0)) -v nv=$((n1-n0)) -v c=$((c1-c0)) -v d=${D:-3} -v t=$TICK 'BEGIN { printf "%d %-8s %-9s %7.0f req/s  cpu %5.2f us/req  vcsw %.3f  nvcsw %.3f err %s\n", r0, n, m, r/d, c*1e6/t/r, v/r, nv/r, e }'
done; done; done
kill "${pids[@]}" $SP; wait 2>/dev/null
rm -rf $W
