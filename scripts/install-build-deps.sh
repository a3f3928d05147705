#!/usr/bin/env bash
# Build tools beyond Rust that make release builds what they should be: nasm lets mozjpeg
# compile libjpeg's x86-64 SIMD code (without it, the build still works but decodes JPEGs
# without SIMD). Idempotent; does nothing when everything is there.
set -euo pipefail
source "$(dirname "$0")/lib/e2e.sh"
need_apt nasm
# librdkafka (the Kafka consumer of `consume`) builds from source with make, and links OpenSSL.
need_apt make pkg-config libssl-dev
