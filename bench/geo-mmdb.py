#!/usr/bin/env python3
"""A GeoLite2-City-shaped database for bench/run.sh's routed name, written with the guide's
dependency-free writer (docs/examples/routing/make-mmdb.py).

    python3 bench/geo-mmdb.py OUT.mmdb [NETWORKS]

NETWORKS (default 50000) random /24s spread over public IPv4 space, plus 198.51.100.0/24 as
DE, each with a City record's routing fields plus a location (real files carry more fields,
shared through pointers, which a lookup skips). No real geolocation data: the places are drawn
at random.
"""

import importlib.util
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WRITER = os.path.join(HERE, "..", "docs", "examples", "routing", "make-mmdb.py")

PLACES = [
    ("EU", "DE", "BE"),
    ("EU", "FR", None),
    ("NA", "US", "CA"),
    ("AS", "JP", None),
    ("OC", "AU", None),
    ("SA", "BR", "SP"),
]


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(f"usage: {argv[0]} OUT.mmdb [NETWORKS]")
    spec = importlib.util.spec_from_file_location("make_mmdb", WRITER)
    mmdb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mmdb)
    count = int(argv[2]) if len(argv) == 3 else 50_000
    rng = random.Random(15)
    picked = set()
    while len(picked) < count:
        n = rng.randrange(1 << 24)  # a /24, as its top 24 bits
        first = n >> 16
        if first in (0, 10, 127, 198) or first >= 224:
            continue
        picked.add(n)
    networks = [("198.51.100.0/24", mmdb.geo_record("EU", "DE", None))]
    for i, n in enumerate(sorted(picked)):
        record = mmdb.geo_record(*PLACES[i % len(PLACES)])
        record["location"] = {"time_zone": "Etc/UTC", "accuracy_radius": mmdb.Uint(mmdb.UINT16, 100)}
        networks.append((f"{n >> 16}.{n >> 8 & 255}.{n & 255}.0/24", record))
    out = argv[1]
    with open(f"{out}.tmp", "wb") as f:
        f.write(mmdb.build("GeoLite2-City", networks))
    os.replace(f"{out}.tmp", out)


if __name__ == "__main__":
    main(sys.argv)
