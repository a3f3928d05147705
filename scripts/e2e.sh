#!/usr/bin/env bash
# End-to-end checks with real parts that cannot run inside `cargo test` (brokers, Redis,
# cargo-lambda, a browser). Each part in scripts/e2e.d/ installs what it needs (idempotently,
# into a cache outside the repo), starts it, runs its checks against the function binaries,
# and stops what it started. Ends with the line `e2e: N passed, M failed`.
# Arguments, if any, pick parts by name: `scripts/e2e.sh lambda kafka`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
trap e2e_cleanup EXIT

cargo build --workspace --bins --quiet
export BUCKETFN_BIN="$PWD/target/debug"

shopt -s nullglob
for part in scripts/e2e.d/*.sh; do
  wanted=$(($# == 0))
  for name in "$@"; do [[ $part == *"$name"* ]] && wanted=1; done
  [ "$wanted" = 1 ] || continue
  log "--- ${part#scripts/e2e.d/}"
  # Each part runs in this shell so that its checks are counted and its clean-ups run.
  source "$part"
  e2e_cleanup
done

if [ $((e2e_passed + e2e_failed)) -gt 0 ]; then
  echo "e2e: $e2e_passed passed, $e2e_failed failed"
fi
[ "$e2e_failed" -eq 0 ]
