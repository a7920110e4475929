#!/usr/bin/env python3
"""Reflection measurements for bench/rrl.sh (loopback only, fixed duration).

  rrl.py amplify PORT             every question of the example zone, with and without EDNS:
                                  response bytes / query bytes, largest first
  rrl.py flood PORT QPS SECONDS   the largest-amplification question at QPS from 127.0.0.1 while
                                  a second client on 127.0.1.1 asks a mix at 100 qps; prints
                                  what each got back, as JSON

Queries are built by hand (no dependencies beyond Python 3).
"""
import json
import socket
import struct
import sys
import threading
import time

TYPES = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255}
NAMES = [
    "example.com", "ns1.example.com", "ns2.example.com", "mail.example.com", "www.example.com",
    "web.example.com", "alias.example.com", "info.example.com", "_sip._tcp.example.com",
    "sip.example.com", "a.b.c.example.com", "x.wild.example.com", "sub.example.com",
    "host.sub.example.com", "nothing.example.com", "app.example.com",
]


def wire(name):
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, name, qtype, edns=None, do=False):
    """A query; `edns` is the advertised UDP payload size (None: no OPT)."""
    arcount = 1 if edns else 0
    p = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, arcount) + wire(name) + struct.pack(">HH", qtype, 1)
    if edns:
        p += b"\0" + struct.pack(">HHIH", 41, edns, 0x8000 if do else 0, 0)
    return p


def ask(port, packet, timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.sendto(packet, ("127.0.0.1", port))
    try:
        return s.recv(65535)
    except socket.timeout:
        return None
    finally:
        s.close()


def amplify(port):
    rows = []
    for name in NAMES:
        for tname, qtype in TYPES.items():
            for edns in (None, 1232, 4096):
                q = query(1, name, qtype, edns)
                r = ask(port, q)
                if r is None:
                    continue
                tc = bool(r[2] & 0x02)
                rcode = r[3] & 0x0F
                rows.append((len(r) / len(q), len(q), len(r), name, tname, edns or "-", tc, rcode))
    rows.sort(reverse=True)
    return rows


def flood(port, qps, seconds):
    rows = amplify(port)
    _, qlen, rlen, name, tname, edns, _, _ = rows[0]
    flood_q = query(0, name, TYPES[tname], None if edns == "-" else edns)
    legit_qs = [query(0, n, TYPES[t], 1232) for n, t in
                [("www.example.com", "A"), ("mail.example.com", "A"), ("example.com", "MX"),
                 ("info.example.com", "TXT"), ("nothing.example.com", "A")]]
    stats = {
        "flood": {"question": f"{name} {tname} edns={edns}", "query_bytes": len(flood_q),
                  "answer_bytes": rlen, "sent": 0, "answers": 0, "slips": 0,
                  "bytes_in": 0, "bytes_out": 0},
        "other": {"sent": 0, "answers": 0, "slips": 0},
    }

    def receiver(sock, st, stop):
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                r = sock.recv(65535)
            except socket.timeout:
                continue
            if r[2] & 0x02:
                st["slips"] += 1
            else:
                st["answers"] += 1
            if "bytes_out" in st:
                st["bytes_out"] += len(r)

    def sender(sock, packets, rate, st):
        start = time.monotonic()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p = packets[i % len(packets)]
            p = struct.pack(">H", i & 0xFFFF) + p[2:]
            sock.sendto(p, ("127.0.0.1", port))
            st["sent"] += 1
            if "bytes_in" in st:
                st["bytes_in"] += len(p)
        st["seconds"] = round(time.monotonic() - start, 2)

    stop = threading.Event()
    fs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    fs.bind(("127.0.0.1", 0))
    os_ = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    os_.bind(("127.0.1.1", 0))
    threads = [
        threading.Thread(target=receiver, args=(fs, stats["flood"], stop)),
        threading.Thread(target=receiver, args=(os_, stats["other"], stop)),
    ]
    for t in threads:
        t.start()
    senders = [
        threading.Thread(target=sender, args=(fs, [flood_q], qps, stats["flood"])),
        threading.Thread(target=sender, args=(os_, legit_qs, 100, stats["other"])),
    ]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    f = stats["flood"]
    f["amplification"] = round(f["bytes_out"] / max(f["bytes_in"], 1), 3)
    f["achieved_qps"] = round(f["sent"] / f["seconds"])
    return stats


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "amplify":
        print(f"{'factor':>7} {'query':>5} {'reply':>5}  question")
        for factor, ql, rl, name, t, edns, tc, rcode in amplify(port)[:12]:
            print(f"{factor:7.2f} {ql:5d} {rl:5d}  {name} {t} edns={edns}{' TC' if tc else ''} rcode={rcode}")
    elif cmd == "flood":
        print(json.dumps(flood(port, float(sys.argv[3]), float(sys.argv[4])), indent=1))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
