#!/bin/bash
# usage: run.sh OUTNAME BROKER [ENV=VAL ...]; one locked `makler-load udp` run
out=/work/wt-udpb/bench/results/2026-12-05h/$1.txt; broker=$2; shift 2
{ echo "# $(date -u +%H:%M:%S) env: $* broker: $broker"; echo "# load before: $(cat /proc/loadavg)"; } > $out
flock /work/bench.lock env "$@" chrt -f 20 /tmp/udpb/makler-load udp --duration ${DUR:-5} --rounds ${ROUNDS:-10} --broker-bin $broker >> $out 2>&1
echo "# load after: $(cat /proc/loadavg)" >> $out
grep -E "^(udp echo|query binary|query text) " $out | awk -v n=$1 '{print n": "$0}'
