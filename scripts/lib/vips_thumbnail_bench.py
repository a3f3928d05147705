"""libvips's thumbnail operation (what vipsthumbnail runs) over image files in one process,
one thread (VIPS_CONCURRENCY=1 from the caller), 256 px JPEG at quality 85, each file timed in
CPU time of the whole process, best of REPEAT runs. Used by scripts/bench-thumbnail.sh, once
with Debian's libvips and once with PyPI's pyvips-binary.

Usage: vips_thumbnail_bench.py REPEAT OUT_DIR FILE...
Prints `libvips <version>` first, then `file<TAB>best CPU milliseconds` per file, and writes
each thumbnail to OUT_DIR/<file>.jpg.
"""

import os
import sys
import time

import pyvips

pyvips.cache_set_max(0)  # no operation cache: every run decodes
repeat, out, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
print(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")
for f in files:
    best, data = None, b""
    for _ in range(repeat):
        t = time.process_time()  # CPU time of every thread of the process
        image = pyvips.Image.thumbnail(f, 256, export_profile="srgb")
        data = image.jpegsave_buffer(Q=85, strip=True)
        elapsed = (time.process_time() - t) * 1000
        best = elapsed if best is None else min(best, elapsed)
    name = os.path.basename(f)
    with open(os.path.join(out, name + ".jpg"), "wb") as thumbnail:
        thumbnail.write(data)
    print(f"{name}\t{best:.2f}", flush=True)
