#!/usr/bin/env bash
# Reflection benchmark: the example zone (zones/example.com.zone) served by weir with response
# rate limiting off, then on. For each: the largest amplification factor a single question
# reaches (response bytes / query bytes), then a flood of that question at FLOOD_QPS from
# 127.0.0.1 for DURATION seconds beside a client on 127.0.1.1 asking a mix at 100 qps (what each
# got back, and the flood's effective amplification), and weir's RRL counters.
# Loopback only; see bench/RESULTS.md for recorded figures.
set -euo pipefail

RRL_RATE=${RRL_RATE:-20}          # [dns.rrl] rate for the "on" run
RRL_WINDOW=${RRL_WINDOW:-2s}
RRL_SLIP=${RRL_SLIP:-2}
FLOOD_QPS=${FLOOD_QPS:-10000}
DURATION=${DURATION:-10}
WEIR_PORT=${WEIR_PORT:-5402}
ADMIN_PORT=${ADMIN_PORT:-18402}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SKIP_BUILD=${SKIP_BUILD:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEIR_BIN=${WEIR_BIN:-"${CARGO_TARGET_DIR:-$REPO/target}/release/weir"}
[[ $SKIP_BUILD == 1 ]] || (cd "$REPO" && cargo build --release -q)
TMP=$(mktemp -d /tmp/weir-rrl.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

run() {
  local rate=$1
  cat >"$TMP/weir.toml" <<CONF
[dns]
listen = ["127.0.0.1:$WEIR_PORT"]
udp_workers = 1
[dns.rrl]
rate = $rate
window = "$RRL_WINDOW"
slip = $RRL_SLIP
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[store]
path = "$TMP/state-$rate"
[[zone]]
origin = "example.com."
file = "$REPO/zones/example.com.zone"
[[pool]]
name = "app.example.com."
ttl = 30
[[pool.group]]
name = "blue"
endpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }, { address = "2001:db8::10" }]
CONF
  taskset -c "$SERVER_CPU" "$WEIR_BIN" serve --config "$TMP/weir.toml" 2>"$TMP/weir-$rate.log" &
  PID=$!
  for _ in $(seq 50); do
    dig +short +time=1 +tries=1 -p "$WEIR_PORT" @127.0.0.1 www.example.com A >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "== [dns.rrl] rate = $rate (window $RRL_WINDOW, slip $RRL_SLIP)"
  taskset -c "$CLIENT_CPU" python3 "$REPO/bench/rrl.py" amplify "$WEIR_PORT" | head -6
  sleep 3   # let the probe queries' buckets refill
  taskset -c "$CLIENT_CPU" python3 "$REPO/bench/rrl.py" flood "$WEIR_PORT" "$FLOOD_QPS" "$DURATION"
  curl -s "127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^weir_dns_rrl_(limited|slipped)_total' | grep -v ' 0$' || true
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

run 0
run "$RRL_RATE"
