#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (preset "fuzz", build/fuzz) and runs
# them one after the other, sharing a bounded time: protocol_fuzzer (seeded
# with examples/protocol/*.json) for half of it, report_fuzzer (seeded with
# examples/report/*.json) for the other half.
#   scripts/fuzz.sh [seconds]        default 60, the total of both
# Exit status: 0 when no input crashed, non-zero on a crash, a leak, a timeout
# or an out-of-memory input (the input is saved under build/fuzz/artifacts/).
# Inputs that found new coverage accumulate in build/fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "usage: scripts/fuzz.sh [seconds]" >&2
  exit 2
fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

artifacts=build/fuzz/artifacts
mkdir -p "$artifacts"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# run TARGET SECONDS: the first directory receives new inputs; the examples
# are read-only seeds.
run() {
  local target=$1 time=$2
  local corpus=build/fuzz/corpus/$target
  mkdir -p "$corpus"
  echo "== ${target}_fuzzer for ${time} s"
  "build/fuzz/${target}_fuzzer" \
    -max_total_time="$time" \
    -rss_limit_mb=2048 \
    -timeout=30 \
    -max_len=8192 \
    -dict="fuzz/$target.dict" \
    -artifact_prefix="$artifacts/" \
    -print_final_stats=1 \
    "$corpus" "examples/$target"
}

# The total stays the given time: half each (the protocol the odd second).
report_seconds=$((seconds / 2))
run protocol $((seconds - report_seconds))
if ((report_seconds > 0)); then
  run report "$report_seconds"
fi
