#!/usr/bin/env python3
"""Issue 12: DNS while the admin API is hammered. weir (release build) pinned to CPU 0 serves
bench/zones/bench.example.zone plus a sticky pool of 58 endpoints (the costly preview); dnsperf
on CPU 1 sends bench/queries.txt for DURATION seconds, first alone, then while HAMMER client
threads (also on CPU 1) loop over admin writes (group weight changes), the largest audit pages
and previews. Reports DNS qps, qps per weir core, SERVFAILs and lost queries for both runs,
and what the admin clients got (status counts). Loopback only, bounded in time. Usage:

    cargo build --release && python3 bench/admin-hammer.py      # DURATION=10 HAMMER=200
"""
import collections
import http.client
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIR = os.environ.get("WEIR", os.path.join(REPO, "target/release/weir"))
DURATION = int(os.environ.get("DURATION", 10))
HAMMER = int(os.environ.get("HAMMER", 200))
DNS_PORT, ADMIN_PORT = 47453, 47480
TICKS = os.sysconf("SC_CLK_TCK")


def config(d):
    eps = ", ".join(f'{{ address = "192.0.2.{i + 1}" }}' for i in range(58))
    text = f"""[dns]
listen = ["127.0.0.1:{DNS_PORT}"]
[admin]
listen = "127.0.0.1:{ADMIN_PORT}"
[store]
path = "state"
[[zone]]
origin = "bench.example."
file = "{REPO}/bench/zones/bench.example.zone"
[[pool]]
name = "app.bench.example."
answers = 3
sticky = "client-subnet"
[[pool.group]]
name = "blue"
weight = 90
endpoints = [{eps}]
[[pool.group]]
name = "green"
weight = 10
endpoints = [{{ address = "198.51.100.1" }}]
"""
    path = os.path.join(d, "weir.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def core0_busy():
    """Jiffies CPU 0 spent busy and in all, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v) - v[3] - v[4], sum(v)
    return 0, 1


def dnsperf(pid):
    c0 = cpu(pid)
    b0 = core0_busy()
    out = subprocess.run(
        ["nice", "-n", "-10", "taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(DNS_PORT), "-d",
         os.path.join(REPO, "bench/queries.txt"), "-l", str(DURATION), "-c", "8", "-q", "200",
         "-t", "1"], capture_output=True, text=True, check=True).stdout
    used = cpu(pid) - c0
    b1 = core0_busy()
    busy = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    servfail = re.search(r"SERVFAIL (\d+)", out)
    return (qps, completed / used if used else 0.0, int(servfail.group(1)) if servfail else 0, lost,
            busy)


class Hammer:
    def __init__(self):
        self.running = True
        self.status = collections.Counter()
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True)
                        for i in range(HAMMER)]
        for t in self.threads:
            t.start()

    def loop(self, i):
        # Clients at nice +10 so that they do not starve dnsperf on the same core: the bench
        # measures what weir's core gives DNS, not how the two generators share theirs.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        kinds = ["write", "audit", "preview"]
        while self.running:
            kind = kinds[i % 3]
            try:
                c = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=30)
                if kind == "write":
                    body = '{"weight": %d, "reason": "hammer"}' % random.randrange(1, 100)
                    c.request("PUT", "/v1/pools/app.bench.example./groups/green/weight", body,
                              {"Content-Type": "application/json"})
                elif kind == "audit":
                    c.request("GET", "/v1/audit?since=0&limit=10000")
                else:
                    c.request("GET", "/v1/pools/app.bench.example./preview?weights=blue:50,green:50")
                r = c.getresponse()
                r.read()
                self.status[f"{kind} {r.status}"] += 1
                c.close()
            except Exception as e:  # a refused or reset connection counts as such
                self.status[f"{kind} {type(e).__name__}"] += 1
                time.sleep(0.05)

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(35)


def main():
    if not os.path.exists(WEIR):
        sys.exit(f"no {WEIR}: cargo build --release first")
    d = tempfile.mkdtemp(prefix="weir-hammer-")
    weir = subprocess.Popen(["taskset", "-c", "0", WEIR, "serve", "--config", config(d)],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
    try:
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", ADMIN_PORT, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        idle = dnsperf(weir.pid)
        print(f"idle:      {idle[0]:9.0f} qps, {idle[1]:9.0f} qps per weir core, "
              f"SERVFAIL {idle[2]}, lost {idle[3]}, weir's core {idle[4] * 100:.0f}% busy")
        hammer = Hammer()
        time.sleep(1)
        busy = dnsperf(weir.pid)
        hammer.stop()
        print(f"hammered:  {busy[0]:9.0f} qps, {busy[1]:9.0f} qps per weir core, "
              f"SERVFAIL {busy[2]}, lost {busy[3]}, weir's core {busy[4] * 100:.0f}% busy  "
              f"({busy[0] / idle[0] * 100:.0f}% of idle qps)")
        print("admin:", dict(sorted(hammer.status.items())))
    finally:
        weir.terminate()
        weir.wait(10)


if __name__ == "__main__":
    main()
