#!/usr/bin/env bash
# Conformance comparison: weir vs Knot DNS (knotd) vs NSD serving the same zone.
#
# Usage:  bench/conformance.sh            (from anywhere; needs root for knotd/nsd)
#   env:  SKIP_BUILD=1   use the existing target/release/weir
#         KEEP_TMP=1     keep the temp dir (configs, server logs, raw dig output)
#         ONLY_DIFF=1    print only the queries where weir differs from Knot or NSD
#         WEIR_PORT / KNOT_PORT / NSD_PORT   (default 5501 / 5502 / 5503)
#         NSD_MINIMAL=no NSD's stock behaviour (adds apex NS + glue to every
#                        positive answer); default yes, so it matches Knot's style
# Needs: apt-get install -y knot nsd dnsutils
#
# Serves zones/example.com.zone (origin example.com.) with all three servers on
# 127.0.0.1, plus a generated zone big.example. (large RRsets, for UDP size / TC
# checks), sends each query in the list below (dig +norec) to every server, and
# prints per query and server: RCODE, header flags, EDNS line, and the sorted
# ANSWER / AUTHORITY / ADDITIONAL records (TTL included). A query is marked
# "DIFF" when weir's normalized answer differs from Knot's or NSD's ("knot!=nsd"
# notes where the two references disagree among themselves). Exit status: 0 if
# weir matches at least one reference everywhere, 1 otherwise.
# Traffic goes to 127.0.0.1 only; every query has a 2 s timeout, 1 try.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZONE="$REPO/zones/example.com.zone"
ORIGIN="example.com."
WEIR_PORT=${WEIR_PORT:-5501}
KNOT_PORT=${KNOT_PORT:-5502}
NSD_PORT=${NSD_PORT:-5503}
NSD_MINIMAL=${NSD_MINIMAL:-yes}     # nsd minimal-responses; "no" = NSD's default (NS+glue on every answer)
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
ONLY_DIFF=${ONLY_DIFF:-0}
WEIR_BIN=${WEIR_BIN:-"${CARGO_TARGET_DIR:-$REPO/target}/release/weir"}

for t in dig knotd nsd; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y knot nsd dnsutils)" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/weir-conformance.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && wait "$p" 2>/dev/null || true
    done
    if [[ "$KEEP_TMP" == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build weir --------------------------------------------------------------
if [[ "$SKIP_BUILD" != 1 ]]; then
    (cd "$REPO" && cargo build --release --quiet)
fi

# ---- configs -----------------------------------------------------------------
mkdir -p "$TMP/weir/state" "$TMP/knot" "$TMP/nsd"
cp "$ZONE" "$TMP/zone"   # knot/nsd read a private copy (knot may want to write next to it)
BIG="big.example."
{
    echo "\$ORIGIN $BIG"
    echo "\$TTL 3600"
    echo "@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300"
    echo "@ IN NS ns1"
    echo "ns1 IN A 192.0.2.53"
    for n in $(seq 1 60); do echo "many IN A 198.51.100.$n"; done      # ~1 KB: > 512, < 1232
    for n in $(seq 1 20); do                                          # ~2.3 KB: > 1232
        printf 'txt IN TXT "%03d-%s"\n' "$n" "$(printf 'x%.0s' $(seq 1 100))"
    done
} >"$TMP/big.zone"

cat >"$TMP/weir/weir.toml" <<EOF
[dns]
listen = ["127.0.0.1:$WEIR_PORT"]
[admin]
listen = ""
[store]
path = "$TMP/weir/state"
[[zone]]
origin = "$ORIGIN"
file = "$ZONE"
[[zone]]
origin = "$BIG"
file = "$TMP/big.zone"
EOF

cat >"$TMP/knot/knot.conf" <<EOF
server:
    rundir: "$TMP/knot"
    listen: 127.0.0.1@$KNOT_PORT
log:
  - target: stderr
    any: info
database:
    storage: "$TMP/knot"
template:
  - id: default
    storage: "$TMP/knot"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: $ORIGIN
    file: "$TMP/zone"
  - domain: $BIG
    file: "$TMP/big.zone"
EOF

cat >"$TMP/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$TMP/nsd"
    database: ""
    zonelistfile: "$TMP/nsd/zone.list"
    xfrdfile: "$TMP/nsd/xfrd.state"
    xfrdir: "$TMP/nsd"
    pidfile: "$TMP/nsd/nsd.pid"
    logfile: "$TMP/nsd/nsd.log"
    verbosity: 1
    minimal-responses: $NSD_MINIMAL
remote-control:
    control-enable: no
zone:
    name: $ORIGIN
    zonefile: "$TMP/zone"
zone:
    name: $BIG
    zonefile: "$TMP/big.zone"
EOF

# ---- start servers -----------------------------------------------------------
"$WEIR_BIN" serve --config "$TMP/weir/weir.toml" >"$TMP/weir/log" 2>&1 &
PIDS+=($!)
knotd -c "$TMP/knot/knot.conf" >"$TMP/knot/log" 2>&1 &
PIDS+=($!)
nsd -d -c "$TMP/nsd/nsd.conf" >"$TMP/nsd/stdout" 2>&1 &
PIDS+=($!)

wait_up() { # name port
    local i
    for i in $(seq 1 50); do
        if dig @127.0.0.1 -p "$2" +norec +tries=1 +time=1 "$ORIGIN" SOA 2>/dev/null | grep -q 'status: NOERROR'; then
            return 0
        fi
        sleep 0.2
    done
    echo "$1 did not come up on port $2; log:" >&2
    cat "$TMP/$1/log" "$TMP/$1/stdout" "$TMP/$1/nsd.log" 2>/dev/null | tail -20 >&2
    exit 1
}
wait_up weir "$WEIR_PORT"
wait_up knot "$KNOT_PORT"
wait_up nsd "$NSD_PORT"

# ---- queries -----------------------------------------------------------------
# One query per line: "label|dig arguments". Base args (+norec +nocookie
# +noednsneg, 2 s timeout, 1 try) are added to every query.
Z=example.com
QUERIES=(
    "apex SOA|$Z SOA"
    "apex NS|$Z NS"
    "apex MX|$Z MX"
    "apex TXT|$Z TXT"
    "apex A|$Z A"
    "apex AAAA (NODATA)|$Z AAAA"
    "www A|www.$Z A"
    "www AAAA|www.$Z AAAA"
    "www TXT (NODATA)|www.$Z TXT"
    "nope A (NXDOMAIN)|nope.$Z A"
    "deep.nope A (NXDOMAIN)|deep.nope.$Z A"
    "c A (ENT)|c.$Z A"
    "b.c A (ENT)|b.c.$Z A"
    "a.b.c A|a.b.c.$Z A"
    "alias A (CNAME chain)|alias.$Z A"
    "web A (CNAME)|web.$Z A"
    "web CNAME|web.$Z CNAME"
    "info TXT (2 strings)|info.$Z TXT"
    "host.wild A (wildcard)|host.wild.$Z A"
    "host.wild TXT (wildcard)|host.wild.$Z TXT"
    "host.wild AAAA (wild NODATA)|host.wild.$Z AAAA"
    "x.y.wild A (wildcard)|x.y.wild.$Z A"
    "wild A (ENT above *)|wild.$Z A"
    "*.wild A (literal)|*.wild.$Z A"
    "sub A (referral)|sub.$Z A"
    "host.sub A (referral)|host.sub.$Z A"
    "ns1.sub A (glue, referral)|ns1.sub.$Z A"
    "sub NS (referral)|sub.$Z NS"
    "sub DS (parent NODATA)|sub.$Z DS"
    "_sip._tcp SRV|_sip._tcp.$Z SRV"
    "apex ANY|$Z ANY"
    "www ANY|www.$Z ANY"
    "example.org A (REFUSED)|example.org A"
    "www CH A|-c CH www.$Z A"
    "www CH TXT|-c CH www.$Z TXT"
    "www TYPE65280|www.$Z TYPE65280"
    "nope TYPE65280|nope.$Z TYPE65280"
    "0x20 WwW.ExAmPlE.CoM A|WwW.ExAmPlE.CoM A"
    "noedns www A|+noedns www.$Z A"
    "noedns nope A|+noedns nope.$Z A"
    "edns=1 www A (BADVERS)|+edns=1 www.$Z A"
    "edns=1 nope A (BADVERS)|+edns=1 nope.$Z A"
    "ednsopt=100 www A|+ednsopt=100 www.$Z A"
    "ednsopt=100:abcd www A|+ednsopt=100:abcd www.$Z A"
    "ednsflags=0x0080 www A|+ednsflags=0x0080 www.$Z A"
    "cookie www A|+cookie www.$Z A"
    "nsid www A|+nsid www.$Z A"
    "bufsize=512 apex ANY|+bufsize=512 $Z ANY"
    "bufsize=512 sub NS|+bufsize=512 sub.$Z NS"
    "bufsize=4096 apex NS|+bufsize=4096 $Z NS"
    "rd+cd+ad www A|+rec +cdflag +adflag www.$Z A"
    "tcp www A|+tcp www.$Z A"
    "tcp nope A|+tcp nope.$Z A"
    "tcp sub A|+tcp sub.$Z A"
    "tcp apex ANY|+tcp $Z ANY"
    # big.example.: +ignore keeps dig from retrying over TCP, so TC and the size show
    "big: noedns many A (~1KB)|+ignore +noedns many.big.example A"
    "big: bufsize=512 many A|+ignore +bufsize=512 many.big.example A"
    "big: bufsize=1232 many A|+ignore +bufsize=1232 many.big.example A"
    "big: bufsize=4096 txt TXT (~2.3KB)|+ignore +bufsize=4096 txt.big.example TXT"
    "big: bufsize=1232 txt TXT|+ignore +bufsize=1232 txt.big.example TXT"
    "big: noedns txt TXT|+ignore +noedns txt.big.example TXT"
    "big: tcp txt TXT|+tcp txt.big.example TXT"
    "big: tcp many A|+tcp many.big.example A"
)
BASE=(+norec +nocookie +noednsneg +time=2 +tries=1 +nottlunits)

# Normalize dig output: one line per item, in a fixed order. $1=1: include the
# received message size in the header line (for the size/TC queries).
normalize() {
    awk -v withsize="${1:-0}" '
    /^;; MSG SIZE +rcvd:/ { sz = $NF }
    /^;; ->>HEADER<<-/ { match($0, /status: [A-Z0-9]+/); st = substr($0, RSTART + 8, RLENGTH - 8) }
    /^;; flags:/ { f = $0; sub(/^;; flags: */, "", f); sub(/;.*/, "", f); fl = f }
    /^; EDNS:/ { e = $0; sub(/^; /, "", e); ed = e }
    /^; (OPT=|NSID|COOKIE|EDE|CLIENT-SUBNET|EXPIRE|PAD|KEY-TAG|TCP-KEEPALIVE|CHAIN)/ { o = $0; sub(/^; /, "", o); opts = opts " [" o "]" }
    /^;; connection timed out|^;; communications error|no servers could be reached/ { to = 1 }
    /^;; ANSWER SECTION:/ { sec = "ANS"; next }
    /^;; AUTHORITY SECTION:/ { sec = "AUT"; next }
    /^;; ADDITIONAL SECTION:/ { sec = "ADD"; next }
    /^$/ { sec = ""; next }
    /^;/ { next }
    sec != "" { r = $0; gsub(/[ \t]+/, " ", r); o = (sec == "ANS" ? 2 : sec == "AUT" ? 3 : 4); print o "\t" sec "\t" r }
    END {
        if (to) { print "0\t0HDR\tTIMEOUT"; exit }
        print "0\t0HDR\t" st " flags=[" fl "]" (withsize == 1 ? " size=" sz : "")
        print "1\t1OPT\t" (ed == "" ? "no OPT" : ed) opts
    }' | LC_ALL=C sort -t$'\t' -k1,1n -k3 | cut -f2-
}

query() { # port args...
    local port=$1; shift
    # shellcheck disable=SC2086
    dig @127.0.0.1 -p "$port" "${BASE[@]}" "$@" 2>&1 || true
}

declare -A PORT=([weir]=$WEIR_PORT [knot]=$KNOT_PORT [nsd]=$NSD_PORT)
SERVERS=(weir knot nsd)
mkdir -p "$TMP/out"
ndiff=0
nwrong=0
DIFFS=()

show() { # file
    awk -F'\t' '
        $1 == "0HDR" { printf "    %-6s %s\n", "rcode", $2; next }
        $1 == "1OPT" { printf "    %-6s %s\n", "edns", $2; next }
        { printf "    %-6s %s\n", $1, $2 }' "$1"
}

echo "weir:  $("$WEIR_BIN" --version 2>/dev/null || echo weir)"
echo "knot:  $(knotd --version 2>&1 | head -1)"
echo "nsd:   $(nsd -v 2>&1 | head -1)"
echo "dig:   $(dig -v 2>&1 | head -1)   base args: ${BASE[*]}"
echo

i=0
for q in "${QUERIES[@]}"; do
    i=$((i + 1))
    label=${q%%|*}
    read -r -a args <<<"${q#*|}"
    for s in "${SERVERS[@]}"; do
        query "${PORT[$s]}" "${args[@]}" >"$TMP/out/$i.$s.raw"
        ws=0; [[ " ${args[*]} " == *" +ignore "* ]] && ws=1
        normalize "$ws" <"$TMP/out/$i.$s.raw" >"$TMP/out/$i.$s"
    done
    dk=0; dn=0; kn=0
    cmp -s "$TMP/out/$i.weir" "$TMP/out/$i.knot" || dk=1
    cmp -s "$TMP/out/$i.weir" "$TMP/out/$i.nsd" || dn=1
    cmp -s "$TMP/out/$i.knot" "$TMP/out/$i.nsd" || kn=1
    mark="same"
    if ((dk || dn)); then
        ndiff=$((ndiff + 1))
        mark="DIFF"
        ((dk)) && mark+=" weir!=knot"
        ((dn)) && mark+=" weir!=nsd"
        ((dk && dn)) && nwrong=$((nwrong + 1))
        DIFFS+=("$i. $label  ($mark)")
    fi
    ((kn)) && mark+=" (knot!=nsd)"
    if [[ "$ONLY_DIFF" == 1 && "$mark" == same* ]]; then continue; fi
    printf '=== %2d. %-34s dig %s   -> %s\n' "$i" "$label" "${args[*]}" "$mark"
    if ((dk || dn || kn)); then
        for s in "${SERVERS[@]}"; do
            echo "  [$s]"
            show "$TMP/out/$i.$s"
        done
    else
        echo "  [all three]"
        show "$TMP/out/$i.weir"
    fi
done

echo
echo "=== summary: ${#QUERIES[@]} queries, $ndiff where weir differs from Knot or NSD, $nwrong where it differs from both"
for d in "${DIFFS[@]:-}"; do [[ -n "$d" ]] && echo "  $d"; done
((nwrong == 0))
