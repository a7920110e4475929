#!/usr/bin/env python3
"""Failover at scale (issue 13): 1,000 pools x 10 endpoints (127.2.x.y), TCP checks every
5 s against one acceptor on 0.0.0.0, then the acceptor stops. Reports the time until every
endpoint is out of the answers (every pool degraded, on_all_down = "nodata"), the server's
CPU during the storm and at rest (probes only), RSS, and DNS latency p50/p99 at rest and
during the storm. Loopback only; bounded in time. Usage:

    cargo build --release --features jemalloc && python3 bench/scale.py   # POOLS=1000 PER=10 INTERVAL=5

Knobs (environment): POOLS, PER, INTERVAL (s), FALL, TIMEOUT (s), STEADY (s of steady-state
CPU measurement), LIMIT (s to wait for the storm to finish), WEIR (binary).
"""
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOLS = int(os.environ.get("POOLS", 1000))
PER = int(os.environ.get("PER", 10))
INTERVAL = float(os.environ.get("INTERVAL", 5))
FALL = int(os.environ.get("FALL", 3))
TIMEOUT = float(os.environ.get("TIMEOUT", 2))
STEADY = float(os.environ.get("STEADY", 30))
LIMIT = float(os.environ.get("LIMIT", 900))
WEIR = os.environ.get("WEIR", os.path.join(REPO, "target/release/weir"))
CHECK_PORT = 47311
DNS_PORT = 47353
ADMIN_PORT = 47380
TICKS = os.sysconf("SC_CLK_TCK")


def address(i):
    return f"127.2.{i // 250}.{i % 250 + 1}"


def write_config(d):
    zone = "$ORIGIN scale.example.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 127.0.0.1\n"
    with open(os.path.join(d, "scale.zone"), "w") as f:
        f.write(zone)
    lines = [
        "[dns]", f'listen = ["127.0.0.1:{DNS_PORT}"]',
        "[admin]", f'listen = "127.0.0.1:{ADMIN_PORT}"',
        "[store]", 'path = "state"',
        "[[zone]]", 'origin = "scale.example."', 'file = "scale.zone"',
    ]
    n = 0
    for p in range(POOLS):
        eps = ", ".join(f'{{ address = "{address(n + j)}" }}' for j in range(PER))
        n += PER
        lines += [
            "[[pool]]", f'name = "p{p}.scale.example."', "ttl = 30", 'on_all_down = "nodata"',
            "[pool.check]", 'kind = "tcp"', f"port = {CHECK_PORT}", f'interval = "{INTERVAL}s"',
            f'timeout = "{TIMEOUT}s"', "rise = 1", f"fall = {FALL}",
            "[[pool.group]]", 'name = "g"', f"endpoints = [{eps}]",
        ]
    with open(os.path.join(d, "weir.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")


class Acceptor:
    """One listener on 0.0.0.0 that accepts and closes: every 127.2.x.y:CHECK_PORT is up."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", CHECK_PORT))
        self.sock.listen(4096)
        self.running = True
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
                c.close()
            except OSError:
                return

    def stop(self):
        self.running = False
        self.sock.close()


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}{path}", timeout=10) as r:
        return r.read().decode()


def degraded():
    pools = json.loads(get("/v1/pools"))["pools"]
    return sum(1 for p in pools if p["degraded"] and p["degraded"]["ipv4"])


def probes_up():
    return sum(
        1 for line in get("/metrics").splitlines()
        if line.startswith("weir_probe_up") and line.endswith(" 1")
    )


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def query(name):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        if label:
            q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    return q


class Latency:
    """50 queries a second, one at a time, to random pools; per-query latency in ms."""

    def __init__(self):
        self.samples = []
        self.running = True
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        while self.running:
            q = query(f"p{random.randrange(POOLS)}.scale.example")
            t = time.perf_counter()
            s.sendto(q, ("127.0.0.1", DNS_PORT))
            try:
                s.recv(4096)
                self.samples.append((time.perf_counter() - t) * 1000)
            except socket.timeout:
                self.samples.append(1000.0)
            time.sleep(0.02)

    def take(self):
        out, self.samples = self.samples, []
        out.sort()
        if not out:
            return (0.0, 0.0)
        return (out[len(out) // 2], out[min(len(out) - 1, int(len(out) * 0.99))])


def main():
    if not os.path.exists(WEIR):
        sys.exit(f"no {WEIR}: cargo build --release first")
    d = tempfile.mkdtemp(prefix="weir-scale-")
    write_config(d)
    acceptor = Acceptor()
    weir = subprocess.Popen([WEIR, "serve", "--config", os.path.join(d, "weir.toml")],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "weir.log"), "w"))
    try:
        deadline = time.time() + 120
        while True:
            try:
                if get("/readyz"):
                    break
            except Exception:
                if time.time() > deadline:
                    sys.exit("weir never became ready")
                time.sleep(0.5)
        lat = Latency()
        time.sleep(INTERVAL * 2)
        print(f"endpoints {POOLS * PER}, probes up {probes_up()}, pools degraded {degraded()}")
        lat.take()
        c0, t0 = cpu_seconds(weir.pid), time.time()
        time.sleep(STEADY)
        steady = (cpu_seconds(weir.pid) - c0) / (time.time() - t0) * 100
        rest = lat.take()
        print(f"steady: CPU {steady:.1f}% of a core, RSS {rss_mb(weir.pid):.1f} MiB, "
              f"DNS p50 {rest[0]:.2f} ms p99 {rest[1]:.2f} ms")
        acceptor.stop()
        c0, t0 = cpu_seconds(weir.pid), time.time()
        bound = FALL * INTERVAL + TIMEOUT
        print(f"acceptor stopped; fall x interval + timeout = {bound:.0f} s")
        last = -1
        while time.time() - t0 < LIMIT:
            n = degraded()
            if n != last:
                print(f"  +{time.time() - t0:6.1f} s: pools out {n}/{POOLS}, probes up {probes_up()}")
                last = n
            if n == POOLS:
                break
            time.sleep(1)
        took = time.time() - t0
        storm = (cpu_seconds(weir.pid) - c0) / took * 100
        during = lat.take()
        done = "all out" if last == POOLS else f"only {last}/{POOLS} pools out"
        print(f"storm: {done} after {took:.1f} s (goal {bound + 2:.0f} s), CPU {storm:.0f}% of a core, "
              f"DNS p50 {during[0]:.2f} ms p99 {during[1]:.2f} ms, RSS {rss_mb(weir.pid):.1f} MiB")
        lat.running = False
    finally:
        weir.terminate()
        try:
            weir.wait(10)
        except subprocess.TimeoutExpired:
            weir.kill()


if __name__ == "__main__":
    main()
