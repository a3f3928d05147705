#!/usr/bin/env bash
# Builds the bootstraps template.yaml deploys, target/lambda/<function>/bootstrap, for Lambda's
# arm64 (Graviton) machines with cargo-lambda, which cross-compiles with zig as the linker.
# Both come from PyPI into the repo's ignored .cache/venv (once, under a minute).
#
#   scripts/build-lambda.sh                       all four functions
#   scripts/build-lambda.sh thumbnail-on-create   only the ones named
#
# A cold release build (LTO, one codegen unit) takes about 6 minutes per function on two
# cores, so CI does not run this; the functions named share one cargo invocation, so the
# common crates compile once.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
log() { printf '[build-lambda] %s\n' "$*" >&2; }

need_venv cargo-lambda ziglang

all=()
for manifest in functions/*/Cargo.toml; do
  all+=("$(basename "$(dirname "$manifest")")")
done
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${all[@]}")

packages=()
for function in "${wanted[@]}"; do
  if [ ! -f "functions/$function/Cargo.toml" ]; then
    log "no function named '$function' (there are: ${all[*]})"
    exit 2
  fi
  packages+=(--package "$function")
done

# Without the default kafka-consume feature: it would cross-compile librdkafka (C) for arm64 as
# well, and on Lambda the Kafka event source mapping consumes instead of `consume`.
log "cargo lambda build --release --arm64 --no-default-features ${packages[*]}"
cargo lambda build --release --arm64 --no-default-features "${packages[@]}"

for function in "${wanted[@]}"; do
  bootstrap="target/lambda/$function/bootstrap"
  # A bootstrap for the wrong machine would fail only once deployed, so its ELF header is
  # checked here: e_machine (2 bytes at offset 18) is 0xb7 for aarch64.
  machine=$(od -An -tx1 -j18 -N2 "$bootstrap" | tr -d ' ')
  if [ "$machine" != b700 ]; then
    log "$bootstrap is not an arm64 executable (ELF machine $machine)"
    exit 1
  fi
  log "$bootstrap: arm64, $(du -h "$bootstrap" | cut -f1)"
done
