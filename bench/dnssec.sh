#!/usr/bin/env bash
# DNSSEC cost benchmark: one weir binary serving bench/zones/bench.example.zone unsigned, then
# signed (`[[zone]] dnssec = true`, a CSK made here with `weir dnssec keygen`), driven by
# dnsperf on loopback. Cases (each a fresh server per round; rounds interleave the cases):
#
#   static-{unsigned,signed}    bench/queries.txt (static answers, ~11% names that do not exist)
#   managed1-{unsigned,signed}  bench/queries-pool.txt (app.: a pool with answers = 1)
#   managed2-{unsigned,signed}  the same on app2.: answers = 2 over six endpoints
#   nxflood-{unsigned,signed}   FLOOD_NAMES unique random names under the zone, none exists
#   nxflood-signed-rrl          the same with [dns.rrl] rate = RRL_RATE (slip RRL_SLIP), a steady
#                               flood of RRL_QPS (below what the signed server answers)
#   nxflood-signed-rrl-over     the same at RRL_QPS_OVER (above it)
#   nxflood-signed-ed25519      the signed flood with an Ed25519 CSK instead of ECDSA P-256
#
# Every query carries DO (dnsperf -D) in every case by default, so signed and unsigned see the
# same packets and only `dnssec = true` differs (UNSIGNED_EXTRA="" sends the unsigned cases
# without EDNS, like bench/run.sh).
#
# CPU µs/query is the server's utime+stime from /proc/PID/stat (all threads) over a max-
# throughput run, divided by queries completed (bench/run.sh's method); for the RRL cases, by
# the queries weir read (its weir_dns_queries_total, from the admin endpoint): limited
# queries are never completed, and the open-loop flood (dnsperf -q RRL_OUTSTANDING -t
# RRL_TIMEOUT -Q RRL_QPS) is mostly dropped (and, over capacity, overflows the socket buffer),
# so dnsperf's counts say nothing about the server's work. The RRL cases also report RRL's
# limited/slipped counters, the kernel's UDP RcvbufErrors, and dig probes sent mid-flood (new
# random names with and without a DNS cookie, and www). RSS (VmRSS) is read at
# start, every second during the run (max), and at the end. The last lines are one
# `case median-CPU-µs/query` line per case. Loopback only; every run is bounded by DURATION.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}
TIMEOUT=${TIMEOUT:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WEIR_PORT=${WEIR_PORT:-5403}
ADMIN_PORT=${ADMIN_PORT:-18403}       # admin (metrics) of the RRL cases only
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
FLOOD_NAMES=${FLOOD_NAMES:-2000000}   # unique random names in the flood's query file
RRL_RATE=${RRL_RATE:-100}             # [dns.rrl] rate of the nxflood-signed-rrl* cases
RRL_WINDOW=${RRL_WINDOW:-2s}
RRL_SLIP=${RRL_SLIP:-2}
RRL_TIMEOUT=${RRL_TIMEOUT:-0.2}       # dnsperf -t of the RRL cases: dropped queries free their slot soon
RRL_OUTSTANDING=${RRL_OUTSTANDING:-20000}
RRL_QPS=${RRL_QPS:-10000}             # dnsperf -Q of nxflood-signed-rrl: a flood the signed server keeps up with
RRL_QPS_OVER=${RRL_QPS_OVER:-30000}   # dnsperf -Q of nxflood-signed-rrl-over: more than it answers
PROBES=${PROBES:-10}                  # dig probes of new random names sent mid-flood (RRL cases)
SIGNED_EXTRA=${SIGNED_EXTRA:--D}
UNSIGNED_EXTRA=${UNSIGNED_EXTRA--D}
CASES=${CASES:-"static-unsigned static-signed managed1-unsigned managed1-signed managed2-unsigned managed2-signed nxflood-unsigned nxflood-signed nxflood-signed-rrl nxflood-signed-rrl-over nxflood-signed-ed25519"}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$REPO/bench"
ZONE_SRC="$BENCH/zones/bench.example.zone"
ORIGIN="bench.example."
WEIR_BIN=${WEIR_BIN:-"${CARGO_TARGET_DIR:-$REPO/target}/release/weir"}

log() { printf '[dnssec] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

TMP=$(mktemp -d /tmp/weir-dnssec.XXXXXX)
SERVER_PID=""
SAMPLER_PID=""

stop_pid() {
  local pid=$1
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
stop_server() { local p=$SERVER_PID; SERVER_PID=""; stop_pid "$p"; }
cleanup() {
  local rc=$?
  local s=$SAMPLER_PID; SAMPLER_PID=""; stop_pid "$s"
  stop_server
  if [[ $KEEP_TMP == 1 || $rc -ne 0 ]]; then log "raw files kept in $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for t in dnsperf dig taskset python3 curl; do command -v "$t" >/dev/null || die "missing $t (apt-get install dnsperf dnsutils util-linux python3 curl)"; done
if [[ $SKIP_BUILD != 1 ]]; then
  log "cargo build --release --features jemalloc"
  (cd "$REPO" && cargo build --release --features jemalloc) >&2 || die "cargo build failed"
fi
[[ -x $WEIR_BIN ]] || die "weir binary not found at $WEIR_BIN"
CLK_TCK=$(getconf CLK_TCK)

# ---- keys, configs, query files ---------------------------------------------
mkdir -p "$TMP/keys" "$TMP/keys-ed25519"
"$WEIR_BIN" dnssec keygen "$ORIGIN" --dir "$TMP/keys" >"$TMP/keygen.txt" || die "weir dnssec keygen failed"
"$WEIR_BIN" dnssec keygen "$ORIGIN" --algorithm ed25519 --dir "$TMP/keys-ed25519" >>"$TMP/keygen.txt" || die "weir dnssec keygen (ed25519) failed"

write_conf() { # file signed(true|false) rrl_rate admin(0|1) [key_dir]
  local admin='""'
  [[ $4 == 1 ]] && admin="\"127.0.0.1:$ADMIN_PORT\""
  cat >"$1" <<EOF
[dns]
listen = ["127.0.0.1:$WEIR_PORT"]

[dns.rrl]
rate = $3
window = "$RRL_WINDOW"
slip = $RRL_SLIP

[admin]
listen = $admin

[store]
path = "$TMP/state"

[dnssec]
key_dir = "${5:-$TMP/keys}"

[[zone]]
origin = "$ORIGIN"
file = "$ZONE_SRC"
dnssec = $2

# bench/run.sh's managed name: 90/10 over three endpoints, one answer per query.
[[pool]]
name = "app.$ORIGIN"
[[pool.group]]
name = "blue"
weight = 90
endpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }]
[[pool.group]]
name = "green"
weight = 10
endpoints = [{ address = "192.0.2.20" }]

# Two answers per query over six endpoints (15 possible pairs, each signed on first use).
[[pool]]
name = "app2.$ORIGIN"
answers = 2
[[pool.group]]
name = "blue"
weight = 90
endpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }, { address = "192.0.2.12" }, { address = "192.0.2.13" }]
[[pool.group]]
name = "green"
weight = 10
endpoints = [{ address = "192.0.2.20" }, { address = "192.0.2.21" }]
EOF
}
write_conf "$TMP/unsigned.toml" false 0 0
write_conf "$TMP/signed.toml" true 0 0
write_conf "$TMP/signed-rrl.toml" true "$RRL_RATE" 1
write_conf "$TMP/signed-ed25519.toml" true 0 0 "$TMP/keys-ed25519"

sed 's/^app\./app2./' "$BENCH/queries-pool.txt" >"$TMP/queries-pool2.txt"
log "generating $FLOOD_NAMES unique random names"
python3 - "$FLOOD_NAMES" "$ORIGIN" >"$TMP/queries-flood.txt" <<'PY'
import random, string, sys
n, origin = int(sys.argv[1]), sys.argv[2].rstrip(".")
rng = random.Random(9824)
alpha = string.ascii_lowercase + string.digits
def b36(i):
    s = ""
    while True:
        s = alpha[i % 36] + s
        i //= 36
        if i == 0:
            return s
out = sys.stdout
for i in range(n):  # random part + a unique counter: every name distinct, none in the zone
    out.write("x" + "".join(rng.choices(alpha, k=8)) + b36(i) + "." + origin + " A\n")
PY

case_conf() { case $1 in *-ed25519) echo "$TMP/signed-ed25519.toml";; *-rrl|*-rrl-over) echo "$TMP/signed-rrl.toml";; *-signed) echo "$TMP/signed.toml";; *) echo "$TMP/unsigned.toml";; esac; }
case_queries() {
  case $1 in
    static-*) echo "$BENCH/queries.txt";; managed1-*) echo "$BENCH/queries-pool.txt";;
    managed2-*) echo "$TMP/queries-pool2.txt";; nxflood-*) echo "$TMP/queries-flood.txt";;
  esac
}
case_extra() { case $1 in *-signed|*-signed-*) echo "$SIGNED_EXTRA";; *) echo "$UNSIGNED_EXTRA";; esac; }

start_server() { # config errlog
  taskset -c "$SERVER_CPU" "$WEIR_BIN" serve --config "$1" 2>"$2" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$2" >&2; die "weir exited during startup"; }
    [[ $(dig +short +norec +time=1 +tries=1 @127.0.0.1 -p "$WEIR_PORT" "www.$ORIGIN" A 2>/dev/null) == 192.0.2.20 ]] && return 0
    sleep 0.1
  done
  cat "$2" >&2; die "weir did not answer www.$ORIGIN A"
}
cpu_ticks() { local s; s=$(<"/proc/$1/stat"); s=${s##*) }; awk '{print $12 + $13}' <<<"$s"; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
dnsperf_field() { sed -n "s/^ *$2: *\([0-9.]*\).*/\1/p" "$1" | head -1; }
rrl_metrics() { # "limited slipped queries": RRL counters of the nxdomain class, queries parsed
  curl -s --max-time 2 "127.0.0.1:$ADMIN_PORT/metrics" | awk '
    /^weir_dns_rrl_limited_total\{class="nxdomain"\}/ {l=$2}
    /^weir_dns_rrl_slipped_total\{class="nxdomain"\}/ {s=$2}
    /^weir_dns_queries_total\{/ {q+=$2}
    END {printf "%d %d %d\n", l, s, q}'
}
probe_summary() { # "new:TC=3,timeout=7 cookie:full=2,timeout=8 www:full=1" -> as one word
  awk '{k=$1; sub(/[0-9]+$/,"",k); o=($2=="timeout")?"timeout":(($3=="TC")?"TC":($2=="NOERROR"?"full":$2)); n[k","o]++; ks[k]=1}
    END{out=""; split("new cookie www",order," ");
      for (i=1;i<=3;i++){k=order[i]; if(!(k in ks)) continue; out=out ",probes_" k ":"; sep="";
        split("TC full timeout",os," "); for(j=1;j<=3;j++) if((k","os[j]) in n){out=out sep os[j] "=" n[k","os[j]]; sep="/"}}
      print out}' "$1"
}
rcvbuf_errors() { awk '/^Udp:/{n++} /^Udp:/&&n==2{print $6}' /proc/net/snmp; }  # system-wide UDP RcvbufErrors

# ---- sanity: signed answers carry RRSIGs, denial is compact -----------------
check_signed() {
  start_server "$TMP/signed.toml" "$TMP/check.stderr"
  local q out
  for q in "www.$ORIGIN A" "app.$ORIGIN A" "app2.$ORIGIN A" "nope-$RANDOM.$ORIGIN A"; do
    out=$(dig +norec +dnssec +time=1 +tries=1 @127.0.0.1 -p "$WEIR_PORT" $q 2>&1)
    local st; st=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out")
    local sigs; sigs=$(grep -c $'\tRRSIG\t' <<<"$out" || true)
    local nsec; nsec=$(grep -c $'\tNSEC\t' <<<"$out" || true)
    log "check: $q -> $st, $sigs RRSIG, $nsec NSEC"
    ((sigs > 0)) || die "no RRSIG in the signed answer to $q"
  done
  stop_server
}

# ---- one case, one round ------------------------------------------------------
RESULTS="$TMP/results.tsv"  # case round qps cpu_us_q util% lost% rss_start rss_max rss_end responses
: >"$RESULTS"

run_case() { # case round
  local c=$1 r=$2 conf queries extra pid f t0 t1 q t
  conf=$(case_conf "$c"); queries=$(case_queries "$c"); extra=$(case_extra "$c")
  q=$OUTSTANDING; t=$TIMEOUT; local rate=""
  [[ $c == *-rrl ]] && { q=$RRL_OUTSTANDING; t=$RRL_TIMEOUT; rate="-Q $RRL_QPS"; }
  [[ $c == *-rrl-over ]] && { q=$RRL_OUTSTANDING; t=$RRL_TIMEOUT; rate="-Q $RRL_QPS_OVER"; }
  start_server "$conf" "$TMP/$c.r$r.stderr"
  pid=$SERVER_PID
  local rss0; rss0=$(rss_kib "$pid")
  # warm-up: 1 s of the case's own queries, except the flood (its names must be new; it warms
  # up on the static mix, which does not touch the denial cache much)
  local wq=$queries; [[ $c == nxflood-* ]] && wq="$BENCH/queries.txt"
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$WEIR_PORT" -d "$wq" -l 1 -c "$CLIENTS" -q "$OUTSTANDING" -t 1 $extra >/dev/null 2>&1 || true
  local rl0="0 0 0"; [[ $c == *-rrl* ]] && rl0=$(rrl_metrics)
  local rb0; rb0=$(rcvbuf_errors)
  local rss1; rss1=$(rss_kib "$pid")
  ( while kill -0 "$pid" 2>/dev/null; do rss_kib "$pid" 2>/dev/null || true; sleep 1; done ) >"$TMP/$c.r$r.rss" &
  SAMPLER_PID=$!
  f="$TMP/$c.r$r.txt"
  t0=$(cpu_ticks "$pid")
  local probes=""
  if [[ $c == *-rrl* ]]; then  # mid-flood probes: a new random name, and www (per-name bucket)
    ( sleep $((DURATION / 4))
      # dig sends a DNS COOKIE unless +nocookie; a slipped reply to a query with a client
      # cookie is BADCOOKIE (not TC), and dig retries at once with the server cookie, which RRL
      # exempts: those probes come back "full". Without a cookie a slipped reply is TC=1.
      probe() { # name label [dig option]: "label STATUS TC|full" or "label timeout"
        dig +norec +dnssec +ignore +time=1 +tries=1 ${3:-} @127.0.0.1 -p "$WEIR_PORT" "$1" A 2>&1 |
          awk -v n="$2" '/->>HEADER<<-/{st=$6; sub(/,/,"",st)} /;; flags:/{tc=($0 ~ / tc[ ;]/)?"TC":"full"} /timed out/{st="timeout"} END{print n, st, tc}' || true
      }
      for i in $(seq "$PROBES"); do
        probe "probe$i-$RANDOM.$ORIGIN" "new$i" +nocookie &
        probe "probe$i-c$RANDOM.$ORIGIN" "cookie$i" &
      done
      probe "www.$ORIGIN" www &
      wait
    ) >"$TMP/$c.r$r.probes" 2>&1 &
    probes=$!
  fi
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$WEIR_PORT" -d "$queries" -l "$DURATION" \
    -c "$CLIENTS" -q "$q" -t "$t" $rate $extra >"$f" 2>&1 || { cat "$f" >&2; die "dnsperf failed ($c)"; }
  t1=$(cpu_ticks "$pid")
  [[ -z $probes ]] || wait "$probes" 2>/dev/null || true
  local rl1="0 0 0"; [[ $c == *-rrl* ]] && rl1=$(rrl_metrics)
  local rb1; rb1=$(rcvbuf_errors)
  local rss2; rss2=$(rss_kib "$pid")
  kill -0 "$pid" 2>/dev/null || die "weir died during $c"
  local s=$SAMPLER_PID; SAMPLER_PID=""; kill "$s" 2>/dev/null || true; wait "$s" 2>/dev/null || true
  stop_server
  local qps completed sent runtime rmax codes
  qps=$(dnsperf_field "$f" "Queries per second")
  completed=$(dnsperf_field "$f" "Queries completed")
  sent=$(dnsperf_field "$f" "Queries sent")
  runtime=$(dnsperf_field "$f" "Run time (s)")
  [[ -n $qps && -n $completed && -n $sent && $sent -gt 0 ]] || { cat "$f" >&2; die "could not parse dnsperf output ($c)"; }
  rmax=$(sort -n "$TMP/$c.r$r.rss" | tail -1); rmax=${rmax:-$rss2}
  codes=$(sed -n 's/^ *Response codes: *//p' "$f" | tr -d ' ' | head -1)
  local rrl="" served=0 l0 s0 q0 l1 s1 q1
  if [[ $c == *-rrl* ]]; then
    read -r l0 s0 q0 <<<"$rl0"; read -r l1 s1 q1 <<<"$rl1"
    served=$((q1 - q0))
    rrl="sent=$sent,server_read=$served,limited=$((l1 - l0)),slipped=$((s1 - s0)),rcvbuf_drops=$((rb1 - rb0))$(probe_summary "$TMP/$c.r$r.probes")"
  fi
  awk -v c="$c" -v r="$r" -v qps="$qps" -v done="$completed" -v sent="$sent" -v ticks="$((t1 - t0))" -v hz="$CLK_TCK" \
      -v rt="$runtime" -v a="$rss0" -v w="$rss1" -v m="$rmax" -v e="$rss2" -v codes="$codes" -v rrl="$rrl" -v served="$served" 'BEGIN{
    cpu = ticks / hz
    n = (c ~ /-rrl/) ? served : done
    printf "%s\t%s\t%.0f\t%.3f\t%.0f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%s%s\n", c, r, qps, (n>0)?cpu*1e6/n:0, (rt>0)?100*cpu/rt:0,
      100*(sent-done)/sent, a/1024, w/1024, m/1024, e/1024, codes, (rrl=="")?"":" " rrl }' >>"$RESULTS"
  tail -1 "$RESULTS" | awk -F'\t' '{printf "[dnssec] %-19s r%s: %7s qps, %7s us/query CPU, server CPU %s%%, lost %s%%, RSS start %s / warm %s / max %s / end %s MiB, %s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11}' >&2
}

# ---- main -----------------------------------------------------------------------
log "$("$WEIR_BIN" --version 2>/dev/null || echo weir), dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -1), $(nproc) CPUs, CLK_TCK $CLK_TCK"
log "rounds $ROUNDS x ${DURATION}s; dnsperf -c $CLIENTS -q $OUTSTANDING; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; load: $(cut -d' ' -f1-3 /proc/loadavg); temp $TMP"
check_signed
for r in $(seq 1 "$ROUNDS"); do
  for c in $CASES; do run_case "$c" "$r"; done
done

median() { # case column
  awk -F'\t' -v c="$1" -v k="$2" '$1==c{print $k}' "$RESULTS" | sort -g |
    awk '{v[NR]=$1} END{ if (NR==0) {print "NA"; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'
}
echo
echo "Per round:"
printf '%-19s %5s %9s %9s %6s %7s %8s %8s %8s %8s  %s\n' case round qps us/query srv% lost% rss0MiB rsswarm rssmax rssend responses
awk -F'\t' '{printf "%-19s %5s %9s %9s %6s %7s %8s %8s %8s %8s  %s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11}' "$RESULTS"
echo
echo "Markdown (median of $ROUNDS rounds, ${DURATION}s each; load before: see log):"
echo
echo "| case | qps | CPU µs/query | server CPU % | lost % | RSS MiB start / max / end |"
echo "|---|---:|---:|---:|---:|---|"
for c in $CASES; do
  echo "| $c | $(median "$c" 3) | $(median "$c" 4) | $(median "$c" 5) | $(median "$c" 6) | $(median "$c" 7) / $(median "$c" 9) / $(median "$c" 10) |"
done
echo
for base in static managed1 managed2 nxflood; do
  u=$(median "$base-unsigned" 4); s=$(median "$base-signed" 4)
  [[ $u != NA && $s != NA ]] && awk -v b="$base" -v u="$u" -v s="$s" 'BEGIN{ if (u>0) printf "ratio %s signed/unsigned CPU per query: %.2f\n", b, s/u }'
done
echo
for c in $CASES; do echo "$c $(median "$c" 4)"; done
