#!/usr/bin/env python3
"""RSS of a broker with INSTANCES over TYPES services (as makler-load udp --memory-only registers
them), then after one text query per service, then after one binary query per service."""
import socket, subprocess, sys, time

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def endpoint(i):
    a, b, c = (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff
    return f"127.{(a + 1) & 0xff}.{b}.{c}", 4000 + i % 1000

def exchange(sock, datagrams, window=32):
    sent = got = 0
    n = len(datagrams)
    while got < n:
        while sent < n and sent - got < window:
            sock.send(datagrams[sent]); sent += 1
        try:
            sock.recv(4096); got += 1
        except socket.timeout:
            # a lost one: send the rest again later; count it as done (registration is idempotent)
            got += 1

def main(broker, instances, types):
    args = [broker, "--listen", "127.0.0.1:0", "--quiet", "--no-multicast", "--ttl", "3600",
            "--max-instances", str(instances), "--max-per-source", "0", "--probe-interval", "0",
            "--rate-limit", "0", "--max-per-network", "0"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    addr = line.split("udp=")[1].split()[0]
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, int(port))); s.settimeout(1.0)
    empty = rss(p.pid)
    regs = []
    for i in range(instances):
        ip, pt = endpoint(i)
        regs.append(f"register type{i % types} {ip} {pt}\n".encode())
    exchange(s, regs); exchange(s, regs)  # twice: whatever was lost the first time
    time.sleep(0.5)
    full = rss(p.pid)
    exchange(s, [f"query type{k}\n".encode() for k in range(types)], window=1)
    text = rss(p.pid)
    binq = []
    for k in range(types):
        name = f"type{k}".encode()
        binq.append(bytes([0x81, 0x07, 0x02, len(name)]) + name)
    exchange(s, binq, window=1)
    binary = rss(p.pid)
    s.settimeout(2.0)
    s.send(b"stats\n")
    stats = s.recv(8192).decode()
    count = [f for f in stats.split() if f.startswith("instances=") or f.startswith("services=")]
    p.terminate(); p.wait()
    per = lambda r: (r - empty) / instances
    print(f"{broker}: {instances} instances over {types} services (stats: {' '.join(count)})")
    print(f"  RSS empty {empty/2**20:.1f} MiB, full {full/2**20:.1f} MiB ({per(full):.0f} B/instance)")
    print(f"  after a text query per service   {text/2**20:.1f} MiB ({per(text):.0f} B/instance, {(text-full)/2**20:+.2f} MiB)")
    print(f"  after a binary query per service {binary/2**20:.1f} MiB ({per(binary):.0f} B/instance, {(binary-text)/2**20:+.2f} MiB, {(binary-text)/instances:.1f} B/instance)")

main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
