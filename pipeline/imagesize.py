"""Image sizes from file headers, without decoding: the pixel limit every command checks
before it decodes an image.

A small file can hold a huge picture (a 121 KB 1-bit PNG of 100,000 x 10,000 pixels
decodes to gigabytes), so the size in the header is read first: JPEG (the first frame
marker), PNG (IHDR), GIF, BMP, WebP (VP8, VP8L, VP8X), TIFF (the first image's width and
length) and the PNM family. An image over :data:`MAX_IMAGE_PIXELS` is skipped in a
corpus and refused as an input, in one line. Formats not listed here are left to
OpenCV, which has its own limit (2^30 pixels).
"""

from __future__ import annotations

import re
import struct

MAX_IMAGE_PIXELS = 200_000_000  # 200 megapixels: the largest phone and camera sensors
MAX_IMAGE_BYTES = 1 << 30  # bytes of an image file read into memory at most

_PNM = re.compile(rb"P[1-7]\s*(?:#[^\n]*\n\s*)*(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Read ``(height, width)`` from a JPEG's first SOF marker, or None if not found."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9],
                                                                               "big")
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27],
                                                                          "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width (tag 256) and length (257) of a (classic) TIFF's first image."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        offset = struct.unpack(order + "I", data[4:8])[0]
        count = struct.unpack(order + "H", data[offset:offset + 2])[0]
        found = {}
        for k in range(count):
            entry = data[offset + 2 + 12 * k:offset + 14 + 12 * k]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                fmt = order + ("H" if kind == 3 else "I")
                found[tag] = struct.unpack(fmt, entry[8:8 + struct.calcsize(fmt)])[0]
    except struct.error:
        return None
    return (found[257], found[256]) if len(found) == 2 else None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from an image file's header (its first bytes are enough for
    every format but JPEG and TIFF, whose size may sit further in), or None when the
    format is not one of those read here or the header is damaged."""
    head = data[:32]
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return h, w
    if head[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", head[6:10])
        return h, w
    if head[:2] == b"BM" and len(head) >= 26:
        if int.from_bytes(head[14:18], "little") == 12:  # OS/2 header: 16-bit sides
            w, h = struct.unpack("<HH", head[18:22])
            return h, w
        w, h = struct.unpack("<ii", head[18:26])
        return abs(h), abs(w)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(data)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if head[:2] == b"\xff\xd8":
        return jpeg_size(data)
    if m := _PNM.match(data[:512]):
        return int(m.group(2)), int(m.group(1))
    return None


def pixel_problem(data: bytes) -> str | None:
    """Why an image must not be decoded (over :data:`MAX_IMAGE_PIXELS`), or None."""
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        return (f"{size[1]}x{size[0]} pixels is over the limit of "
                f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels (not decoded)")
    return None
