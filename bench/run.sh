#!/usr/bin/env bash
# Load benchmark: weir vs gdnsd serving the same zone on loopback.
# See bench/README.md. All traffic goes to 127.0.0.1 only; every run is
# bounded by DURATION seconds.
set -euo pipefail

# ---- knobs -----------------------------------------------------------------
ROUNDS=${ROUNDS:-3}                 # interleaved rounds per server
DURATION=${DURATION:-10}            # seconds per dnsperf run
RATE=${RATE:-10000}                 # qps for the fixed-rate latency run
SERVERS=${SERVERS:-"gdnsd weir"}    # which servers to run, in round order
CLIENTS=${CLIENTS:-8}               # dnsperf -c (UDP sockets)
OUTSTANDING=${OUTSTANDING:-200}     # dnsperf -q (max queries in flight)
TIMEOUT=${TIMEOUT:-1}               # dnsperf -t (s): unanswered after this = lost
DNSPERF_EXTRA=${DNSPERF_EXTRA:-}    # extra dnsperf args, e.g. "-e" for EDNS
GDNSD_UDP_THREADS=${GDNSD_UDP_THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}         # taskset CPU list for the server
CLIENT_CPU=${CLIENT_CPU:-1}         # taskset CPU list for dnsperf
GDNSD_PORT=${GDNSD_PORT:-5400}
WEIR_PORT=${WEIR_PORT:-5401}
SKIP_BUILD=${SKIP_BUILD:-0}         # 1 = use existing target/release/weir
KEEP_TMP=${KEEP_TMP:-0}             # 1 = keep the temp dir (configs, raw logs)
TRACK_CONVERGENCE=${TRACK_CONVERGENCE:-true}  # weir's [dns] track_convergence
ROUTE_SUBNETS=${ROUTE_SUBNETS:-1000}  # subnet rules of the routed name geo.bench.example. (0 = no route, for a weir before routing)
GEO_NETWORKS=${GEO_NETWORKS:-50000}   # networks in its generated City-shaped .mmdb
RRL_RATE=${RRL_RATE:-0}             # weir's [dns.rrl] rate (0 = off)
RRL_WINDOW=${RRL_WINDOW:-2s}        # weir's [dns.rrl] window

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$REPO/bench"
ZONE_SRC="$BENCH/zones/bench.example.zone"
ORIGIN="bench.example."
QUERIES=${QUERIES:-"$BENCH/queries.txt"}  # e.g. bench/queries-pool.txt (managed name; weir only)
WEIR_BIN=${WEIR_BIN:-"${CARGO_TARGET_DIR:-$REPO/target}/release/weir"}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for s in $SERVERS; do
  case $s in gdnsd|weir) ;; *) die "unknown server '$s' in SERVERS (gdnsd, weir)";; esac
done
[[ -f $ZONE_SRC ]] || die "missing $ZONE_SRC"
[[ -f $QUERIES ]] || die "missing $QUERIES"

# ---- cleanup ---------------------------------------------------------------
TMP=$(mktemp -d /tmp/weir-bench.XXXXXX)
SERVER_PID=""

stop_server() {
  local pid=${SERVER_PID:-}
  SERVER_PID=""
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_server
  if [[ $KEEP_TMP == 1 || $rc -ne 0 ]]; then
    log "raw files kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- dependencies ----------------------------------------------------------
need_pkgs=()
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
command -v gdnsd >/dev/null || [[ -x /usr/sbin/gdnsd ]] || need_pkgs+=(gdnsd)
command -v dig >/dev/null || need_pkgs+=(dnsutils)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]} from Debian"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 \
      install -y --no-install-recommends "${need_pkgs[@]}"
  }
  apt_install || { $SUDO apt-get -o DPkg::Lock::Timeout=600 update && apt_install; }
fi
export PATH="$PATH:/usr/sbin:/sbin"
GDNSD_VERSION=$(gdnsd -c /nonexistent-dir 2>&1 </dev/null | sed -n 's/.*gdnsd version \([0-9.]*\).*/\1/p' | head -1 || true)
DNSPERF_VERSION=$(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -1 || true)
CLK_TCK=$(getconf CLK_TCK)

if [[ " $SERVERS " == *" weir "* ]]; then
  if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release) >&2 || die "cargo build --release failed (run with SERVERS=gdnsd to bench gdnsd alone)"
  fi
  [[ -x $WEIR_BIN ]] || die "weir binary not found at $WEIR_BIN"
fi

# ---- configs ---------------------------------------------------------------
# gdnsd 3.x: config dir holds 'config'; zones are read from DIR/zones/<zone name>.
GDNSD_DIR="$TMP/gdnsd"
mkdir -p "$GDNSD_DIR/zones"
cp "$ZONE_SRC" "$GDNSD_DIR/zones/${ORIGIN%.}"
cat >"$GDNSD_DIR/config" <<EOF
options => {
  listen => [ 127.0.0.1:$GDNSD_PORT ]
  udp_threads => $GDNSD_UDP_THREADS
  tcp_threads => 1
  run_dir => "$GDNSD_DIR/run"
  state_dir => "$GDNSD_DIR/state"
}
EOF

WEIR_CONF="$TMP/weir.toml"
cat >"$WEIR_CONF" <<EOF
[dns]
listen = ["127.0.0.1:$WEIR_PORT"]
track_convergence = $TRACK_CONVERGENCE

[dns.rrl]
rate = $RRL_RATE
window = "$RRL_WINDOW"

[admin]
listen = ""

[[zone]]
origin = "$ORIGIN"
file = "$ZONE_SRC"

# A managed name for bench/queries-pool.txt (gdnsd has no equivalent in its zone): 90/10 over
# three endpoints, one answer per query, no probes.
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
EOF

# A routed name for bench/queries-route.txt: ROUTE_SUBNETS rules of one random /24 each (spread
# over IPv4, alternating between two pools), a country rule read from a generated City-shaped
# database of GEO_NETWORKS networks (bench/geo-mmdb.py), and the catch-all; each pool is the
# managed name's 90/10 over three endpoints. A query without ECS from 127.0.0.1 takes the
# longest path: a trie walk that finds no subnet, a database lookup, then the catch-all.
if ((ROUTE_SUBNETS > 0)); then
python3 "$BENCH/geo-mmdb.py" "$TMP/geo.mmdb" "$GEO_NETWORKS" || die "bench/geo-mmdb.py failed"
python3 - "$ROUTE_SUBNETS" "$TMP/geo.mmdb" "$ORIGIN" >>"$WEIR_CONF" <<'PY' || die "route config"
import random, sys
n, db, origin = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = random.Random(15)
nets = set()
while len(nets) < n:
    a = rng.randrange(1 << 24)
    if (a >> 16) not in (0, 10, 127) and (a >> 16) < 224:
        nets.add(a)
print(f'[geo]\ndatabase = "{db}"\n[[route]]\nname = "geo.{origin}"')
for i, a in enumerate(sorted(nets)):
    print(f'[[route.rule]]\npool = "{"ab"[i % 2]}"\nsubnets = ["{a >> 16}.{a >> 8 & 255}.{a & 255}.0/24"]')
print('[[route.rule]]\npool = "a"\ncountries = ["DE"]\n[[route.rule]]\npool = "b"')
for pool in "ab":
    print(f'[[route.pool]]\nname = "{pool}"')
    print('[[route.pool.group]]\nname = "blue"\nweight = 90\nendpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }]')
    print('[[route.pool.group]]\nname = "green"\nweight = 10\nendpoints = [{ address = "192.0.2.20" }]')
PY
fi

port_of() { case $1 in gdnsd) echo "$GDNSD_PORT";; weir) echo "$WEIR_PORT";; esac; }

start_server() { # name round
  local name=$1 round=$2 port; port=$(port_of "$1")
  local errlog="$TMP/$name.r$round.stderr"
  case $name in
    gdnsd) taskset -c "$SERVER_CPU" gdnsd -c "$GDNSD_DIR" start 2>"$errlog" &;;
    weir) taskset -c "$SERVER_CPU" "$WEIR_BIN" serve --config "$WEIR_CONF" 2>"$errlog" &;;
  esac
  SERVER_PID=$!   # taskset execs, so this is the server's own pid
  local ok=0
  for _ in $(seq 100); do  # <= ~10 s
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$errlog" >&2; die "$name exited during startup"; }
    if [[ $(dig +short +norec +time=1 +tries=1 @127.0.0.1 -p "$port" "www.$ORIGIN" A 2>/dev/null) == 192.0.2.20 ]]; then
      ok=1; break
    fi
    sleep 0.1
  done
  ((ok)) || { cat "$errlog" >&2; die "$name did not answer www.$ORIGIN A on 127.0.0.1:$port"; }
}

cpu_ticks() { # utime+stime of the whole process (all threads); comm may contain spaces
  local s; s=$(<"/proc/$1/stat"); s=${s##*) }
  awk '{print $12 + $13}' <<<"$s"   # fields 14,15 counted from after "pid (comm)"
}
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

dnsperf_field() { # file label -> first number after "label:"
  sed -n "s/^ *$2: *\([0-9.]*\).*/\1/p" "$1" | head -1
}

# ---- answer sanity check (warning only) -------------------------------------
check_answers() {
  local s port out="$TMP/answers"
  mkdir -p "$out"
  for s in $SERVERS; do
    port=$(port_of "$s")
    start_server "$s" check
    sort -u "$QUERIES" | while read -r qn qt; do
      # "name type: RCODE | answer RRs (type + rdata, TTL dropped, sorted)"
      dig +norec +time=1 +tries=1 +noall +comments +answer @127.0.0.1 -p "$port" "$qn" "$qt" 2>/dev/null | LC_ALL=C sort |
        awk -v q="$qn $qt" '
          /->>HEADER<<-/ { for (i=1;i<=NF;i++) if ($i=="status:") { st=$(i+1); sub(/,/,"",st) } }
          /^[^;]/ && NF>=5 { $2=""; rr[++n]=$0 }
          END { printf "%s: %s |", q, st; for (i=1;i<=n;i++) printf " [%s]", rr[i]; print "" }'
    done >"$out/$s"
    stop_server
  done
  if [[ " $SERVERS " == *" weir "* && " $SERVERS " == *" gdnsd "* ]]; then
    # compare rcode + record types per section (not exact data/order)
    if ! diff -u "$out/gdnsd" "$out/weir" >"$out/diff"; then
      log "WARNING: weir and gdnsd answer differently for some queries (rcode/record types):"
      sed -n '3,$p' "$out/diff" | grep '^[-+]' >&2 || true
    fi
  fi
}

# ---- one round for one server ----------------------------------------------
RESULTS="$TMP/results.tsv"   # server round qps cpu_us_q qps_core util_pct lost_pct p50_us p99_us rss_mib
: >"$RESULTS"

percentiles() { # verbose dnsperf output -> "p50_us p99_us" ; timeouts count as +inf
  { grep '^> ' "$1" || true; } | awk '{ if ($2=="T" || $2=="I") print "inf"; else printf "%.1f\n", $NF*1e6 }' |
    sort -g | awk '
      { v[NR]=$1 }
      END {
        if (NR==0) { print "NA NA"; exit }
        split("50 99", ps, " ")
        out=""
        for (i=1;i<=2;i++) { r=int((ps[i]/100)*NR); if (r<(ps[i]/100)*NR) r++; if (r<1) r=1
                             x=v[r]; if (x=="inf") x="timeout"; out=out (i>1?" ":"") x }
        print out
      }'
}

run_round() { # name round
  local name=$1 round=$2 port pid t0 t1 f ticks qps completed sent runtime cpu_s
  port=$(port_of "$name")
  start_server "$name" "$round"
  pid=$SERVER_PID

  # warm-up (1 s, not measured)
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -l 1 -c "$CLIENTS" -q "$OUTSTANDING" -t "$TIMEOUT" $DNSPERF_EXTRA >/dev/null 2>&1 || true

  # max-throughput run
  f="$TMP/$name.r$round.max.txt"
  t0=$(cpu_ticks "$pid")
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -l "$DURATION" \
    -c "$CLIENTS" -q "$OUTSTANDING" -t "$TIMEOUT" $DNSPERF_EXTRA >"$f" 2>&1 || { cat "$f" >&2; die "dnsperf failed against $name"; }
  t1=$(cpu_ticks "$pid")
  kill -0 "$pid" 2>/dev/null || die "$name died during the throughput run"
  ticks=$((t1 - t0))
  qps=$(dnsperf_field "$f" "Queries per second")
  completed=$(dnsperf_field "$f" "Queries completed")
  sent=$(dnsperf_field "$f" "Queries sent")
  runtime=$(dnsperf_field "$f" "Run time (s)")
  [[ -n $qps && -n $completed && $completed -gt 0 ]] || { cat "$f" >&2; die "could not parse dnsperf output"; }
  cpu_s=$(awk -v t="$ticks" -v hz="$CLK_TCK" 'BEGIN{printf "%.4f", t/hz}')

  # fixed-rate latency run (per-query latencies from dnsperf -v)
  local fl="$TMP/$name.r$round.rate.txt" p
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -l "$DURATION" -Q "$RATE" \
    -c "$CLIENTS" -q "$OUTSTANDING" -t "$TIMEOUT" -v $DNSPERF_EXTRA >"$fl" 2>&1 || { tail -20 "$fl" >&2; die "dnsperf -Q failed against $name"; }
  p=$(percentiles "$fl")
  local rss; rss=$(rss_kib "$pid")
  stop_server

  awk -v n="$name" -v r="$round" -v qps="$qps" -v c="$completed" -v s="$sent" -v cpu="$cpu_s" \
      -v rt="$runtime" -v p="$p" -v rss="$rss" 'BEGIN{
    split(p, pp, " ")
    us = (c>0) ? cpu*1e6/c : 0
    qpc = (cpu>0) ? c/cpu : 0
    util = (rt>0) ? 100*cpu/rt : 0
    lost = (s>0) ? 100*(s-c)/s : 0
    printf "%s\t%s\t%.0f\t%.3f\t%.0f\t%.0f\t%.3f\t%s\t%s\t%.1f\n", n, r, qps, us, qpc, util, lost, pp[1], pp[2], rss/1024 }' >>"$RESULTS"
  tail -1 "$RESULTS" | awk -F'\t' '{printf "[bench] %-5s round %s: %s qps, %s us/query CPU, %s qps/core, server CPU %s%%, lost %s%%, p50 %s us, p99 %s us @%s qps, RSS %s MiB\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,rate,$10}' rate="$RATE" >&2
}

# ---- main ------------------------------------------------------------------
log "gdnsd $GDNSD_VERSION, dnsperf $DNSPERF_VERSION, CLK_TCK $CLK_TCK, $(nproc) CPUs"
log "servers: $SERVERS; rounds $ROUNDS x ${DURATION}s; dnsperf -c $CLIENTS -q $OUTSTANDING; latency at $RATE qps"
log "server on CPU $SERVER_CPU, dnsperf on CPU $CLIENT_CPU; temp dir $TMP"
check_answers
for round in $(seq 1 "$ROUNDS"); do
  for s in $SERVERS; do run_round "$s" "$round"; done
done

# ---- summary ---------------------------------------------------------------
median_col() { # server column
  awk -F'\t' -v s="$1" -v c="$2" '$1==s{print $c}' "$RESULTS" | sort -g |
    awk '{v[NR]=$1} END{ if (NR==0) {print "NA"; exit}
      if (v[1] ~ /[a-z]/ || v[NR] ~ /[a-z]/) { print v[int((NR+1)/2)]; exit }
      if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'
}

declare -A M
cols=(3 4 5 6 7 8 9 10)
for s in $SERVERS; do for c in "${cols[@]}"; do M[$s,$c]=$(median_col "$s" "$c"); done; done

fmt() { awk -v x="$1" -v d="$2" 'BEGIN{ if (x ~ /^[0-9.eE+-]+$/) printf "%.*f", d, x; else printf "%s", x }'; }

echo
echo "Plain table (median of $ROUNDS rounds, ${DURATION}s each):"
printf '%-6s %10s %12s %12s %9s %7s %9s %9s %8s\n' server qps "CPU_us/q" qps/core srv_CPU% lost% p50_us p99_us RSS_MiB
for s in $SERVERS; do
  printf '%-6s %10s %12s %12s %9s %7s %9s %9s %8s\n' "$s" "$(fmt "${M[$s,3]}" 0)" "$(fmt "${M[$s,4]}" 2)" \
    "$(fmt "${M[$s,5]}" 0)" "$(fmt "${M[$s,6]}" 0)" "$(fmt "${M[$s,7]}" 2)" "$(fmt "${M[$s,8]}" 0)" "$(fmt "${M[$s,9]}" 0)" "$(fmt "${M[$s,10]}" 1)"
done

ratio=""
if [[ -n ${M[weir,5]:-} && -n ${M[gdnsd,5]:-} ]]; then
  ratio=$(awk -v w="${M[weir,5]}" -v g="${M[gdnsd,5]}" 'BEGIN{ if (g>0) printf "%.2f", w/g; else print "NA" }')
  echo
  echo "weir/gdnsd qps-per-core ratio: $ratio"
fi

echo
echo "Markdown (paste into bench/RESULTS.md):"
echo
echo "Run: $(date -u +%Y-%m-%d), $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), gdnsd $GDNSD_VERSION, dnsperf $DNSPERF_VERSION."
echo "Median of $ROUNDS interleaved rounds; throughput: \`dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING\`; latency: \`dnsperf -Q $RATE -l $DURATION -v\` (percentiles over per-query latencies, timeouts counted as infinite). Server pinned to CPU $SERVER_CPU, dnsperf to CPU $CLIENT_CPU."
echo
echo "| server | qps | CPU µs/query | qps per core | server CPU % | lost % | p50 µs @$RATE | p99 µs @$RATE | RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for s in $SERVERS; do
  echo "| $s | $(fmt "${M[$s,3]}" 0) | $(fmt "${M[$s,4]}" 2) | $(fmt "${M[$s,5]}" 0) | $(fmt "${M[$s,6]}" 0) | $(fmt "${M[$s,7]}" 2) | $(fmt "${M[$s,8]}" 0) | $(fmt "${M[$s,9]}" 0) | $(fmt "${M[$s,10]}" 1) |"
done
[[ -n $ratio ]] && { echo; echo "weir/gdnsd qps per core: **$ratio**"; }
echo
echo "<details><summary>per-round figures</summary>"
echo
echo "| server | round | qps | CPU µs/query | qps per core | server CPU % | lost % | p50 µs | p99 µs | RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' "$RESULTS"
echo
echo "</details>"
