#!/bin/bash
# five.sh OUT [ENV for exp broker]: one makler-load query run, alternating rounds over: the Rust echo server,
# a C echo, a C server with a canned broker reply, the base broker, the experimental broker
cd /tmp/udpb
out=/work/wt-udpb/bench/results/2026-12-05h/$1.txt; shift
chrt -f 20 bash /work/wt-udpb/bench/results/2026-12-05g/start.sh ${BASE:-/tmp/udpb/base/makler-broker} fb >/dev/null
env "$@" chrt -f 20 bash /work/wt-udpb/bench/results/2026-12-05g/start.sh ${EXP:-/tmp/udpb/exp-broker} fe >/dev/null
chrt -f 20 ./makler-load-diag echo-server --listen 127.0.0.1:47888 --lifetime 600 > /dev/null & ep=$!
chrt -f 20 ./canned 47998 00 e & ce=$!
chrt -f 20 ./canned 47999 020a007f010005a51f007f0103eda51f007f0107d5a51f007f010bbda51f007f010fa5a51f007f01138da51f007f011775a51f007f011b5da51f007f011f45a51f007f01232da51f c & cc=$!
sleep 0.3
echo "# exp env: $* ; load before $(cat /proc/loadavg)" > $out
flock /work/bench.lock chrt -f 20 /tmp/udpb/makler-load-diag query --target echo:echo=127.0.0.1:47888/$ep --target c-echo:echo=127.0.0.1:47998/$ce --target c-canned:binary=127.0.0.1:47999/$cc --target base:binary=$(cat fb.addr)/$(cat fb.pid) --target exp:binary=$(cat fe.addr)/$(cat fe.pid) --names names.txt --duration ${DUR:-5} --rounds ${ROUNDS:-10} >> $out 2>&1
echo "# load after $(cat /proc/loadavg)" >> $out
kill $(cat fb.pid) $(cat fe.pid) $ep $ce $cc
grep -E "^(echo|c-echo|c-canned|base|exp) " $out
