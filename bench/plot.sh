#!/usr/bin/env bash
# Draws the balancer benchmark as a picture: requests/s and p99 latency against the number of
# backends (1, 2, 3), makler-balancer next to HAProxy, in keep-alive and connection-per-request
# mode, with no service time (the balancer's own cost) and with 2 ms (scaling).
#
# Usage: bench/plot.sh [CSV [SVG]]; CSV by default the tracked bench/balancer.csv (the run
# PERFORMANCE.md quotes; bench/balancer.sh writes one row per target, mode and round), SVG by
# default bench/results/<UTC date>/balancer.svg (or $SVG). The tracked bench/balancer.svg, which
# README.md shows, is rewritten only when named: bench/plot.sh bench/balancer.csv bench/balancer.svg.
# Needs gnuplot (installs Debian's gnuplot-nox when it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
CSV=${1:-bench/balancer.csv}
SVG=${2:-${SVG:-bench/results/$(date -u +%F)/balancer.svg}}
mkdir -p "$(dirname "$SVG")"

if ! command -v gnuplot >/dev/null 2>&1; then
  echo "installing gnuplot-nox" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi

DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT

# One file per service time and mode: backends, then requests/s and p99 (ms) of direct,
# HAProxy and makler. A rate is all requests of all rounds over their time, a p99 the mean of
# the rounds' p99s (as balancer.sh's table).
awk -F, -v dir="$DATA" '
  /^#/ || $1 == "label" { next }
  {
    split($1, l, " ")
    key = l[1] " " $3 " " substr(l[2], 2); who = l[3]
    requests[key, who] += $6; seconds[key, who] += $5; p99[key, who] += $10; rounds[key, who]++
    keys[key] = 1
  }
  END {
    for (key in keys) {
      split(key, k, " ")
      file = dir "/" k[1] "-" k[2] ".dat"
      line = k[3]
      split("direct haproxy makler", all, " ")
      for (w = 1; w <= 3; w++) line = line " " requests[key, all[w]] / seconds[key, all[w]]
      for (w = 1; w <= 3; w++) line = line " " p99[key, all[w]] / rounds[key, all[w]] / 1000
      print line | "sort -n > " file
    }
  }' "$CSV"
for series in w0 w2; do
  for mode in keepalive close; do
    [ -s "$DATA/$series-$mode.dat" ] || { echo "no $series $mode rows in $CSV" >&2; exit 1; }
  done
done

gnuplot <<GNUPLOT
set terminal svg size 960,800 font "sans,12" background "white"
set output "$SVG"
set datafile separator " "
set multiplot layout 2,2 title "makler-balancer next to HAProxy 2.6 (2 threads each, 50 connections, makler-load http)"
set xrange [0.8:3.2]
set xtics 1
set grid
set key below horizontal maxrows 2
set style line 1 lc rgb "#c0392b" lw 2 pt 7
set style line 2 lc rgb "#2471a3" lw 2 pt 5
set style line 3 lc rgb "#c0392b" lw 2 pt 6 dt 2
set style line 4 lc rgb "#2471a3" lw 2 pt 4 dt 2
set format y "%.0f"
do for [w in "w0 w2"] {
  set title (w eq "w0" ? "requests/s, no service time" : "requests/s, 2 ms service time")
  set xlabel "backends"
  set ylabel "requests/s"
  set yrange [0:*]
  plot "$DATA/".w."-keepalive.dat" using 1:4 with linespoints ls 1 title "makler, keep-alive", \
       "$DATA/".w."-keepalive.dat" using 1:3 with linespoints ls 2 title "HAProxy, keep-alive", \
       "$DATA/".w."-close.dat" using 1:4 with linespoints ls 3 title "makler, new connection each", \
       "$DATA/".w."-close.dat" using 1:3 with linespoints ls 4 title "HAProxy, new connection each"
}
set format y "%.1f"
do for [w in "w0 w2"] {
  set title (w eq "w0" ? "p99 latency, no service time" : "p99 latency, 2 ms service time")
  set ylabel "p99 (ms)"
  set yrange [0:*]
  plot "$DATA/".w."-keepalive.dat" using 1:7 with linespoints ls 1 title "makler, keep-alive", \
       "$DATA/".w."-keepalive.dat" using 1:6 with linespoints ls 2 title "HAProxy, keep-alive", \
       "$DATA/".w."-close.dat" using 1:7 with linespoints ls 3 title "makler, new connection each", \
       "$DATA/".w."-close.dat" using 1:6 with linespoints ls 4 title "HAProxy, new connection each"
}
unset multiplot
GNUPLOT
echo "wrote $SVG from $CSV"
