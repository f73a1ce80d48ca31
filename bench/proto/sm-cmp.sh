#!/usr/bin/env bash
# sm-cmp.sh: the sockmap prototype (bench/proto/smproxy.c, built by bench/proto/sm-build.sh) beside HAProxy and makler-balancer, 2 threads
# each where they have threads, in front of the same one `makler-server --service http` backend
# (2 workers), driven by the same generator (makler-load http, 50 connections, 2 threads), in
# alternating rounds: direct (to the backend), h (HAProxy), m (makler-balancer), s (smproxy).
#
# Per round and target, in µs per request: the proxy process's CPU (user, sys), the whole machine's busy
# time (all CPUs, /proc/stat: user+system+irq+softirq+steal, nice left out), the kworker and ksoftirqd
# threads' CPU (where sockmap's redirects run), the backend's CPU, the generator's (bash's time), and
# their sum (proxy + kworker + ksoftirqd + backend + generator; direct: no proxy): all the CPU the benchmark's own processes
# and the kernel's workers spent, whatever else ran on the machine); the generator's good replies and
# errors; the machine's context switches per request.
# The sockmap prototype's user space does next to nothing: what it causes is in the machine's figure,
# charged to whichever thread ran the softirq, and to kworkers.
#
# PERF (a directory): the first round of each target is also recorded there, system-wide
# (perf record -e cpu-clock -a -g, TARGET.data); its figures carry perf's own cost.
# Needs the release build of this tree (nice -n 5 cargo build --release) and haproxy.
# Settings: MODE (keepalive | close), ROUNDS (6), D seconds per round (3), OUT (a directory for logs),
# TARGETS ("direct h m s"). Run it as: flock /work/bench.lock chrt -f 20 bash bench/proto/sm-cmp.sh
set -u
cd "$(dirname "$0")/../.."
BIN=$PWD/target/release
SM=$PWD/target/proto/smproxy
[ -x "$SM" ] || bench/proto/sm-build.sh
MODE=${MODE:-keepalive}
D=${D:-3}
ROUNDS=${ROUNDS:-6}
TARGETS=${TARGETS:-"direct h m s"}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }
$BIN/makler-balancer --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-broker --service bench --threads 2 --quiet --ttl 3600 >"$OUT/m.out" 2>"$OUT/m.err" &
m_pid=$!; PIDS+=($m_pid)
sleep 0.3
L=$(head -1 "$OUT/m.out"); m_tcp=$(field "$L" tcp); ctl=$(field "$L" udp)
$BIN/makler-server --service http --workers 2 --broker "$ctl" >"$OUT/backend.out" 2>"$OUT/backend.err" &
be_pid=$!; PIDS+=($be_pid); direct_pid=$be_pid
sleep 0.5
BE=$(field "$(head -1 "$OUT/backend.out")" tcp); direct_tcp=$BE
P=$((20000 + RANDOM % 10000))
printf 'global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:%s\n  default_backend be\nbackend be\n  balance roundrobin\n  server s0 %s\n' $P "$BE" >"$OUT/h.cfg"
haproxy -db -f "$OUT/h.cfg" >"$OUT/h.out" 2>&1 &
h_pid=$!; PIDS+=($h_pid); h_tcp=127.0.0.1:$P
$SM $((P + 1)) 3600 "$BE" >"$OUT/s.out" 2>"$OUT/s.err" &
s_pid=$!; PIDS+=($s_pid)
sleep 1
s_tcp=$(field "$(head -1 "$OUT/s.out")" tcp)
[ -n "$s_tcp" ] || { cat "$OUT/s.err"; exit 1; }
echo "# $(date -u +%T) mode $MODE D $D rounds $ROUNDS backend $BE makler $(git rev-parse --short HEAD) $(haproxy -v | sed -n 1p | cut -d' ' -f1-3) load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# µs per request: proxy (user sys) | machine kworker ksoftirqd backend | good replies, errors, rate, context switches per request (machine)"
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
# kworker and ksoftirqd threads' CPU: "pid ticks kind" per thread (cat: a process may exit while it
# reads). kworkers come and go: a round counts the growth of those alive at its end (a new one from 0).
kt() { cat /proc/[0-9]*/stat 2>/dev/null | awk '{ c = $0; sub(/^[0-9]+ \(/, "", c); name = c; sub(/\).*/, "", name); sub(/^[^)]*\) /, "", c); split(c, f, " "); t = f[12] + f[13]; if (name ~ /^kworker/) print $1, t, "k"; else if (name ~ /^ksoftirqd/) print $1, t, "s" }'; }
ktdelta() { awk 'NR == FNR { t0[$1] = $2; next } { d[$3] += $2 - t0[$1] } END { print d["k"] + 0, d["s"] + 0 }' "$1" "$2"; }
# The machine's busy time, all CPUs, without nice (other engineers' builds run at nice 15; everything
# measured here runs at nice 0, kworkers included).
machine() { awk '$1 == "cpu" { b = $2 + $4 + $7 + $8 + $9 } $1 == "ctxt" { c = $2 } END { print b, c }' /proc/stat; }
run() { # name
  local pid tcp p0 p1 m0 m1 k0 k1 b0 b1 r
  eval "pid=\$${1}_pid; tcp=\$${1}_tcp"
  p0=$(ticks $pid); b0=$(ticks $be_pid); kt >"$OUT/k0"; m0=$(machine)
  if [ -n "${PERF:-}" ] && [ "$ROUND" = 1 ]; then
    perf record -q -e cpu-clock -a -g -o "$PERF/$1.data" 2>/dev/null &
    perf_pid=$!
  fi
  # bash's time: the generator's own user and system time (it is a new process every round).
  r=$( { TIMEFORMAT='%3U %3S'; time $BIN/makler-load http --target "$tcp" --connections 50 --duration "$D" --mode "$MODE" --threads 2 --format csv --label "$1" 2>>"$OUT/load.err" | tail -1; } 2>"$OUT/gen.time")
  gen=$(tail -1 "$OUT/gen.time")
  m1=$(machine); kt >"$OUT/k1"; b1=$(ticks $be_pid); p1=$(ticks $pid); k1=$(ktdelta "$OUT/k0" "$OUT/k1"); k0="0 0"
  if [ -n "${PERF:-}" ] && [ "$ROUND" = 1 ]; then kill -INT $perf_pid; wait $perf_pid; fi
  echo "$r" | awk -F, -v p0="$p0" -v p1="$p1" -v b0="$b0" -v b1="$b1" -v k0="$k0" -v k1="$k1" -v m0="$m0" -v m1="$m1" -v gen="$gen" -v name="$1" '
    BEGIN { split(p0, a, " "); split(p1, b, " "); split(b0, c, " "); split(b1, d, " "); split(k0, e, " "); split(k1, f, " ")
            split(m0, g, " "); split(m1, h, " "); m0 = g[1]; m1 = h[1]; cs = h[2] - g[2]; split(gen, gg, " ") }
    { req = $6; u = 10000 / req
      printf "%-6s proxy %.2f ( %.2f %.2f ) machine %.2f kworker %.2f ksoftirqd %.2f backend %.2f good %d errors %s rate %.0f switches %.2f generator %.2f sum %.2f\n", name,
        (b[1] + b[2] - a[1] - a[2]) * u, (b[1] - a[1]) * u, (b[2] - a[2]) * u, (m1 - m0) * u, (f[1] - e[1]) * u, (f[2] - e[2]) * u,
        (d[1] + d[2] - c[1] - c[2]) * u, req, $11, $7, cs / req, (gg[1] + gg[2]) * 1e6 / req,
        ((name == "direct" ? 0 : b[1] + b[2] - a[1] - a[2]) + f[1] + f[2] - e[1] - e[2] + d[1] + d[2] - c[1] - c[2]) * u + (gg[1] + gg[2]) * 1e6 / req }'
}
for ROUND in $(seq "$ROUNDS"); do for t in $TARGETS; do run $t; done; done | tee "$OUT/rounds.txt"
for p in $m_pid $h_pid $s_pid $be_pid; do kill -0 $p || echo "error: process $p died"; done
# Medians per target, and each proxy's ratio to HAProxy per round (median, range).
awk '
  function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function rng(s,   a, n, i, lo, hi) { n = split(s, a, " "); lo = hi = a[1]; for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] } return sprintf("%.2f-%.2f", lo, hi) }
  { t = $1; round[t]++; P[t] = P[t] " " $3; U[t] = U[t] " " $5; S[t] = S[t] " " $6; M[t] = M[t] " " $9; K[t] = K[t] " " $11; Q[t] = Q[t] " " $13; B[t] = B[t] " " $15
    G[t] += $17; E[t] += $19; R[t] = R[t] " " $21; C[t] = C[t] " " $23; GE[t] = GE[t] " " $25; SU[t] = SU[t] " " $27
    pr[t, round[t]] = $3; mr[t, round[t]] = $9; sr[t, round[t]] = $27 }
  END {
    print "median µs/request: target proxy (user sys) machine kworker ksoftirqd backend | machine-direct | good errors median-rate switches/request (machine) | generator sum"
    for (t in round) printf "%-6s %.2f ( %.2f %.2f ) %.2f %.2f %.2f %.2f | %.2f | %d %d %.0f %.2f | %.2f %.2f\n", t, med(P[t]), med(U[t]), med(S[t]), med(M[t]), med(K[t]), med(Q[t]), med(B[t]),
      med(M[t]) - med(M["direct"]), G[t], E[t], med(R[t]), med(C[t]), med(GE[t]), med(SU[t])
    for (t in round) if (t != "h" && t != "direct" && ("h" in round)) {
      pp = ""; mm = ""; xx = ""; ss = ""; yy = ""
      for (i = 1; i <= round[t]; i++) { pp = pp " " pr[t, i] / pr["h", i]; mm = mm " " mr[t, i] / mr["h", i]; ss = ss " " sr[t, i] / sr["h", i]
        if ("direct" in round) xx = xx " " (mr[t, i] - mr["direct", i]) / (mr["h", i] - mr["direct", i]) }
      printf "%s / HAProxy per round: proxy CPU %.2f (%s)  machine %.2f (%s)  machine minus direct %.2f (%s)  sum %.2f (%s)\n", t, med(pp), rng(pp), med(mm), rng(mm), med(xx), rng(xx), med(ss), rng(ss)
    }
  }' "$OUT/rounds.txt"
echo "# $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg); smproxy: $(kill -TERM $s_pid; sleep 0.3; cat "$OUT/s.err")"
