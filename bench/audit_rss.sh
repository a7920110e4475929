#!/usr/bin/env bash
# Memory taken by concurrent audit pages (issue 12, defect 7).
#
#   bench/audit_rss.sh [WEIR_BINARY] [RECORDS] [CONCURRENT] [QUERY]
#
# Starts weir on 127.0.0.1 (DNS 15353, admin 18053) with a fresh store, writes RECORDS
# weight changes (each with a 600-byte reason, ~1 KB audit records), then resets the peak
# RSS (/proc/PID/clear_refs 5), fires CONCURRENT requests for QUERY at once, and prints the
# RSS before and the peak (VmHWM) during them. Defaults: target/release/weir, 9452 records,
# 64 requests, `since=0&limit=10000` (the largest page). With STATE=DIR, the store is
# copied from DIR when it exists (no writes), else saved there after the writes.
set -euo pipefail
weir=${1:-target/release/weir}
records=${2:-9452}
concurrent=${3:-64}
query=${4:-since=0&limit=10000}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/zone" <<'ZONE'
$ORIGIN example.com.
@ 300 SOA ns hm 1 2 3 4 60
@ 300 NS ns
ns 300 A 192.0.2.1
ZONE
cat >"$dir/weir.toml" <<TOML
[dns]
listen = ["127.0.0.1:15353"]
udp_workers = 1
[admin]
listen = "127.0.0.1:18053"
[store]
path = "$dir/state"
[[zone]]
origin = "example.com."
file = "zone"
[[pool]]
name = "app.example.com."
[[pool.group]]
name = "blue"
endpoints = [{ address = "192.0.2.10" }]
[[pool.group]]
name = "green"
endpoints = [{ address = "192.0.2.20" }]
TOML
if [ -n "${STATE:-}" ] && [ -d "$STATE" ]; then cp -r "$STATE" "$dir/state"; fi
"$weir" serve --config "$dir/weir.toml" 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18053/readyz >/dev/null && break; sleep 0.1; done
if [ -z "${STATE:-}" ] || [ ! -d "$STATE" ]; then
  reason=$(head -c 600 /dev/zero | tr '\0' r)
  seq "$records" | xargs -P 8 -I{} curl -sf -o /dev/null -X PUT \
    -H 'Content-Type: application/json' \
    -d "{\"weight\": {}, \"reason\": \"$reason\"}" \
    127.0.0.1:18053/v1/pools/app.example.com/groups/blue/weight
  if [ -n "${STATE:-}" ]; then cp -r "$dir/state" "$STATE"; fi
fi
rss() { awk "/^$1:/ {print \$2}" "/proc/$pid/status"; }
echo 5 >"/proc/$pid/clear_refs"
before=$(rss VmRSS)
start=$(date +%s.%N)
seq "$concurrent" | xargs -P "$concurrent" -I{} curl -sf -o /dev/null "127.0.0.1:18053/v1/audit?$query"
end=$(date +%s.%N)
peak=$(rss VmHWM)
echo "records=$records concurrent=$concurrent query=$query"
echo "rss_before_kb=$before peak_kb=$peak added_mb=$(( (peak - before) / 1024 )) seconds=$(echo "$end - $start" | bc)"
