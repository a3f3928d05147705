#!/usr/bin/env python3
"""Writes tiny images of every format thumbnail-on-create reads into DIR, as the fuzzers' seed
corpus: baseline, restart-marked, CMYK and progressive JPEGs (with EXIF orientation), PNGs of
each colour type (interlaced, 16-bit, palette with transparency, EXIF and ICC chunks), GIF,
BMP, TIFF and WebP (lossy, lossless, alpha, animated). Made here rather than committed, so the
repository holds no binary seeds; each is a few hundred bytes, as AFL++ wants.

usage: seeds.py DIR   (scripts/bench-hostile.sh imports its generators)
"""
import base64, os, struct, sys, zlib


def segment(marker, payload):
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def exif_orientation(value, big_endian=True):
    """A TIFF structure holding one IFD entry, Orientation (0x0112)."""
    order = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    ifd = struct.pack(order + "H", 1) + struct.pack(order + "HHIHH", 0x0112, 3, 1, value, 0)
    return head + ifd + struct.pack(order + "I", 0)


# One Huffman code of one bit per table: DC difference category 0, AC end-of-block. A block
# whose coefficients are all zero then codes as two zero bits.
DHT_DC = b"\x00" + bytes([1] + [0] * 15) + b"\x00"
DHT_AC = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
DQT = b"\x00" + b"\x01" * 64


def baseline_jpeg(w, h, sampling, app=b"", restart=0):
    """A sequential JPEG whose blocks are all zero; `sampling` is (h, v) per component."""
    frame = struct.pack(">BHHB", 8, h, w, len(sampling))
    frame += b"".join(bytes([i + 1, (sh << 4) | sv, 0]) for i, (sh, sv) in enumerate(sampling))
    hmax, vmax = max(s[0] for s in sampling), max(s[1] for s in sampling)
    mcus = -(-w // (8 * hmax)) * -(-h // (8 * vmax))
    blocks_per_mcu = sum(sh * sv for sh, sv in sampling)
    out = b"\xff\xd8" + app + segment(0xDB, DQT) + segment(0xC0, frame)
    out += segment(0xC4, DHT_DC) + segment(0xC4, DHT_AC)
    if restart:
        out += segment(0xDD, struct.pack(">H", restart))
    scan = bytes([len(sampling)]) + b"".join(bytes([i + 1, 0]) for i in range(len(sampling)))
    out += segment(0xDA, scan + bytes([0, 63, 0]))
    interval = restart or mcus
    for n, first in enumerate(range(0, mcus, interval)):
        bits = 2 * blocks_per_mcu * min(interval, mcus - first)
        # Zero bits, then the last byte padded with ones.
        data = b"\x00" * (bits // 8) + (bytes([0xFF >> (bits % 8)]) if bits % 8 else b"")
        out += data
        if first + interval < mcus:
            out += bytes([0xFF, 0xD0 + n % 8])
    return out + b"\xff\xd9"


def progressive_jpeg(w, h, components, ac_scans, dc_bytes=8, ac_bytes=2):
    """The layout of ../shared/hostile/mkbombs.py: a DC scan of `dc_bytes` zero bytes (one bit
    per block codes a zero DC), then AC scans of `ac_bytes` each (15 bits code an end-of-band
    run of 16384 blocks)."""
    frame = struct.pack(">BHHB", 8, h, w, components)
    frame += b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    out = b"\xff\xd8" + segment(0xDB, DQT) + segment(0xC2, frame)
    out += segment(0xC4, DHT_DC) + segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")
    scan = bytes([components]) + b"".join(bytes([i + 1, 0]) for i in range(components))
    out += segment(0xDA, scan + bytes([0, 0, 0])) + b"\x00" * dc_bytes
    for s in range(ac_scans):
        out += segment(0xDA, bytes([1, s % components + 1, 0, 1, 63, 0])) + b"\x00" * ac_bytes
    return out + b"\xff\xd9"


def png_chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(w, h, colour_type, depth=8, interlace=0, extra=b"", palette=b""):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    bits = channels * depth
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
              (1, 0, 2, 2), (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)]
    raw = b""
    for x0, y0, dx, dy in passes:
        cols, rows = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
        if cols <= 0 or rows <= 0:
            continue
        for y in range(rows):
            row = bytes((x * 37 + y * 11) & 0xFF for x in range((cols * bits + 7) // 8))
            raw += bytes([y % 5]) + row  # every filter type
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, interlace)
    body = png_chunk(b"IHDR", ihdr) + extra
    if palette:
        body += png_chunk(b"PLTE", palette) + png_chunk(b"tRNS", b"\x00\x80")
    body += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def bmp(w, h, bpp):
    row = ((w * bpp // 8) + 3) & ~3
    pixels = bytes((i * 29) & 0xFF for i in range(row * h))
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, len(pixels), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return head + info + pixels


def tiff(w, h, samples, depth):
    """Uncompressed, one strip; BitsPerSample holds one value per sample, stored after the IFD
    when there are more than two."""
    pixels = bytes((i * 53) & 0xFF for i in range(w * h * samples * depth // 8))
    entries = 9
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * entries + 4
    bits = struct.pack("<" + "H" * samples, *[depth] * samples) if samples > 2 else b""
    pixels_at = extra_at + len(bits)
    bits_value = struct.pack("<I", extra_at) if bits else struct.pack("<HH", depth, depth)
    short = lambda tag, value: struct.pack("<HHIHH", tag, 3, 1, value, 0)
    long = lambda tag, value: struct.pack("<HHII", tag, 4, 1, value)
    ifd = struct.pack("<H", entries) + b"".join([
        short(256, w), short(257, h), struct.pack("<HHI", 258, 3, samples) + bits_value,
        short(259, 1), short(262, 2 if samples >= 3 else 1), long(273, pixels_at),
        short(277, samples), short(278, h), long(279, len(pixels)),
    ])
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + struct.pack("<I", 0) + bits + pixels


GIF_1X1 = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
           b"!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
# Two frames: the same image descriptor again, with a delay.
GIF_ANIMATED = (GIF_1X1[:-1] + b"!\xf9\x04\x00\x0a\x00\x00\x00"
                b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

WEBP = {
    "lossy_1x1.webp": "UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA",
    "lossless_1x1.webp": "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==",
    "alpha_1x1.webp": "UklGRkoAAABXRUJQVlA4WAoAAAAQAAAAAAAAAAAAQUxQSAwAAAARBxAR/Q9ERP8DAABWUDgg"
                      "GAAAABQBAJ0BKgEAAQAAAP4AAA3AAP7mtQAAAA==",
    "animated_1x1.webp": "UklGRlIAAABXRUJQVlA4WAoAAAASAAAAAAAAAAAAQU5JTQYAAAD/////AABBTk1GJgAAAAAA"
                         "AAAAAAAAAAAAAGQAAABWUDhMDQAAAC8AAAAQBxAREYiI/gcA",
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    exif = segment(0xE1, b"Exif\x00\x00" + exif_orientation(6))
    icc = segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + b"\x00" * 128)
    png_exif = png_chunk(b"eXIf", exif_orientation(8, big_endian=False))
    png_icc = png_chunk(b"iCCP", b"p\x00\x00" + zlib.compress(b"\x00" * 128))
    adobe = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00")  # transform 0: plain CMYK
    files = {
        "grey_8x8.jpg": baseline_jpeg(8, 8, [(1, 1)]),
        "ycbcr420_exif6_24x16.jpg": baseline_jpeg(24, 16, [(2, 2), (1, 1), (1, 1)], app=exif),
        "ycbcr_restarts_icc_32x16.jpg": baseline_jpeg(32, 16, [(1, 1)] * 3, app=icc, restart=2),
        "cmyk_16x8.jpg": baseline_jpeg(16, 8, [(1, 1)] * 4, app=adobe),
        "progressive_grey_16x16.jpg": progressive_jpeg(16, 16, 1, 3),
        "progressive_ycbcr_16x16.jpg": progressive_jpeg(16, 16, 3, 6),
        "rgb_5x3.png": png(5, 3, 2),
        "rgba_adam7_9x9.png": png(9, 9, 6, interlace=1),
        "grey16_4x4.png": png(4, 4, 0, depth=16),
        "grey_alpha_exif_3x3.png": png(3, 3, 4, extra=png_exif),
        "palette_trns_icc_4x2.png": png(4, 2, 3, depth=4, palette=bytes(range(48)), extra=png_icc),
        "grey1_adam7_10x3.png": png(10, 3, 0, depth=1, interlace=1),
        "one_1x1.gif": GIF_1X1,
        "animated_1x1.gif": GIF_ANIMATED,
        "rgb24_3x2.bmp": bmp(3, 2, 24),
        "rgba32_2x2.bmp": bmp(2, 2, 32),
        "grey_2x2.tif": tiff(2, 2, 1, 8),
        "rgb16_2x2.tif": tiff(2, 2, 3, 16),
    }
    files.update({name: base64.b64decode(data) for name, data in WEBP.items()})
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
