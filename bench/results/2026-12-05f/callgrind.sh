#!/bin/bash
# Instructions (callgrind Ir) a broker spends per query, with a profile of where they go.
# The broker runs under callgrind with instrumentation off; 10,000 instances over 1,000 services
# are registered; instrumentation is turned on (callgrind_control -i on); Q queries are sent one at
# a time over the services (binary, text or binary heartbeats); the total Ir collected ÷ Q is the
# cost of one (the loop's wake-up, the system calls' user-space side and the reply included).
# usage: callgrind.sh BROKER Q [binary|text] [OUT-PREFIX]
BIN=$1 Q=$2 FORM=${3:-binary} out=${4:-cg-$(basename $(dirname $(dirname $(readlink -f $1))))-$FORM}
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out.cg "$BIN" --listen 127.0.0.1:0 --quiet \
  --no-multicast --ttl 3600 --max-per-source 0 --probe-interval 0 --rate-limit 0 --max-per-network 0 > $out.out 2>$out.err &
pid=$!
for i in $(seq 150); do grep -q udp= $out.out 2>/dev/null && break; sleep 0.2; done
addr=$(sed 's/.*udp=\([^ ]*\).*/\1/;q' $out.out)
python3 - "$addr" "$Q" "$FORM" "$pid" <<'PY'
import socket, subprocess, sys
h, p = sys.argv[1].rsplit(":", 1); q = int(sys.argv[2]); form = sys.argv[3]; pid = sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(10)
ids = []
for i in range(10000):
    a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
    s.send(f"register type{i % 1000} 127.{a+1}.{b}.{c} {4000 + i % 1000}\n".encode())
    ids.append(s.recv(100).strip())
# warm every service's blocks once (a binary and a text query each), then measure
for k in range(1000):
    name = f"type{k}".encode()
    s.send(bytes([0x81, 0x07, 0x02, len(name)]) + name); s.recv(2000)
    s.send(b"query " + name + b"\n"); s.recv(2000)
subprocess.run(["callgrind_control", "-i", "on", pid], check=True, stdout=subprocess.DEVNULL)
for k in range(q):
    name = f"type{k % 1000}".encode()
    if form == "binary":
        s.send(bytes([0x81, 0x07, 0x02, len(name)]) + name)
    elif form == "text":
        s.send(b"query " + name + b"\n")
    elif form == "heartbeat":
        s.send(b"heartbeat " + ids[k % len(ids)] + b"\n")
    s.recv(2000)
subprocess.run(["callgrind_control", "-i", "off", pid], check=True, stdout=subprocess.DEVNULL)
PY
kill -INT $pid; wait $pid
total=$(grep -h "^totals" $out.cg | awk "{print \$2}")
echo "$out $FORM Q=$Q total_Ir=$total per_query=$((total / Q))"
