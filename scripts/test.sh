#!/usr/bin/env bash
# The whole test suite: builds the release preset and runs every test
# (C++ GoogleTest suites through CTest, plus the Python baseline's pytest).
# Usage: scripts/test.sh [preset]   (release, asan or tsan; default release)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset"
