"""ROS 2 image messages <-> numpy arrays, without torch and without cv_bridge.

Zero-copy policy. Incoming images are read, not copied, wherever numpy can describe the
layout as a strided view over ``msg.data``: rgb8 and rgba8 (alpha dropped by slicing), mono8
and mono16 (high byte picked by stride, replicated to 3 channels with ``np.broadcast_to``,
so read-only). Row padding (``step`` > width*bytes_per_pixel) is honoured by the row stride,
so padded images stay zero-copy too. Views keep ``msg.data`` alive; copy the result if the
message buffer may be reused. bgr8/bgra8 are copied (by OpenCV, imported lazily): a reversed
channel view would need a negative stride, which ``torch.as_tensor`` rejects.

Untrusted sizes. Width and height come from the sender: a 261 KB PNG can declare 16384x16384
pixels. Both converters refuse images with more than ``max_pixels`` pixels before anything of
their size is allocated (for PNG and JPEG from the header, before decoding; other compressed
formats are bounded by OpenCV's own limit, OPENCV_IO_MAX_IMAGE_PIXELS, which
``limit_decoder_pixels`` sets before OpenCV is imported) and images with a side under
``min_side`` (the network's smallest input is 32 px).

Outgoing images cost exactly one copy: the array's bytes are appended into the message's own
``array('B')``. Assigning ``msg.data = ...`` instead makes the generated setter build a second
copy (or, with ROS_PYTHON_CHECK_FIELDS=1, check every byte in Python).
"""
from __future__ import annotations

import struct
import sys
from typing import Any

import numpy as np
from segpp.msg import LabelPalette
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from .env import limit_decoder_pixels

# what the node writes and the demo camera sends (rgb_to_image, array_to_image)
SUPPORTED_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
# what cameras send besides, read by image_to_rgb: packed YUV 4:2:2 (yuv422 is UYVY in ROS),
# Bayer mosaics, 16 bits per channel (scaled to 8 by the high byte, as mono16), and the OpenCV
# type names some drivers put in the encoding (8UC3 is OpenCV's BGR order)
CAMERA_ENCODINGS: tuple[str, ...] = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv", "bayer_rggb8", "bayer_bggr8",
                                     "bayer_gbrg8", "bayer_grbg8", "rgb16", "bgr16", "rgba16", "bgra16", "8UC3", "8UC1")
INPUT_ENCODINGS: tuple[str, ...] = SUPPORTED_ENCODINGS + CAMERA_ENCODINGS

_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)
# encoding -> (dtype, channels); bytes per pixel = itemsize * channels
_LAYOUT: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (_U8, 3), "bgr8": (_U8, 3), "rgba8": (_U8, 4), "bgra8": (_U8, 4), "mono8": (_U8, 1), "mono16": (_U16, 1),
    "yuv422": (_U8, 2), "uyvy": (_U8, 2), "yuv422_yuy2": (_U8, 2), "yuyv": (_U8, 2),
    "bayer_rggb8": (_U8, 1), "bayer_bggr8": (_U8, 1), "bayer_gbrg8": (_U8, 1), "bayer_grbg8": (_U8, 1),
    "rgb16": (_U16, 3), "bgr16": (_U16, 3), "rgba16": (_U16, 4), "bgra16": (_U16, 4), "8UC3": (_U8, 3), "8UC1": (_U8, 1),
}
# OpenCV conversions to RGB. OpenCV names a Bayer pattern by the second row's second and third
# pixels, so ROS's rggb (the first row starting R G) is OpenCV's BayerBG
_CV_TO_RGB: dict[str, str] = {
    "yuv422": "COLOR_YUV2RGB_UYVY", "uyvy": "COLOR_YUV2RGB_UYVY",
    "yuv422_yuy2": "COLOR_YUV2RGB_YUYV", "yuyv": "COLOR_YUV2RGB_YUYV",
    "bayer_rggb8": "COLOR_BayerBG2RGB", "bayer_bggr8": "COLOR_BayerRG2RGB",
    "bayer_gbrg8": "COLOR_BayerGR2RGB", "bayer_grbg8": "COLOR_BayerGB2RGB",
    "bgr8": "COLOR_BGR2RGB", "8UC3": "COLOR_BGR2RGB", "bgra8": "COLOR_BGRA2RGB",
}


limit_decoder_pixels()  # before anything here imports OpenCV


class ImageFormatError(ValueError):
    """An image message that cannot be converted; ``kind`` is a short diagnostics counter key:
    one of "encoding", "step", "size", "empty", "compressed", "too_small", "too_large"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _bytes_per_pixel(encoding: str) -> int:
    dtype, channels = _LAYOUT[encoding]
    return dtype.itemsize * channels


def check_dimensions(width: int, height: int, min_side: int = 1, max_pixels: int | None = None,
                     what: str = "image") -> None:
    """Raise ImageFormatError ("too_large" / "too_small") for a size the node must not process."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageFormatError(
            f"{what} is {width}x{height} = {width * height:,} pixels, more than max_input_pixels = {max_pixels:,}; "
            "send smaller images, or raise max_input_pixels if this size is intended", "too_large")
    if min(width, height) < min_side:
        raise ImageFormatError(
            f"{what} is {width}x{height}: both sides must be at least {min_side} px (the network's smallest "
            "input); send larger images", "too_small")


def image_to_rgb(msg: Image, min_side: int = 1, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 [H, W, 3], a view over ``msg.data`` where possible.

    rgb8/rgba8 views are writable when ``msg.data`` is; mono8/mono16 results are read-only
    broadcasts (channel stride 0); bgr8/bgra8 results are new contiguous arrays.
    Raises ImageFormatError for an unsupported encoding, an empty image, more than
    ``max_pixels`` pixels or a side under ``min_side`` (checked on the header, before any
    conversion), a step smaller than a row, or a data buffer shorter than the header promises.
    """
    enc, h, w, step = msg.encoding, msg.height, msg.width, msg.step
    if enc not in _LAYOUT:
        hint = (f"; encodings are case-sensitive, use '{enc.lower()}'"
                if enc.lower() in _LAYOUT else "")
        raise ImageFormatError(
            f"image encoding '{enc}' is not supported{hint}; publish one of "
            f"{', '.join(INPUT_ENCODINGS)} (or remap to a topic that does)", "encoding")
    if h == 0 or w == 0:
        raise ImageFormatError(f"image is empty ({w}x{h}); the publisher sent width={w}, "
                               f"height={h}", "empty")
    check_dimensions(w, h, min_side, max_pixels)
    if enc in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and w % 2:
        raise ImageFormatError(f"{enc} image is {w} px wide: packed YUV 4:2:2 shares chroma between pixel pairs "
                               "and needs an even width", "size")
    if enc.startswith("bayer_") and min(w, h) < 2:
        raise ImageFormatError(f"{enc} image is {w}x{h}: a Bayer mosaic needs at least 2x2 pixels", "size")
    bpp = _bytes_per_pixel(enc)
    if step < w * bpp:
        raise ImageFormatError(
            f"step {step} is smaller than width*bytes_per_pixel = {w}*{bpp}={w * bpp} for "
            f"{enc}; the publisher must set step to the row length in bytes", "step")
    n = len(msg.data)
    # the last row's padding is optional: only its pixels have to be present
    if n < step * (h - 1) + w * bpp:
        raise ImageFormatError(
            f"data has {n} bytes, expected step*height = {step}*{h}={step * h}; the message is "
            f"truncated", "size")
    buf = np.frombuffer(msg.data, np.uint8)  # array('B') and bytes both export a buffer
    # in bounds by the checks above; writability is inherited from msg.data
    pixels = np.lib.stride_tricks.as_strided(buf, shape=(h, w, bpp), strides=(step, bpp, 1))
    dtype, channels = _LAYOUT[enc]
    if dtype == _U16:
        # 16 bits per channel: keep the most significant byte, wherever the endianness puts it
        pixels = pixels[..., 0::2] if msg.is_bigendian else pixels[..., 1::2]
        if enc in ("bgr16", "bgra16"):
            return np.ascontiguousarray(pixels[..., 2::-1])
    if enc in ("rgb8", "rgb16", "rgba8", "rgba16"):
        return pixels[..., :3]
    if enc in ("mono8", "mono16", "8UC1"):
        return np.broadcast_to(pixels[..., :1], (h, w, 3))
    import cv2  # lazy; 1080p: cvtColor 0.5 ms vs 2.5-8.5 ms for a numpy channel reversal

    if channels == 1:       # a Bayer mosaic: OpenCV wants [H, W]
        pixels = pixels[..., 0]
    return cv2.cvtColor(pixels, getattr(cv2, _CV_TO_RGB[enc]))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...): not DHT (C4), JPG (C8), DAC (CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_dimensions(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG declares in its header, read without decoding; None for other
    formats or a header that is cut short or malformed."""
    buf = memoryview(data).cast("B")
    if bytes(buf[:8]) == _PNG_SIGNATURE:
        if len(buf) >= 24 and bytes(buf[12:16]) == b"IHDR":
            return struct.unpack(">II", buf[16:24])
        return None
    if bytes(buf[:2]) != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:                      # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):              # end of image, start of scan: no frame header before it
            return None
        length = (buf[i + 2] << 8) | buf[i + 3]
        if marker in _JPEG_SOF:
            if length < 7 or i + 9 > len(buf):
                return None
            height = (buf[i + 5] << 8) | buf[i + 6]
            width = (buf[i + 7] << 8) | buf[i + 8]
            return width, height
        i += 2 + length
    return None


def compressed_to_rgb(msg: CompressedImage, min_side: int = 1, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage -> RGB uint8 [H, W, 3] (a new array).

    ``msg.format`` ("jpeg", "png", "rgb8; jpeg compressed bgr8", ...) is informational only:
    OpenCV detects the codec from the bytes. A PNG or JPEG larger than ``max_pixels`` is
    refused from its header, before decoding; any image is checked again once decoded.
    """
    if "compresseddepth" in msg.format.lower():
        raise ImageFormatError(f"compressed image format '{msg.format}' is a depth image (image_transport's "
                               "compressedDepth): segment the colour camera's image/compressed topic instead",
                               "compressed")
    n = len(msg.data)
    if n == 0:
        raise ImageFormatError(f"compressed image is empty (format '{msg.format}', 0 bytes); "
                               f"the publisher sent no data", "compressed")
    declared = compressed_dimensions(msg.data)
    if declared is not None:
        check_dimensions(*declared, min_side, max_pixels, what=f"compressed image (format '{msg.format}')")
    import cv2  # lazy: rgb8/mono consumers never import OpenCV

    try:
        bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None or bgr.size == 0:
        raise ImageFormatError(f"corrupt compressed image (format '{msg.format}', {n} bytes): "
                               f"OpenCV could not decode it", "compressed")
    check_dimensions(bgr.shape[1], bgr.shape[0], min_side, max_pixels,
                     what=f"compressed image (format '{msg.format}')")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def label_encoding(num_classes: int) -> str:
    """Smallest mono encoding that holds class ids 0..num_classes-1."""
    if not 1 <= num_classes <= 65536:
        raise ValueError(f"num_classes must be in 1..65536 to fit mono8/mono16, got {num_classes}")
    return "mono8" if num_classes <= 256 else "mono16"


def _new_image(header: Header, height: int, width: int, encoding: str, step: int,
               payload: np.ndarray) -> Image:
    msg = Image()
    msg.header = header  # same object: stamp and frame_id must match the input exactly
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = int(sys.byteorder == "big")
    # one memcpy into the message's own array('B'); see the module docstring
    msg.data.frombytes(memoryview(payload).cast("B"))
    return msg


def array_to_image(array: np.ndarray, header: Header, encoding: str) -> Image:
    """[H, W] uint8 -> mono8, [H, W] uint16 -> mono16 (host byte order), [H, W, 3] uint8 ->
    rgb8/bgr8, [H, W, 4] uint8 -> rgba8/bgra8. ``step`` = width * bytes_per_pixel.

    Raises ValueError if ``encoding`` does not match the array's dtype and channels.
    """
    if encoding not in _LAYOUT:
        raise ValueError(f"encoding '{encoding}' is not one of {', '.join(SUPPORTED_ENCODINGS)}")
    dtype, channels = _LAYOUT[encoding]
    shape_ok = (array.ndim == 2 if channels == 1
                else array.ndim == 3 and array.shape[2] == channels)
    # byte order is checked via .kind/.itemsize, then normalised to native by astype below
    if not shape_ok or array.dtype.kind != dtype.kind or array.dtype.itemsize != dtype.itemsize:
        want = "[H, W]" if channels == 1 else f"[H, W, {channels}]"
        raise ValueError(f"encoding '{encoding}' needs a {want} {dtype} array, got shape "
                         f"{array.shape} {array.dtype}")
    payload = np.ascontiguousarray(array, dtype=dtype.newbyteorder("="))
    h, w = payload.shape[:2]
    return _new_image(header, h, w, encoding, w * _bytes_per_pixel(encoding), payload)


def rgb_to_image(image: np.ndarray, header: Header, encoding: str = "rgb8", *,
                 pad: int = 0) -> Image:
    """Encode RGB uint8 [H, W, 3] as any of SUPPORTED_ENCODINGS, with ``pad`` extra bytes at
    the end of every row (step = width*bytes_per_pixel + pad). For tests and demo sources."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {image.shape} {image.dtype}")
    if encoding == "rgb8":
        out = image
    elif encoding == "bgr8":
        out = image[..., ::-1]
    elif encoding in ("rgba8", "bgra8"):
        color = image if encoding == "rgba8" else image[..., ::-1]
        out = np.concatenate([color, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding in ("mono8", "mono16"):
        import cv2  # lazy, as in compressed_to_rgb

        out = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if encoding == "mono16":
            out = out.astype(np.uint16) * 257  # high byte == mono8 value
    else:
        raise ValueError(f"encoding '{encoding}' is not one of {', '.join(SUPPORTED_ENCODINGS)}")
    if pad == 0:
        return array_to_image(out, header, encoding)
    h, w = image.shape[:2]
    row = w * _bytes_per_pixel(encoding)
    rows = np.zeros((h, row + pad), np.uint8)
    rows[:, :row] = np.ascontiguousarray(out).view(np.uint8).reshape(h, row)
    return _new_image(header, h, w, encoding, row + pad, rows)


def rgb_to_compressed(image: np.ndarray, header: Header, fmt: str = "jpeg",
                      quality: int = 90) -> CompressedImage:
    """RGB uint8 [H, W, 3] -> sensor_msgs/CompressedImage in ``fmt`` ("jpeg", "png", ...)."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt in ("jpeg", "jpg") else []
    ok, encoded = cv2.imencode("." + fmt, np.ascontiguousarray(image[..., ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as '{fmt}'")
    msg = CompressedImage()
    msg.header = header
    msg.format = fmt
    msg.data.frombytes(memoryview(encoded).cast("B"))
    return msg


def palette_message(segmenter: Any, stamp: Any) -> LabelPalette:
    """~/palette of a Segmenter: the RGB colour of every class (as ~/color draws it), model, weights."""
    msg = LabelPalette(colors=segmenter.palette.reshape(-1).astype(np.uint8).tolist(), model=segmenter.describe(),
                       weights=segmenter.weights)
    msg.header.stamp = stamp
    return msg
