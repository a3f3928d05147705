#!/usr/bin/env bash
# forward-to-stream throughput (release build), printed, never asserted:
# 1. content mode on a generated gzipped VPC flow-log file of at least 100 MB, to the local file
#    sink (JSON lines into /dev/null), beside `zcat FILE > /dev/null` on the same file in the same
#    run, as a ratio of the two speeds (decompressed bytes per second);
# 2. claim-check events per second through the HTTP runtime (`serve`), driven by wrk.
# The flow-log file is generated once into target/bench/ (about a minute) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh

need_apt wrk
cargo build --release -p forward-to-stream --quiet
binary="$PWD/target/release/forward-to-stream"
work="$PWD/target/bench"
mkdir -p "$work/storage/bench"
file="$work/storage/bench/flow-logs.log.gz"

if [ ! -s "$file" ] || [ "$(stat -c %s "$file")" -lt 100000000 ]; then
  log "generating $file (at least 100 MB gzipped)"
  python3 - <<'PY' | gzip -6 >"$file"
import random, sys
random.seed(7)
out = sys.stdout
actions = ["ACCEPT OK"] * 9 + ["REJECT OK"]
start = 1700000000
# Enough lines that the gzipped file passes 100 MB (about 4.5 bytes of text per gzipped byte).
for block in range(4300):
    lines = []
    for n in range(1200):
        t = start + block * 60 + n // 20
        lines.append("2 123456789010 eni-%08x 10.%d.%d.%d 172.31.%d.%d %d %d 6 %d %d %d %d %s\n" % (
            random.getrandbits(32), random.randint(0, 255), random.randint(0, 255),
            random.randint(1, 254), random.randint(0, 255), random.randint(1, 254),
            random.randint(1024, 65535), random.choice((22, 80, 443, 5432, 8080)),
            random.randint(1, 5000), random.randint(40, 9000000), t, t + 60,
            random.choice(actions)))
    out.write("".join(lines))
PY
fi
compressed=$(stat -c %s "$file")
decompressed=$(zcat "$file" | wc -c)
log "file: $compressed bytes gzipped, $decompressed bytes of flow logs"

best_of_3() {
  local best=
  for _ in 1 2 3; do
    local began ended
    began=$(date +%s.%N)
    "$@" >/dev/null
    ended=$(date +%s.%N)
    best=$(python3 -c "b='$best'; t=$ended-$began; print(t if not b else min(float(b), t))")
  done
  echo "$best"
}
zcat_s=$(best_of_3 sh -c "zcat '$file' > /dev/null")
ours_s=$(best_of_3 env -i PATH="$PATH" FORWARD_MODE=content FORWARD_SINK=file FORWARD_FILE=/dev/null \
  RUST_LOG=warn "$binary" sweep --bucket bench --key flow-logs.log.gz --storage "$work/storage")
records=$(zcat "$file" | wc -l)
python3 - "$decompressed" "$records" "$zcat_s" "$ours_s" <<'PY'
import sys
size, records, zcat_s, ours_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
mb = size / 1e6
print("content mode, %.0f MB of flow logs (%d records), best of 3:" % (mb, records))
print("  reference: zcat > /dev/null        %6.2f s  %7.1f MB/s" % (zcat_s, mb / zcat_s))
print("  forward-to-stream -> file sink     %6.2f s  %7.1f MB/s  %9.0f records/s" % (ours_s, mb / ours_s, records / ours_s))
print("  ratio to zcat: %.2f" % (zcat_s / ours_s))
PY

# Claim checks through the HTTP runtime.
port=$(free_port)
env -i PATH="$PATH" PORT="$port" FORWARD_SINK=file FORWARD_FILE=/dev/null RUST_LOG=warn \
  "$binary" serve --storage "$work/storage" >/dev/null 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true' EXIT
wait_port "$port" 30
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","eventTime":"2024-11-05T14:22:31.493Z","s3":{"bucket":{"name":"bench"},"object":{"key":"flow-logs.log.gz","size":1,"eTag":"abc"}}}]}'
LUA
echo "claim checks through the HTTP runtime (wrk, 2 threads, 32 connections, 10 s):"
wrk -t2 -c32 -d10s -s "$work/post.lua" "http://127.0.0.1:$port/" | grep -E "Requests/sec|Non-2xx|Latency" | sed 's/^/  /'
