#!/bin/bash
# Queries while probing 10,000 live instances ÷ not probing (PERFORMANCE.md, "The latest figures"):
# bench/listeners.py listens on 127.0.0.1:20000-29999; two brokers hold those 10,000 instances
# (10 per service, registered with check=tcp), one with --probe-interval 0, the other with
# --probe-interval 10 (1,000 connects a second); makler-load query alternates between them.
# usage: probes.sh BROKER LOAD-BIN [SECONDS-PER-TARGET] [ROUNDS]   (run it under chrt -f 20 on a shared machine)
B=$1 L=$2 SECS=${3:-20} ROUNDS=${4:-10}
X=$(mktemp -d)
ulimit -n 20000
python3 "$(dirname "$0")/../../listeners.py" 20000 10000 $((SECS * 2 + 120)) > $X/listeners.out &
lp=$!
for i in $(seq 100); do grep -q listening $X/listeners.out && break; sleep 0.2; done
start() { # INTERVAL OUT
  $B --listen 127.0.0.1:0 --quiet --no-multicast --ttl 3600 --max-per-source 0 --max-per-network 0 --rate-limit 0 --probe-interval $1 > $2 2>&1 &
  echo $!
}
p0=$(start 0 $X/off.out); p1=$(start 10 $X/on.out); sleep 0.5
a0=$(sed 's/.*udp=\([^ ]*\).*/\1/;q' $X/off.out); a1=$(sed 's/.*udp=\([^ ]*\).*/\1/;q' $X/on.out)
for a in $a0 $a1; do
python3 - "$a" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(5)
for i in range(10000):
    s.send(f"register svc{i // 10} 127.0.0.1 {20000 + i} check=tcp\n".encode()); s.recv(100)
PY
done
for k in $(seq 0 999); do echo svc$k; done > $X/names
echo "10,000 instances (live listeners on 127.0.0.1:20000-29999), --probe-interval 0 next to 10 (1,000 probes a second)"
$L query --target off:binary=$a0/$p0 --target probing:binary=$a1/$p1 --names $X/names --duration $((SECS * ROUNDS)) --rounds $ROUNDS
python3 - "$a1" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((h, int(p))); s.settimeout(5)
s.send(b"stats\n"); r = s.recv(4000).decode()
print("probing broker:", " ".join(w for w in r.split() if w.split("=")[0] in ("instances", "probes", "probes_dead", "removed_unreachable")))
PY
kill $p0 $p1 $lp 2>/dev/null; wait 2>/dev/null
rm -rf $X
