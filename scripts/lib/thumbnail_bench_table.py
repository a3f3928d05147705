"""The table scripts/bench-thumbnail.sh prints: per image the CPU time of Debian's libvips, of
PyPI's libvips and ours, our time over each, our peak memory, and how far our thumbnail is from
libvips 8.18's (PSNR over the pixels both have, in dB); then the ratios per group.

Usage: thumbnail_bench_table.py OURS OLD NEW OURS_DIR NEW_DIR
OURS is pipeline-bench's output; OLD and NEW vips_thumbnail_bench.py's; the DIRs hold the
thumbnails (read back with the NEW libvips).
"""

import math
import os
import sys

import pyvips

ours_file, old_file, new_file, ours_dir, new_dir = sys.argv[1:6]


def timings(path):
    lines = open(path).read().splitlines()
    return lines[0], {l.split("\t")[0]: float(l.split("\t")[1]) for l in lines[1:]}


ours = {l.split("\t")[0]: l.split("\t") for l in open(ours_file).read().splitlines()}
old_version, old = timings(old_file)
new_version, new = timings(new_file)


def psnr(name):
    try:
        a = pyvips.Image.new_from_file(os.path.join(ours_dir, name + ".jpg")).colourspace("srgb")
        b = pyvips.Image.new_from_file(os.path.join(new_dir, name + ".jpg")).colourspace("srgb")
    except pyvips.Error:
        return float("nan")
    width, height = min(a.width, b.width), min(a.height, b.height)
    a, b = a.crop(0, 0, width, height)[0:3], b.crop(0, 0, width, height)[0:3]
    mse = ((a.cast("float") - b.cast("float")) ** 2).avg()
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


groups = {
    "baseline camera JPEGs (9-24 MP)": ["pixel_4048x3036.jpg", "derived_pixel_orient6_4048x3036.jpg",
        "nikon_d3s_p3_4256x2832.jpg", "painting_colors_6000x4000.jpg"],
    "progressive JPEGs, from their DC scans": [n for n in new if "progressive" in n and "1600" not in n],
    "progressive JPEGs at half scale (1600 px)": [n for n in new if "1600" in n],
    "WebP": ["gnome_adwaita_4096x4096.webp", "sharp_4.webp"],
    "PNG": ["ukui_rgba_3840x2400.png"],
    "everything": list(new),
}
print(f"CPU ms, best of runs, one thread each; {old_version} (Debian), {new_version} (PyPI)")
print(f"{'image':44} {'8.14':>8} {'8.18':>8} {'ours':>8} {'/8.18':>6} {'/8.14':>6} {'peak MiB':>9} {'PSNR dB':>8}")
for name in new:
    row = ours.get(name)
    if row is None or row[1] == "error":
        print(f"{name:44} {old.get(name, 0):8.2f} {new[name]:8.2f} {'error':>8}  {row[3] if row else ''}")
        continue
    t = float(row[1])
    print(f"{name:44} {old.get(name, 0):8.2f} {new[name]:8.2f} {t:8.2f} {t / new[name]:6.2f} "
          f"{t / old[name]:6.2f} {float(row[2]):9.1f} {psnr(name):8.1f}")
print()
for group, names in groups.items():
    names = [n for n in names if n in ours and ours[n][1] != "error" and n in new]
    if not names:
        continue
    total = sum(float(ours[n][1]) for n in names)
    print(f"{group:44} ours / 8.18 {total / sum(new[n] for n in names):.2f}   "
          f"ours / 8.14 {total / sum(old[n] for n in names):.2f}")
