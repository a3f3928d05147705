#!/usr/bin/env bash
# Benchmark (not a test): thumbnail-on-create's pipeline against libvips, side by side in one
# run, on the shared test images, one thread each, 256 px JPEG at quality 85: libvips 8.18 (PyPI's
# pyvips-binary, in its own ignored venv .cache/vips818) and Debian's libvips 8.14 (pyvips in
# .cache/venv), each through libvips's thumbnail operation (what vipsthumbnail runs), and our
# pipeline through the pipeline-bench example of a release build. Every tool runs the whole set
# in one process (start-up is not counted) and times each image in CPU time, best of REPEAT runs
# (libvips lets libwebp use a helper thread even with VIPS_CONCURRENCY=1, so wall time would not
# compare like with like). Besides the shared progressive JPEG it makes two of its own from a
# baseline photo: libjpeg's standard scan script (jpegtran -progressive, lossless) and mozjpeg's
# searched scans (libvips 8.18's jpegsave with optimize_scans), and a 1600 px one that is
# decoded at half scale. Prints per image the three times, our ratios, our peak resident
# memory and the PSNR of our thumbnail against libvips 8.18's; then the ratios per group. Installs what it needs (apt, PyPI) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
need_apt libvips-tools libjpeg-turbo-progs nasm python3-venv
need_venv pyvips==3.2.0
need_venv_in vips818 pyvips==3.2.0 pyvips-binary==8.18.7
old_python="$E2E_REPO/.cache/venv/bin/python"
new_python="$E2E_REPO/.cache/vips818/bin/python"

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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ours" "$work/old" "$work/new"
# Progressive files of our own, from a baseline camera photo.
jpegtran -progressive -copy all "$images/pixel_4048x3036.jpg" >"$work/pixel_progressive_libjpeg.jpg"
"$new_python" -c 'import sys, pyvips; pyvips.Image.new_from_file(sys.argv[1]).jpegsave(sys.argv[2], Q=90, interlace=True, optimize_scans=True)' \
  "$images/nikon_d3s_p3_4256x2832.jpg" "$work/nikon_progressive_mozjpeg.jpg"
# A web-sized progressive file (1600 px, 4:2:0, libjpeg's script), whose 256 px thumbnail
# needs more than its eighth: decoded at half scale.
"$new_python" -c 'import sys, pyvips; pyvips.Image.thumbnail(sys.argv[1], 1600).jpegsave(sys.argv[2], Q=85, interlace=True)' \
  "$images/pixel_4048x3036.jpg" "$work/pixel_1600_progressive.jpg"
files+=("$work/pixel_progressive_libjpeg.jpg" "$work/nikon_progressive_mozjpeg.jpg" "$work/pixel_1600_progressive.jpg")

cargo build --release --quiet -p thumbnail-on-create --example pipeline-bench
target/release/examples/pipeline-bench --repeat "$repeat" --out "$work/ours" "${files[@]}" >"$work/ours.tsv"
VIPS_CONCURRENCY=1 "$old_python" scripts/lib/vips_thumbnail_bench.py "$repeat" "$work/old" "${files[@]}" >"$work/old.tsv"
VIPS_CONCURRENCY=1 "$new_python" scripts/lib/vips_thumbnail_bench.py "$repeat" "$work/new" "${files[@]}" >"$work/new.tsv"
"$new_python" scripts/lib/thumbnail_bench_table.py "$work/ours.tsv" "$work/old.tsv" "$work/new.tsv" \
  "$work/ours" "$work/new"
