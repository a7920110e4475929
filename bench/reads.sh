#!/usr/bin/env bash
# Expensive reads and reloads (issue 12, defects 6, 8 and 10): timings, not asserted in tests.
#
#   bench/reads.sh [WEIR_BINARY]
#
# 1. `weir check` on 10k, 20k and 40k A records at one owner name (the semantic checks and
#    the zone parser must be linear).
# 2. `weir check` on a 1M-record zone whose last line is broken.
# 3. A running weir with that 1M-record zone (fixed): break the last line, POST /v1/reload,
#    and at once PUT a weight: how long the write and the reload each take.
# 4. Preview of a sticky pool with 58 endpoints and `answers = 3`: one alone, then 4 at once
#    while `dig +tcp` asks the server; the statuses and the dig time.
# DNS on 127.0.0.1:15354, admin on 127.0.0.1:18054.
set -euo pipefail
weir=$(realpath "${1:-target/release/weir}")
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
head='$ORIGIN example.com.
$TTL 300
@ SOA ns hm 1 2 3 4 60
@ NS ns
ns A 192.0.2.1'
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; echo "$(date +%s.%N) - $s" | bc; }

echo "== 1. weir check, N A records at one name"
for n in 10000 20000 40000; do
  { echo "$head"; python3 -c "
for i in range($n): print(f'many A 10.{i>>16}.{(i>>8)&255}.{i&255}')"; } >"one$n.zone"
  printf '[[zone]]\norigin = "example.com."\nfile = "one%s.zone"\n' "$n" >"one$n.toml"
  echo "  $n records: $(secs "$weir" check --config "one$n.toml") s"
done

echo "== 2. weir check, 1M records, the last line broken"
{ echo "$head"; python3 -c "
for i in range(1000000): print(f'h{i} A 10.{i>>16}.{(i>>8)&255}.{i&255}')"; } >big.zone
cp big.zone big.good
echo 'broken A 300.1.1.1' >>big.zone
printf '[[zone]]\norigin = "example.com."\nfile = "big.zone"\n' >big.toml
echo "  rejected in $(secs "$weir" check --config big.toml) s"

echo "== 3. an admin write during a reload of that zone"
cp big.good big.zone
cat >serve.toml <<TOML
[dns]
listen = ["127.0.0.1:15354"]
udp_workers = 1
[admin]
listen = "127.0.0.1:18054"
[store]
path = "$dir/state"
[[zone]]
origin = "example.com."
file = "big.zone"
[[pool]]
name = "app.example.com."
[[pool.group]]
name = "blue"
endpoints = [{ address = "192.0.2.10" }]
TOML
"$weir" serve --config serve.toml 2>serve.log &
pid=$!
for _ in $(seq 600); do curl -sf 127.0.0.1:18054/readyz >/dev/null && break; sleep 0.1; done
echo 'broken A 300.1.1.1' >>big.zone
start=$(date +%s.%N)
( curl -s -o /dev/null -w '%{http_code}' -X POST 127.0.0.1:18054/v1/reload >reload.code; date +%s.%N >reload.end ) &
reloading=$!
sleep 0.2
curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  -d '{"weight": 7}' 127.0.0.1:18054/v1/pools/app.example.com/groups/blue/weight >write.code
write_end=$(date +%s.%N)
wait "$reloading"
echo "  write $(cat write.code) after $(echo "$write_end - $start - 0.2" | bc) s; reload $(cat reload.code) after $(echo "$(cat reload.end) - $start" | bc) s"
kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=

echo "== 4. preview: 58 endpoints, sticky, answers = 3"
endpoints=$(python3 -c "print(', '.join('{ address = \"198.51.100.%d\" }' % i for i in range(1, 59)))")
cat >preview.toml <<TOML
[dns]
listen = ["127.0.0.1:15354"]
udp_workers = 1
[admin]
listen = "127.0.0.1:18054"
[store]
path = "$dir/state2"
[[zone]]
origin = "example.com."
file = "zone"
[[pool]]
name = "app.example.com."
answers = 3
sticky = "client-subnet"
[[pool.group]]
name = "all"
endpoints = [$endpoints]
TOML
echo "$head" >zone
"$weir" serve --config preview.toml 2>preview.log &
pid=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18054/readyz >/dev/null && break; sleep 0.1; done
url='127.0.0.1:18054/v1/pools/app.example.com/preview?down=198.51.100.1'
echo "  one preview: $(curl -s -o /dev/null -w '%{http_code} in %{time_total} s' "$url")"
previews=()
for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code} ' "$url" >"p$i" & previews+=($!); done
sleep 0.1
dig_ms=$(dig +tcp +tries=1 +time=30 -p 15354 @127.0.0.1 ns.example.com A | awk '/Query time/ {print $4}')
wait "${previews[@]}"
echo "  4 at once: statuses $(cat p1 p2 p3 p4); DNS over TCP meanwhile: ${dig_ms} ms"
