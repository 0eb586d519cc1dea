"""Process environment, set up before rclpy and OpenCV are imported (neither is imported here).

The PyPI wheels of ROS 2 install a ROS prefix into the Python environment itself; the ament
index there is found only when AMENT_PREFIX_PATH names it. A ROS install's setup.bash does
that; a venv has no such step, so the node and tools add the environment's prefix themselves.
OpenCV's decoders get a pixel limit the same way, through the environment, before import.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "segpp"
# the most pixels an image may have anywhere in the node (max_input_pixels is at most this)
DECODER_PIXEL_LIMIT = 8192 * 8192


def _has_package(prefix: str | os.PathLike) -> bool:
    return (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def ensure_ament_prefix() -> None:
    """Put this interpreter's prefix on AMENT_PREFIX_PATH when it holds the segpp package."""
    current = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if any(_has_package(p) for p in current) or not _has_package(sys.prefix):
        return
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *current])


def limit_decoder_pixels(limit: int = DECODER_PIXEL_LIMIT) -> None:
    """Cap OpenCV's image decoders at ``limit`` pixels: a small compressed message must not make
    them allocate gigabytes. OpenCV reads the variable when it is imported, so call this first;
    a value already set in the environment wins."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(int(limit)))


def is_isolated_network() -> bool:
    """True when this process's network namespace has loopback as its only interface."""
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def share_file(*parts: str) -> Path:
    """A file installed under share/segpp (launch/, config/); the source tree in a checkout."""
    ensure_ament_prefix()
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            path = Path(get_package_share_directory(PACKAGE), *parts)
            if path.exists():
                return path
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent.joinpath(*parts)
