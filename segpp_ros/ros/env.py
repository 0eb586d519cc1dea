"""Process environment for ROS 2 from PyPI wheels (no rclpy import here: set up before rclpy).

The wheels install a ROS prefix into the Python environment itself; the ament index there
is found only when AMENT_PREFIX_PATH names it. A ROS install's setup.bash does that; a venv
has no such step, so the node and tools add the environment's prefix themselves.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "segpp"


def _has_package(prefix: str | os.PathLike) -> bool:
    return (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def ensure_ament_prefix() -> None:
    """Put this interpreter's prefix on AMENT_PREFIX_PATH when it holds the segpp package."""
    current = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if any(_has_package(p) for p in current) or not _has_package(sys.prefix):
        return
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *current])


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
