#!/usr/bin/env bash
# The balancer benchmark: makler-balancer side by side with HAProxy (mode tcp, the same thread
# count) in front of the same 1, 2 and 3 `makler-server --service http` backends, and direct to
# one backend as the limit, for each policy beside HAProxy's equivalent: round-robin and `balance
# roundrobin`, least-conn and `balance leastconn`, random-two and `balance random(2)`. Every target is driven by the same load
# generator (makler-load http) in keep-alive and connection-per-request mode, in two series:
# backends with no work (the balancer's own cost) and with --work-ms 2 (scaling). Then it holds
# idle connections through the balancer and reports its memory.
#
# Everything runs on loopback and every process it starts is stopped when it ends.
# The targets are measured in alternating rounds (direct, HAProxy, makler, direct, …), so that a
# change in the machine's speed during the benchmark affects all alike; a rate is all requests of
# all rounds over their time, a latency the mean of the rounds' values.
#
# wrk runs once, keep-alive against one backend, as a cross-check of makler-load's figures.
#
# For each proxy it reads the CPU time (user and system) and voluntary context switches per
# request, and the whole machine's busy time per request; from these it prints the ceiling: the
# ratio makler would reach if its own code took no time at all (its kernel time stays), and what
# makler's CPU per request would have to be for 1.2 x HAProxy's rate. Both assume the machine is
# saturated (the load generator, the backends and the proxy share its cores), as it is here.
#
# It fails loudly on any error: a process that does not start or dies, a backend that does not
# register, an HAProxy config that `haproxy -c` refuses, an alert in HAProxy's log. Every process
# writes to files of its own, created before it starts, so no wait reads an earlier series' file.
#
# System calls and segments per request: after the rounds of each series with no service time, each
# proxy serves one more short run per mode under `strace -c -f` (its system calls, by name); the
# segments are those the whole machine sent over TCP (`/proc/net/snmp`, OutSegs: both legs of a proxied
# request, and anything else on the machine) in the rounds themselves, which strace does not slow.
#
# Settings (environment): DURATION seconds per target and mode (6), ROUNDS (3), CONNECTIONS (50),
# THREADS (2), IDLE connections (10000, or as many as the open-file limit allows; 0: skip), SERIES
# ("0 2"), BACKENDS ("1 2 3"), POLICIES ("round-robin least-conn random-two"), WRK (1; 0 skips the cross-check), STRACE (1; 0 skips the system call
# count), BEFORE (the path of another makler-balancer, measured as a fourth target "before" in the same
# rounds, in front of the same backends; round-robin only), CSV (the file for the rows:
# bench/results/<UTC date>/balancer.csv unless set; the tracked bench/balancer.csv, the run PERFORMANCE.md
# quotes, is rewritten only when asked, CSV=bench/balancer.csv; CSV= writes none).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
SERIES=${SERIES:-"0 2"}
BACKENDS=${BACKENDS:-"1 2 3"}
POLICIES=${POLICIES:-"round-robin least-conn random-two"}
BEFORE=${BEFORE:-}
# Never a tracked file unless asked (see above).
CSV=${CSV-bench/results/$(date -u +%F)/balancer.csv}

. bench/lib.sh
need haproxy haproxy
need wrk wrk
[ "${STRACE:-1}" = 0 ] || need strace strace

cargo build --release --quiet
BIN=$PWD/target/release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d)
trap stop_all_and_clean EXIT
echo "makler $(source_version), $(haproxy -v | sed -n 1p), $(machine_note)"

wait_tcp() { # ADDR PID LOG
  local host=${1%:*} port=${1##*:}
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "error: nothing listens on $1; the log:" >&2
  cat "$3" >&2
  exit 1
}

# Fails loudly when HAProxy has written an alert or an error.
check_haproxy_log() {
  if grep -E '\[(ALERT|ERROR)\]|expects <name>' "$1" >&2; then die "HAProxy reported errors (above)"; fi
}

RESULTS=$WORK/results.csv
echo "label,target,mode,connections,duration_s,requests,rate,p50_us,p90_us,p99_us,errors,cpu_us,voluntary_switches,user_us,machine_us,segments" >"$RESULTS"
SYSCALLS=$WORK/syscalls.txt
: >"$SYSCALLS"
TICK=$(getconf CLK_TCK)

# cpu_ticks PID: the process's user + system time (all its threads), in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# user_ticks PID: its user time alone (its own code and libraries; the rest is the kernel's).
user_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 }'; }
# machine_ticks: the time all cores were busy (user, nice, system, irq, softirq, steal), summed.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# segments: TCP segments the machine has sent (all sockets, loopback included).
segments() { awk '$1 == "Tcp:" && !h { for (i = 1; i <= NF; i++) col[$i] = i; h = 1; next } $1 == "Tcp:" { print $col["OutSegs"]; exit }' /proc/net/snmp; }
# switches PID: voluntary context switches of all its threads.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'; }

# measure LABEL TARGET MODE PID: one round against TARGET, with the CPU time and voluntary
# context switches that PID (the proxy measured; the backend when direct) spent in it.
measure() {
  local cpu0 sw0 user0 machine0 seg0 row
  seg0=$(segments)
  cpu0=$(cpu_ticks "$4")
  sw0=$(switches "$4")
  user0=$(user_ticks "$4")
  machine0=$(machine_ticks)
  row=$("$BIN/makler-load" http --target "$2" --connections "$CONNECTIONS" \
    --duration "$(awk -v d="$DURATION" -v r="$ROUNDS" 'BEGIN { print d / r }')" \
    --mode "$3" --threads 2 --format csv --label "$1" | tail -1)
  echo "$row,$((($(cpu_ticks "$4") - cpu0) * 1000000 / TICK)),$(($(switches "$4") - sw0))$(
  ),$((($(user_ticks "$4") - user0) * 1000000 / TICK)),$((($(machine_ticks) - machine0) * 1000000 / TICK)),$(($(segments) - seg0))" >>"$RESULTS"
}

# count_syscalls LABEL TARGET MODE PID: one short run against TARGET with PID under strace -c -f;
# appends "LABEL MODE requests syscall count ..." to $SYSCALLS.
count_syscalls() {
  local out=$WORK/strace.out tracer requests
  strace -c -f -q -p "$4" -o "$out" 2>/dev/null &
  tracer=$!
  sleep 0.5 # attached to every thread before the first request
  requests=$("$BIN/makler-load" http --target "$2" --connections "$CONNECTIONS" --duration 1 --mode "$3" \
    --threads 2 --format csv --label "$1" | tail -1 | cut -d, -f6)
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  # strace -c: "% time seconds usecs/call calls [errors] syscall"; the errors column may be empty.
  awk -v label="$1" -v mode="$3" -v requests="$requests" '
    /^-/ || /total$/ || !($4 ~ /^[0-9]+$/) { next }
    { calls[$NF] = $4 }
    END { printf "%s %s %s", label, mode, requests; for (c in calls) printf " %s %s", c, calls[c]; print "" }' "$out" >>"$SYSCALLS"
}

# haproxy_balance POLICY: HAProxy's equivalent of a makler-balancer --policy.
haproxy_balance() {
  case $1 in
  round-robin) echo roundrobin ;;
  least-conn) echo leastconn ;;
  random-two) echo 'random(2)' ;;
  *) die "unknown policy $1 (POLICIES takes round-robin, least-conn, random-two)" ;;
  esac
}
for policy in $POLICIES; do haproxy_balance "$policy" >/dev/null; done

for work in $SERIES; do
  for n in $BACKENDS; do
  for policy in $POLICIES; do
    # The label's second word: backends and policy (the report's rows).
    np="n$n:$policy"
    echo "series work=${work}ms, $n backend(s), $policy" >&2
    start balancer "$BIN/makler-balancer" --listen 127.0.0.1:0 --control 127.0.0.1:0 \
      --no-broker --service bench --threads "$THREADS" --quiet --policy "$policy"
    balancer_tcp=$(field "$LINE" tcp)
    control=$(field "$LINE" udp)
    balancer_pid=$LAST_PID
    backends=()
    backend_pids=()
    backend_logs=()
    for i in $(seq "$n"); do
      start "backend$i" "$BIN/makler-server" --service http --broker "$control" --work-ms "$work" --workers 2
      backends+=("$(field "$LINE" tcp)")
      backend_pids+=("$LAST_PID")
      backend_logs+=("$ERR")
    done
    # Each backend's own log of this series: it says so once the balancer has it.
    for i in "${!backends[@]}"; do
      wait_for_line "${backend_logs[$i]}" "registered" "${backend_pids[$i]}" "backend$((i + 1))"
    done
    # Another build of makler-balancer, in front of the same backends (registered by hand, for
    # as long as the series lasts).
    before=$BEFORE
    [ "$policy" = round-robin ] || before=
    if [ -n "$before" ]; then
      start before "$BEFORE" --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-broker --service bench \
        --threads "$THREADS" --quiet --ttl 3600
      before_tcp=$(field "$LINE" tcp)
      before_control=$(field "$LINE" udp)
      before_pid=$LAST_PID
      for b in "${backends[@]}"; do
        printf 'register bench %s %s' "${b%:*}" "${b##*:}" >"/dev/udp/${before_control%:*}/${before_control##*:}"
      done
      for _ in $(seq 100); do
        "$BIN/makler" --broker "$before_control" stats | grep -q "^backends  *$n$" && break
        sleep 0.05
      done
      "$BIN/makler" --broker "$before_control" stats | grep -q "^backends  *$n$" || die "the build in BEFORE does not list $n backends"
    fi

    # Below the ephemeral range (32768 and up), where the load's own connections take ports.
    haproxy_port=$((20000 + RANDOM % 10000))
    {
      printf 'global\n  nbthread %s\n  maxconn 9000\n' "$THREADS"
      printf 'defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n'
      printf 'frontend fe\n  bind 127.0.0.1:%s\n  default_backend be\n' "$haproxy_port"
      printf 'backend be\n  balance %s\n' "$(haproxy_balance "$policy")"
      for i in "${!backends[@]}"; do printf '  server s%s %s\n' "$i" "${backends[$i]}"; done
    } >"$WORK/haproxy.cfg"
    [ "$(grep -c '^  server s[0-9]* 127\.0\.0\.1:[0-9]*$' "$WORK/haproxy.cfg")" = "$n" ] ||
      die "the HAProxy config does not list $n backends: $(cat "$WORK/haproxy.cfg")"
    haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy -c refused $WORK/haproxy.cfg: $(cat "$WORK/haproxy.cfg")"
    haproxy_log=$WORK/haproxy.$n.$work.out
    : >"$haproxy_log"
    haproxy -db -f "$WORK/haproxy.cfg" >"$haproxy_log" 2>&1 &
    haproxy_pid=$!
    PIDS+=("$haproxy_pid")
    wait_tcp "127.0.0.1:$haproxy_port" "$haproxy_pid" "$haproxy_log"
    alive "$haproxy_pid" haproxy "$haproxy_log"
    check_haproxy_log "$haproxy_log"

    # An independent load generator as a cross-check of makler-load: wrk, keep-alive, one backend.
    if [ "${WRK:-1}" != 0 ] && [ "$n" = 1 ] && [ "$work" = 0 ] && [ "$policy" = round-robin ]; then
      for target in "direct ${backends[0]}" "haproxy 127.0.0.1:$haproxy_port" "makler $balancer_tcp"; do
        set -- $target
        # wrk takes whole seconds only.
        wrk_seconds=$(awk -v d="$DURATION" 'BEGIN { s = int(d); if (s < d) s++; print (s < 1 ? 1 : s) }')
        rate=$(wrk -t2 -c"$CONNECTIONS" -d"${wrk_seconds}s" "http://$2/" | awk '/Requests\/sec/ { print $2 }')
        [ -n "$rate" ] || die "wrk measured nothing at $2"
        echo "$1 $rate" >>"$WORK/wrk.txt"
      done
    fi
    for mode in keepalive close; do
      for _ in $(seq "$ROUNDS"); do
        measure "w$work $np direct" "${backends[0]}" "$mode" "${backend_pids[0]}"
        measure "w$work $np haproxy" "127.0.0.1:$haproxy_port" "$mode" "$haproxy_pid"
        measure "w$work $np makler" "$balancer_tcp" "$mode" "$balancer_pid"
        if [ -n "$before" ]; then measure "w$work $np before" "$before_tcp" "$mode" "$before_pid"; fi
      done
      if [ "${STRACE:-1}" != 0 ] && [ "$work" = 0 ]; then
        count_syscalls "$np haproxy" "127.0.0.1:$haproxy_port" "$mode" "$haproxy_pid"
        count_syscalls "$np makler" "$balancer_tcp" "$mode" "$balancer_pid"
        if [ -n "$before" ]; then count_syscalls "$np before" "$before_tcp" "$mode" "$before_pid"; fi
      fi
    done
    # Everything must have lived through the series, or its figures mean nothing.
    alive "$balancer_pid" balancer
    for i in "${!backend_pids[@]}"; do alive "${backend_pids[$i]}" "backend$((i + 1))" "${backend_logs[$i]}"; done
    alive "$haproxy_pid" haproxy "$haproxy_log"
    check_haproxy_log "$haproxy_log"
    # How the kernel spread the connections over the forwarding threads' listeners.
    split=$("$BIN/makler" --broker "$control" stats | awk '$1 == "threads" { print $2 }')
    [ -n "$split" ] || die "the balancer's stats say nothing of its threads"
    echo "${work}ms, $n backend(s), $policy: connections accepted per makler thread $split" >>"$WORK/threads.txt"
    stop_all
  done
  done
done

echo
echo "makler-balancer vs HAProxy $(haproxy -v | sed -n 1p | cut -d' ' -f3), $THREADS threads each," \
  "$CONNECTIONS connections, ${DURATION}s per target and mode in $ROUNDS alternating rounds," \
  "makler-load http; requests/s (mean p50/p99 ms), and for the proxies the CPU time (user + system, all" \
  "threads, from /proc) and voluntary context switches per request; ratios: median (range) over the rounds"
awk -F, '
  # Insertion sort of a[1..n] (mawk has no asort).
  function asort_numbers(a, n,    i, j, v) {
    for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
  }
  # "median (min–max)" of a[1..n], sorted in place.
  function median_range(a, n,    m) {
    if (n == 0) return "-"
    asort_numbers(a, n)
    m = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    return sprintf("%.2f (%.2f–%.2f)", m, a[1], a[n])
  }
  NR == 1 { next }
  {
    split($1, l, " ")
    key = l[1] " " l[2] " " $3; who = l[3]
    requests[key, who] += $6; seconds[key, who] += $5; p50[key, who] += $8; p99[key, who] += $10
    cpu[key, who] += $12; sw[key, who] += $13; user[key, who] += $14; machine[key, who] += $15; seg[key, who] += $16
    rounds[key, who]++; errors += $11
    r = rounds[key, who]
    round_rate[key, who, r] = $6 / $5
    round_cpu[key, who, r] = $6 > 0 ? $12 / $6 : 0
    if (who == "before") has_before = 1
    if (!(key in seen)) { seen[key] = 1; order[++count] = key }
  }
  END {
    split("direct haproxy makler", all, " ")
    printf "%-4s %-13s %-9s | %-22s | %-39s | %-39s | %-18s | %s\n", "work", "n:policy", "mode", "direct", "HAProxy (CPU µs, vcsw, segments /req)", "makler (CPU µs, vcsw, segments /req)", "makler/HAProxy req/s", "makler/HAProxy CPU/req"
    for (i = 1; i <= count; i++) {
      key = order[i]
      for (w = 1; w <= 3; w++) {
        who = all[w]
        rate[who] = requests[key, who] / seconds[key, who]
        text[who] = sprintf("%7.0f (%.2f/%.2f)", rate[who], p50[key, who] / rounds[key, who] / 1000, p99[key, who] / rounds[key, who] / 1000)
        if (who != "direct" && requests[key, who] > 0)
          text[who] = text[who] sprintf(" %5.1f %.2f %4.1f", cpu[key, who] / requests[key, who], sw[key, who] / requests[key, who], seg[key, who] / requests[key, who])
      }
      split(key, k, " ")
      # The ratios round by round: the median and the range.
      n = 0; c = 0
      for (r = 1; r <= rounds[key, "makler"]; r++) {
        if (round_rate[key, "haproxy", r] > 0) rates[++n] = round_rate[key, "makler", r] / round_rate[key, "haproxy", r]
        if (round_cpu[key, "haproxy", r] > 0) cpus[++c] = round_cpu[key, "makler", r] / round_cpu[key, "haproxy", r]
      }
      printf "%-4s %-13s %-9s | %-22s | %-39s | %-39s | %-18s | %s\n", substr(k[1], 2) "ms", substr(k[2], 2), k[3], text["direct"], text["haproxy"], text["makler"], median_range(rates, n), median_range(cpus, c)
      # Every round of every series with no service time, per policy and mode, for the summary.
      split(k[2], np, ":"); pm = np[2] " " k[3]
      if (k[1] == "w0") for (r = 1; r <= rounds[key, "makler"]; r++) if (round_cpu[key, "haproxy", r] > 0 && round_rate[key, "haproxy", r] > 0) {
        all_cpu[pm, ++all_n[pm]] = round_cpu[key, "makler", r] / round_cpu[key, "haproxy", r]
        all_rate[pm, all_n[pm]] = round_rate[key, "makler", r] / round_rate[key, "haproxy", r]
        if (has_before && round_cpu[key, "before", r] > 0) {
          before_cpu[pm, ++before_n[pm]] = round_cpu[key, "before", r] / round_cpu[key, "haproxy", r]
          before_rate[pm, before_n[pm]] = round_rate[key, "before", r] / round_rate[key, "haproxy", r]
        }
      }
      if (k[1] != "w0") { scaled[k[2], k[3], "makler"] = rate["makler"]; scaled[k[2], k[3], "haproxy"] = rate["haproxy"] }
    }
    printf "errors in all runs: %d\n", errors
    if (has_before) {
      printf "\nthe build in BEFORE, in the same rounds (requests/s (p50/p99 ms) CPU µs, vcsw, segments per request):\n"
      for (i = 1; i <= count; i++) {
        key = order[i]; split(key, k, " ")
        if (requests[key, "before"] == 0) continue
        printf "%-4s %-13s %-9s | %7.0f (%.2f/%.2f) %5.1f %.2f %4.1f\n", substr(k[1], 2) "ms", substr(k[2], 2), k[3], requests[key, "before"] / seconds[key, "before"], p50[key, "before"] / rounds[key, "before"] / 1000, p99[key, "before"] / rounds[key, "before"] / 1000, cpu[key, "before"] / requests[key, "before"], sw[key, "before"] / requests[key, "before"], seg[key, "before"] / requests[key, "before"]
      }
    }
    # The summary: every round with no service time, all backend counts together.
    printf "\nsummary, no service time, every round of every backend count: median (range) of the ratios of the rounds\n"
    split("keepalive close", modes, " "); npol = split(policies, pols, " ")
    for (q = 1; q <= npol; q++) for (m = 1; m <= 2; m++) {
      mode = pols[q] " " modes[m]
      if (all_n[mode] == 0) continue
      for (r = 1; r <= all_n[mode]; r++) { a[r] = all_cpu[mode, r]; b[r] = all_rate[mode, r] }
      printf "  %-21s makler ÷ HAProxy: CPU per request %s, requests/s %s\n", mode, median_range(a, all_n[mode]), median_range(b, all_n[mode])
      if (before_n[mode] > 0) {
        for (r = 1; r <= before_n[mode]; r++) { a[r] = before_cpu[mode, r]; b[r] = before_rate[mode, r] }
        printf "  %-21s before ÷ HAProxy: CPU per request %s, requests/s %s\n", mode, median_range(a, before_n[mode]), median_range(b, before_n[mode])
      }
    }
    # The ceiling: the machine is saturated, so the rate goes as the inverse of all the CPU time
    # (load generator, backends, proxy, kernel) spent per request. A proxy with the kernel time of
    # makler and no code of its own at all would cost the machine its CPU per request less the user
    # time of makler; 1.2x the rate of HAProxy needs the machine at its CPU per request with HAProxy / 1.2.
    printf "\nwhere the time goes (µs of CPU per request, totals over the rounds): machine = all cores busy;\n"
    printf "ceiling = makler/HAProxy req/s if the code of makler took no time at all; only where the\n"
    printf "machine was saturated (busy at least 90 %% of the time with both proxies; with a service time it is not)\n"
    printf "%-4s %-13s %-9s | %-16s | %-16s | %-26s | %-7s | %s\n", "work", "n:policy", "mode", "machine HAProxy", "machine makler", "makler: all (user, kernel)", "ceiling", "1.2x needs makler at"
    for (i = 1; i <= count; i++) {
      key = order[i]
      if (requests[key, "haproxy"] == 0 || requests[key, "makler"] == 0 || machine[key, "makler"] == 0) continue
      if (machine[key, "haproxy"] < 0.9 * cores * seconds[key, "haproxy"] * 1e6) continue
      if (machine[key, "makler"] < 0.9 * cores * seconds[key, "makler"] * 1e6) continue
      mh = machine[key, "haproxy"] / requests[key, "haproxy"]; mm = machine[key, "makler"] / requests[key, "makler"]
      cm = cpu[key, "makler"] / requests[key, "makler"]; um = user[key, "makler"] / requests[key, "makler"]
      split(key, k, " ")
      printf "%-4s %-13s %-9s | %16.1f | %16.1f | %8.1f (%5.1f, %5.1f)     | %7.2f | %.1f\n", substr(k[1], 2) "ms", substr(k[2], 2), k[3], mh, mm, cm, um, cm - um, mh / (mm - um), cm - (mm - mh / 1.2)
    }
    split("keepalive close", modes, " "); split("makler haproxy", who2, " ")
    for (q = 1; q <= npol; q++) for (w = 1; w <= 2; w++) for (m = 1; m <= 2; m++)
      if (scaled["n1:" pols[q], modes[m], who2[w]] > 0)
        printf "%s %s scaling 1 -> 3 backends with service time (%s): %.2fx\n", who2[w], pols[q], modes[m], scaled["n3:" pols[q], modes[m], who2[w]] / scaled["n1:" pols[q], modes[m], who2[w]]
  }' cores="$(nproc)" policies="$POLICIES" "$RESULTS"

if [ -s "$SYSCALLS" ]; then
  echo
  echo "system calls per request (strace -c -f, one run of 1 s per proxy and mode, no service time):"
  awk '{
    label = $1 " " $2; printf "  %-24s %-9s", label, $3; total = 0
    for (i = 5; i < NF; i += 2) total += $(i + 1)
    printf " %5.2f total:", total / $4
    # The calls by how many, the most first (at least 0.01 per request).
    n = 0
    for (i = 5; i < NF; i += 2) if ($(i + 1) / $4 >= 0.01) { name[++n] = $i; per[n] = $(i + 1) / $4 }
    for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (per[y] > per[x]) { t = per[x]; per[x] = per[y]; per[y] = t; t = name[x]; name[x] = name[y]; name[y] = t }
    for (x = 1; x <= n; x++) printf " %s %.2f", name[x], per[x]
    print ""
  }' "$SYSCALLS"
fi

echo
cat "$WORK/threads.txt"

if [ -s "$WORK/wrk.txt" ]; then
  echo
  echo "cross-check with wrk -t2 -c$CONNECTIONS, keep-alive, 1 backend, no service time (requests/s):"
  awk '{ printf "  %-8s %10.0f\n", $1, $2; r[$1] = $2 } END { if (r["haproxy"] > 0) printf "  makler/HAProxy %.2f\n", r["makler"] / r["haproxy"] }' "$WORK/wrk.txt"
fi

# Idle connections held through the balancer, with its memory.
limit=$(ulimit -n)
idle=${IDLE:-10000}
# The measurements as CSV (one row per target, mode and round), for bench/plot.sh to draw; under
# bench/results/ unless CSV names another file (the tracked bench/balancer.csv is PERFORMANCE.md's run).
if [ -n "$CSV" ]; then
  mkdir -p "$(dirname "$CSV")"
  cp "$RESULTS" "$CSV"
  echo "wrote $CSV; bench/plot.sh $CSV draws it"
fi
if [ "$idle" = 0 ]; then exit 0; fi
room=$(((limit - 200) / 2))
if [ "$idle" -gt "$room" ]; then
  echo
  echo "note: the open-file limit is $limit, so one proxy process can hold at most $room connections" \
    "(two descriptors each); measuring $room instead of $idle"
  idle=$room
fi
start balancer "$BIN/makler-balancer" --listen 127.0.0.1:0 --control 127.0.0.1:0 --no-broker \
  --service bench --threads "$THREADS" --quiet --idle-timeout 600
balancer_tcp=$(field "$LINE" tcp)
balancer_pid=$LAST_PID
start idle-backend "$BIN/makler-server" --service http --broker "$(field "$LINE" udp)"
wait_for_line "$ERR" registered "$LAST_PID" idle-backend
echo
echo "$idle idle connections through makler-balancer (its resident memory):"
"$BIN/makler-load" idle --target "$balancer_tcp" --connections "$idle" --hold 5 --pid "$balancer_pid"
stop_all
