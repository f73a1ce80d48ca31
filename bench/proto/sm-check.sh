#!/usr/bin/env bash
# sm-check.sh: do the bytes cross smproxy intact? An echo backend (Python) behind smproxy; 8 connections
# each send 4 MB of random bytes in 1-64 KB pieces while reading the echo, and compare digests. Also
# a request already queued before its socket enters the map (sent at once after connect). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x target/proto/smproxy ] || bench/proto/sm-build.sh
P=$((30000 + RANDOM % 1000))
python3 - "$P" <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
s.settimeout(30)
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
try:
    while True:
        c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()
except socket.timeout:
    pass
PY
ECHO=$!
sleep 0.5
target/proto/smproxy $((P + 1)) 30 127.0.0.1:$P >/tmp/smproxy-check.out 2>/tmp/smproxy-check.err &
SM=$!
trap 'kill $SM $ECHO 2>/dev/null || true' EXIT
sleep 0.3
python3 - $((P + 1)) <<'PY'
import hashlib, os, random, socket, sys, threading
port = int(sys.argv[1]); ok = []
def one(i):
    c = socket.create_connection(("127.0.0.1", port))
    data = os.urandom(4 << 20); sent = hashlib.sha256(data).hexdigest()
    def writer():
        o = 0
        while o < len(data):
            n = random.randint(1, 64 << 10); c.sendall(data[o:o + n]); o += n
    t = threading.Thread(target=writer); t.start()
    h = hashlib.sha256(); got = 0
    while got < len(data):
        d = c.recv(1 << 16)
        if not d: break
        h.update(d); got += len(d)
    t.join(); c.close()
    ok.append(got == len(data) and h.hexdigest() == sent)
ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print("connections intact:", sum(ok), "of", len(ok), "(4 MB each way, random pieces)")
sys.exit(0 if all(ok) and len(ok) == 8 else 1)
PY
