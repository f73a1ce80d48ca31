#!/bin/bash
# Instructions (callgrind Ir) a broker spends per query under makler-load's own load (1 thread,
# WINDOW in flight), so that the loop's turns look as they do in `makler-load udp`: the broker
# under callgrind with instrumentation off; 10,000 instances over 1,000 services registered, every
# service queried once in each form; instrumentation on for SECONDS of `makler-load query`; Ir ÷
# the requests it received meanwhile (its `received` counter, read before and after).
# usage: callgrind-load.sh BROKER LOAD-BIN [binary|text] [SECONDS] [WINDOW] [OUT-PREFIX]
BIN=$1 LOAD=$2 FORM=${3:-binary} SECS=${4:-4} WINDOW=${5:-8} out=${6:-cgl-$FORM}
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out.cg "$BIN" --listen 127.0.0.1:0 --quiet \
  --no-multicast --ttl 3600 --max-per-source 0 --probe-interval 0 --rate-limit 0 --max-per-network 0 > $out.out 2>$out.err &
pid=$!
for i in $(seq 150); do grep -q udp= $out.out 2>/dev/null && break; sleep 0.2; done
addr=$(sed 's/.*udp=\([^ ]*\).*/\1/;q' $out.out)
for k in $(seq 0 999); do echo type$k; done > $out.names
received() {
python3 - "$addr" <<'PY'
import socket, sys, re
h, p = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(10)
s.send(b"stats\n"); print(re.search(r"received=(\d+)", s.recv(4000).decode()).group(1))
PY
}
python3 - "$addr" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(10)
for i in range(10000):
    a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
    s.send(f"register type{i % 1000} 127.{a+1}.{b}.{c} {4000 + i % 1000}\n".encode()); s.recv(100)
for k in range(1000):
    name = f"type{k}".encode()
    s.send(bytes([0x81, 0x07, 0x02, len(name)]) + name); s.recv(2000)
    s.send(b"query " + name + b"\n"); s.recv(2000)
PY
before=$(received)
callgrind_control -i on $pid > /dev/null
"$LOAD" query --quiet --target $FORM=$addr --names $out.names --duration $SECS --rounds 1 --window $WINDOW > $out.load 2>&1
callgrind_control -i off $pid > /dev/null
after=$(received)
kill -INT $pid; wait $pid
total=$(grep -h "^totals" $out.cg | awk '{print $2}')
n=$((after - before - 1))
echo "$out $FORM window=$WINDOW requests=$n total_Ir=$total per_request=$((total / n))"
