#!/usr/bin/env bash
# cmp.sh: HAProxy (h), makler-balancer (m), proto-epoll (e) and proto-uring (u) (bench/proto/*.c),
# 2 threads each, in front of the same makler-server --service http backend (2 workers), driven
# by the same makler-load http (50 connections, 2 threads) as bench/balancer.sh, in alternating
# rounds h, m, e, u, h, m, … For each round: the proxy's CPU per request (user + system of all its
# threads, io_uring's kernel threads included, from /proc/PID/stat), and the whole machine's busy
# time per request (/proc/stat: user, nice, system, irq, softirq, steal of all cores), which also
# catches work moved to other threads or to softirq; "other" = machine - proxy (generator, backend,
# kernel threads). Summary: medians of the per-round ratios.
# Settings: MODES ("keepalive close"), ROUNDS (8), D seconds per round (3), URING (ring flags of u:
# defer, coop, plain, sqpoll; see proto-uring.c), U2 (if set, a fifth target "v": proto-uring with
# URING=$U2), PROF=1 (after the rounds, a perf profile per target and mode; PROFDIR: keep the
# listings there), STRACE=1 (after the rounds, one run of 1 s per target and mode under strace -c -f:
# system calls per request). Run as: flock /work/bench.lock chrt -f 20 bash bench/proto/cmp.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release}
PROTO=$PWD/bench/proto/bin
MODES=${MODES:-"keepalive close"}
ROUNDS=${ROUNDS:-8}
D=${D:-3}
OUT=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }
first_line() { # FILE PID: waits for the first line a process prints
  for _ in $(seq 100); do [ -s "$1" ] && { head -1 "$1"; return; }; kill -0 "$2" || break; sleep 0.05; done
  echo "error: no first line in $1" >&2; exit 1
}
[ -x "$PROTO/proto-uring" ] || bash bench/proto/build.sh

"$BIN/makler-balancer" --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-broker --service bench --threads 2 \
  --quiet --ttl 3600 >"$OUT/m.out" 2>"$OUT/m.err" &
m_pid=$!; PIDS+=($m_pid)
L=$(first_line "$OUT/m.out" $m_pid); m_tcp=$(field "$L" tcp); ctl=$(field "$L" udp)
"$BIN/makler-server" --service http --workers 2 --broker "$ctl" >"$OUT/b.out" 2>"$OUT/b.err" &
PIDS+=($!)
BE=$(field "$(first_line "$OUT/b.out" $!)" tcp)
for _ in $(seq 100); do "$BIN/makler" --broker "$ctl" stats | grep -q "^backends  *1$" && break; sleep 0.05; done
"$BIN/makler" --broker "$ctl" stats | grep -q "^backends  *1$" || { echo "error: the backend did not register" >&2; exit 1; }

P=$((20000 + RANDOM % 10000))
printf 'global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:%s\n  default_backend be\nbackend be\n  balance roundrobin\n  server s0 %s\n' $P "$BE" >"$OUT/h.cfg"
haproxy -db -f "$OUT/h.cfg" >"$OUT/h.out" 2>&1 &
h_pid=$!; PIDS+=($h_pid); h_tcp=127.0.0.1:$P

LIFE=$((ROUNDS * 5 * D * 3 + 120))
"$PROTO/proto-epoll" $LIFE "$BE" >"$OUT/e.out" &
e_pid=$!; PIDS+=($e_pid); e_tcp=$(field "$(first_line "$OUT/e.out" $e_pid)" tcp)
URING=${URING:-defer} "$PROTO/proto-uring" $LIFE "$BE" >"$OUT/u.out" &
u_pid=$!; PIDS+=($u_pid); u_tcp=$(field "$(first_line "$OUT/u.out" $u_pid)" tcp)
TARGETS="h m e u"
if [ -n "${U2:-}" ]; then
  URING=$U2 "$PROTO/proto-uring" $LIFE "$BE" >"$OUT/v.out" &
  v_pid=$!; PIDS+=($v_pid); v_tcp=$(field "$(first_line "$OUT/v.out" $v_pid)" tcp)
  TARGETS="h m e u v"
fi
sleep 1
echo "# $(date -u +%FT%TZ) makler $(git rev-parse --short HEAD) ($BIN), $(haproxy -v | sed -n 1p | cut -d' ' -f1-3)," \
  "proto-uring URING=${URING:-defer}${U2:+, v: URING=$U2}; rounds $ROUNDS of ${D}s; load $(cut -d' ' -f1-3 /proc/loadavg);" \
  "sched $(chrt -p $$ | sed -n 1p | sed 's/.*: //')"

TICK=$(getconf CLK_TCK)
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
segments() { awk '$1 == "Tcp:" && !h { for (i = 1; i <= NF; i++) col[$i] = i; h = 1; next } $1 == "Tcp:" { print $col["OutSegs"]; exit }' /proc/net/snmp; }
run() { # NAME MODE
  local pid tcp p0 m0 s0 row
  eval "pid=\$${1}_pid; tcp=\$${1}_tcp"
  p0=$(proc_ticks "$pid"); m0=$(machine_ticks); s0=$(segments)
  row=$("$BIN/makler-load" http --target "$tcp" --connections 50 --duration "$D" --mode "$2" --threads 2 \
    --format csv --label "$1" | tail -1)
  echo "$1 $2 $row $p0 $(proc_ticks "$pid") $m0 $(machine_ticks) $s0 $(segments)" | awk -v tick="$TICK" '{
    split($3, r, ","); req = r[6]; us = 1e6 / tick / req
    printf "%s %-9s rate %7.0f cpu %6.2f user %5.2f sys %6.2f machine %6.2f other %6.2f seg %4.2f errors %s\n",
      $1, $2, r[7], ($6 + $7 - $4 - $5) * us, ($6 - $4) * us, ($7 - $5) * us, ($9 - $8) * us,
      ($9 - $8 - $6 - $7 + $4 + $5) * us, ($11 - $10) / req, r[11] }'
}
for mode in $MODES; do
  for _ in $(seq "$ROUNDS"); do for t in $TARGETS; do run $t "$mode"; done; done
done | tee "$OUT/rounds.txt"
for p in $m_pid $e_pid $u_pid $h_pid; do kill -0 $p || { echo "error: a proxy died ($p)" >&2; exit 1; }; done

# Medians of the per-round ratios (rounds are lines of all targets in order).
awk -v targets="$TARGETS" '
  function med(a, n,    i, j, v) { for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function rng(a, n) { return sprintf("%.2f (%.2f–%.2f)", med(a, n), a[1], a[n]) }
  { k = $2; t = $1; n[k, t]++; cpu[k, t, n[k, t]] = $6; mach[k, t, n[k, t]] = $12; user[k, t] += $8; sys[k, t] += $10; oth[k, t] += $14; ms[k, t] += $12; seg[k, t] += $16; err[k, t] += $18; rate[k, t] += $4; if (!(k in seen)) { seen[k] = 1; mo[++nm] = k } }
  END {
    nt = split(targets, T, " ")
    for (q = 1; q <= nm; q++) { k = mo[q]
      printf "\n%s: mean µs per request: proxy (user, sys); machine, other; TCP segments sent per request; mean rate\n", k
      for (i = 1; i <= nt; i++) { t = T[i]; c = 0; for (r = 1; r <= n[k, t]; r++) c += cpu[k, t, r]
        printf "  %s cpu %.2f (%.2f, %.2f); machine %.2f, other %.2f; segments %.2f; rate %.0f; errors %d\n", t, c / n[k, t], user[k, t] / n[k, t], sys[k, t] / n[k, t], ms[k, t] / n[k, t], oth[k, t] / n[k, t], seg[k, t] / n[k, t], rate[k, t] / n[k, t], err[k, t] }
      split("u/e e/m m/h e/h u/h v/e v/u", P, " ")
      printf "  ratios, median (range) of the rounds: proxy CPU per request | machine CPU per request\n"
      for (p = 1; p <= 7; p++) { split(P[p], ab, "/"); a = ab[1]; b = ab[2]; if (!n[k, a] || !n[k, b]) continue
        for (r = 1; r <= n[k, a]; r++) { x[r] = cpu[k, a, r] / cpu[k, b, r]; y[r] = mach[k, a, r] / mach[k, b, r] }
        printf "  %s %s | %s\n", P[p], rng(x, n[k, a]), rng(y, n[k, a]) }
    }
  }' "$OUT/rounds.txt"

if [ "${STRACE:-0}" = 1 ]; then
  echo; echo "system calls per request (strace -c -f, 1 s per target and mode):"
  for mode in $MODES; do for t in $TARGETS; do
    eval "pid=\$${t}_pid; tcp=\$${t}_tcp"
    strace -c -f -q -p "$pid" -o "$OUT/strace.$t" 2>/dev/null & tr=$!
    sleep 0.5
    req=$("$BIN/makler-load" http --target "$tcp" --connections 50 --duration 1 --mode "$mode" --threads 2 --format csv --label $t | tail -1 | cut -d, -f6)
    kill -INT $tr; wait $tr 2>/dev/null || true
    awk -v t=$t -v mode=$mode -v req=$req '/^-/ || /total$/ || !($4 ~ /^[0-9]+$/) { next } { c[$NF] = $4; tot += $4 }
      END { printf "  %s %-9s %5.2f:", t, mode, tot / req; for (k in c) if (c[k] / req >= 0.01) printf " %s %.2f", k, c[k] / req; print "" }' "$OUT/strace.$t"
  done; done
fi
if [ "${PROF:-0}" = 1 ]; then
  # Where each proxy's CPU goes: perf record -e cpu-clock -g of the proxy for one run of D seconds
  # per target and mode; inclusive ("children") share of named kernel functions, as µs per request.
  echo; echo "profile (perf record -e cpu-clock -g, one run of ${D}s per target and mode): inclusive µs per request"
  SYMS="entry_SYSCALL_64_after_hwframe __x64_sys_sendto __x64_sys_recvfrom __x64_sys_epoll_wait __x64_sys_io_uring_enter
    io_submit_sqes io_send io_recv __io_run_local_work tctx_task_work io_poll_task_func io_cqring_wait
    __schedule exit_to_user_mode_loop do_softirq.part.0 tcp_v4_rcv sock_def_readable
    tcp_sendmsg tcp_recvmsg io_poll_wake ep_poll_callback __wake_up_sync_key try_to_wake_up"
  for mode in $MODES; do for t in $TARGETS; do
    eval "pid=\$${t}_pid; tcp=\$${t}_tcp"
    p0=$(proc_ticks "$pid")
    perf record -q -e cpu-clock -g -p "$pid" -o "$OUT/perf.$t" -- sleep "$D" >/dev/null 2>&1 & pr=$!
    req=$("$BIN/makler-load" http --target "$tcp" --connections 50 --duration "$D" --mode "$mode" --threads 2 --format csv --label $t | tail -1 | cut -d, -f6)
    wait $pr || true
    if [ -n "${PROFDIR:-}" ]; then
      perf report -i "$OUT/perf.$t" --no-children --sort sym --stdio -g none --percent-limit 0.3 2>/dev/null | grep -v '^#' | grep . >"$PROFDIR/prof-$t-$mode-self.txt" || true
      perf report -i "$OUT/perf.$t" --children --sort sym --stdio -g none --percent-limit 1 2>/dev/null | grep -v '^#' | grep . >"$PROFDIR/prof-$t-$mode-children.txt" || true
    fi
    cpu=$(echo "$p0 $(proc_ticks "$pid")" | awk -v tick="$TICK" -v req="$req" '{ print ($3 + $4 - $1 - $2) * 1e6 / tick / req }')
    perf report -i "$OUT/perf.$t" --children --sort sym --stdio -g none 2>/dev/null | awk -v t=$t -v mode=$mode -v cpu="$cpu" -v syms="$SYMS" '
      BEGIN { n = split(syms, S, " "); for (i = 1; i <= n; i++) want[S[i]] = i }
      /^ *[0-9.]+% +[0-9.]+% / { c = $1; sub("%", "", c); s = $2; sub("%", "", s); sym = $NF
        if (sym in want) inc[sym] = c; if ($0 ~ /\[k\]/) kself += s; else uself += s }
      END { printf "  %s %-9s cpu %.2f µs/req; user-space self %.2f, kernel self %.2f\n", t, mode, cpu, uself * cpu / 100, kself * cpu / 100
        for (i = 1; i <= n; i++) if (S[i] in inc) printf "    %-34s %5.2f\n", S[i], inc[S[i]] * cpu / 100 }'
  done; done
fi
echo "# end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
