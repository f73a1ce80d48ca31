#!/usr/bin/env python3
"""How adding and removing backends scales: for each makler-balancer executable given, in
alternating rounds, start it (loopback, no broker, health checks off), register N backends at its
control port one after another, then deregister them one after another, and print for each the
time until the last is answered and `stats` lists them all (none), and the CPU time the balancer
spent on it. Loopback only; every process it starts, it stops.

Usage: bench/backends.py N ROUNDS LABEL=PATH [LABEL=PATH ...]
Example: bench/backends.py 20000 3 before=/tmp/old/makler-balancer now=target/release/makler-balancer"""
import os, re, socket, subprocess, sys, time

n, rounds = int(sys.argv[1]), int(sys.argv[2])
targets = [arg.split("=", 1) for arg in sys.argv[3:]]
tick = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """The process's CPU time so far: (user, user + system), in seconds. User time is the
    balancer's own code; the system time here is mostly the kernel waking the client and the
    balancer for each request, which varies from run to run more than the code does."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / tick, (int(fields[11]) + int(fields[12])) / tick


def spent(cpu0, pid):
    cpu = cpu_seconds(pid)
    return cpu[0] - cpu0[0], cpu[1] - cpu0[1]


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
        def listed(count, t0):
            while True:
                s.sendto(b"stats", ("127.0.0.1", port))
                if s.recv(2000).startswith(f"backends={count} ".encode()):
                    return
                if time.monotonic() - t0 > 600:
                    sys.exit(f"{path}: {count} backends not listed after 600 s")

        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        ids = []
        for i in range(n):
            s.sendto(f"register web 10.{i // 250 % 250}.{i % 250}.{1 + i // 62500} 80".encode(), ("127.0.0.1", port))
            reply = s.recv(2000)
            if not re.fullmatch(rb"[0-9a-f-]{36}\n?", reply):
                sys.exit(f"{path}: registration {i} was not answered with an id")
            ids.append(reply.strip())
        listed(n, t0)
        add = (time.monotonic() - t0, *spent(cpu0, proc.pid))
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        for i, id in enumerate(ids):
            s.sendto(b"deregister " + id, ("127.0.0.1", port))
            if s.recv(2000).strip() != b"OK":
                sys.exit(f"{path}: deregistration {i} was not answered OK")
        listed(0, t0)
        return add, (time.monotonic() - t0, *spent(cpu0, proc.pid))
    finally:
        proc.kill()
        proc.wait()


results = {label: [] for label, _ in targets}
for r in range(rounds):
    for label, path in targets:
        add, remove = run(path)
        results[label].append((add, remove))
        print(f"round {r + 1} {label}: {n} backends added in {add[0]:.3f} s (balancer CPU user {add[1]:.2f} s, "
              f"all {add[2]:.2f} s), removed in {remove[0]:.3f} s (user {remove[1]:.2f} s, all {remove[2]:.2f} s)",
              flush=True)


def median(values):
    return sorted(values)[len(values) // 2]


for label, runs in results.items():
    add = [median([a[k] for a, _ in runs]) for k in range(3)]
    remove = [median([r[k] for _, r in runs]) for k in range(3)]
    print(f"{label}: {n} backends, medians of {rounds} rounds: added in {add[0]:.3f} s, balancer CPU user "
          f"{add[1]:.2f} s, all {add[2]:.2f} s; removed in {remove[0]:.3f} s, user {remove[1]:.2f} s, all {remove[2]:.2f} s")
