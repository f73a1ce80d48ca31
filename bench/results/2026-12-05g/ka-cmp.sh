#!/usr/bin/env bash
# (As run for PERFORMANCE.md, issue 22 branch `ka`: paths are those of that session, /work/wt-ka and /tmp/ka.)
# cmp.sh: one backend; haproxy, balancer A ($A), balancer B ($B, with $KNOB applied: a command given the pid as $1);
# alternating rounds under the same load; prints per-round CPU µs/req (user, sys), nvcsw/req, rate.
set -u
BIN=/work/wt-ka/target/release
A=${A:-$BIN/makler-balancer}
B=${B:-$A}
KNOB=${KNOB:-true}
MODE=${MODE:-keepalive}
D=${D:-3}
OUT=${OUT:-/tmp/ka/cmp}
mkdir -p $OUT
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }
startbal() { # name bin
  $2 --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-broker --service bench --threads 2 --quiet --ttl 3600 >$OUT/$1.out 2>$OUT/$1.err &
  PIDS+=($!); eval "${1}_pid=$!"
  sleep 0.3
  local L; L=$(head -1 $OUT/$1.out); eval "${1}_tcp=$(field "$L" tcp)"; eval "${1}_ctl=$(field "$L" udp)"
}
startbal a $A
startbal b $B
$BIN/makler-server --service http --workers 2 --broker $a_ctl >$OUT/backend.out 2>$OUT/backend.err &
PIDS+=($!)
sleep 0.5
BE=$(field "$(head -1 $OUT/backend.out)" tcp)
printf 'register bench %s %s' "${BE%:*}" "${BE##*:}" >"/dev/udp/${b_ctl%:*}/${b_ctl##*:}"
P=$((20000 + RANDOM % 10000))
printf 'global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:%s\n  default_backend be\nbackend be\n  balance roundrobin\n  server s0 %s\n' $P $BE >$OUT/h.cfg
haproxy -db -f $OUT/h.cfg >$OUT/h.out 2>&1 &
h_pid=$!; PIDS+=($h_pid); h_tcp=127.0.0.1:$P
sleep 1
$KNOB $b_pid; ${KNOBH:-true} $h_pid; ${KNOBA:-true} $a_pid
echo "# $(date -u +%T) mode $MODE D $D A=$A B=$B KNOB=$KNOB load $(cut -d' ' -f1-3 /proc/loadavg)"
stat3() { local u=0 s=0 n=0 v=0; for t in /proc/$1/task/*; do read -r uu ss < <(sed 's/.*) //' $t/stat | awk '{print $12, $13}'); u=$((u+uu)); s=$((s+ss)); n=$((n+$(awk '/^nonvoluntary_ctxt_switches/{print $2}' $t/status))); v=$((v+$(awk '/^voluntary_ctxt_switches/{print $2}' $t/status))); done; echo "$u $s $n $v"; }
run() { # name
  local pid tcp t0 t1 r
  eval "pid=\$${1}_pid; tcp=\$${1}_tcp"
  t0=$(stat3 $pid)
  r=$($BIN/makler-load http --target $tcp --connections 50 --duration $D --mode $MODE --threads 2 --format csv --label $1 | tail -1)
  t1=$(stat3 $pid)
  echo "$r" | awk -F, -v a="$t0" -v b="$t1" -v name=$1 'BEGIN{split(a,x," ");split(b,y," ")} {req=$6; printf "%s rate %.0f cpu %.2f user %.2f sys %.2f nvcsw %.3f vcsw %.3f errors %s p50 %s p99 %s\n", name, $7, (y[1]+y[2]-x[1]-x[2])*10000/req, (y[1]-x[1])*10000/req, (y[2]-x[2])*10000/req, (y[3]-x[3])/req, (y[4]-x[4])/req, $11, $8, $10}'
}
for r in $(seq ${ROUNDS:-3}); do run h; run a; run b; done | tee $OUT/rounds.txt
awk '{c[$1]=c[$1]" "$5; q[$1]=q[$1]" "$3} END{for(k in c) print k, "cpu:" c[k], " rate:" q[k]}' $OUT/rounds.txt
