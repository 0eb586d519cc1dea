"""ROS image message <-> numpy conversions, on the real sensor_msgs message classes."""
from __future__ import annotations

import array
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from segpp_ros.ros.conversions import (
    INPUT_ENCODINGS,
    SUPPORTED_ENCODINGS,
    ImageFormatError,
    array_to_image,
    compressed_to_rgb,
    image_to_rgb,
    label_encoding,
    rgb_to_compressed,
    rgb_to_image,
)

H, W = 37, 53  # odd on purpose: no accidental alignment


def _header() -> Header:
    h = Header()
    h.stamp.sec, h.stamp.nanosec, h.frame_id = 1712345678, 123456789, "camera_optical"
    return h


def _random_rgb(h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_rgb(h: int = 64, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)],
                    axis=2).astype(np.uint8)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_round_trip(encoding: str, pad: int) -> None:
    rgb = _random_rgb()
    msg = rgb_to_image(rgb, _header(), encoding, pad=pad)
    bpp = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}[encoding]
    assert (msg.height, msg.width, msg.step) == (H, W, W * bpp + pad)
    assert isinstance(msg.data, array.array) and len(msg.data) == msg.step * H
    out = image_to_rgb(msg)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    if encoding.startswith("mono"):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # mono16 = gray*257: high byte == gray
        np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    else:
        np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "rgba8", "mono8", "mono16"])
def test_zero_copy(encoding: str, pad: int) -> None:
    msg = rgb_to_image(_random_rgb(), _header(), encoding, pad=pad)
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_bgr8_result_is_a_positive_stride_array() -> None:
    # negative strides would break torch.as_tensor downstream
    out = image_to_rgb(rgb_to_image(_random_rgb(), _header(), "bgr8", pad=5))
    assert out.flags.c_contiguous


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "bgra8", "mono8"])
def test_bytes_data_and_last_row_padding_may_be_missing(encoding: str) -> None:
    rgb = _random_rgb()
    padded = rgb_to_image(rgb, _header(), encoding, pad=5)
    # duck-typed message: data as read-only bytes, without the last row's padding
    msg = SimpleNamespace(height=H, width=W, encoding=encoding, step=padded.step, is_bigendian=0,
                          data=bytes(padded.data)[:-5])
    np.testing.assert_array_equal(image_to_rgb(msg), image_to_rgb(padded))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_endianness(bigendian: int) -> None:
    values = np.random.default_rng(1).integers(0, 65536, (H, W), dtype=np.uint16)
    raw = values.astype(">u2" if bigendian else "<u2").tobytes()
    msg = Image(height=H, width=W, encoding="mono16", is_bigendian=bigendian, step=2 * W,
                data=raw)
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out[..., 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def _raw(encoding: str = "rgb8", height: int = 4, width: int = 6, step: int | None = None,
         nbytes: int | None = None) -> Image:
    step = width * 3 if step is None else step
    nbytes = step * height if nbytes is None else nbytes
    return Image(height=height, width=width, encoding=encoding, step=step, data=bytes(nbytes))


@pytest.mark.parametrize("msg, kind, words", [
    (_raw("nv12"), "encoding", ["'nv12'", "not supported", "rgb8", "yuv422", "bayer_rggb8", "remap"]),
    (_raw("RGB8"), "encoding", ["'RGB8'", "case-sensitive", "'rgb8'"]),
    (_raw(step=10), "step", ["step 10", "6*3=18"]),
    (_raw(nbytes=50), "size", ["data has 50 bytes", "18*4=72"]),
    (_raw(height=0, width=0, nbytes=0), "empty", ["empty (0x0)"]),
])
def test_image_errors(msg: Image, kind: str, words: list[str]) -> None:
    with pytest.raises(ImageFormatError) as err:
        image_to_rgb(msg)
    assert err.value.kind == kind
    assert isinstance(err.value, ValueError)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("data, words", [
    (b"\xff\xd8\xff\xe0" + b"garbage" * 20, ["corrupt", "'jpeg'", "144 bytes", "OpenCV"]),
    (b"", ["empty", "0 bytes"]),
])
def test_compressed_errors(data: bytes, words: list[str]) -> None:
    msg = CompressedImage(format="jpeg", data=data)
    with pytest.raises(ImageFormatError) as err:
        compressed_to_rgb(msg)
    assert err.value.kind == "compressed"
    for word in words:
        assert word in str(err.value)


def test_compressed_png_exact_jpeg_close() -> None:
    rgb = _smooth_rgb()
    png = rgb_to_compressed(rgb, _header(), "png")
    assert png.format == "png" and png.header.frame_id == "camera_optical"
    np.testing.assert_array_equal(compressed_to_rgb(png), rgb)
    jpeg = rgb_to_compressed(rgb, _header(), "jpeg", quality=90)
    jpeg.format = "rgb8; jpeg compressed bgr8"  # informational only: decoded by content
    out = compressed_to_rgb(jpeg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3


def test_label_encoding_thresholds() -> None:
    assert label_encoding(2) == "mono8"
    assert label_encoding(256) == "mono8"
    assert label_encoding(257) == "mono16"
    with pytest.raises(ValueError):
        label_encoding(0)


@pytest.mark.parametrize("shape, dtype, encoding", [
    ((H, W), np.uint8, "mono8"),
    ((H, W), np.uint16, "mono16"),
    ((H, W, 3), np.uint8, "rgb8"),
])
def test_array_to_image(shape: tuple[int, ...], dtype: type, encoding: str) -> None:
    arr = np.random.default_rng(2).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    header = _header()
    msg = array_to_image(arr, header, encoding)
    assert msg.header is header
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1712345678, 123456789)
    assert msg.header.frame_id == "camera_optical"
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * arr.itemsize * (shape[2] if arr.ndim == 3 else 1)
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    np.testing.assert_array_equal(np.frombuffer(msg.data, dtype).reshape(shape), arr)


@pytest.mark.filterwarnings("ignore:module .sre_:DeprecationWarning")  # lark, via rclpy
def test_array_to_image_serializes() -> None:
    # the wire format is what a subscriber sees: same path rclpy's publish takes, no node needed
    from rclpy import serialization
    rgb = _random_rgb()
    msg = array_to_image(rgb, _header(), "rgb8")
    back = serialization.deserialize_message(serialization.serialize_message(msg), Image)
    assert back.header.frame_id == "camera_optical" and back.header.stamp.nanosec == 123456789
    np.testing.assert_array_equal(image_to_rgb(back), rgb)


def test_array_to_image_big_endian_input_is_stored_in_host_order() -> None:
    values = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    msg = array_to_image(values.astype(">u2"), _header(), "mono16")
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint16).reshape(H, W), values)


@pytest.mark.parametrize("arr, encoding", [
    (np.zeros((H, W), np.uint16), "mono8"),
    (np.zeros((H, W), np.uint8), "mono16"),
    (np.zeros((H, W), np.uint8), "rgb8"),
    (np.zeros((H, W, 3), np.float32), "rgb8"),
    (np.zeros((H, W, 4), np.uint8), "rgb8"),
    (np.zeros((H, W), np.uint8), "yuv422"),
])
def test_array_to_image_mismatch(arr: np.ndarray, encoding: str) -> None:
    with pytest.raises(ValueError, match=encoding):
        array_to_image(arr, _header(), encoding)


def test_array_to_image_non_contiguous_input() -> None:
    rgb = _random_rgb()[:, ::2]  # strided view
    np.testing.assert_array_equal(image_to_rgb(array_to_image(rgb, _header(), "rgb8")), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8"])
def test_matches_cv_bridge(encoding: str) -> None:
    cv_bridge = pytest.importorskip("cv_bridge")
    for pad in (0, 5):
        msg = rgb_to_image(_random_rgb(), _header(), encoding, pad=pad)
        expected = cv_bridge.CvBridge().imgmsg_to_cv2(msg, "rgb8")
        np.testing.assert_array_equal(image_to_rgb(msg), expected)


# -- camera encodings: messages built here from their definitions, not by our encoder ---------------
def _message(encoding: str, pixels: np.ndarray, bigendian: int = 0, pad: int = 0) -> Image:
    """An Image whose rows are the bytes of ``pixels`` [H, W, ...] as given, plus ``pad``."""
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(h, -1)
    data = np.zeros((h, rows.shape[1] + pad), np.uint8)
    data[:, :rows.shape[1]] = rows
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=data.shape[1])
    msg.data.frombytes(data.tobytes())
    return msg


def _yuv(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 studio-range Y'CbCr of RGB [H, W, 3] (the standard's formula, not OpenCV's
    code: what cameras put in YUV 4:2:2), float."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    return np.stack([16 + 65.481 * r + 128.553 * g + 24.966 * b,
                     128 - 37.797 * r - 74.203 * g + 112.0 * b,
                     128 + 112.0 * r - 93.786 * g - 18.214 * b], -1)


@pytest.mark.parametrize("encoding, order", [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"),
                                             ("yuyv", "YUYV")])
def test_packed_yuv422(encoding: str, order: str) -> None:
    # pixel pairs share U and V: a colour constant over each pair comes back within rounding
    rgb = np.repeat(_random_rgb(H, 26), 2, axis=1)
    yuv = _yuv(rgb)
    y = yuv[..., 0]
    u, v = yuv[:, 0::2, 1], yuv[:, 0::2, 2]
    pairs = {"UYVY": (u, y[:, 0::2], v, y[:, 1::2]), "YUYV": (y[:, 0::2], u, y[:, 1::2], v)}[order]
    packed = np.stack(pairs, -1).reshape(H, 26, 4).reshape(H, 52, 2)
    msg = _message(encoding, np.clip(np.round(packed), 0, 255).astype(np.uint8), pad=3)
    out = image_to_rgb(msg)
    assert out.shape == (H, 52, 3)
    error = np.abs(out.astype(int) - rgb)
    assert error.max() <= 4, error.max()                          # 8-bit rounding on the way in and out
    flipped = "yuyv" if order == "UYVY" else "uyvy"        # the other byte order: clearly wrong colours
    assert np.abs(image_to_rgb(_message(flipped, msg_pixels(msg))).astype(int) - rgb).mean() > 30
    with pytest.raises(ImageFormatError, match="even width"):
        image_to_rgb(_message(encoding, np.zeros((4, 5, 2), np.uint8)))


def msg_pixels(msg: Image) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 2].reshape(
        msg.height, msg.width, 2)


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"])
def test_bayer_mosaics(encoding: str) -> None:
    # the mosaic of a smooth image, sampled by the pattern's definition (the first two pixels of
    # the first two rows): demosaicked, it is the image again away from the border
    rgb = _smooth_rgb(64, 96)
    pattern = encoding.split("_")[1][:4]
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    out = image_to_rgb(_message(encoding, mosaic[..., None], pad=2))
    error = np.abs(out[4:-4, 4:-4].astype(int) - rgb[4:-4, 4:-4])
    assert error.max() <= 6, (encoding, error.max())
    others = [e for e in ("bayer_rggb8", "bayer_bggr8") if e != encoding][:1]
    wrong = np.abs(image_to_rgb(_message(others[0], mosaic[..., None]))[4:-4, 4:-4].astype(int) - rgb[4:-4, 4:-4])
    assert wrong.mean() > 20                             # the pattern matters
    with pytest.raises(ImageFormatError, match="2x2"):
        image_to_rgb(_message(encoding, np.zeros((1, 8, 1), np.uint8)))


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "rgba16", "bgra16"])
def test_16_bit_colour_keeps_the_high_byte(encoding: str, bigendian: int) -> None:
    rgb = _random_rgb()
    low = np.random.default_rng(1).integers(0, 256, rgb.shape, dtype=np.uint16)
    wide = rgb.astype(np.uint16) * 256 + low                         # any low byte: 8 bits = the high byte
    colour = wide if encoding.startswith("rgb") else wide[..., ::-1]
    if encoding.endswith("a16"):
        colour = np.concatenate([colour, np.full(rgb.shape[:2] + (1,), 65535, np.uint16)], -1)
    stored = colour.astype(">u2" if bigendian else "<u2")
    np.testing.assert_array_equal(image_to_rgb(_message(encoding, stored, bigendian, pad=4)), rgb)


def test_opencv_type_names_and_refused_depth() -> None:
    rgb = _random_rgb()
    np.testing.assert_array_equal(image_to_rgb(_message("8UC3", rgb[..., ::-1].copy())), rgb)      # BGR order
    gray = rgb[..., 0].copy()
    np.testing.assert_array_equal(image_to_rgb(_message("8UC1", gray[..., None])), np.stack([gray] * 3, -1))
    depth = CompressedImage(format="16UC1; compressedDepth png")
    depth.data.frombytes(bytes(rgb_to_compressed(rgb, _header(), "png").data))
    with pytest.raises(ImageFormatError, match="compressedDepth") as err:
        compressed_to_rgb(depth)
    assert err.value.kind == "compressed"


@pytest.mark.parametrize("fmt", ["rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "mono8; jpeg compressed mono8"])
def test_image_transport_compressed_formats(fmt: str) -> None:
    # what image_transport's compressed plugin writes: the format string says what it holds
    rgb = _smooth_rgb()
    codec = ".png" if "png" in fmt else ".jpg"
    source = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if fmt.startswith("mono") else rgb[..., ::-1]
    ok, encoded = cv2.imencode(codec, np.ascontiguousarray(source))
    msg = CompressedImage(format=fmt)
    msg.data.frombytes(encoded.tobytes())
    out = compressed_to_rgb(msg)
    expected = np.stack([source] * 3, -1) if source.ndim == 2 else rgb
    assert np.abs(out.astype(int) - expected).max() <= (0 if codec == ".png" else 24)


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_grbg8", "rgb16", "bgr16"])
def test_camera_encodings_match_cv_bridge(encoding: str) -> None:
    cv_bridge = pytest.importorskip("cv_bridge")
    pixels = {2: np.random.default_rng(3).integers(0, 256, (H, 52, 2), dtype=np.uint8),
              1: np.random.default_rng(3).integers(0, 256, (H, W, 1), dtype=np.uint8),
              6: _random_rgb().astype("<u2") * 257}[BYTES_PER_PIXEL.get(encoding, 1)]
    msg = _message(encoding, pixels)
    expected = cv_bridge.CvBridge().imgmsg_to_cv2(msg, "rgb8")
    assert np.abs(image_to_rgb(msg).astype(int) - expected).max() <= 1


# -- untrusted sizes -------------------------------------------------------------------------------
def test_huge_raw_images_are_refused_from_the_header_before_the_data_is_checked() -> None:
    msg = _raw(height=8192, width=8192, nbytes=10)      # the header alone claims 192 MB
    with pytest.raises(ImageFormatError) as err:
        image_to_rgb(msg, max_pixels=4096 * 4096)
    assert err.value.kind == "too_large" and "8192x8192" in str(err.value) and "max_input_pixels" in str(err.value)
    image_to_rgb(_raw(height=4, width=6), max_pixels=24)   # exactly at the limit is fine


def test_images_below_the_network_minimum_are_refused() -> None:
    for height, width in ((16, 16), (31, 640), (480, 20)):
        with pytest.raises(ImageFormatError) as err:
            image_to_rgb(_raw(height=height, width=width), min_side=32)
        assert err.value.kind == "too_small" and "at least 32 px" in str(err.value)
    assert image_to_rgb(_raw(height=32, width=32), min_side=32).shape == (32, 32, 3)
    png = rgb_to_compressed(_random_rgb(20, 40), _header(), "png")
    with pytest.raises(ImageFormatError) as err:
        compressed_to_rgb(png, min_side=32)
    assert err.value.kind == "too_small"


def test_compressed_dimensions_from_png_and_jpeg_headers() -> None:
    from segpp_ros.ros.conversions import compressed_dimensions

    rgb = _random_rgb(37, 53)
    for fmt in ("png", "jpeg"):
        data = bytes(rgb_to_compressed(rgb, _header(), fmt).data)
        assert compressed_dimensions(data) == (53, 37), fmt
        assert compressed_dimensions(data[:10]) is None, fmt       # cut short: unknown, not wrong
    ok, progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and compressed_dimensions(progressive.tobytes()) == (53, 37)
    ok, bmp = cv2.imencode(".bmp", rgb)
    assert compressed_dimensions(bmp.tobytes()) is None            # not parsed: OpenCV's limit applies
    assert compressed_dimensions(b"") is None and compressed_dimensions(b"\xff\xd8\xff\xd9") is None


def test_a_png_bomb_is_refused_without_decoding(monkeypatch) -> None:
    from .images import png_of_zeros

    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(a) or None)
    bomb = CompressedImage(format="png", data=png_of_zeros(16384, 16384))
    assert len(bomb.data) < 300_000
    with pytest.raises(ImageFormatError) as err:
        compressed_to_rgb(bomb, max_pixels=4096 * 4096)
    assert err.value.kind == "too_large" and "16384x16384" in str(err.value)
    assert decoded == []


def test_decoding_bombs_stays_within_memory_in_a_fresh_process() -> None:
    """Peak memory of a process that receives a PNG bomb and a BMP declaring 20000x20000: OpenCV's
    pixel limit is set when the conversions module is imported, before OpenCV."""
    import subprocess

    code = (
        "import resource, sys\n"
        "sys.path.insert(0, 'test')\n"
        "from images import png_of_zeros, bmp_header_only\n"
        "from segpp_ros.ros.conversions import ImageFormatError, compressed_to_rgb\n"
        "import cv2, numpy as np\n"
        "from sensor_msgs.msg import CompressedImage\n"
        "bombs = [png_of_zeros(16384, 16384), bmp_header_only(20000, 20000)]\n"
        "np.zeros(1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kinds = []\n"
        "for data in bombs:\n"
        "    try:\n"
        "        compressed_to_rgb(CompressedImage(format='x', data=data), max_pixels=4096 * 4096)\n"
        "        kinds.append('decoded')\n"
        "    except ImageFormatError as err:\n"
        "        kinds.append(err.kind)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(kinds, (after - before) // 1024)\n")
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kinds, grown_mb = out.stdout.strip().rsplit(" ", 1)
    assert kinds == "['too_large', 'compressed']", out.stdout    # the BMP: OpenCV refuses to decode it
    assert int(grown_mb) < 50, f"peak memory grew by {grown_mb} MB"


# -- fuzzing ----------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAX_PIXELS = 256 * 256
SIZES = st.one_of(st.integers(0, 48), st.integers(0, 2**32 - 1))
ENCODINGS = st.one_of(st.sampled_from(INPUT_ENCODINGS + ("RGB8", "YUV422", "bayer_rggb16", "")),
                      st.text(max_size=12))
# bytes per pixel of each encoding, from the ROS sensor_msgs/image_encodings definitions
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "yuv422": 2, "uyvy": 2,
                   "yuv422_yuy2": 2, "yuyv": 2, "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8, "8UC3": 3, "8UC1": 1}


def _inside(out: np.ndarray, buffer: bytes | array.array) -> bool:
    """Every byte the view can read lies in ``buffer`` (or the view owns its memory)."""
    if out.base is None or not np.shares_memory(out, np.frombuffer(buffer, np.uint8)):
        return True
    from numpy.lib.array_utils import byte_bounds

    lo, hi = byte_bounds(out)
    base_lo, base_hi = byte_bounds(np.frombuffer(buffer, np.uint8))
    return base_lo <= lo and hi <= base_hi


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoding=ENCODINGS, height=SIZES, width=SIZES, step=SIZES, bigendian=st.integers(0, 1),
       slack=st.integers(-8, 8), data=st.data())
def test_fuzz_image_to_rgb(encoding, height, width, step, bigendian, slack, data) -> None:
    """Any header and any data length: a valid RGB array read inside the buffer, or ImageFormatError."""
    bpp = BYTES_PER_PIXEL.get(encoding, 1)
    if data.draw(st.booleans(), label="plausible step") and width * bpp < 2**32:
        step = width * bpp + data.draw(st.integers(0, 7), label="pad")
    needed = step * max(height - 1, 0) + width * bpp
    nbytes = max(0, min(needed + slack, 200_000)) if needed < 200_000 else data.draw(st.integers(0, 4096))
    msg = Image(height=height, width=width, encoding=encoding, step=min(step, 2**32 - 1), is_bigendian=bigendian)
    msg.data.frombytes(bytes(data.draw(st.binary(min_size=nbytes, max_size=nbytes), label="bytes")))
    try:
        out = image_to_rgb(msg, max_pixels=MAX_PIXELS)
    except ImageFormatError:
        return
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert height * width <= MAX_PIXELS
    assert _inside(out, msg.data)
    out.sum()  # every pixel readable


def _seed_images() -> list[bytes]:
    rgb = _smooth_rgb(40, 48)
    seeds = [bytes(rgb_to_compressed(rgb, _header(), fmt).data) for fmt in ("png", "jpeg")]
    ok, png16 = cv2.imencode(".png", (rgb.astype(np.uint16) * 257)[..., ::-1].copy())
    seeds.append(png16.tobytes())
    ok, progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    seeds.append(progressive.tobytes())
    return seeds


SEEDS = _seed_images()


@st.composite
def hostile_compressed(draw) -> bytes:
    seed = draw(st.sampled_from(SEEDS))
    kind = draw(st.sampled_from(["random", "truncated", "bitflip", "bomb", "seed"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "truncated":
        return seed[:draw(st.integers(0, len(seed)))]
    if kind == "bitflip":
        out = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "bomb":
        from .images import png_of_zeros

        w, h = draw(st.sampled_from([(300, 300), (1, 70000), (70000, 1), (4096, 4096)]))
        return png_of_zeros(w, h, draw(st.sampled_from([0, 2])))
    return seed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=hostile_compressed())
def test_fuzz_compressed_to_rgb(payload: bytes) -> None:
    """Random, truncated, bit-flipped and oversized PNG/JPEG: an RGB array within max_pixels, or
    ImageFormatError; a header declaring more than max_pixels is never decoded."""
    from segpp_ros.ros.conversions import compressed_dimensions

    msg = CompressedImage(format="fuzz", data=payload)
    declared = compressed_dimensions(payload)
    try:
        out = compressed_to_rgb(msg, max_pixels=MAX_PIXELS)
    except ImageFormatError as err:
        if declared is not None and declared[0] * declared[1] > MAX_PIXELS:
            assert err.kind == "too_large"
        return
    assert declared is None or declared[0] * declared[1] <= MAX_PIXELS
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert out.shape[0] * out.shape[1] <= MAX_PIXELS
