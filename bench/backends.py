#!/usr/bin/env python3
"""How adding backends scales: for each makler-balancer executable given, in alternating rounds,
start it (loopback, no broker, health checks off), register N backends at its control port one
after another, and print the time until the last one is answered and listed in `stats`, and the
CPU time the balancer spent on it. Loopback only; every process it starts, it stops.

Usage: bench/backends.py N ROUNDS LABEL=PATH [LABEL=PATH ...]
Example: bench/backends.py 20000 3 before=/tmp/old/makler-balancer now=target/release/makler-balancer"""
import os, re, socket, subprocess, sys, time

n, rounds = int(sys.argv[1]), int(sys.argv[2])
targets = [arg.split("=", 1) for arg in sys.argv[3:]]
tick = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def run(path):
    proc = subprocess.Popen(
        [path, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--no-broker", "--service", "web",
         "--health-interval", "0", "--ttl", "600", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"udp=127\.0\.0\.1:(\d+)", line).group(1))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        for i in range(n):
            s.sendto(f"register web 10.{i // 250 % 250}.{i % 250}.{1 + i // 62500} 80".encode(), ("127.0.0.1", port))
            if not re.fullmatch(rb"[0-9a-f-]{36}\n?", s.recv(2000)):
                sys.exit(f"{path}: registration {i} was not answered with an id")
        while True:
            s.sendto(b"stats", ("127.0.0.1", port))
            if s.recv(2000).startswith(f"backends={n} ".encode()):
                break
            if time.monotonic() - t0 > 600:
                sys.exit(f"{path}: {n} backends not listed after 600 s")
        return time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.kill()
        proc.wait()


results = {label: [] for label, _ in targets}
for r in range(rounds):
    for label, path in targets:
        wall, cpu = run(path)
        results[label].append((wall, cpu))
        print(f"round {r + 1} {label}: {n} backends added and listed in {wall:.3f} s, balancer CPU {cpu:.2f} s",
              flush=True)
for label, runs in results.items():
    walls = sorted(w for w, _ in runs)
    cpus = sorted(c for _, c in runs)
    print(f"{label}: median {walls[len(walls) // 2]:.3f} s, balancer CPU {cpus[len(cpus) // 2]:.2f} s "
          f"({n} backends, {rounds} rounds)")
