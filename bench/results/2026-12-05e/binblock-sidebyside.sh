#!/bin/bash
# Two brokers (before, after) with the same 10,000 instances over 1,000 services; makler-load query
# at both in alternating rounds, binary then text, with each broker's CPU per reply.
set -e
BEFORE=$1 AFTER=$2 LOAD=$3
start() { "$1" --listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-per-source 0 --probe-interval 0 --rate-limit 0 --max-per-network 0 > $2.out & echo $! > $2.pid; sleep 0.5; sed 's/.*udp=\([^ ]*\).*/\1/;q' $2.out; }
A=$(start $BEFORE before); B=$(start $AFTER after)
python3 - "$A" "$B" <<'PY'
import socket, sys
for addr in sys.argv[1:]:
    h, p = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(1)
    for i in range(10000):
        a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
        s.send(f"register type{i % 1000} 127.{a+1}.{b}.{c} {4000 + i % 1000}\n".encode()); s.recv(100)
    s.send(b"stats\n"); print(addr, s.recv(4000).split()[0].decode())
PY
seq 0 999 | sed 's/^/type/' > names.txt
for proto in binary text; do
  chrt -f 20 $LOAD query --target before:$proto=$A/$(cat before.pid) --target after:$proto=$B/$(cat after.pid) --names names.txt --duration 10 --rounds 10
done
kill $(cat before.pid) $(cat after.pid)
