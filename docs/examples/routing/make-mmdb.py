#!/usr/bin/env python3
"""Writes the two small MaxMind DB (.mmdb) files of docs/routing.md, with no dependency.

    python3 make-mmdb.py geo geo.mmdb   # a GeoLite2-City-shaped database
    python3 make-mmdb.py asn asn.mmdb   # a GeoLite2-ASN-shaped database

Only documentation prefixes (RFC 5737, RFC 3849) are placed, so this is test data, not anyone's
geolocation data: real deployments point weir's [geo] at the GeoLite2, DB-IP or IPinfo files
they download, which weir never ships.

The format is MaxMind DB 2.0, the one those files use: a binary search tree over the 128 bits of
an IPv6 address (IPv4 networks in the ::/96 subtree, at ::a.b.c.d), each node two 24-bit
records; 16 zero bytes; the data section holding the records' values; then the marker
b"\\xab\\xcd\\xefMaxMind.com" and the metadata map. A record below the node count is the index of
another node, equal to it means "no data", above it points into the data section
(record - node_count - 16). The file is written next to OUT and renamed over it, the way a
database must be replaced under a running weir (which maps the file it reads).
"""

import ipaddress
import os
import sys

# (network, record). A narrower network nested in a wider one must come after it: 192.0.2.0/25
# is carved out of 192.0.2.0/24, so the /24 query of the guide gets an answer valid for a /25.
GEO = [
    ("198.51.100.0/24", ("EU", "DE", None)),
    ("203.0.113.0/24", ("NA", "US", "CA")),
    ("192.0.2.0/24", ("OC", "AU", None)),
    ("192.0.2.0/25", ("EU", "DE", None)),
    ("2001:db8::/32", ("EU", "FR", None)),
]
ASN = [
    ("203.0.113.0/24", (64500, "Example Transit")),
]


# --- The data section: each value is a control byte (type, size), maybe more, then the payload.

STRING, MAP, UINT16, UINT32, UINT64, ARRAY = 2, 7, 5, 6, 9, 11


def control(kind, size):
    if size < 29:
        bits, extra = size, b""
    elif size < 29 + 256:
        bits, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        bits, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        bits, extra = 31, (size - 65821).to_bytes(3, "big")
    if kind < 8:
        head = bytes([kind << 5 | bits])
    else:  # an extended type: type 0 in the first byte, type - 7 in the next
        head = bytes([bits, kind - 7])
    return head + extra


class Uint:
    """An unsigned integer of a given MaxMind type (uint16, uint32 or uint64)."""

    def __init__(self, kind, value):
        self.kind, self.value = kind, value


def encode(value):
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return control(STRING, len(raw)) + raw
    if isinstance(value, Uint):
        raw = value.value.to_bytes(8, "big").lstrip(b"\0")
        return control(value.kind, len(raw)) + raw
    if isinstance(value, dict):
        out = control(MAP, len(value))
        for k, v in value.items():
            out += encode(k) + encode(v)
        return out
    if isinstance(value, list):
        return control(ARRAY, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {value!r}")


def geo_record(continent, country, subdivision):
    """The fields of a GeoLite2-City record that weir reads (real ones carry many more)."""
    record = {
        "continent": {"code": continent},
        "country": {"iso_code": country},
    }
    if subdivision:
        record["subdivisions"] = [{"iso_code": subdivision}]
    return record


def asn_record(number, organization):
    return {
        "autonomous_system_number": Uint(UINT32, number),
        "autonomous_system_organization": organization,
    }


# --- The search tree: a node is a two-element list; a side is None (no data), an int (an
# --- offset into the data section) or another node.


def key(network):
    """The network's 128-bit key and prefix length in the IPv6 tree."""
    net = ipaddress.ip_network(network)
    if net.version == 4:
        return int(net.network_address), net.prefixlen + 96
    return int(net.network_address), net.prefixlen


def insert(root, network, offset):
    bits, length = key(network)
    node = root
    for depth in range(length - 1):
        bit = bits >> (127 - depth) & 1
        if not isinstance(node[bit], list):
            # A wider network's data (or nothing) stays on both halves of the split.
            node[bit] = [node[bit], node[bit]]
        node = node[bit]
    node[bits >> (127 - (length - 1)) & 1] = offset


def build(database_type, networks):
    data = bytearray()
    root = [None, None]
    for network, record in networks:
        offset = len(data)
        data += encode(record)
        insert(root, network, offset)
    # Number the nodes breadth first; the root is node 0.
    order = [root]
    for node in order:
        order.extend(side for side in node if isinstance(side, list))
    node_count = len(order)
    tree = bytearray()
    next_node = 1
    for node in order:
        for side in node:
            if isinstance(side, list):
                record, next_node = next_node, next_node + 1
            elif side is None:
                record = node_count
            else:
                record = node_count + 16 + side
            tree += record.to_bytes(3, "big")  # fails past 24 bits, as it must
    metadata = {
        "node_count": Uint(UINT32, node_count),
        "record_size": Uint(UINT16, 24),
        "ip_version": Uint(UINT16, 6),
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": Uint(UINT16, 2),
        "binary_format_minor_version": Uint(UINT16, 0),
        "build_epoch": Uint(UINT64, 1_700_000_000),
        "description": {"en": "weir documentation data (documentation prefixes only)"},
    }
    return bytes(tree) + bytes(16) + bytes(data) + b"\xab\xcd\xefMaxMind.com" + encode(metadata)


def main(argv):
    kinds = {
        "geo": ("GeoLite2-City", [(n, geo_record(*r)) for n, r in GEO]),
        "asn": ("GeoLite2-ASN", [(n, asn_record(*r)) for n, r in ASN]),
    }
    if len(argv) != 3 or argv[1] not in kinds:
        sys.exit(f"usage: {argv[0]} geo|asn OUT.mmdb")
    database_type, networks = kinds[argv[1]]
    out = argv[2]
    tmp = f"{out}.tmp"
    with open(tmp, "wb") as f:
        f.write(build(database_type, networks))
    os.replace(tmp, out)
    n = len(networks)
    print(f"{out}: {database_type}, {n} network{'' if n == 1 else 's'}")


if __name__ == "__main__":
    main(sys.argv)
