#!/bin/bash
# gen.sh OUT: broker (base) vs a C server returning a canned 10-instance binary reply, makler-load query alternating
cd /tmp/udpb
chrt -f 20 bash /work/wt-udpb/bench/results/2026-12-05g/start.sh ${BROKER:-/tmp/udpb/base/makler-broker} gb >/dev/null
chrt -f 20 ./canned 47999 020a007f010005a51f007f0103eda51f007f0107d5a51f007f010bbda51f007f010fa5a51f007f01138da51f007f011775a51f007f011b5da51f007f011f45a51f007f01232da51f c & cp=$!
addr=$(cat gb.addr) pid=$(cat gb.pid)
out=/work/wt-udpb/bench/results/2026-12-05h/$1.txt
echo "# load before $(cat /proc/loadavg)" > $out
flock /work/bench.lock chrt -f 20 /tmp/udpb/makler-load query --target broker:binary=$addr/$pid --target canned:binary=127.0.0.1:47999/$cp --names names.txt --duration ${DUR:-10} --rounds ${ROUNDS:-10} >> $out 2>&1
echo "# load after $(cat /proc/loadavg)" >> $out
kill $pid $cp
grep -E "^(broker|canned) " $out
