#!/bin/bash
# prof.sh: perf record -e cpu-clock of the broker (this branch) and of the C canned server, each under its own 4 s makler-load query run; the split between the program and the kernel
cd /tmp/udpb
R=/work/wt-udpb/bench/results/2026-12-05h
chrt -f 20 bash /work/wt-udpb/bench/results/2026-12-05g/start.sh /tmp/udpb/final-broker pb >/dev/null
body=020a007f010005a51f007f0103eda51f007f0107d5a51f007f010bbda51f007f010fa5a51f007f01138da51f007f011775a51f007f011b5da51f007f011f45a51f007f01232da51f
chrt -f 20 ./canned 47997 $body c & cc=$!
sleep 0.3
for t in broker:$(cat pb.addr):$(cat pb.pid) canned:127.0.0.1:47997:$cc; do
  IFS=: read name host port pid <<< "$t"
  echo "# $name load $(cat /proc/loadavg)" > $R/perf-$name.txt
  flock /work/bench.lock bash -c "perf record -e cpu-clock -F 1999 -g -p $pid -o /tmp/udpb/perf-$name.data -- sleep 4.3 2>/dev/null & sleep 0.2; chrt -f 20 /tmp/udpb/makler-load-diag query --target binary=$host:$port/$pid --names names.txt --duration 4 --rounds 1 | grep -E '^(run|binary)' >> $R/perf-$name.txt; wait"
  perf report -i /tmp/udpb/perf-$name.data --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -8 >> $R/perf-$name.txt
  perf report -i /tmp/udpb/perf-$name.data --no-children --sort sym --stdio -g none 2>/dev/null | grep -E "^ +[0-9]" | head -40 >> $R/perf-$name.txt
done
kill $(cat pb.pid) $cc
