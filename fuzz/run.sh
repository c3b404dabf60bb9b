#!/usr/bin/env bash
# Run every fuzz target for SECONDS_PER_TARGET seconds (default 120), one
# after the other, and print a table: target, execs, execs/s, crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Not part of CI. See docs/fuzzing.md.
#
# Environment:
#   CARGO_TARGET_DIR  build dir (default /work/fuzz-target when /work exists,
#                     else fuzz/target) — keep it out of the main target dir
#   TARGETS           space-separated subset of targets (default: all)
#   SANITIZER         none (default: the code under test is safe Rust) or address
#   FUZZ_WORK         where the growing corpora and logs live (default
#                     $CARGO_TARGET_DIR/streamgate-fuzz-work); the committed
#                     seeds in fuzz/corpus/<target> are read, never written
#   RSS_LIMIT_MB      libFuzzer -rss_limit_mb (default 2048)
set -euo pipefail

SECONDS_PER_TARGET="${1:-120}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR"

ALL_TARGETS=(
    request_gate_preauth
    request_gate_authed
    response_path_masking
    record_batch_masking
    record_batch_codecs
    json_masking
    sasl_oauthbearer
    audit_spool_recovery
)
read -r -a TARGET_LIST <<<"${TARGETS:-${ALL_TARGETS[*]}}"

die() {
    echo "fuzz/run.sh: ERROR: $*" >&2
    exit 1
}

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo is not on PATH"
cargo +nightly --version >/dev/null 2>&1 ||
    die "the nightly toolchain is missing (rustup toolchain install nightly)"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    die "cargo-fuzz is missing (cargo install cargo-fuzz --locked)"

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    if [ -d /work ]; then CARGO_TARGET_DIR=/work/fuzz-target; else CARGO_TARGET_DIR="$FUZZ_DIR/target"; fi
fi
export CARGO_TARGET_DIR
SANITIZER="${SANITIZER:-none}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-2048}"
FUZZ_WORK="${FUZZ_WORK:-$CARGO_TARGET_DIR/streamgate-fuzz-work}"
# -O: release; -a: debug assertions and overflow checks on (an overflow is a finding).
BUILD_FLAGS=(-O -a --sanitizer "$SANITIZER")
TRIPLE="$(rustc +nightly -vV | sed -n 's/^host: //p')"
BIN_DIR="$CARGO_TARGET_DIR/$TRIPLE/release"

echo "== building the fuzz targets (sanitizer: $SANITIZER, target dir: $CARGO_TARGET_DIR)"
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"

# Seeds: generated from real frames by the `seeds` binary when missing.
if [ ! -d "$FUZZ_DIR/corpus" ] || [ -z "$(ls -A "$FUZZ_DIR/corpus" 2>/dev/null)" ]; then
    echo "== generating seed corpora into fuzz/corpus"
    SEEDS_DIR="$FUZZ_DIR/corpus" "$BIN_DIR/seeds" || die "seed generation failed"
    [ -n "$(ls -A "$FUZZ_DIR/corpus" 2>/dev/null)" ] || die "seed generation failed"
fi

RUN_ID="$(date +%Y%m%d-%H%M%S)"
LOG_DIR="$FUZZ_WORK/logs/$RUN_ID"
mkdir -p "$LOG_DIR"
STAMP="$LOG_DIR/.start"
touch "$STAMP"
echo "== $SECONDS_PER_TARGET s per target; logs in $LOG_DIR"
echo "   load before: $(uptime)"

declare -A EXECS RATE CRASHES STATUS
for t in "${TARGET_LIST[@]}"; do
    corpus="$FUZZ_WORK/corpus/$t"
    seeds="$FUZZ_DIR/corpus/$t"
    mkdir -p "$corpus" "$seeds" "$FUZZ_DIR/artifacts/$t"
    log="$LOG_DIR/$t.log"
    echo "-- $t"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_LIMIT_MB" \
        -timeout=25 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        execs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    execs=${execs:-0}
    EXECS[$t]=$execs
    RATE[$t]=$((execs / (elapsed > 0 ? elapsed : 1)))
    CRASHES[$t]=$(find "$FUZZ_DIR/artifacts/$t" -type f -newer "$STAMP" | wc -l)
    if [ "$rc" -eq 0 ]; then STATUS[$t]=ok; else STATUS[$t]="exit $rc"; fi
    if [ "${CRASHES[$t]}" -gt 0 ] || [ "$rc" -ne 0 ]; then
        echo "   !! $t: exit $rc, artifacts:"
        find "$FUZZ_DIR/artifacts/$t" -type f -newer "$STAMP" | sed 's/^/      /'
        grep -E '^(==[0-9]+== ERROR|thread .* panicked|SUMMARY)' "$log" | head -5 | sed 's/^/      /'
    fi
done

echo
echo "   load after: $(uptime)"
printf '%-24s %14s %10s %8s  %s\n' target execs execs/s crashes status
total=0
total_crashes=0
for t in "${TARGET_LIST[@]}"; do
    printf '%-24s %14s %10s %8s  %s\n' "$t" "${EXECS[$t]}" "${RATE[$t]}" "${CRASHES[$t]}" "${STATUS[$t]}"
    total=$((total + EXECS[$t]))
    total_crashes=$((total_crashes + CRASHES[$t]))
done
printf '%-24s %14s %10s %8s\n' TOTAL "$total" "" "$total_crashes"
[ "$total_crashes" -eq 0 ] || exit 1
