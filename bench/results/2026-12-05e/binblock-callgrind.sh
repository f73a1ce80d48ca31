#!/bin/bash
# Instructions (callgrind Ir) a broker spends per binary query: the broker under callgrind with
# 10,000 instances over 1,000 services, then Q binary queries (one at a time, over the services);
# total Ir with Q queries minus total Ir with 0, divided by Q.
BIN=$1 Q=$2 FORM=${3:-binary}
out=cg-$(basename $(dirname $(dirname $BIN)))-$Q-$FORM
valgrind --tool=callgrind --callgrind-out-file=$out.cg "$BIN" --listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-per-source 0 --probe-interval 0 --rate-limit 0 --max-per-network 0 > $out.out 2>$out.err &
pid=$!
for i in $(seq 100); do grep -q udp= $out.out 2>/dev/null && break; sleep 0.2; done
addr=$(sed 's/.*udp=\([^ ]*\).*/\1/;q' $out.out)
python3 - "$addr" "$Q" "$FORM" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1); q = int(sys.argv[2]); form = sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(5)
for i in range(10000):
    a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
    s.send(f"register type{i % 1000} 127.{a+1}.{b}.{c} {4000 + i % 1000}\n".encode()); s.recv(100)
for k in range(q):
    name = f"type{k % 1000}".encode()
    s.send(bytes([0x81, 0x07, 0x02, len(name)]) + name if form == "binary" else b"query " + name + b"\n"); s.recv(2000)
PY
kill -INT $pid; wait $pid
grep -h "^summary\|^totals" $out.cg | head -1 | awk -v f=$out '{print f, $2}'
