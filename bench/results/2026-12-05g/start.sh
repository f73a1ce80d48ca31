# start.sh (bench/results/2026-12-05g) BROKER NAME: starts a broker with 10,000 instances over 1,000 services; prints its address
BIN=$1 N=$2
"$BIN" --listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-per-source 0 --probe-interval 0 --rate-limit 0 --max-per-network 0 > $N.out 2>$N.err &
echo $! > $N.pid
for i in $(seq 50); do grep -q udp= $N.out 2>/dev/null && break; sleep 0.1; done
addr=$(sed 's/.*udp=\([^ ]*\).*/\1/;q' $N.out)
python3 - "$addr" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(5)
for i in range(10000):
    a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
    s.send(f"register type{i % 1000} 127.{a+1}.{b}.{c} {4000 + i % 1000}\n".encode()); s.recv(100)
PY
echo $addr > $N.addr
