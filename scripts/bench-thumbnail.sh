#!/usr/bin/env bash
# Benchmark (not a test): thumbnail-on-create's pipeline against libvips on the shared test
# images, single-threaded, 256 px JPEG at quality 85. Both run in one process for the whole set
# (start-up is not counted): libvips's thumbnail operation (what vipsthumbnail runs) through
# pyvips, and our pipeline through the pipeline-bench example of a release build. Each image is
# timed in CPU time (libvips lets libwebp use a helper thread even with VIPS_CONCURRENCY=1, so
# wall time would not compare like with like), best of REPEAT runs. Prints per image our time /
# libvips's time and our peak resident memory for that image, then the ratios per group. Installs libvips-tools and pyvips
# (into the repo's ignored .cache/venv) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
need_apt libvips-tools nasm python3-venv
need_venv pyvips

images=${IMAGES:-../shared/images}
repeat=${REPEAT:-5}
files=(
  "$images/pixel_4048x3036.jpg" "$images/derived_pixel_orient6_4048x3036.jpg"
  "$images/nikon_d3s_p3_4256x2832.jpg" "$images/painting_colors_6000x4000.jpg"
  "$images/flickr_2725x2225.jpg" "$images/sony_rx100_progressive_5640x3172.jpg"
  "$images/cmyk_swop_profile_500x333.jpg" "$images/giant_gray_20000x14000.jpg"
  "$images/ukui_rgba_3840x2400.png" "$images/gnome_adwaita_4096x4096.webp"
  "$images/sharp_4.webp"
)
# Measuring nothing would look like a result: stop, naming what is missing.
for file in "${files[@]}"; do
  if [ ! -f "$file" ]; then
    echo "bench-thumbnail: $file is missing; the benchmark photographs are the team's" \
      "(../shared/images beside the repository); set IMAGES=DIR to use others" >&2
    exit 1
  fi
done

cargo build --release --quiet -p thumbnail-on-create --example pipeline-bench
ours=$(mktemp)
theirs=$(mktemp)
trap 'rm -f "$ours" "$theirs"' EXIT
target/release/examples/pipeline-bench --repeat "$repeat" "${files[@]}" >"$ours"

VIPS_CONCURRENCY=1 python3 - "$repeat" "${files[@]}" >"$theirs" <<'PY'
import os, sys, time, pyvips
pyvips.cache_set_max(0)  # no operation cache: every run decodes
repeat, files = int(sys.argv[1]), sys.argv[2:]
for f in files:
    best = None
    for _ in range(repeat):
        t = time.process_time()  # CPU time of every thread of the process
        image = pyvips.Image.thumbnail(f, 256, export_profile="srgb")
        image.jpegsave_buffer(Q=85, strip=True)
        elapsed = (time.process_time() - t) * 1000
        best = elapsed if best is None else min(best, elapsed)
    print(f"{os.path.basename(f)}\t{best:.2f}")
PY

python3 - "$ours" "$theirs" <<'PY'
import sys
ours = {l.split("\t")[0]: l.rstrip("\n").split("\t") for l in open(sys.argv[1])}
theirs = {l.split("\t")[0]: float(l.split("\t")[1]) for l in open(sys.argv[2])}
groups = {
    "baseline camera JPEGs": ["pixel_4048x3036.jpg", "derived_pixel_orient6_4048x3036.jpg",
        "nikon_d3s_p3_4256x2832.jpg", "painting_colors_6000x4000.jpg", "flickr_2725x2225.jpg"],
    "progressive JPEG": ["sony_rx100_progressive_5640x3172.jpg"],
    "WebP": ["gnome_adwaita_4096x4096.webp", "sharp_4.webp"],
    "PNG": ["ukui_rgba_3840x2400.png"],
    "everything": list(theirs),
}
print(f"{'image (CPU ms, best of runs)':40} {'libvips':>10} {'ours':>9} {'ratio':>6} {'our peak MiB':>13}")
for name, vips in theirs.items():
    row = ours.get(name)
    if row is None or row[1] == "error":
        print(f"{name:40} {vips:10.2f} {'error':>9}        {row[3] if row else ''}")
        continue
    print(f"{name:40} {vips:10.2f} {float(row[1]):9.2f} {float(row[1]) / vips:6.2f} {float(row[2]):13.1f}")
print()
for group, names in groups.items():
    names = [n for n in names if n in ours and ours[n][1] != "error"]
    ratio = sum(float(ours[n][1]) for n in names) / sum(theirs[n] for n in names)
    print(f"{group:40} time ratio (ours / libvips) {ratio:.2f}")
PY
