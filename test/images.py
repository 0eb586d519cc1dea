"""Test images built byte by byte: decompression bombs and other hostile payloads."""
from __future__ import annotations

import functools
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.cache
def png_of_zeros(width: int, height: int, color_type: int = 0, bit_depth: int = 8) -> bytes:
    """A valid PNG of black pixels (gray: color_type 0, RGB: 2), compressed to almost nothing:
    16384x16384 gray is 261 KB on the wire and 805 MB once OpenCV decodes it to BGR."""
    channels = {0: 1, 2: 3}[color_type]
    row = bytes(1 + width * channels * bit_depth // 8)             # filter byte + pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def bmp_header_only(width: int, height: int) -> bytes:
    """A 24-bit BMP that declares width x height but carries no pixels (a format whose size
    the node does not parse itself: OpenCV's own pixel limit has to refuse it)."""
    row = (width * 3 + 3) // 4 * 4
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, row * height, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + row * height, 0, 0, 14 + len(info)) + info
