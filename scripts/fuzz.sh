#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (preset "fuzz", build/fuzz) and runs
# protocol_fuzzer for a bounded time, seeded with examples/protocol/*.json.
#   scripts/fuzz.sh [seconds]        default 60
# Exit status: 0 when no input crashed, non-zero on a crash, a leak, a timeout
# or an out-of-memory input (the input is saved under build/fuzz/artifacts/).
# Inputs that found new coverage accumulate in build/fuzz/corpus/protocol/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "usage: scripts/fuzz.sh [seconds]" >&2
  exit 2
fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

corpus=build/fuzz/corpus/protocol
artifacts=build/fuzz/artifacts
mkdir -p "$corpus" "$artifacts"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# The first directory receives new inputs; the examples are read-only seeds.
build/fuzz/protocol_fuzzer \
  -max_total_time="$seconds" \
  -rss_limit_mb=2048 \
  -timeout=30 \
  -max_len=8192 \
  -dict=fuzz/protocol.dict \
  -artifact_prefix="$artifacts/" \
  -print_final_stats=1 \
  "$corpus" examples/protocol
