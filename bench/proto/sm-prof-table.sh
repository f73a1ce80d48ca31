#!/usr/bin/env bash
# sm-prof-table.sh DIR RESULTS.txt: from sm-cmp.sh's PERF=DIR recordings (perf record -e cpu-clock -a -g at
# 4000 Hz on every CPU, one round per target), µs per request by thread group and for a few kernel
# functions (self time), all CPUs; the requests are the round's good replies in RESULTS.txt.
set -euo pipefail
DIR=$1 RES=$2
printf '%-8s %8s %8s %8s %8s %8s %8s %8s | %s\n' target proxy kworker backend generator other busy idle "self: finish_task_switch _raw_spin_unlock_irqrestore queue_delayed_work_on sk_psock_backlog sk_psock_verdict_recv pv_native_safe_halt(idle)"
for t in direct h m s; do
  [ -f "$DIR/$t.data" ] || continue
  req=$(awk -v t=$t '$1 == t && $2 == "proxy" { print $17; exit }' "$RES")
  freq=$(perf report -i "$DIR/$t.data" --header-only 2>/dev/null | sed -n 's/.*sample_freq } = \([0-9]*\).*/\1/p' | head -1)
  perf report -i "$DIR/$t.data" --no-children --sort comm -n -g none --stdio 2>/dev/null | awk -v req="$req" -v freq="$freq" -v t=$t '
    /^#/ || NF < 3 { next }
    { n = $2; c = $3
      if (c ~ /^(haproxy|forward-|smproxy)/) g = "proxy"; else if (c ~ /^kworker/) g = "kworker"; else if (c ~ /^(server-|makler-server)/) g = "backend";
      else if (c ~ /^(load-|makler-load)/) g = "generator"; else if (c == "swapper") g = "idle"; else g = "other"
      s[g] += n }
    END { u = 1e6 / freq / req; printf "%-8s %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f |", t, s["proxy"] * u, s["kworker"] * u, s["backend"] * u, s["generator"] * u, s["other"] * u,
      (s["proxy"] + s["kworker"] + s["backend"] + s["generator"] + s["other"]) * u, s["idle"] * u }'
  perf report -i "$DIR/$t.data" --no-children --sort sym -n -g none --stdio 2>/dev/null | awk -v req="$req" -v freq="$freq" '
    /^#/ || NF < 4 { next }
    { sym = $4; n = $2; if (sym in want) v[sym] += n }
    BEGIN { split("finish_task_switch.isra.0 _raw_spin_unlock_irqrestore queue_delayed_work_on sk_psock_backlog sk_psock_verdict_recv pv_native_safe_halt", w, " "); for (i in w) { want[w[i]] = 1; order[i] = w[i] } }
    END { u = 1e6 / freq / req; for (i = 1; i <= 6; i++) printf " %.2f", v[order[i]] * u; print "" }'
done
