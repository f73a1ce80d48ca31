#!/usr/bin/env python3
"""The reflection a spoofed source would draw: RATE binary queries a second for SECONDS from
127.0.0.66 (standing in for a victim whose address an attacker forges) to BROKER, counting the
bytes that come back to that address. Prints bytes in, bytes out and their ratio.

Usage: bench/amplification.py BROKER_PORT SERVICE [RATE [SECONDS]]. Loopback only.

With a SERVICE that ends in `.local.` (`_web._tcp.local.`), the query is an mDNS legacy unicast
question for its PTR records instead, sent to BROKER_PORT (5353 for `makler-broker --mdns
127.0.0.1`): what a forged on-link source draws from the mDNS responder (tests/it/mdns_amplification.rs
checks the bounds)."""
import socket, sys, threading, time

port, service = int(sys.argv[1]), sys.argv[2].encode()
rate = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
victim.bind(("127.0.0.66", 0))
victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
if service.endswith(b".local."):
    # A DNS query (id 0x4d4b, no flags, one question) for the name's PTR records, class IN.
    labels = b"".join(bytes([len(l)]) + l for l in service.rstrip(b".").split(b".")) + b"\0"
    request = bytes.fromhex("4d4b00000001000000000000") + labels + bytes.fromhex("000c0001")
else:
    # Binary query: version 0x81, request id 1 (varint), Request::Query (2), the name (varint length).
    request = bytes([0x81, 0x01, 0x02, len(service)]) + service
received = [0, 0]
stop = threading.Event()

def receive():
    victim.settimeout(0.2)
    while not stop.is_set():
        try:
            data = victim.recv(65536)
        except socket.timeout:
            continue
        received[0] += len(data)
        received[1] += 1

thread = threading.Thread(target=receive)
thread.start()
sent = 0
start = time.monotonic()
batch = max(1, rate // 1000)
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        victim.sendto(request, ("127.0.0.1", port))
        sent += 1
    time.sleep(0.001)
time.sleep(0.5)
stop.set()
thread.join()
bytes_in = sent * len(request)
print(f"sent {sent} queries of {len(request)} bytes ({bytes_in} bytes) in {seconds:.1f} s; "
      f"came back: {received[1]} datagrams, {received[0]} bytes; amplification {received[0] / bytes_in:.2f}x; "
      f"{received[0] / seconds:.0f} bytes/s towards the victim")
