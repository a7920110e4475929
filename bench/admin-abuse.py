#!/usr/bin/env python3
"""Admin API under abuse (issue 12): hold N bad connections to weir's admin port and measure
/healthz on fresh connections (curl) and DNS over UDP and TCP (dig) for 20 s. A bad connection
the server closes is reopened (up to 100 per round), so the pressure never lets up.

    python3 bench/admin-abuse.py ADMIN_PORT MODE N SOURCES DNS_PORT
    MODE: idle | slowloris (every other connection sends half a request head) | tls (silent:
    no ClientHello; the admin port must serve TLS). SOURCES: bad connections come from
    127.0.0.2 .. 127.0.0.(SOURCES+1).

2026-12-02, debug build of weir, loopback, 2 shared cores, 2,000 bad connections kept up by the
client (weir holds at most 1,024, 64 per source, and closes the rest), 20 s each:

    mode       sources  /healthz median  p95      max      failures  DNS udp, tcp answered
    slowloris  40       1.05 ms          1.4 ms   3.4 ms   0         130/130, 130/130
    slowloris  1        0.97 ms          2.5 ms   6.2 ms   0         127/127, 127/127
    idle       40       1.09 ms          4.5 ms   5.9 ms   0         130/130, 130/130
    tls        40       4.66 ms          5.5 ms  12.0 ms   0         129/129, 129/129  (incl. curl's handshake)
    tls        1        4.77 ms         11.3 ms  16.7 ms   0         118/118, 118/118

Before the change, 64 silent TLS connections made /healthz take 9.7 s, and slowloris
connections stayed open for 300 s and more (issue 12, defects 1 and 2).
"""
import socket, subprocess, sys, time, selectors, statistics
port, mode, n, sources, dnsport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sel = selectors.DefaultSelector()
held = {}
def open_one(i):
    s = socket.socket(); s.setblocking(True)
    s.bind((f"127.0.0.{2 + i % sources}", 0))
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close(); return
    if mode == "slowloris" and i % 2: s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i); held[i] = s
for i in range(n): open_one(i)
print("opened", len(held))
pending = []; lat = []; closed = 0; reopened = 0; end = time.time() + 20; dns_ok = [0, 0]
while time.time() < end:
    for key, _ in sel.select(timeout=0):
        s = key.fileobj
        try: d = s.recv(4096)
        except OSError: d = b""
        if not d:
            sel.unregister(s); s.close(); held.pop(key.data, None); closed += 1
            pending.append(key.data)
    for i in pending[:100]: open_one(i)
    del pending[:100]
    url = f"https://127.0.0.1:{port}/healthz" if mode == "tls" else f"http://127.0.0.1:{port}/healthz"
    out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-m", "5", "-w", "%{http_code} %{time_total}", url], capture_output=True, text=True).stdout.split()
    if out and out[0] == "200": lat.append(float(out[1]) * 1000)
    else: lat.append(float("inf"))
    for tcp, idx in (("+notcp", 0), ("+tcp", 1)):
        r = subprocess.run(["dig", "@127.0.0.1", "-p", str(dnsport), tcp, "+time=2", "+tries=1", "+short", "example.com.", "SOA"], capture_output=True, text=True).stdout
        if "ns.example.com." in r: dns_ok[idx] += 1
    time.sleep(0.1)
lat.sort()
print(f"mode={mode} sources={sources} held~{len(held)} closed-by-server={closed} healthz n={len(lat)} median={lat[len(lat)//2]:.2f}ms p95={lat[int(len(lat)*.95)]:.2f}ms max={lat[-1]:.2f}ms failures={sum(1 for x in lat if x == float('inf'))} dns udp ok={dns_ok[0]} tcp ok={dns_ok[1]}")
