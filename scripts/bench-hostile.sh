#!/usr/bin/env bash
# Benchmark (not a test): what hostile images cost thumbnail-on-create, beside normal photos.
# Each input goes into a local directory store and through `thumbnail-on-create invoke` of a
# release build, on an S3-style event naming its bucket and key, under /usr/bin/time: wall
# time, CPU time (user + sys) and peak resident memory of the whole process, and the outcome
# line the CLI prints. The inputs: what ../shared/hostile/mkbombs.py writes, the same layout
# with as many scans as are accepted, a 100 MP PNG of zero rows, a JPEG with no scan data but
# an FFD9 near its end, and ../shared/images' 50000x50000 PNG bomb; the normal ones are a 24 MP
# baseline photo and a progressive one. Then the `serve` case with REQUEST_TIMEOUT_SECS=1
# (SERVE_TIMEOUT_SECS): the many-scans JPEGs and the PNG posted, the answer, and the process's
# CPU time before, at the answer, 1 s and 5 s later (work stopped at its deadline no longer
# climbs). The function's defaults apply (MAX_DECODE_BYTES, MAX_SOURCE_PIXELS ...) unless set
# in the environment. Installs `time` and `curl` if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
trap e2e_cleanup EXIT
need_apt time curl

images=${IMAGES:-../shared/images}
mkbombs=${MKBOMBS:-../shared/hostile/mkbombs.py}
photo=$images/painting_colors_6000x4000.jpg
progressive=$images/sony_rx100_progressive_5640x3172.jpg
bomb=$images/bomb_50000x50000_truncated.png
# Measuring nothing would look like a result: stop, naming what is missing.
for file in "$photo" "$progressive" "$bomb" "$mkbombs"; do
  if [ ! -f "$file" ]; then
    echo "bench-hostile: $file is missing; the benchmark images and mkbombs.py are the team's" \
      "(../shared/images and ../shared/hostile beside the repository); set IMAGES=DIR or" \
      "MKBOMBS=FILE to use others" >&2
    exit 1
  fi
done

cargo build --release --quiet -p thumbnail-on-create
bin=target/release/thumbnail-on-create
work=.cache/bench-hostile
rm -rf "$work"
inputs=$work/store/photos/bench
mkdir -p "$inputs" "$work/events"

python3 "$mkbombs" "$inputs" >/dev/null
cp "$photo" "$progressive" "$bomb" "$inputs/"
# The photo's header up to its first scan, a little zero "data", an FFD9, then 2 KiB more: the
# end-of-image marker is near the end of the file although no scan was ever complete.
python3 - "$photo" "$inputs/no_scan_ffd9_near_end.jpg" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
at = 2
while data[at + 1] != 0xDA:  # segments up to the start of scan
    at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
sos = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
open(sys.argv[2], "wb").write(data[:sos] + b"\x00" * 64 + b"\xff\xd9" + b"\x00" * 2048)
PY
# mkbombs.py's layout with as many scans as the pipeline accepts (MAX_SCANS, 100: a DC scan and
# 99 AC scans), each with all the data its blocks need, so that it passes the header checks and
# decodes; fuzz/seeds.py has the generator.
python3 - "$inputs/max_scans_7745.jpg" <<'PY'
import sys
sys.path.insert(0, "fuzz")
from seeds import progressive_jpeg
blocks = (7745 // 8 + 1) ** 2
runs = -(-blocks // 16384)
jpeg = progressive_jpeg(7745, 7745, 1, 99, dc_bytes=-(-blocks // 8), ac_bytes=-(-runs * 15 // 8))
open(sys.argv[1], "wb").write(jpeg)
PY

# The most work a small file can still ask for: a 100 MP 16-bit RGBA PNG whose rows are all
# zero and Paeth-filtered (800 MB to inflate and unfilter from 800 KB), accepted because it is
# streamed row by row into a small raster.
python3 - "$inputs/paeth_rgba16_10000.png" <<'PY'
import struct, sys, zlib
sys.path.insert(0, "fuzz")
from seeds import png_chunk
w = h = 10000
comp = zlib.compressobj(6)
row = b"\x04" + b"\x00" * (w * 8)
data = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
ihdr = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunks)
PY

# An S3 notification for photos/bench/NAME, as events/demo/created.json.
event() {
  python3 - "$1" "$(stat -c %s "$inputs/$1")" >"$work/events/$1.json" <<'PY'
import json, sys, urllib.parse
name, size = sys.argv[1], int(sys.argv[2])
print(json.dumps({"Records": [{
    "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
    "eventTime": "2024-11-05T14:22:31.493Z", "eventName": "ObjectCreated:Put",
    "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
           "object": {"key": urllib.parse.quote_plus("bench/" + name, safe="/"), "size": size,
                      "eTag": "0123456789abcdef0123456789abcdef"}}}]}))
PY
}

cases=(
  "normal:$(basename "$photo")"
  "normal:$(basename "$progressive")"
  hostile:progressive_cmyk_10000.jpg
  hostile:progressive_cmyk_7745.jpg
  hostile:many_scans_7745.jpg
  hostile:adam7_rgba_7745.png
  hostile:max_scans_7745.jpg
  hostile:paeth_rgba16_10000.png
  hostile:no_scan_ffd9_near_end.jpg
  "hostile:$(basename "$bomb")"
)
printf '%-8s %-40s %10s %7s %7s %9s  %s\n' "" input bytes "wall s" "CPU s" "peak MiB" outcome
for entry in "${cases[@]}"; do
  kind=${entry%%:*} name=${entry#*:}
  event "$name"
  # Each run starts without the thumbnails an earlier one wrote.
  rm -rf "$work/store/photos/thumbnails"
  status=0
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$bin" invoke "$work/events/$name.json" \
    --storage "$work/store" >"$work/out" 2>"$work/log" || status=$?
  # After "Command terminated by signal N", if it was.
  read -r wall user sys rss < <(tail -1 "$work/time")
  outcome=$(cut -f1,3 "$work/out" | tr '\t' ' ' | head -1)
  [ -n "$outcome" ] || outcome="exit $status: $(tail -1 "$work/log")"
  printf '%-8s %-40s %10s %7s %7.2f %9.1f  %s\n' "$kind" "$name" "$(stat -c %s "$inputs/$name")" \
    "$wall" "$(awk "BEGIN { print $user + $sys }")" "$(awk "BEGIN { print $rss / 1024 }")" \
    "$outcome"
done

# serve: the answer to a decode, and whether its CPU work goes on after it. No input here
# takes 2 s any more, so the deadline is 1 s (REQUEST_TIMEOUT_SECS takes whole seconds): the
# slowest accepted ones then pass it.
timeout_secs=${SERVE_TIMEOUT_SECS:-1}
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
port=$(free_port)
REQUEST_TIMEOUT_SECS=$timeout_secs LISTEN_ADDRESS=127.0.0.1 PORT=$port \
  "$bin" serve --storage "$work/store" >"$work/serve.log" 2>&1 &
pid=$!
on_exit "kill $pid"
wait_port "$port"
echo
echo "serve, REQUEST_TIMEOUT_SECS=$timeout_secs: the answer, and the process's CPU seconds before" \
  "the request, at the answer, 1 s and 5 s later"
for name in many_scans_7745.jpg max_scans_7745.jpg paeth_rgba16_10000.png; do
  event "$name"
  rm -rf "$work/store/photos/thumbnails"
  before=$(cpu "$pid")
  start=$(date +%s.%N)
  code=$(curl -s -o "$work/answer" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary "@$work/events/$name.json" "http://127.0.0.1:$port/")
  answered=$(awk "BEGIN { print $(date +%s.%N) - $start }")
  at0=$(cpu "$pid")
  sleep 1
  at1=$(cpu "$pid")
  sleep 4
  at5=$(cpu "$pid")
  printf '  %-24s %s after %5.2f s; CPU %s, %s, %s, %s; %s\n' "$name" "$code" "$answered" \
    "$before" "$at0" "$at1" "$at5" "$(head -c 200 "$work/answer")"
done
