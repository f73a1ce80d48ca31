#!/usr/bin/env python3
"""Listens on 127.0.0.1 ports FIRST..FIRST+COUNT-1 and accepts (and closes) every connection,
for SECONDS: the live instances a probing broker checks. Loopback only; stops by itself."""
import selectors, socket, sys, time

first, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
for port in range(first, first + count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
accepted = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for key, _ in sel.select(timeout=0.1):
        try:
            conn, _ = key.fileobj.accept()
            conn.close()
            accepted += 1
        except BlockingIOError:
            pass
print(f"accepted {accepted} connections", flush=True)
