#!/usr/bin/env bash
# The proxy benchmark in one command (see README.md next to this file):
#   e2e/bench/run.sh [--mode pass|audit|mask] [--rounds N] [--records N] [--size B] [--keep]
# Sources the real peers, waits for the tansu build if it is still running,
# builds the release proxy (unless STREAMGATE_PROXY_BIN names one), then runs
# bench.py: the same load direct and through the sidecar, alternating rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${STREAMGATE_CACHE:-$HOME/.cache/streamgate}"
# shellcheck disable=SC1091
source "$CACHE/peers.env"

waited=0
until [ -x "$STREAMGATE_TANSU" ]; do
  if [ "$waited" -ge "${BENCH_TANSU_WAIT:-2400}" ]; then
    echo "tansu is not installed at $STREAMGATE_TANSU after ${waited}s: run .ci/install-peers.sh" >&2
    exit 1
  fi
  echo "waiting for the tansu build ($STREAMGATE_TANSU; $(tail -1 "$CACHE/tansu-build.log" 2>/dev/null))" >&2
  sleep 30; waited=$((waited + 30))
done
# The byte-relay baseline: Debian's HAProxy (not needed by the tests, so not in
# .ci/install-peers.sh). bench.py stops with a clear message if it is missing.
if ! command -v haproxy >/dev/null && [[ " $* " != *" --no-relay "* ]]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "installing haproxy (the relay baseline) with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy >&2 || true
fi
for peer in "$STREAMGATE_RDKAFKA_PERF" "$STREAMGATE_PYTHON"; do
  [ -x "$peer" ] || { echo "missing peer $peer: run .ci/install-peers.sh" >&2; exit 1; }
done

if [ -z "${STREAMGATE_PROXY_BIN:-}" ]; then
  cargo build --release -p streamgate-proxy >&2
  STREAMGATE_PROXY_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/streamgate-proxy"
fi
exec "$STREAMGATE_PYTHON" e2e/bench/bench.py --proxy-bin "$STREAMGATE_PROXY_BIN" "$@"
