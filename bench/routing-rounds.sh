#!/usr/bin/env bash
# The issue 15 measurement (bench/RESULTS.md, session 7): alternating one-run rounds of
# bench/run.sh. A: the query path before and after (no route in the config). B: a routed name
# against a plain pool on the same binary, with and without an ECS option (198.51.100.0/24).
#   BEFORE=/path/to/old/weir AFTER=/path/to/new/weir bench/routing-rounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE:?the weir binary before the change}" "${AFTER:?the weir binary after it}"
ROUNDS=${ROUNDS:-4}
ECS="-E 8:00011800c63364"
run() { # label binary queries route_subnets dnsperf_extra
  local line
  line=$(SERVERS=weir SKIP_BUILD=1 ROUNDS=1 DURATION=${DURATION:-8} WEIR_BIN=$2 QUERIES=$3 \
    ROUTE_SUBNETS=$4 DNSPERF_EXTRA="$5" bench/run.sh 2>/dev/null | grep '^| weir |' | head -1)
  echo "$1 $line"
}
for _ in $(seq "$ROUNDS"); do
  run A-before-static "$BEFORE" bench/queries.txt 0 ""
  run A-after-static "$AFTER" bench/queries.txt 0 ""
  run A-before-pool "$BEFORE" bench/queries-pool.txt 0 ""
  run A-after-pool "$AFTER" bench/queries-pool.txt 0 ""
done
for _ in $(seq "$ROUNDS"); do
  run B-pool "$AFTER" bench/queries-pool.txt 1000 ""
  run B-route "$AFTER" bench/queries-route.txt 1000 ""
  run B-route-ecs "$AFTER" bench/queries-route.txt 1000 "$ECS"
  run B-pool-ecs "$AFTER" bench/queries-pool.txt 1000 "$ECS"
done
