#!/usr/bin/env bash
# AF_XDP benchmark: replies per second of one server core under a kxdpgun flood, for
#
#   knot-xdp      Knot DNS (knotd) in XDP mode on the host veth (`xdp: listen: HOST_IF`),
#                 udp-workers 1, background-workers 1
#   weir-sockets  weir's release binary on sockets ([dns] listen = HOST_IP:53, udp_workers = 1)
#   weir-xdp      the same weir with its AF_XDP mode on ([[dns.xdp]] interface = HOST_IF)
#
# all serving bench/zones/bench.example.zone; every query is QUERY (default `www.bench.example.
# A`, one A record). Rounds interleave the servers (a fresh server per run).
#
# Topology: a veth pair, HOST_IF (10.99.0.1/24, fd99::1/64) in this namespace and NS_IF
# (10.99.0.2/24, fd99::2/64) in the network namespace NETNS. kxdpgun (Debian knot-dnsutils)
# runs inside NETNS pinned to CLIENT_CPU, sends QPS queries/s (batches of BATCH) from NS_IF over
# AF_XDP to 10.99.0.1:53 for DURATION s, and counts the replies; the server is pinned to
# SERVER_CPU with taskset (every thread). Both veth ends have static neighbour entries and
# kxdpgun is given the target MAC (-R), so no ARP is involved; XDP programs left attached by a
# previous run are detached (`ip link set DEV xdp off`) before each run: knotd and kxdpgun leave
# theirs behind on exit. GRO is turned on on NS_IF (ethtool), so replies a server sends with
# XDP_TX/redirect reach the namespace even while no kxdpgun is attached. With NAPI=threaded
# (the default) each veth end receives in its own NAPI kernel thread, pinned to its side's CPU:
# the server's core pays for its whole receive path (the XDP program, the copy into the AF_XDP
# ring, or the kernel's UDP stack) as it would behind a real NIC, so the generator offers 2-3x
# what the server answers. NAPI=softirq leaves veth's default, where a frame is received on the
# CPU that sent it: the server's receive path then runs on CLIENT_CPU and the XDP servers
# are client-bound (session 10's figures). The figure per run is kxdpgun's
# "total replies: N (R pps)" R; "sent" is its query rate (if the server answers nearly all of
# it, the run was client-bound and is flagged). Server CPU % is utime+stime from /proc/PID/stat
# over the run (100 = one full core; kernel work in softirq context and NAPI threads is not
# counted).
# Traffic stays on the veth pair; every run is bounded by DURATION (kxdpgun under `timeout`),
# a server's start-up by 10 s. On exit (trap) every process started here is stopped by PID,
# and the veth pair and namespace are deleted.
#
# weir-xdp: `weir check` validates its config first; a build whose config does not accept
# [[dns.xdp]] yet, a weir that starts without an XDP program on HOST_IF, or one that dies,
# gives a `weir-xdp: FAILED ...` line and `NA` for that case; the other cases still run.
#
# Needs root, iproute2, taskset, ethtool, kxdpgun + kdig (knot-dnsutils), knotd + knotc (knot),
# cargo.
#
# Env: ROUNDS (5), DURATION (10 s per run), WARMUP (1 s of kxdpgun before each run, not
# counted; 0 = none), QPS (2000000 offered queries/s), BATCH (10), SERVER_CPU (0),
# CLIENT_CPU (1), SERVERS ("knot-xdp weir-sockets weir-xdp", also the run order in a round),
# NAPI (threaded | softirq; threaded needs ethtool),
# QUERY ("www.bench.example. A"; EXPECT, 192.0.2.20, is its answer), WEIR_BIN (${CARGO_TARGET_DIR:-REPO/target}/release/weir),
# SKIP_BUILD (0; 1 = use WEIR_BIN as is, otherwise `cargo build --release --features
# xdp,jemalloc`), WEIR_XDP_QUEUES ("" = weir's default, every receive queue; e.g. "0"),
# NETNS (weirxb), HOST_IF (weirxb0), NS_IF (weirxb1), KEEP_TMP (0).
#
# Output: per-run lines on stderr, a per-round table and any FAILED lines on stdout, then
# exactly one line per server in SERVERS, in this order, the median replies/s over the rounds
# as the last field (NA if the case never ran):
#   weir-xdp N
#   weir-sockets N
#   knot-xdp N
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
QPS=${QPS:-2000000}
BATCH=${BATCH:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-"knot-xdp weir-sockets weir-xdp"}
NAPI=${NAPI:-threaded}
QUERY=${QUERY:-"www.bench.example. A"}
EXPECT=${EXPECT:-192.0.2.20}          # the answer to QUERY (readiness check)
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
WEIR_XDP_QUEUES=${WEIR_XDP_QUEUES:-}
NETNS=${NETNS:-weirxb}
HOST_IF=${HOST_IF:-weirxb0}
NS_IF=${NS_IF:-weirxb1}
HOST_IP=10.99.0.1
NS_IP=10.99.0.2
HOST_IP6=fd99::1
NS_IP6=fd99::2

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ZONE_SRC="$REPO/bench/zones/bench.example.zone"
ORIGIN="bench.example."
WEIR_BIN=${WEIR_BIN:-"${CARGO_TARGET_DIR:-$REPO/target}/release/weir"}

log() { printf '[xdp] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (netns, veth, XDP)"
for t in ip taskset timeout kxdpgun kdig knotd knotc; do
  command -v "$t" >/dev/null || die "missing $t (apt-get install iproute2 util-linux coreutils knot knot-dnsutils)"
done
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a whole number of seconds"
[[ $NAPI == threaded || $NAPI == softirq ]] || die "NAPI must be threaded or softirq"
[[ $NAPI == softirq ]] || command -v ethtool >/dev/null || die "NAPI=threaded needs ethtool"

TMP=$(mktemp -d /tmp/weir-xdp.XXXXXX)
SERVER_PID=""
GUN_PID=""
MADE_NS=0
MADE_VETH=0

stop_pid() {
  local pid=$1
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
}
stop_server() { local p=$SERVER_PID; SERVER_PID=""; stop_pid "$p"; }
detach_xdp() { # both veth ends: knotd and kxdpgun leave their XDP programs attached on exit
  ip link set dev "$HOST_IF" xdp off 2>/dev/null || true
  ip -n "$NETNS" link set dev "$NS_IF" xdp off 2>/dev/null || true
}
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local g=$GUN_PID; GUN_PID=""; stop_pid "$g"
  stop_server
  if [[ $MADE_VETH == 1 ]]; then detach_xdp; ip link del "$HOST_IF" 2>/dev/null || true; fi
  if [[ $MADE_NS == 1 ]]; then ip netns del "$NETNS" 2>/dev/null || true; fi
  if [[ $KEEP_TMP == 1 || $rc -ne 0 ]]; then log "raw files kept in $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build --------------------------------------------------------------------
need_weir=0
for s in $SERVERS; do
  case $s in
    weir-*) need_weir=1 ;;
    knot-xdp) ;;
    *) die "unknown server '$s' in SERVERS (knot-xdp weir-sockets weir-xdp)" ;;
  esac
done
if [[ $need_weir == 1 ]]; then
  if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release --features xdp,jemalloc"
    (cd "$REPO" && cargo build --release --features xdp,jemalloc) >&2 || die "cargo build failed"
  fi
  [[ -x $WEIR_BIN ]] || die "weir binary not found at $WEIR_BIN"
fi

# ---- network: veth pair, namespace --------------------------------------------
ip netns list | awk '{print $1}' | grep -qxF "$NETNS" && die "network namespace $NETNS already exists (ip netns del $NETNS)"
ip link show dev "$HOST_IF" >/dev/null 2>&1 && die "interface $HOST_IF already exists (ip link del $HOST_IF)"
ip netns add "$NETNS"; MADE_NS=1
ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$NETNS"; MADE_VETH=1
ip addr add "$HOST_IP/24" dev "$HOST_IF"
ip addr add "$HOST_IP6/64" dev "$HOST_IF" nodad
ip link set dev "$HOST_IF" up
ip -n "$NETNS" link set dev lo up
ip -n "$NETNS" addr add "$NS_IP/24" dev "$NS_IF"
ip -n "$NETNS" addr add "$NS_IP6/64" dev "$NS_IF" nodad
ip -n "$NETNS" link set dev "$NS_IF" up
# Frames a server sends with XDP_TX / XDP_REDIRECT into a veth are dropped unless the peer runs
# NAPI (an XDP program, which kxdpgun attaches while it runs, or GRO): GRO on NS_IF keeps such
# replies flowing to kdig's readiness probes too. AF_XDP sends (copy mode on veth) need neither.
if command -v ethtool >/dev/null; then
  ip netns exec "$NETNS" ethtool -K "$NS_IF" gro on >/dev/null 2>&1 || log "warning: ethtool -K $NS_IF gro on failed"
fi
# NAPI=threaded (see the top): GRO on HOST_IF gives it a NAPI, and so a thread, for every
# server, XDP or not.
if [[ $NAPI == threaded ]]; then
  ethtool -K "$HOST_IF" gro on >/dev/null || die "ethtool -K $HOST_IF gro on failed"
  echo 1 >"/sys/class/net/$HOST_IF/threaded" || die "threaded NAPI refused on $HOST_IF"
  ip netns exec "$NETNS" sh -c "echo 1 >/sys/class/net/$NS_IF/threaded" || die "threaded NAPI refused on $NS_IF"
fi
pin_napi() { # NAPI threads of each end onto its side's CPU (they come and go with XDP/GRO)
  [[ $NAPI == threaded ]] || return 0
  local pid n=0
  for pid in $(pgrep "^napi/$HOST_IF-"); do taskset -pc "$SERVER_CPU" "$pid" >/dev/null; n=$((n + 1)); done
  for pid in $(pgrep "^napi/$NS_IF-"); do taskset -pc "$CLIENT_CPU" "$pid" >/dev/null; n=$((n + 1)); done
  [[ $n -ge 2 ]] || die "expected NAPI threads for $HOST_IF and $NS_IF, found $n"
}
HOST_MAC=$(cat "/sys/class/net/$HOST_IF/address")
NS_MAC=$(ip netns exec "$NETNS" cat "/sys/class/net/$NS_IF/address")
ip neigh replace "$NS_IP" lladdr "$NS_MAC" dev "$HOST_IF" nud permanent
ip -n "$NETNS" neigh replace "$HOST_IP" lladdr "$HOST_MAC" dev "$NS_IF" nud permanent
ip neigh replace "$NS_IP6" lladdr "$NS_MAC" dev "$HOST_IF" nud permanent
ip -n "$NETNS" neigh replace "$HOST_IP6" lladdr "$HOST_MAC" dev "$NS_IF" nud permanent
ns_kdig() { ip netns exec "$NETNS" kdig +short +norec +time=1 +retry=0 "@$HOST_IP" "$@" 2>/dev/null || true; }

log "$(knotd --version 2>&1 | head -1); kxdpgun $(kxdpgun -V 2>&1 | grep -o '[0-9][0-9.]*' | head -1)"
[[ $need_weir == 0 ]] || log "$("$WEIR_BIN" --version 2>/dev/null || echo weir) ($WEIR_BIN)"
log "$(nproc) CPUs, kernel $(uname -r); $HOST_IF $HOST_IP $HOST_MAC <-> $NETNS/$NS_IF $NS_IP $NS_MAC"
log "rounds $ROUNDS x ${DURATION}s (warm-up ${WARMUP}s); NAPI $NAPI; kxdpgun -Q $QPS -b $BATCH on CPU $CLIENT_CPU; server on CPU $SERVER_CPU; query '$QUERY'; load: $(cut -d' ' -f1-3 /proc/loadavg); temp $TMP"

# ---- configs --------------------------------------------------------------------
printf '%s\n' "$QUERY" >"$TMP/queries.txt"
read -ra QUERY_WORDS <<<"$QUERY"   # name type [flag], as kdig arguments

mkdir -p "$TMP/knot"
cp "$ZONE_SRC" "$TMP/knot/bench.example.zone"
cat >"$TMP/knot/knot.conf" <<EOF
server:
    rundir: "$TMP/knot"
    listen: $HOST_IP@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

xdp:
    listen: $HOST_IF

log:
  - target: stderr
    any: info

database:
    storage: "$TMP/knot/db"

template:
  - id: default
    storage: "$TMP/knot"
    zonefile-sync: -1
    journal-content: none

zone:
  - domain: $ORIGIN
    file: "$TMP/knot/bench.example.zone"
EOF
knotc -c "$TMP/knot/knot.conf" conf-check >"$TMP/knot/conf-check.txt" 2>&1 || { cat "$TMP/knot/conf-check.txt" >&2; die "knot.conf rejected"; }

write_weir_conf() { # name xdp(0|1): writes $TMP/name.toml
  {
    cat <<EOF
[dns]
listen = ["$HOST_IP:53"]
udp_workers = 1

[admin]
listen = ""

[store]
path = "$TMP/state-$1"

[log]
level = "warn"

[[zone]]
origin = "$ORIGIN"
file = "$ZONE_SRC"
EOF
    if [[ $2 == 1 ]]; then
      printf '\n[[dns.xdp]]\ninterface = "%s"\n' "$HOST_IF"
      [[ -z $WEIR_XDP_QUEUES ]] || printf 'queues = [%s]\n' "$WEIR_XDP_QUEUES"
    fi
  } >"$TMP/$1.toml"
}
declare -A FAILED=()   # server -> reason: the case is skipped from then on
for s in $SERVERS; do
  case $s in
    weir-sockets) write_weir_conf weir-sockets 0
      "$WEIR_BIN" check --config "$TMP/weir-sockets.toml" >"$TMP/check-weir-sockets.txt" 2>&1 ||
        { cat "$TMP/check-weir-sockets.txt" >&2; die "weir check rejects the weir-sockets config"; } ;;
    weir-xdp) write_weir_conf weir-xdp 1
      if ! "$WEIR_BIN" check --config "$TMP/weir-xdp.toml" >"$TMP/check-weir-xdp.txt" 2>&1; then
        FAILED[weir-xdp]="weir check rejects [[dns.xdp]] (AF_XDP mode not in this build?): $(grep -v '^[[:space:]]*$' "$TMP/check-weir-xdp.txt" | head -3 | tr '\n' ' ')"
        log "weir-xdp: FAILED ${FAILED[weir-xdp]}"
      fi ;;
  esac
done

# ---- servers ----------------------------------------------------------------------
start_server() { # server errlog
  case $1 in
    knot-xdp) taskset -c "$SERVER_CPU" knotd -c "$TMP/knot/knot.conf" >"$2" 2>&1 & ;;
    weir-*) taskset -c "$SERVER_CPU" "$WEIR_BIN" serve --config "$TMP/$1.toml" >"$2" 2>&1 & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=""; return 1; }
    # from the namespace, over the veth: through the XDP path when one is attached
    [[ $(ns_kdig "${QUERY_WORDS[@]:0:2}") == "$EXPECT" ]] && return 0
    sleep 0.1
  done
  return 1
}
xdp_prog() { ip link show dev "$1" 2>/dev/null | sed -n 's/.*prog\/xdp id \([0-9]*\) name \([^ ]*\).*/\2 (id \1)/p' | head -1; }
cpu_ticks() { local s; s=$(<"/proc/$1/stat"); s=${s##*) }; awk '{print $12 + $13}' <<<"$s"; }
CLK_TCK=$(getconf CLK_TCK)

gun() { # duration outfile: kxdpgun inside the namespace, bounded by timeout
  local rc try
  for try in 1 2 3 4 5; do
    timeout -k 5 $(($1 + 20)) ip netns exec "$NETNS" taskset -c "$CLIENT_CPU" \
      kxdpgun -t "$1" -Q "$QPS" -b "$BATCH" -F "$CLIENT_CPU" -I "$NS_IF" -R "$HOST_MAC" \
      -i "$TMP/queries.txt" "$HOST_IP" >"$2" 2>&1 &
    GUN_PID=$!
    rc=0
    wait "$GUN_PID" || rc=$?
    GUN_PID=""
    # the previous kxdpgun's AF_XDP socket is released asynchronously: binding the queue
    # again right after it can fail with EBUSY (and kxdpgun still exits 0)
    grep -q 'resource is busy' "$2" || break
    log "kxdpgun: $(grep -m1 'resource is busy' "$2"), retry $try"
    sleep 1
  done
  return "$rc"
}

RESULTS="$TMP/results.tsv"   # server round replies/s sent/s answered% server-CPU% xdp-prog
: >"$RESULTS"

run_case() { # server round
  local s=$1 r=$2 f="$TMP/$1.r$2.txt" err="$TMP/$1.r$2.stderr" prog="-" pid t0 t1
  if [[ -n ${FAILED[$s]:-} ]]; then log "$s r$r: skipped (FAILED earlier)"; return 0; fi
  detach_xdp
  if ! start_server "$s" "$err"; then
    FAILED[$s]="did not start or answer $QUERY from $NETNS; stderr: $(tail -3 "$err" | tr '\n' ' ')"
    log "$s: FAILED ${FAILED[$s]}"; stop_server; detach_xdp; return 0
  fi
  pid=$SERVER_PID
  if [[ $s == *-xdp ]]; then
    prog=$(xdp_prog "$HOST_IF")
    if [[ -z $prog ]]; then
      FAILED[$s]="started, but no XDP program on $HOST_IF: its AF_XDP mode is not active"
      log "$s: FAILED ${FAILED[$s]}"; stop_server; return 0
    fi
    [[ $s != knot-xdp ]] || log "knot-xdp: $(grep -o 'initialized XDP interface.*' "$err" | head -1)"
  fi
  pin_napi
  if [[ $WARMUP -gt 0 ]]; then gun "$WARMUP" "$TMP/$s.r$r.warmup.txt" || true; fi
  t0=$(cpu_ticks "$pid")
  local rc=0
  gun "$DURATION" "$f" || rc=$?
  t1=$(cpu_ticks "$pid" 2>/dev/null || echo "$t0")
  if ! kill -0 "$pid" 2>/dev/null; then
    FAILED[$s]="the server died during round $r; stderr: $(tail -3 "$err" | tr '\n' ' ')"
    log "$s: FAILED ${FAILED[$s]}"; stop_server; detach_xdp; return 0
  fi
  stop_server
  detach_xdp
  local sent replies pct
  sent=$(sed -n 's/^total queries: *[0-9]* (\([0-9]*\) pps).*/\1/p' "$f" | head -1)
  replies=$(sed -n 's/^total replies: *[0-9]* (\([0-9]*\) pps).*/\1/p' "$f" | head -1)
  if [[ $rc -ne 0 || -z $sent || -z $replies ]]; then
    cat "$f" >&2
    die "kxdpgun failed (exit $rc) or its output could not be parsed ($s round $r)"
  fi
  pct=$(awk -v a="$replies" -v b="$sent" 'BEGIN{printf "%.1f", (b>0)?100*a/b:0}')
  awk -v s="$s" -v r="$r" -v rp="$replies" -v sp="$sent" -v pct="$pct" -v ticks="$((t1 - t0))" \
      -v hz="$CLK_TCK" -v d="$DURATION" -v prog="${prog// /_}" \
      'BEGIN{printf "%s\t%s\t%s\t%s\t%s\t%.0f\t%s\n", s, r, rp, sp, pct, 100*ticks/hz/d, prog}' >>"$RESULTS"
  local note=""
  awk -v p="$pct" 'BEGIN{exit !(p >= 95)}' && note=" (client-bound: raise QPS?)"
  tail -1 "$RESULTS" | awk -F'\t' -v n="$note" '{printf "[xdp] %-12s r%s: %8s replies/s of %8s sent/s (%s%%), server CPU %s%%%s\n", $1,$2,$3,$4,$5,$6,n}' >&2
}

# ---- main -----------------------------------------------------------------------
for r in $(seq 1 "$ROUNDS"); do
  for s in $SERVERS; do run_case "$s" "$r"; done
done

median() { # server column
  awk -F'\t' -v s="$1" -v k="$2" '$1==s{print $k}' "$RESULTS" | sort -g |
    awk '{v[NR]=$1} END{ if (NR==0) {print "NA"; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'
}
echo
echo "Per round (replies/s and sent/s as kxdpgun reports them; CPU % of the server process):"
printf '%-12s %5s %10s %10s %9s %6s  %s\n' server round replies/s sent/s answered% cpu% xdp-prog
awk -F'\t' '{printf "%-12s %5s %10s %10s %9s %6s  %s\n", $1,$2,$3,$4,$5,$6,$7}' "$RESULTS"
for s in weir-xdp weir-sockets knot-xdp; do
  [[ -z ${FAILED[$s]:-} ]] || echo "$s: FAILED ${FAILED[$s]}"
done
echo
for s in weir-xdp weir-sockets knot-xdp; do
  [[ " $SERVERS " == *" $s "* ]] && echo "$s $(median "$s" 3)"
done
exit 0
