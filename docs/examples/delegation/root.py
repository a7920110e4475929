#!/usr/bin/env python3
"""A stand-in DNS root for the delegation lab in docs/delegation.md.

weir does not serve the root zone, so this small UDP server plays the root (and the .net
registry): it answers `. NS`, naming itself, and refers every name under a delegated domain to
that domain's nameserver, with its address (glue). Anything else gets NXDOMAIN.

usage: python3 root.py ADDRESS PORT
"""

import socket
import struct
import sys

# Delegations the root publishes: domain -> (nameserver name, its address as glue).
DELEGATIONS = {
    "com.": ("a.nic.com.", "127.0.0.12"),
    "example.net.": ("ns.provider.example.net.", "127.0.0.12"),
}
ROOT_NS = "a.root.test."
TTL = 86400
NS, A = 2, 1


def wire(name):
    labels = [l for l in name.rstrip(".").split(".") if l]
    return b"".join(bytes([len(l)]) + l.encode() for l in labels) + b"\0"


def record(name, rtype, rdata):
    return wire(name) + struct.pack("!HHIH", rtype, 1, TTL, len(rdata)) + rdata


def answer(query, address):
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    labels, at = [], 12
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode().lower())
        at += 1 + query[at]
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
    question = query[12 : at + 5]
    qname = ".".join(labels) + "."
    rd = flags & 0x0100
    an, ns, ad, out_flags = [], [], [], 0x8000 | rd
    if qname == ".":
        out_flags |= 0x0400  # authoritative
        if qtype == NS:
            an.append(record(".", NS, wire(ROOT_NS)))
            ad.append(record(ROOT_NS, A, socket.inet_aton(address)))
    else:
        zone = next((z for z in DELEGATIONS if ("." + qname).endswith("." + z)), None)
        if zone is None:
            out_flags |= 0x0400 | 3  # authoritative NXDOMAIN
        else:  # a referral: the zone's nameserver, and its address (glue)
            server, glue = DELEGATIONS[zone]
            ns.append(record(zone, NS, wire(server)))
            ad.append(record(server, A, socket.inet_aton(glue)))
    header = struct.pack("!HHHHHH", ident, out_flags, 1, len(an), len(ns), len(ad))
    return header + question + b"".join(an + ns + ad)


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    while True:
        query, client = sock.recvfrom(4096)
        try:
            reply = answer(query, address)
        except (IndexError, struct.error, UnicodeDecodeError):
            reply = None  # not a query this root understands: no answer
        if reply:
            sock.sendto(reply, client)


if __name__ == "__main__":
    main()
