#!/usr/bin/env bash
# The one command that runs every test: installs the real peers (cached under
# $STREAMGATE_CACHE, default ~/.cache/streamgate), then fmt, clippy, the
# release proxy binary the end-to-end tests drive, and the whole test suite.
# A missing peer fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

step "disk and memory (a full disk shows up as a linker crash)"
df -h . "${CARGO_TARGET_DIR:-target}" 2>/dev/null || df -h .
free -g || true

step "installing peers"
.ci/install-peers.sh
# shellcheck disable=SC1091
source "${STREAMGATE_CACHE:-$HOME/.cache/streamgate}/peers.env"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
# Two test threads: the machine has two cores and every e2e test runs a
# broker, a proxy and clients.
cargo test --workspace --locked --no-fail-fast -- --test-threads=2
step "all tests passed in $(( $(date +%s) - started ))s"
