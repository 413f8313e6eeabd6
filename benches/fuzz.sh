#!/usr/bin/env bash
# A fuzz campaign: every fuzz target (thaw_core::fuzz: mutations of valid objects, deterministic
# by case number) run for FUZZ_CASES cases each (default 1,000,000) in release mode. Prints one
# line per target with its case count; a crash prints the case and its input, and fails.
#
# Usage: benches/fuzz.sh   (FUZZ_CASES=N)
set -euo pipefail
cd "$(dirname "$0")/.."
export THAW_FUZZ_CASES=${FUZZ_CASES:-1000000}
start=$(date +%s)
cargo test --release --jobs "${THAW_BUILD_JOBS:-2}" -p thaw-core -p thaw-fs -p thaw-snapshot \
  -p thaw-indexer -p thaw-cache-server -p thaw-client -p thaw-replica fuzz \
  -- --nocapture --test-threads 1 2>&1 | grep -oE 'fuzz target.*|panicked.*|FAILED.*'
echo "campaign: $THAW_FUZZ_CASES cases per target in $(( $(date +%s) - start )) s (build included)"
