#!/usr/bin/env bash
# Pass-through benchmark: the same load direct to the broker and through the
# proxy, alternating, >= 3 rounds; prints medians, ratios, the sidecar's CPU
# time per MB moved and its RSS (idle, peak). See README.md.
#
#   e2e/bench/run.sh [records=200000] [size=1024] [rounds=3]
#
# Peers: STREAMGATE_TANSU, STREAMGATE_RDKAFKA_PERF (from peers.env), the
# release proxy binary (built if missing).
set -euo pipefail

RECORDS=${1:-200000}
SIZE=${2:-1024}
ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=/root/.cache/streamgate
[ -f "$CACHE/peers.env" ] && source "$CACHE/peers.env"
TANSU=${STREAMGATE_TANSU:-$CACHE/tansu/bin/tansu}
PERF=${STREAMGATE_RDKAFKA_PERF:-$CACHE/rdkafka_performance}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PROXY=${STREAMGATE_PROXY_BIN:-$TARGET/release/streamgate-proxy}
TANSU_NODE=111

if [ ! -x "$PROXY" ]; then
  echo "building the release proxy..." >&2
  (cd "$ROOT" && cargo build --release -p streamgate-proxy >&2)
fi
for bin in "$TANSU" "$PERF" "$PROXY"; do
  [ -x "$bin" ] || { echo "missing $bin" >&2; exit 1; }
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { # a free port whose broker port (+1+node) is free too
  python3 - "$TANSU_NODE" <<'PY'
import socket, sys
node = int(sys.argv[1])
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p + 1 + node > 65000: s.close(); continue
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p + 1 + node)); t.close(); s.close(); print(p); break
    except OSError:
        s.close()
PY
}
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

BROKER_PORT=$(free_port)
( cd "$WORK" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" --storage-engine memory://tansu/ ) \
    >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)
wait_port "$BROKER_PORT"

LISTEN=$(free_port)
ADMIN=$(free_port)
RUST_LOG=warn "$PROXY" run --listen "127.0.0.1:$LISTEN" --admin "127.0.0.1:$ADMIN" \
    --upstream "127.0.0.1:$BROKER_PORT" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.05
done
curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null || { echo "proxy not ready" >&2; cat "$WORK/proxy.log" >&2; exit 1; }
sleep 1
rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
IDLE_RSS=$(rss_kib "$PROXY_PID" VmRSS)
TICK=$(getconf CLK_TCK)

run_round() { # mode round -> "produce_msgs_s consume_msgs_s"
  local mode=$1 round=$2 bootstrap topic out
  topic="bench-$mode-$round"
  "$TANSU" topic create "$topic" --partitions 1 --broker "tcp://127.0.0.1:$BROKER_PORT" >/dev/null 2>&1
  if [ "$mode" = proxy ]; then bootstrap="127.0.0.1:$LISTEN"; else bootstrap="127.0.0.1:$BROKER_PORT"; fi
  out=$("$PERF" -P -t "$topic" -p 0 -b "$bootstrap" -s "$SIZE" -c "$RECORDS" -a 1 -X linger.ms=5 2>&1 | tail -n 5)
  local p; p=$(echo "$out" | python3 "$HERE/parse_perf.py")
  out=$("$PERF" -C -t "$topic" -p 0 -b "$bootstrap" -o beginning -c "$RECORDS" 2>&1 | tail -n 5)
  local c; c=$(echo "$out" | python3 "$HERE/parse_perf.py")
  echo "$p $c"
}

RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which side goes first so warm-up effects do not favour one.
  if [ $((round % 2)) -eq 1 ]; then order="direct proxy"; else order="proxy direct"; fi
  for mode in $order; do
    before=$(cpu_ticks "$PROXY_PID")
    read -r prod cons < <(run_round "$mode" "$round")
    after=$(cpu_ticks "$PROXY_PID")
    echo "$mode $round $prod $cons $((after - before))" | tee -a "$RESULTS" >&2
  done
done
PEAK_RSS=$(rss_kib "$PROXY_PID" VmHWM)

python3 - "$RESULTS" "$RECORDS" "$SIZE" "$TICK" "$IDLE_RSS" "$PEAK_RSS" <<'PY'
import statistics, sys
path, records, size, tick, idle, peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = [l.split() for l in open(path) if l.strip()]
def med(mode, col): return statistics.median(float(r[col]) for r in rows if r[0] == mode)
dp, dc, pp, pc = med("direct", 2), med("direct", 3), med("proxy", 2), med("proxy", 3)
ticks = [int(r[4]) for r in rows if r[0] == "proxy"]
mb = 2 * records * size / 1e6  # each proxy round moves every record in (produce) and out (consume)
cpu_ms_per_mb = statistics.median(t * 1000 / tick / mb for t in ticks)
print(f"records={records} size={size}B rounds={len(ticks)} (median)")
print(f"produce  direct {dp:>10.0f} msgs/s   proxy {pp:>10.0f} msgs/s   ratio {pp/dp:.3f}")
print(f"consume  direct {dc:>10.0f} msgs/s   proxy {pc:>10.0f} msgs/s   ratio {pc/dc:.3f}")
print(f"sidecar CPU {cpu_ms_per_mb:.2f} ms per MB moved (user+sys, {mb:.0f} MB per round)")
print(f"sidecar RSS idle {idle/1024:.1f} MiB, peak {peak/1024:.1f} MiB")
PY
