#!/usr/bin/env bash
# (As run for PERFORMANCE.md, issue 22 branch `ka`: paths are those of that session, /work/wt-ka and /tmp/ka.)
# prof.sh: one backend, makler-balancer (BAL), [BAL2], haproxy; perf (or just measure) each under load.
set -u
BIN=/work/wt-ka/target/release
BAL=${BAL:-$BIN/makler-balancer}
MODE=${MODE:-keepalive}
D=${D:-5}
OUT=${OUT:-/tmp/ka/prof}
PERF=${PERF:-1}
mkdir -p $OUT
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }
$BAL --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-broker --service bench --threads 2 --quiet --ttl 3600 >$OUT/bal.out 2>$OUT/bal.err &
BPID=$!; PIDS+=($BPID)
sleep 0.3
L=$(head -1 $OUT/bal.out); BTCP=$(field "$L" tcp); CTL=$(field "$L" udp)
$BIN/makler-server --service http --workers 2 --broker $CTL >$OUT/backend.out 2>$OUT/backend.err &
PIDS+=($!)
sleep 0.5
BE=$(field "$(head -1 $OUT/backend.out)" tcp)
P=$((20000 + RANDOM % 10000))
printf 'global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:%s\n  default_backend be\nbackend be\n  balance roundrobin\n  server s0 %s\n' $P $BE >$OUT/h.cfg
haproxy -db -f $OUT/h.cfg >$OUT/h.out 2>&1 &
HPID=$!; PIDS+=($HPID)
sleep 1
echo "balancer $BTCP pid $BPID backend $BE haproxy $P pid $HPID"
ticks() { sed 's/.*) //' /proc/$1/stat | awk '{ print $12, $13 }'; }
run() { # name addr pid
  local t0 t1 r
  t0=$(ticks $3)
  if [ "$PERF" = 1 ]; then perf record -e cpu-clock -g -p $3 -o $OUT/$1.$MODE.data -- sleep $D >/dev/null 2>&1 & fi
  local pp=$!
  r=$($BIN/makler-load http --target $2 --connections 50 --duration $D --mode $MODE --threads 2 --format csv --label $1 | tail -1)
  [ "$PERF" = 1 ] && wait $pp
  t1=$(ticks $3)
  echo "$r" | awk -F, -v a="$t0" -v b="$t1" -v name=$1 'BEGIN{split(a,x," ");split(b,y," ")} {req=$6; printf "%s req %d rate %.0f user %.2f sys %.2f us/req\n", name, req, $7, (y[1]-x[1])*10000/req, (y[2]-x[2])*10000/req}'
}
for r in $(seq ${ROUNDS:-1}); do
run haproxy 127.0.0.1:$P $HPID
run makler $BTCP $BPID
done
