"""Bags made from images, for tests and benchmarks (segpp-fleet's scaling run): one Image or
CompressedImage message per image and topic, stamped ``start_ns + i * period_ns`` with frame_id
``cam_<i>`` and recorded ``receive_lag_ns`` later."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

T0 = 1_700_000_000 * 10**9


def stamped_header(i: int, start_ns: int = T0, period_ns: int = 100_000_000):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    stamp = start_ns + i * period_ns
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=f"cam_{i}")


def write_image_bag(path: Path, images: Sequence[np.ndarray], storage: str = "mcap",
                    topics: Sequence[str] = ("/cam/image",), start_ns: int = T0, period_ns: int = 100_000_000,
                    receive_lag_ns: int = 7_000_000) -> None:
    """A ROS 2 bag (``storage`` mcap or sqlite3) with each RGB image on every topic: raw, or
    JPEG on topics ending in /compressed."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ..ros.conversions import rgb_to_compressed, rgb_to_image
    from .runner import typestore

    store = typestore()
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    try:
        for topic in topics:
            compressed = topic.endswith("/compressed")
            kind = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
            connection = writer.add_connection(topic, kind, typestore=store)
            for i, image in enumerate(images):
                header = stamped_header(i, start_ns, period_ns)
                msg = rgb_to_compressed(image, header) if compressed else rgb_to_image(image, header)
                writer.write(connection, start_ns + i * period_ns + receive_lag_ns, serialize_message(msg))
    finally:
        writer.close()


def sample_images(n: int, height: int, width: int, samples: Sequence[Path]) -> list[np.ndarray]:
    """``n`` RGB images of ``height`` x ``width`` from the picture files ``samples``, in turn."""
    import cv2

    out = []
    for i in range(n):
        bgr = cv2.imread(str(samples[i % len(samples)]))
        out.append(np.ascontiguousarray(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1]))
    return out
